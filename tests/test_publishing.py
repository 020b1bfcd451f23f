"""Publishing: Hub layout round trip, shard sizes, the card, resuming after a crash, and the exact uploads."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import os
import sys

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard, HfApi
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.hf_api import RepoFile
from factories import make_dataset
from PIL import Image

import llava_zh.publishing as P
from llava_zh.card import TASK_TITLES, CardError, check_card, size_category
from llava_zh.regenerate.prompts import PROMPTS
from llava_zh.schema import FEATURES, TASKS

TOKEN = "hf_test_SECRET_token_0123456789"


# ------------------------------------------------------------------------------------------------ factories


def noisy_jpeg(seed: int, width: int = 40, height: int = 30) -> bytes:
    """A real JPEG whose size grows with its area (noise does not compress), distinct per seed."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def sample_rows(n_per_task: int = 4, tasks=TASKS, offset: int = 0, interleave: bool = False) -> list[dict]:
    rows = []
    for t_index, task in enumerate(tasks):
        for i in range(n_per_task):
            k = offset + t_index * 100 + i
            rounds = 5 if task == "conversation" else 1
            conv = []
            for r in range(rounds):
                conv.append({"from": "human", "value": ("<image>\n" if r == 0 else "") + f"问题{r}:图{k}里有什么?"})
                conv.append({"from": "gpt", "value": f"回答{r}:图{k}里有{i + 1}只猫。" * (1 + i % 3)})
            rows.append(
                {
                    "id": f"{task}-{k:05d}",
                    "task": task,
                    "language": "zh",
                    "source": "llava-instruct-zh-600k",
                    "image": {"bytes": noisy_jpeg(k, 40 + 4 * (i % 4), 30 + 2 * (i % 3)), "path": f"{task}-{k}.jpg"},
                    "conversations": conv,
                }
            )
    if interleave:
        rows = [rows[j] for j in np.random.default_rng(0).permutation(len(rows))]
    return rows


def make_ds(rows) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows, features=FEATURES)


def load_rows(path, config, split, streaming=False) -> list[dict]:
    """Rows read back with plain ``datasets.load_dataset``, image as raw bytes."""
    ds = datasets.load_dataset(str(path), config, split=split, streaming=streaming)
    return plain(ds.cast_column("image", datasets.Image(decode=False)))


def plain(rows) -> list[dict]:
    """The fields a round trip must keep: id, task, conversations and the image's encoded bytes."""
    return [
        {"id": r["id"], "task": r["task"], "conversations": r["conversations"], "image": r["image"]["bytes"]}
        for r in rows
    ]


def expected_rows(rows, task=None) -> list[dict]:
    """What a config reads back: the union reads the task folders in TASKS order, input order within a task."""
    if task is None:
        return plain([r for t in TASKS for r in rows if r["task"] == t])
    return plain([r for r in rows if r["task"] == task])


def stat_of(path):
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A DatasetDict with two splits published once in several shards per split; shared by read-only tests."""
    train, validation = sample_rows(5), sample_rows(2, offset=50)
    dd = datasets.DatasetDict({"train": make_ds(train), "validation": make_ds(validation)})
    out = tmp_path_factory.mktemp("hub") / "copy"
    result = P.publish(dd, "me/llava-zh-test", local_dir=out, max_shard_size="12KB")
    return {"train": train, "validation": validation, "out": out, "result": result, "dd": dd}


# ---------------------------------------------------------------------------------------------- round trip


def test_layout_has_task_configs_and_union(published):
    result, out = published["result"], published["out"]
    assert list(result.configs) == ["all", *TASKS]
    assert result.configs["all"] == {"train": 15, "validation": 6}
    assert all(result.configs[t] == {"train": 5, "validation": 2} for t in TASKS)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(result.files + [P.MANIFEST_NAME])
    assert not any(f.startswith("data/all/") for f in files)  # the union stores nothing of its own
    for f in result.files[1:]:
        config, name = f.split("/")[1:]
        split, index, _, count = name[: -len(".parquet")].split("-")
        assert config in TASKS and split in ("train", "validation") and int(index) < int(count)


@pytest.mark.parametrize("config", ["all", *TASKS])
@pytest.mark.parametrize("streaming", [False, True])
def test_round_trip_every_config(published, config, streaming):
    task = None if config == "all" else config
    for split in ("train", "validation"):
        got = load_rows(published["out"], config, split, streaming=streaming)
        assert got == expected_rows(published[split], task)


def test_image_bytes_are_the_original_bytes_not_reencoded(published):
    original = {r["id"]: hashlib.sha256(r["image"]["bytes"]).hexdigest() for r in published["train"]}
    got = {r["id"]: hashlib.sha256(r["image"]).hexdigest() for r in load_rows(published["out"], "all", "train")}
    assert got == original
    # and the default features decode them to the same pixels
    ds = datasets.load_dataset(str(published["out"]), "conversation", split="train")
    img = ds[0]["image"]
    assert (
        isinstance(img, Image.Image)
        and img.size == Image.open(io.BytesIO(published["train"][0]["image"]["bytes"])).size
    )


def test_decoding_input_and_path_only_images(tmp_path):
    rows = sample_rows(2, tasks=("complex_reasoning",))
    # decode=False input publishes the same bytes
    ds = make_ds(rows).cast_column("image", datasets.Image(decode=False))
    P.publish(ds, "me/x", local_dir=tmp_path / "a")
    assert load_rows(tmp_path / "a", "complex_reasoning", "train") == expected_rows(rows, "complex_reasoning")
    assert datasets.load_dataset(str(tmp_path / "a"), "all", split="train").features["image"].decode is True
    # rows whose image is only a local path get the file's bytes embedded
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    path_rows = []
    for r in rows:
        p = img_dir / r["image"]["path"]
        p.write_bytes(r["image"]["bytes"])
        path_rows.append({**r, "image": {"bytes": None, "path": str(p)}})
    P.publish(make_ds(path_rows), "me/x", local_dir=tmp_path / "b")
    back = datasets.load_dataset(str(tmp_path / "b"), "all", split="train").cast_column(
        "image", datasets.Image(decode=False)
    )
    assert [r["image"]["bytes"] for r in back] == [r["image"]["bytes"] for r in rows]
    assert [r["image"]["path"] for r in back] == [r["image"]["path"] for r in rows]  # basename, not the local path
    # a path that is not there is refused before anything is written, naming the sample
    broken = [dict(path_rows[0], image={"bytes": None, "path": str(img_dir / "gone.jpg")})] + path_rows[1:]
    with pytest.raises(P.PublishError, match=r"sample 'complex_reasoning-00000'.*gone\.jpg"):
        P.publish(make_ds(broken), "me/x", local_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_interleaved_tasks_and_dict_input(tmp_path):
    rows = sample_rows(3, interleave=True)
    result = P.publish(make_ds(rows), "me/x", local_dir=tmp_path / "a")
    assert load_rows(tmp_path / "a", "all", "train") == expected_rows(rows)
    assert "| 日常对话 (conversation) | 3 | 3 | 5.00 |" in result.card.text  # counted through the indices mapping
    for task in TASKS:
        assert load_rows(tmp_path / "a", task, "train") == expected_rows(rows, task)
    # a dict is published as given: one stored config per key, no union
    mine, other = make_ds(rows[:4]), datasets.DatasetDict({"train": make_ds(rows[4:7]), "test": make_ds(rows[7:])})
    result = P.publish({"mine": mine, "other": other}, "me/y", local_dir=tmp_path / "b", default_config="other")
    assert result.configs == {"mine": {"train": 4}, "other": {"train": 3, "test": 2}}
    got = [r["id"] for r in datasets.load_dataset(str(tmp_path / "b"), "other", split="test")]
    assert got == [r["id"] for r in rows[7:]]
    configs = yaml.safe_load((tmp_path / "b" / "README.md").read_text().split("---")[1])["configs"]
    assert [c["config_name"] for c in configs if c.get("default")] == ["other"]


def test_shuffled_multi_chunk_dataset(tmp_path):
    """An indices mapping over a table of several chunks (concatenate + shuffle), gathered per chunk."""
    first, second = sample_rows(3), sample_rows(3, offset=10)
    ds = datasets.concatenate_datasets([make_ds(first), make_ds(second)]).shuffle(seed=1)
    assert ds.data.table.column("image").num_chunks == 2 and ds._indices is not None
    order = [r["id"] for r in ds]
    P.publish(ds, "me/x", local_dir=tmp_path, max_shard_size="12KB")
    by_id = {r["id"]: r for r in first + second}
    for task in TASKS:
        assert load_rows(tmp_path, task, "train") == plain([by_id[i] for i in order if by_id[i]["task"] == task])


def test_gather_follows_any_order_across_chunks():
    import pyarrow as pa

    table = pa.concat_tables(
        [pa.table({"x": list(range(i, i + 4)), "s": [str(v) for v in range(i, i + 4)]}) for i in (0, 4, 8)]
    )
    idx = np.array([11, 0, 5, 4, 4, 9, 1])
    got = P.gather(table, idx)
    assert got["x"].to_pylist() == idx.tolist() and got["s"].to_pylist() == [str(v) for v in idx]
    assert got.num_rows == len(idx) and P.gather(table, np.array([], dtype=np.int64)).num_rows == 0


def test_split_without_some_task_and_by_task_false(tmp_path):
    train, val = sample_rows(2), sample_rows(1, tasks=("conversation",), offset=50)
    dd = datasets.DatasetDict({"train": make_ds(train), "validation": make_ds(val)})
    result = P.publish(dd, "me/x", local_dir=tmp_path / "a")
    assert result.configs["complex_reasoning"] == {"train": 2}
    assert result.configs["all"] == {"train": 6, "validation": 1}
    assert load_rows(tmp_path / "a", "all", "validation") == expected_rows(val)
    whole = P.publish(dd, "me/x", local_dir=tmp_path / "b", by_task=False)
    assert whole.configs == {"all": {"train": 6, "validation": 1}}
    assert load_rows(tmp_path / "b", "all", "train") == plain(train)  # stored as given, in input order
    assert "| 日常对话 (conversation) | 2 | 1 | 3 | 5.00 |" in whole.card.text  # tasks still counted in the card


def test_without_task_column_one_config(tmp_path):
    rows = sample_rows(2, tasks=("conversation",))
    ds = make_ds(rows).remove_columns(["task"])
    result = P.publish(ds, "me/x", local_dir=tmp_path)
    assert list(result.configs) == ["all"]
    got = datasets.load_dataset(str(tmp_path), split="train")  # the default config
    assert got["id"] == [r["id"] for r in rows]


def test_text_only_data_and_region_language_codes(tmp_path):
    rows = sample_rows(2, tasks=("conversation", "complex_reasoning"))
    rows[0]["language"] = "zh-CN"
    rows[1]["language"] = "en"
    ds = make_ds(rows).remove_columns(["image"])
    result = P.publish(ds, "me/text", local_dir=tmp_path)
    data = result.card.data.to_dict()
    assert data["language"] == ["en", "zh"] and data["task_categories"] == ["text-generation"]
    assert "Languages: `en` (1), `zh` (2), `zh-CN` (1)." in result.card.text
    back = datasets.load_dataset(str(tmp_path), "complex_reasoning", split="train")
    assert "image" not in back.column_names and back["id"] == [r["id"] for r in rows[2:]]


def test_bad_inputs_are_refused(tmp_path):
    ds = make_ds(sample_rows(1))
    with pytest.raises(TypeError, match="without streaming"):
        P.publish(ds.to_iterable_dataset(), "me/x", local_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="config name"):
        P.publish({"bad/name": ds}, "me/x", local_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="owner/name"):
        P.publish(ds, "a/b/c", local_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="default_config"):
        P.publish(ds, "me/x", local_dir=tmp_path / "d", default_config="nope")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------- shard sizes


def test_row_sizes_match_arrow():
    ds = make_ds(sample_rows(2))
    sizes, embed = P.row_nbytes(ds)
    assert not embed and len(sizes) == len(ds)
    table = ds.data.table
    assert abs(int(sizes.sum()) - table.nbytes) <= table.num_columns * 64 + len(ds)  # validity bitmaps aside
    # the per-row sizes follow the row order of a dataset with an indices mapping
    shuffled = ds.select([5, 0, 3])
    assert P.row_nbytes(shuffled)[0].tolist() == [sizes[5], sizes[0], sizes[3]]


@pytest.mark.parametrize("max_size", ["9KB", "20KB", "64KB"])
def test_shard_sizes_respected(tmp_path, max_size):
    from datasets.utils.py_utils import convert_file_size_to_int

    rows = sample_rows(6)
    result = P.publish(make_ds(rows), "me/x", local_dir=tmp_path, max_shard_size=max_size)
    limit = convert_file_size_to_int(max_size)
    shards = [tmp_path / f for f in result.files if f.endswith(".parquet")]
    assert all(os.path.getsize(f) <= limit for f in shards), [os.path.getsize(f) for f in shards]
    per_task = {t: [f for f in shards if f"/{t}/" in f.as_posix()] for t in TASKS}
    if max_size == "9KB":
        assert all(len(files) >= 3 for files in per_task.values())  # a small limit forces several shards
    for task, files in per_task.items():
        counts = {f.name.split("-of-")[1] for f in files}
        assert counts == {f"{len(files):05d}.parquet"}
        assert sum(pq.read_metadata(f).num_rows for f in files) == 6
    assert load_rows(tmp_path, "all", "train") == expected_rows(rows)


def test_plan_shards_cuts_within_budget():
    sizes = np.array([10_000, 20_000, 30_000, 500_000, 5_000, 5_000, 5_000], dtype=np.int64)
    shards = P.plan_shards("c", "train", sizes, max_shard_bytes=100_000, row_group_bytes=12_000, overhead=2_000)
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 4), (4, 7)]  # the 500 KB row stands alone
    assert shards[1].est_bytes == 500_000
    assert all(s.count == 3 for s in shards) and shards[2].path == "data/c/train-00002-of-00003.parquet"
    assert shards[0].row_groups == ((0, 1), (1, 2), (2, 3)) and shards[2].row_groups == ((4, 6), (6, 7))


# ------------------------------------------------------------------------------------------------------ card


def test_card_counts_equal_the_data(published):
    out, dd = published["out"], published["dd"]
    text = (out / "README.md").read_text(encoding="utf-8")
    card = DatasetCard(text)
    data = card.data.to_dict()
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    for config in ["all", *TASKS]:
        for split_info in infos[config]["splits"]:
            ds = dd[split_info["name"]]
            want = len(ds) if config == "all" else sum(t == config for t in ds["task"])
            assert split_info["num_examples"] == want
            assert split_info["num_bytes"] > 0
    assert infos["all"]["download_size"] == sum(infos[t]["download_size"] for t in TASKS)
    assert data["size_categories"] == [size_category(21)] == ["n<1K"]
    assert data["license"] == "apache-2.0" and data["language"] == ["zh"]
    assert set(data["task_categories"]) == {"visual-question-answering", "image-text-to-text"}
    # the table of samples per task in the body shows the real counts
    train, val = dd["train"]["task"], dd["validation"]["task"]
    for task in TASKS:
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {TASK_TITLES[task]} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]  # task | train | validation | with image | rounds
        n = train.count(task) + val.count(task)
        assert cells[1:4] == [str(train.count(task)), str(val.count(task)), str(n)]
        assert float(cells[4]) == (5.0 if task == "conversation" else 1.0)
    assert "| **total** | 15 | 6 | 21 |" in card.text
    # the three generation prompts, byte for byte, usage for datasets and llava_zh, and the citation
    for task in TASKS:
        assert PROMPTS[(task, "zh")].text in card.text
    assert 'load_dataset("me/llava-zh-test", "all", split="train")' in card.text
    assert "llava_zh.load_dataset(" in card.text and "@inproceedings{liu2023llava" in card.text


def test_card_validates_and_round_trips_yaml(published):
    out = published["out"]
    text = (out / "README.md").read_text(encoding="utf-8")
    check_card(text, str(out))
    card = DatasetCard(text)
    assert yaml.safe_load(card.data.to_yaml()) == card.data.to_dict()
    assert DatasetCard(str(card)).data.to_dict() == card.data.to_dict()
    configs = {c["config_name"]: c for c in card.data.to_dict()["configs"]}
    assert configs["all"]["default"] is True and sum(bool(c.get("default")) for c in configs.values()) == 1
    assert configs["all"]["data_files"][0]["path"] == [f"data/{t}/train-*.parquet" for t in TASKS]
    # datasets' own reader of the metadata agrees
    from datasets.info import DatasetInfosDict

    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    assert infos["conversation"].features == P.publish_features(published["dd"]["train"].features)
    assert infos["all"].splits["validation"].num_examples == 6


def test_check_card_catches_mismatches(published):
    out = published["out"]
    text = (out / "README.md").read_text(encoding="utf-8")
    wrong_count = text.replace("num_examples: 15", "num_examples: 16", 1)
    with pytest.raises(CardError, match="dataset_info says 16 rows, files hold 15"):
        check_card(wrong_count, str(out))
    with pytest.raises(CardError, match="size_categories"):
        check_card(text.replace("- n<1K", "- tiny", 1))
    with pytest.raises(CardError, match="lacks 'license'"):
        check_card(text.replace("license: apache-2.0\n", "", 1))
    data = DatasetCard(text).data.to_dict()
    next(c for c in data["configs"] if c["config_name"] == "conversation")["default"] = True
    with pytest.raises(CardError, match="exactly one config"):
        check_card("---\n" + yaml.safe_dump(data, allow_unicode=True) + "---\n# body\n")


# ----------------------------------------------------------------------------------------- atomic + resume


def test_interrupted_publish_resumes_and_skips_complete_shards(tmp_path, monkeypatch):
    rows = sample_rows(6)
    ds = make_ds(rows)
    out = tmp_path / "copy"
    # small row groups so the crash lands in the middle of a file
    monkeypatch.setattr(datasets.config, "MAX_ROW_GROUP_SIZE", "4KB")
    real_write_table = pq.ParquetWriter.write_table
    calls = {"n": 0, "partial_at_crash": None}

    def crashing_write_table(self, table, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            calls["partial_at_crash"] = [(p.name, p.stat().st_size) for p in out.rglob("*" + P.PARTIAL_SUFFIX)]
            raise RuntimeError("simulated crash while writing")
        return real_write_table(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", crashing_write_table)
    with pytest.raises(RuntimeError, match="simulated crash"):
        P.publish(ds, "me/x", local_dir=out, max_shard_size="16KB")
    monkeypatch.setattr(pq.ParquetWriter, "write_table", real_write_table)
    ((name, _),) = calls["partial_at_crash"]  # the crash hit a file being written under its hidden name
    assert name.startswith(".") and name.endswith(".parquet" + P.PARTIAL_SUFFIX)

    manifest = json.loads((out / P.MANIFEST_NAME).read_text())
    done = sorted(manifest["shards"])
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert done and on_disk == done  # only complete shards carry a final name, all of them in the manifest
    assert not list(out.rglob("*" + P.PARTIAL_SUFFIX))  # the crashed shard's partial file was removed
    assert not (out / "README.md").exists()
    for f in done:  # every complete shard is a whole parquet file with the rows the manifest says
        assert pq.read_metadata(out / f).num_rows == manifest["shards"][f]["num_rows"]
    before = {f: stat_of(out / f) for f in done}
    # a kill -9 would leave the partial file behind: the next run must not take it for a shard
    crashed = out / "data" / "conversation" / ".train-00009-of-00009.parquet.partial"
    crashed.parent.mkdir(parents=True, exist_ok=True)
    crashed.write_bytes(b"PAR1 half a file")

    result = P.publish(ds, "me/x", local_dir=out, max_shard_size="16KB")
    assert sorted(result.skipped) == done
    assert {f: stat_of(out / f) for f in done} == before  # untouched: same inode, mtime, size
    assert result.written and not set(result.written) & set(done)
    assert crashed.as_posix().split("/copy/")[1] in result.removed and not crashed.exists()
    assert load_rows(out, "all", "train") == expected_rows(rows)
    check_card((out / "README.md").read_text(), str(out))

    again = P.publish(ds, "me/x", local_dir=out, max_shard_size="16KB")
    assert again.written == [] and sorted(again.skipped) == sorted(f for f in again.files if f.endswith(".parquet"))


def test_damaged_or_stale_shards_are_rewritten(tmp_path):
    rows = sample_rows(4)
    out = tmp_path / "copy"
    first = P.publish(make_ds(rows), "me/x", local_dir=out, max_shard_size="12KB")
    victim = out / next(f for f in first.files if f.endswith(".parquet"))
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) - 10)
    second = P.publish(make_ds(rows), "me/x", local_dir=out, max_shard_size="12KB")
    assert second.written == [victim.relative_to(out).as_posix()]
    # same size, different bytes (and mtime): found by the checksum
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    third = P.publish(make_ds(rows), "me/x", local_dir=out, max_shard_size="12KB", verify=True)
    assert third.written == [victim.relative_to(out).as_posix()]
    # a new shard plan replaces the old files instead of mixing them into the globs
    fourth = P.publish(make_ds(rows), "me/x", local_dir=out, max_shard_size="1MB")
    assert set(fourth.removed) == {f for f in first.files if f.endswith(".parquet")}
    assert sorted(p.name for p in out.rglob("*.parquet")) == ["train-00000-of-00001.parquet"] * 3
    # changed data is written anew
    changed = [
        dict(r, conversations=[{"from": "human", "value": "<image>\n新问题"}, {"from": "gpt", "value": "新回答"}])
        for r in rows
    ]
    fifth = P.publish(make_ds(changed), "me/x", local_dir=out, max_shard_size="1MB")
    assert len(fifth.written) == 3 and load_rows(out, "all", "train") == expected_rows(changed)


# ---------------------------------------------------------------------------------------------------- push


class RecordingHfApi(HfApi):
    """A real ``HfApi`` whose network methods are replaced by a dict standing for the remote repo.

    Subclassing (instead of a stand-in object) keeps everything else real: the ``CommitOperationAdd``
    objects are built and hashed by huggingface_hub exactly as for a real push, and a signature mismatch
    with the library's methods shows up here.
    """

    def __init__(self, fail_on_commit: int | None = None, remote: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.remote: dict[str, str] = dict(remote or {})  # path -> sha256
        self.calls: list[tuple] = []
        self.commits: list[dict] = []
        self.fail_on_commit = fail_on_commit

    def create_repo(self, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
        return f"https://huggingface.co/datasets/{repo_id}"

    def list_repo_tree(
        self, repo_id, path_in_repo=None, *, recursive=False, expand=False, revision=None, repo_type=None, token=None
    ):
        self.calls.append(("list_repo_tree", repo_id, path_in_repo, recursive, repo_type))
        under = [p for p in self.remote if p.startswith(f"{path_in_repo}/")]
        if not under:
            raise EntryNotFoundError(f"{path_in_repo} does not exist")
        return [
            RepoFile(path=p, size=1, oid="0" * 40, lfs={"size": 1, "oid": self.remote[p], "pointerSize": 134})
            for p in under
        ]

    def create_commit(
        self,
        repo_id,
        operations,
        *,
        commit_message,
        commit_description=None,
        token=None,
        repo_type=None,
        revision=None,
        **kwargs,
    ):
        if self.fail_on_commit is not None and len(self.commits) + 1 == self.fail_on_commit:
            raise ConnectionError("simulated network failure")
        ops = list(operations)
        record = {
            "repo_id": repo_id,
            "repo_type": repo_type,
            "revision": revision,
            "message": commit_message,
            "ops": [],
        }
        for op in ops:
            if isinstance(op, CommitOperationAdd):
                sha = op.upload_info.sha256.hex()
                record["ops"].append(("add", op.path_in_repo, op.path_or_fileobj, sha))
                self.remote[op.path_in_repo] = sha
            elif isinstance(op, CommitOperationDelete):
                record["ops"].append(("delete", op.path_in_repo))
                self.remote.pop(op.path_in_repo, None)
        self.commits.append(record)
        return None


def sha256_of(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_push_sends_exactly_the_layout(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    rows = sample_rows(3)
    out = tmp_path / "copy"
    api = RecordingHfApi(remote={"data/old_task/train-00000-of-00001.parquet": "ab" * 32})
    result = P.publish(
        make_ds(rows),
        "me/llava-zh",
        local_dir=out,
        push=True,
        private=True,
        token=TOKEN,
        max_shard_size="12KB",
        api=api,
    )
    assert api.calls[0] == ("create_repo", "me/llava-zh", "dataset", True, True)
    parquet = sorted(f for f in result.files if f.endswith(".parquet"))
    data_commits, card_commit = api.commits[:-1], api.commits[-1]
    sent = [op for c in data_commits for op in c["ops"]]
    assert sorted(op[1] for op in sent) == parquet
    for _, path_in_repo, local, sha in sent:
        assert local == str(out / path_in_repo) and sha == sha256_of(out / path_in_repo)
    assert all(c["repo_type"] == "dataset" and c["repo_id"] == "me/llava-zh" for c in api.commits)
    assert card_commit["ops"] == [
        ("add", "README.md", str(out / "README.md"), sha256_of(out / "README.md")),
        ("delete", "data/old_task/train-00000-of-00001.parquet"),
    ]
    assert result.pushed == parquet + ["README.md"] and result.deleted_remote == [
        "data/old_task/train-00000-of-00001.parquet"
    ]
    manifest = json.loads((out / P.MANIFEST_NAME).read_text())
    assert all(manifest["shards"][p]["sha256"] == sha256_of(out / p) for p in parquet)
    assert P.MANIFEST_NAME not in api.remote and not any(p.endswith(P.PARTIAL_SUFFIX) for p in api.remote)
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text


def test_interrupted_push_resumes_with_missing_files_only(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "COMMIT_BATCH_FILES", 2)
    rows = sample_rows(3)
    out = tmp_path / "copy"
    api = RecordingHfApi(fail_on_commit=3)
    with pytest.raises(ConnectionError):
        P.publish(make_ds(rows), "me/x", local_dir=out, push=True, token=TOKEN, max_shard_size="12KB", api=api)
    first = [op[1] for c in api.commits for op in c["ops"]]
    assert len(api.commits) == 2 and len(first) == 4 and "README.md" not in first
    api.fail_on_commit = None
    api.commits.clear()
    result = P.publish(make_ds(rows), "me/x", local_dir=out, push=True, token=TOKEN, max_shard_size="12KB", api=api)
    assert result.written == []  # the local copy was complete
    second = [op[1] for c in api.commits for op in c["ops"]]
    parquet = sorted(f for f in result.files if f.endswith(".parquet"))
    assert sorted(set(first) | set(second) - {"README.md"}) == parquet
    assert not set(first) & set(second) and second[-1] == "README.md"
    assert api.remote == {p: sha256_of(out / p) for p in [*parquet, "README.md"]}


def test_push_without_token_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    out = tmp_path / "never"
    # a data argument that would blow up if it were touched: the token check comes first
    with pytest.raises(P.PublishError, match="needs a Hugging Face token") as err:
        P.publish(object(), "me/x", local_dir=out, push=True)
    assert "Nothing was written" in str(err.value)
    assert not out.exists()


def test_cli_push_without_token_fails_before_loading(tmp_path, monkeypatch, capsys):
    from llava_zh.cli import main

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    import llava_zh

    def must_not_load(*args, **kwargs):
        raise AssertionError("the source was read before the token check")

    monkeypatch.setattr(llava_zh, "load_dataset", must_not_load, raising=False)
    code = main(["publish", str(tmp_path / "src"), "--repo-id", "me/x", "--local-dir", str(tmp_path / "out"), "--push"])
    assert code == 2
    assert "needs a Hugging Face token" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_publish_a_local_source(tmp_path, capsys):
    """The whole path: a LLaVA folder on disk -> llava_zh.load_dataset -> publish -> plain datasets.load_dataset."""
    from llava_zh.cli import main

    root, by_task, images = make_dataset(tmp_path, "jsonl", "folder", n_per_task=2)
    out = tmp_path / "out"
    code = main(["publish", str(root), "--repo-id", "me/x", "--local-dir", str(out), "--max-shard-size", "8KB"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "all: train 6" in printed and str(out) in printed
    back = datasets.load_dataset(str(out), "all", split="train").cast_column("image", datasets.Image(decode=False))
    assert back["id"] == [r["id"] for t in TASKS for r in by_task[t]]
    assert [r["conversations"] for r in back] == [r["conversations"] for t in TASKS for r in by_task[t]]
    assert all(r["image"]["bytes"] == images[r["image"]["path"]] for r in back)
    # the card's llava_zh snippet: the published layout is itself a llava_zh source (the union adds no copies)
    import llava_zh

    again = llava_zh.load_dataset(str(out), config="conversation")
    assert again["id"] == [r["id"] for r in by_task["conversation"]]
    assert len(llava_zh.load_dataset(str(out))) == 6
    assert main(["publish", str(root), "--repo-id", "me/x", "--local-dir", str(out), "--max-shard-size", "8KB"]) == 0
    assert "0 written" in capsys.readouterr().out  # the re-run reuses every shard


# ----------------------------------------------------------------------------------------------- modelscope


def test_modelscope_needs_its_extra(tmp_path, monkeypatch):
    for name in ("modelscope", "modelscope.hub", "modelscope.hub.api"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "llava-zh\[modelscope\]"'):
        P.publish(make_ds(sample_rows(1)), "me/x", local_dir=tmp_path / "never", push=True, to="modelscope", token="t")
    assert not (tmp_path / "never").exists()


def test_modelscope_uploads_the_same_folder(tmp_path, monkeypatch):
    ms_api = pytest.importorskip("modelscope.hub.api")
    from modelscope_hub.api import HubApi as InnerHubApi

    class RecordingMsApi(ms_api.HubApi):
        """The real ModelScope HubApi with its two network calls recorded instead of sent."""

        def __init__(self):
            super().__init__()
            self.calls = []

        def create_repo(self, repo_id, **kwargs):
            inspect.signature(ms_api.HubApi.create_repo).bind(self, repo_id, **kwargs)
            self.calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, repo_id, folder_path=None, **kwargs):
            inner = {k: v for k, v in kwargs.items() if k != "token"}
            inspect.signature(InnerHubApi.upload_folder).bind(None, repo_id=repo_id, folder_path=folder_path, **inner)
            self.calls.append(("upload_folder", repo_id, folder_path, kwargs))

    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    with pytest.raises(P.PublishError, match="MODELSCOPE_API_TOKEN"):
        P.publish(make_ds(sample_rows(1)), "me/x", local_dir=tmp_path / "never", push=True, to="modelscope")
    api = RecordingMsApi()
    out = tmp_path / "copy"
    result = P.publish(
        make_ds(sample_rows(2)), "me/x", local_dir=out, push=True, to="modelscope", token="ms-token", api=api
    )
    (_, repo_id, create_kwargs), (_, _, folder, upload_kwargs) = api.calls
    assert repo_id == "me/x" and create_kwargs["repo_type"] == "dataset" and create_kwargs["exist_ok"] is True
    assert folder == str(out) and upload_kwargs["repo_type"] == "dataset"
    import fnmatch

    local = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    chosen = [
        p
        for p in local
        if any(fnmatch.fnmatch(p, a) for a in upload_kwargs["allow_patterns"])
        and not any(fnmatch.fnmatch(p, i) for i in upload_kwargs["ignore_patterns"])
    ]
    assert sorted(chosen) == sorted(result.files) == sorted(result.pushed)
