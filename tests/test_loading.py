"""llava_zh.load_dataset over every layout, config, rule and policy; caching; Hub and ModelScope sources."""

import json
import os
import shutil
import time

import datasets
import pytest
from PIL import Image

import llava_zh
from factories import jpeg_bytes, make_dataset, record, write_annotations, write_images
from llava_zh import prepare
from llava_zh.errors import BadSampleError, SourceError
from llava_zh.schema import RULES, json_schema_validator


def _expected(by_task, images):
    rows = {}
    for task, recs in by_task.items():
        for r in recs:
            rows[r["id"]] = (task, r["conversations"], images.get(r.get("image")))
    return rows


def _as_rows(ds):
    ds = ds.cast_column("image", datasets.Image(decode=False))
    return {r["id"]: (r["task"], r["conversations"], r["image"]["bytes"] if r["image"] else None) for r in ds}


LAYOUTS = [(fmt, c) for fmt in ("json", "jsonl") for c in ("folder", "zip", "tar", "tar.gz")] + [("parquet", "embedded")]


@pytest.mark.parametrize("fmt,container", LAYOUTS)
def test_every_layout_loads_the_same_samples(tmp_path, fmt, container):
    root, by_task, images = make_dataset(tmp_path, fmt, container)
    ds = llava_zh.load_dataset(str(root))
    assert isinstance(ds, datasets.Dataset)
    assert ds.features == llava_zh.FEATURES
    assert _as_rows(ds) == _expected(by_task, images)
    assert set(ds["language"]) == {"zh"} and set(ds["source"]) == {"llava-instruct-zh-600k"}


@pytest.mark.parametrize("fmt,container", [("jsonl", "zip"), ("json", "tar"), ("parquet", "embedded")])
def test_streaming_yields_the_same_samples_as_map_style(tmp_path, fmt, container):
    root, _, _ = make_dataset(tmp_path, fmt, container)
    ds = llava_zh.load_dataset(str(root))
    stream = llava_zh.load_dataset(str(root), streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    assert _as_rows(stream) == _as_rows(ds)
    assert [r["id"] for r in stream] == ds["id"]


@pytest.mark.parametrize("config", ["all", "conversation", "complex_reasoning", "detail_description"])
def test_every_config(tmp_path, config):
    root, by_task, _ = make_dataset(tmp_path, "jsonl", "zip", n_per_task=3)
    ds, report = llava_zh.load_dataset(str(root), config=config, return_report=True)
    wanted = by_task if config == "all" else {config: by_task[config]}
    assert sorted(ds["id"]) == sorted(r["id"] for recs in wanted.values() for r in recs)
    assert set(ds["task"]) == set(wanted)
    assert report.balanced and report.read == 9 and report.loaded == len(ds)


def test_task_from_field_then_file_name_then_shape(tmp_path):
    recs = [
        {**record(0, "conversation", image=False), "task": "detail_description"},  # the field wins over the file name
        record(1, "conversation", image=False),  # file name: conversation
    ]
    write_annotations(tmp_path / "d", "conversation_58k", recs, "json")
    mixed = [record(2, "conversation", image=False), record(3, "detail_description", image=False),
             record(4, "complex_reasoning", image=False)]
    write_annotations(tmp_path / "d", "llava_instruct_150k", mixed, "json")
    ds = llava_zh.load_dataset(str(tmp_path / "d"))
    tasks = dict(zip(ds["id"], ds["task"]))
    assert tasks == {
        "conversation-0000": "detail_description",
        "conversation-0001": "conversation",
        "conversation-0002": "conversation",  # five rounds
        "detail_description-0003": "detail_description",  # one round asking for a description
        "complex_reasoning-0004": "complex_reasoning",  # any other single round
    }


# --- validation rules under every policy ---------------------------------------------------------

def _bad_case(tmp_path, rule, monkeypatch):
    """A folder with two good records and one record that breaks ``rule`` in the middle."""
    root = tmp_path / f"bad-{rule}"
    good = [record(i, "conversation") for i in range(2)]
    images = {r["image"]: jpeg_bytes() for r in good}
    bad = record(9, "conversation")
    bad_image = jpeg_bytes()
    if rule == "schema":
        del bad["conversations"]
    elif rule == "empty_value":
        bad["conversations"][1]["value"] = " "
    elif rule == "role_order":
        bad["conversations"][0]["from"] = "gpt"
    elif rule == "image_placeholder":
        bad["conversations"][0]["value"] = bad["conversations"][0]["value"].replace("<image>", "")
    elif rule == "unsafe_image_path":
        bad["image"] = "../outside.jpg"
    elif rule == "missing_image":
        bad_image = None
    elif rule == "undecodable_image":
        bad_image = b"GIF89a broken"
    elif rule == "image_too_large":
        bad_image = jpeg_bytes(300, 200)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    if bad_image is not None and rule != "unsafe_image_path":
        images[bad["image"]] = bad_image
    recs = [good[0], bad, good[1]]
    lines = [json.dumps(r, ensure_ascii=False) for r in recs]
    if rule == "invalid_json":
        lines[1] = lines[1][:-5]
    root.mkdir()
    (root / "conversation.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_images(root, images, "folder")
    return root


@pytest.mark.parametrize("rule", RULES)
def test_raise_names_file_line_id_and_rule(tmp_path, monkeypatch, rule):
    root = _bad_case(tmp_path, rule, monkeypatch)
    with pytest.raises(BadSampleError) as info:
        llava_zh.load_dataset(str(root))
    err = info.value
    assert (err.rule, err.line, err.index) == (rule, 2, 1)
    assert err.file.endswith("conversation.jsonl")
    assert err.sample_id == ("conversation-0009" if rule not in ("invalid_json",) else None)
    assert "conversation.jsonl:2" in str(err) and rule in str(err)


@pytest.mark.parametrize("rule", RULES)
def test_skip_leaves_the_sample_out_and_counts_it(tmp_path, monkeypatch, caplog, rule):
    root = _bad_case(tmp_path, rule, monkeypatch)
    with caplog.at_level("WARNING", logger="llava_zh"):
        ds, report = llava_zh.load_dataset(str(root), on_bad_sample="skip", return_report=True)
    assert ds["id"] == ["conversation-0000", "conversation-0001"]
    assert report.refused == {rule: 1} and report.read == 3 and report.balanced
    assert report.quarantine_path is None
    assert f"{rule}: 1" in caplog.text


@pytest.mark.parametrize("rule", RULES)
def test_quarantine_writes_the_bad_sample_and_loads_the_rest(tmp_path, monkeypatch, rule):
    root = _bad_case(tmp_path, rule, monkeypatch)
    target = tmp_path / "q" / "bad.jsonl"
    ds, report = llava_zh.load_dataset(str(root), on_bad_sample="quarantine", quarantine_path=target, return_report=True)
    assert len(ds) == 2 and report.read == len(ds) + report.total_refused
    assert report.quarantine_path == str(target)
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1
    validator = json_schema_validator("quarantine_record")
    validator.validate(lines[0])
    assert (lines[0]["rule"], lines[0]["line"], lines[0]["index"]) == (rule, 2, 1)
    assert lines[0]["file"].endswith("conversation.jsonl")


def test_quarantine_default_path_and_cached_report(tmp_path, monkeypatch):
    root = _bad_case(tmp_path, "role_order", monkeypatch)
    _, first = llava_zh.load_dataset(str(root), on_bad_sample="quarantine", return_report=True)
    assert os.path.exists(first.quarantine_path)
    _, again = llava_zh.load_dataset(str(root), on_bad_sample="quarantine", return_report=True)
    assert again.to_dict() == first.to_dict()  # from the cache, same counts


def test_counts_add_up_with_many_bad_records(tmp_path):
    recs = [record(i, "complex_reasoning", image=False) for i in range(50)]
    for i in range(0, 50, 7):
        recs[i]["conversations"][0]["from"] = "gpt"
    write_annotations(tmp_path / "d", "complex_reasoning", recs, "jsonl")
    ds, report = llava_zh.load_dataset(str(tmp_path / "d"), on_bad_sample="skip", return_report=True)
    assert report.refused == {"role_order": 8} and len(ds) == 42 and report.balanced


# --- sources, caching, options -------------------------------------------------------------------

def test_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path, monkeypatch):
    root, by_task, _ = make_dataset(tmp_path, "jsonl", "folder")
    calls = []
    original = prepare.generate_tables

    def counting(*args, **kwargs):
        calls.append(1)
        yield from original(*args, **kwargs)

    monkeypatch.setattr("llava_zh.builder.llava_instruct_zh.generate_tables", counting)
    first = llava_zh.load_dataset(str(root))
    second = llava_zh.load_dataset(str(root))
    assert len(calls) == 1 and first.cache_files == second.cache_files
    path = root / "conversation.jsonl"
    recs = by_task["conversation"][:1]
    path.write_text(json.dumps(recs[0], ensure_ascii=False) + "\n", encoding="utf-8")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10_000_000))
    third = llava_zh.load_dataset(str(root))
    assert len(calls) == 2 and len(third) == len(first) - 1


def test_split_names_in_file_names(tmp_path):
    write_annotations(tmp_path / "d", "train", [record(i, "complex_reasoning", image=False) for i in range(3)], "jsonl")
    write_annotations(tmp_path / "d", "test", [record(i + 10, "complex_reasoning", image=False) for i in range(2)], "jsonl")
    dd = llava_zh.load_dataset(str(tmp_path / "d"), split=None)
    assert isinstance(dd, datasets.DatasetDict) and {k: len(v) for k, v in dd.items()} == {"train": 3, "test": 2}
    assert len(llava_zh.load_dataset(str(tmp_path / "d"), split="test")) == 2


def test_text_only_language_and_source_name(tmp_path):
    root, _, _ = make_dataset(tmp_path, "json", "folder")
    ds = llava_zh.load_dataset(str(root), text_only=True, language="en", source_name="llava-instruct-150k")
    assert set(ds["language"]) == {"en"} and set(ds["source"]) == {"llava-instruct-150k"}
    assert all(img is None for img in ds["image"])
    assert not any("<image>" in t["value"] for conv in ds["conversations"] for t in conv)


def test_extra_image_container_and_single_file_source(tmp_path):
    recs = [record(i, "detail_description") for i in range(3)]
    ann = write_annotations(tmp_path / "ann", "detail_23k", recs, "json")
    coco = write_images(tmp_path / "coco", {r["image"]: jpeg_bytes() for r in recs}, "zip", prefix="train2017/")
    ds = llava_zh.load_dataset(str(ann), images=str(coco))
    assert ds["id"] == [r["id"] for r in recs] and ds[0]["image"].size == (32, 24)


def test_num_proc_gives_the_same_data(tmp_path):
    root, _, _ = make_dataset(tmp_path, "jsonl", "folder", n_per_task=4)
    one = llava_zh.load_dataset(str(root), cache_dir=str(tmp_path / "c1"))
    two = llava_zh.load_dataset(str(root), cache_dir=str(tmp_path / "c2"), num_proc=2)
    assert sorted(_as_rows(one).items()) == sorted(_as_rows(two).items())


def test_meta_json_files_are_ignored_and_reported(tmp_path):
    root, _, _ = make_dataset(tmp_path, "jsonl", "folder")
    (root / "dataset_meta.json").write_text('{\n  "root": "images"\n}\n')
    ds, report = llava_zh.load_dataset(str(root), return_report=True)
    assert len(ds) == 6 and report.ignored_files == [str(root / "dataset_meta.json")]


def test_hub_id_resolves_from_the_hub_cache_offline(tmp_path, isolated_hf_cache):
    import huggingface_hub.constants as c

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = os.path.join(c.HF_HUB_CACHE, "datasets--opencsg--llava-instruct-zh-600k")
    snap = os.path.join(repo, "snapshots", commit)
    src, by_task, images = make_dataset(tmp_path, "jsonl", "zip")
    shutil.copytree(src, snap)
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(commit)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    ds = llava_zh.load_dataset("opencsg/llava-instruct-zh-600k", config="conversation")
    assert sorted(ds["id"]) == sorted(r["id"] for r in by_task["conversation"])


def test_modelscope_without_the_package_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_modelscope(name, *args, **kwargs):
        if name == "modelscope" or name.startswith("modelscope."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_modelscope)
    with pytest.raises(SourceError, match=r"llava-zh\[modelscope\]"):
        llava_zh.load_dataset("modelscope://opencsg/llava-instruct-zh-600k")


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        llava_zh.load_dataset(str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="no annotation files"):
        llava_zh.load_dataset(str(tmp_path))
    root, _, _ = make_dataset(tmp_path, "jsonl", "folder")
    with pytest.raises(ValueError, match="config"):
        llava_zh.load_dataset(str(root), config="chat")
    with pytest.raises(ValueError, match="on_bad_sample"):
        llava_zh.load_dataset(str(root), on_bad_sample="ignore")


def test_validate_reports_without_keeping_a_copy(tmp_path, monkeypatch):
    root = _bad_case(tmp_path, "missing_image", monkeypatch)
    report = llava_zh.validate(str(root), quarantine_path=tmp_path / "q.jsonl")
    assert not report.ok and report.refused == {"missing_image": 1} and report.read == 3
    assert report.examples == {"missing_image": ["conversation-0009"]}
    assert (tmp_path / "q.jsonl").exists()


def _prepared_tables(tmp_path, root, container, **options):
    files = sorted(str(p) for p in root.iterdir() if p.suffix == ".jsonl")
    archive = next(p for p in root.iterdir() if p.name.startswith("images"))
    return prepare.generate_tables(list(enumerate(files)), "train", prepare.PrepareOptions(**options), [str(archive)],
                                   str(tmp_path / "index"), str(tmp_path / "reports"))


@pytest.mark.parametrize("container", ["zip", "tar"])
def test_tables_kept_by_the_caller_keep_their_image_bytes(tmp_path, container):
    """Tables come from a reading thread that reuses its buffers; holding every table (as streaming users
    and Dataset.from_generator do) must never let a later batch overwrite an earlier one."""
    root, by_task, images = make_dataset(tmp_path, "jsonl", container, n_per_task=10)
    tables = [table for _, table in _prepared_tables(tmp_path, root, container, batch_size=3)]
    assert len(tables) >= 10  # more tables than the reading thread keeps buffers
    got = {row["id"]: row["image"]["bytes"] for t in tables for row in t.to_pylist()}
    assert got == {r["id"]: images[r["image"]] for recs in by_task.values() for r in recs}


def test_stopping_early_stops_the_reading_thread(tmp_path):
    import threading
    import time

    root, _, _ = make_dataset(tmp_path, "jsonl", "zip", n_per_task=10)
    tables = _prepared_tables(tmp_path, root, "zip", batch_size=2)
    next(tables)
    tables.close()
    deadline = time.monotonic() + 5
    while any(t.name == "llava-zh-prefetch" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "llava-zh-prefetch" for t in threading.enumerate())


def test_an_image_the_archive_lists_but_cannot_give_is_quarantined_with_the_reason(tmp_path):
    root, by_task, images = make_dataset(tmp_path, "jsonl", "zip", n_per_task=2)
    archive = root / "images.zip"
    raw = bytearray(archive.read_bytes())
    at = raw.find(b"PK\x03\x04", 1)  # the second member's local header
    raw[at:at + 4] = b"XXXX"
    archive.write_bytes(bytes(raw))
    quarantine = tmp_path / "bad.jsonl"
    ds = llava_zh.load_dataset(str(root), cache_dir=str(tmp_path / "c"), on_bad_sample="quarantine",
                               quarantine_path=str(quarantine))
    lines = [json.loads(line) for line in quarantine.read_text(encoding="utf-8").splitlines()]
    assert len(ds) == 5 and len(lines) == 1
    assert lines[0]["rule"] == "missing_image" and "could not be read" in lines[0]["message"]


@pytest.mark.parametrize("container,rows", [("zip", 100), ("folder", 1000)])
def test_record_batches_hold_100_rows_of_archived_images_and_1000_otherwise(tmp_path, container, rows):
    import pyarrow as pa

    from factories import image_bytes_for

    recs = [record(i, "complex_reasoning") for i in range(1200)]  # one file: one table per 1,000 rows
    root = tmp_path / "ds"
    write_annotations(root, "complex_reasoning", recs, "jsonl")
    write_images(root, image_bytes_for(recs), container)
    ds = llava_zh.load_dataset(str(root), cache_dir=str(tmp_path / "c"))
    with pa.memory_map(ds.cache_files[0]["filename"]) as source:
        sizes = [b.num_rows for b in pa.ipc.open_stream(source)]
    assert sum(sizes) == 1200 and max(sizes) == rows


def test_num_proc_workers_each_work_in_one_thread(tmp_path, monkeypatch):
    """With several processes, each prepares in its own thread: no reading or table thread (``prefetch``
    is never called) and one Arrow thread; the data is that of one process."""
    import pyarrow as pa

    from llava_zh.builder import llava_instruct_zh

    root, _, _ = make_dataset(tmp_path, "jsonl", "zip", n_per_task=4)
    one = llava_zh.load_dataset(str(root), cache_dir=str(tmp_path / "c1"))
    seen = tmp_path / "seen"
    seen.mkdir()
    real = llava_instruct_zh.generate_tables

    def spy(*args, **kwargs):  # runs in the worker processes (forked: they inherit this patch)
        (seen / f"{os.getpid()}-{time.monotonic_ns()}").write_text(f"{kwargs['threads']} {pa.cpu_count()}")
        yield from real(*args, **kwargs)

    def no_threads(*args, **kwargs):
        raise AssertionError("a worker of a parallel preparation started a prefetch thread")

    monkeypatch.setattr(llava_instruct_zh, "generate_tables", spy)
    monkeypatch.setattr(prepare, "prefetch", no_threads)
    two = llava_zh.load_dataset(str(root), cache_dir=str(tmp_path / "c2"), num_proc=2)
    calls = [p.read_text() for p in seen.iterdir()]
    assert len(calls) == 2 and set(calls) == {"False 1"}
    assert len({p.name.split("-")[0] for p in seen.iterdir()} - {str(os.getpid())}) == 2  # in two other processes
    assert sorted(_as_rows(one).items()) == sorted(_as_rows(two).items())


def test_arrow_threads_puts_the_pool_size_back():
    import pyarrow as pa

    from llava_zh.prepare import arrow_threads

    before = pa.cpu_count()
    with arrow_threads(True):
        assert pa.cpu_count() == before
    with pytest.raises(RuntimeError):
        with arrow_threads(False):
            assert pa.cpu_count() == 1
            raise RuntimeError("boom")
    assert pa.cpu_count() == before


def test_num_proc_refuses_and_quarantines_like_one_process(tmp_path):
    """Bad records in several files: with two worker processes (each in one thread) the quarantine file,
    the counts and the raised error are those of one process."""
    root = tmp_path / "d"
    for task in ("conversation", "complex_reasoning", "detail_description"):
        recs = [record(i, task, image=False) for i in range(12)]
        for i in (0, 5, 11):
            recs[i]["conversations"][0]["from"] = "gpt"
        write_annotations(root, task, recs, "jsonl")
    out = {}
    for n in (None, 2):
        target = tmp_path / f"q{n}" / "bad.jsonl"
        ds, report = llava_zh.load_dataset(str(root), cache_dir=str(tmp_path / f"c{n}"), num_proc=n,
                                           on_bad_sample="quarantine", quarantine_path=target, return_report=True)
        lines = sorted((q["file"], q["line"], q["rule"]) for q in map(json.loads, target.read_text(encoding="utf-8").splitlines()))
        out[n] = (sorted(ds["id"]), report.refused, report.read, lines)
        assert report.balanced and len(ds) == 27
    assert out[None] == out[2] and len(out[2][3]) == 9
    with pytest.raises(BadSampleError) as info:
        llava_zh.load_dataset(str(root), cache_dir=str(tmp_path / "raise"), num_proc=2)
    err = info.value  # the bad sample itself, as with one process (not datasets' wrapper, whose cause is lost)
    assert (err.rule, err.line, err.index) == ("role_order", 1, 0) and err.sample_id.endswith("-0000")
    assert os.path.basename(err.file) in {"conversation.jsonl", "complex_reasoning.jsonl", "detail_description.jsonl"}


def test_bad_sample_in_follows_causes_and_contexts():
    from llava_zh.errors import bad_sample_in

    bad = BadSampleError("a.jsonl", 3, 2, "x1", "role_order", "expected gpt, got human")
    try:
        try:
            try:
                raise bad
            except BadSampleError:
                raise KeyError("while handling it")  # a context, not a cause
        except KeyError as e:
            raise datasets.exceptions.DatasetGenerationError("wrapped") from e
    except datasets.exceptions.DatasetGenerationError as wrapped:
        assert bad_sample_in(wrapped) is bad
    loop = RuntimeError("a")
    loop.__context__ = RuntimeError("b")
    loop.__context__.__context__ = loop
    assert bad_sample_in(loop) is None and bad_sample_in(ValueError("plain")) is None


def test_num_proc_on_a_single_file_keeps_the_threads(tmp_path, monkeypatch):
    """datasets prepares a split of one file in one process whatever num_proc says: that process keeps
    its reading and table threads."""
    from llava_zh.builder import llava_instruct_zh

    recs = [record(i, "conversation") for i in range(4)]
    ann = write_annotations(tmp_path / "d", "conversation", recs, "jsonl")
    write_images(tmp_path / "d", {r["image"]: jpeg_bytes() for r in recs}, "zip")
    calls = []
    real = llava_instruct_zh.generate_tables

    def spy(*args, **kwargs):
        calls.append(kwargs["threads"])
        yield from real(*args, **kwargs)

    monkeypatch.setattr(llava_instruct_zh, "generate_tables", spy)
    ds = llava_zh.load_dataset(str(ann.parent), cache_dir=str(tmp_path / "c"), num_proc=2)
    assert calls == [True] and sorted(ds["id"]) == sorted(r["id"] for r in recs)
