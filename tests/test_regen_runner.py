"""The runner end to end on CPU with a tiny random-weight Qwen2.5-VL: records, resuming, SIGKILL, shards,
dataset redo, JSON Lines, loading the output, the CLI and the public API."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import llava_zh
from llava_zh.checks import check_record
from llava_zh.regenerate.inputs import item_id, select_shard, image_items, shard_of
from llava_zh.regenerate.parsers import parse_reply
from llava_zh.regenerate.record import to_json_record
from llava_zh.regenerate.runner import regenerate
from llava_zh.regenerate.store import part_files, pending_files, read_ids
from llava_zh.schema import FEATURES, json_schema_validator

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    import torch

    from llava_zh.tiny_models import build_tiny_vlm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only add contention on a shared machine
    yield build_tiny_vlm("qwen2_5_vl", image_size=112)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny):
    from llava_zh.tiny_models import save_tiny_vlm

    return str(save_tiny_vlm(*tiny, tmp_path_factory.mktemp("model") / "tiny-qwen2.5-vl"))


def jpeg(seed: int, size: int = 56) -> bytes:
    from llava_zh.tiny_models import make_image

    buf = io.BytesIO()
    make_image(size, size, seed).save(buf, "JPEG")
    return buf.getvalue()


def make_image_folder(root: Path, n: int, *, broken: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sub = root / ("street" if i % 2 else "")
        sub.mkdir(exist_ok=True)
        (sub / f"img{i:02d}.jpg").write_bytes(jpeg(i))
    for i in range(broken):
        (root / f"broken{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def run(tiny, images=None, out=None, **kwargs):
    processor, model = tiny
    options = kwargs.pop("backend_options", {})
    kwargs.setdefault("task", "conversation")
    kwargs.setdefault("max_new_tokens", 3)
    kwargs.setdefault("batch_size", 3)
    kwargs.setdefault("progress", False)
    return regenerate(images=images, model=model, out=out,
                      backend_options={"processor": processor, "device": "cpu", **options}, **kwargs)


def all_records(out: Path) -> list[dict]:
    rows = []
    for path in part_files(str(out)):
        if path.endswith(".parquet"):
            rows.extend(pq.read_table(path).to_pylist())
        else:
            rows.extend(json.loads(line) for line in open(path, encoding="utf-8"))
    return rows


# --- end to end -----------------------------------------------------------------------------------------------------

def test_end_to_end_records_are_valid_and_random_replies_are_recorded_as_failures(tmp_path, tiny):
    images = make_image_folder(tmp_path / "imgs", 5, broken=1)
    summary = run(tiny, images, tmp_path / "out", task=["conversation", "detail_description"])
    assert (summary.inputs, summary.processed, summary.remaining) == (12, 12, 0)
    records = all_records(tmp_path / "out")
    assert sorted(r["id"] for r in records) == sorted(
        item_id(t, m) for t in ("conversation", "detail_description")
        for m in ["broken0.jpg", "img00.jpg", "img02.jpg", "img04.jpg", "street/img01.jpg", "street/img03.jpg"]
    )
    validator = json_schema_validator("regen_record")
    for r in records:
        validator.validate(to_json_record(r))
    by_id = {r["id"]: r for r in records}
    # the unreadable image is a failed record, not a crash
    assert by_id["conversation/broken0"]["parse_reason"] == "image_error"
    assert "cannot be read" in by_id["conversation/broken0"]["parse_message"]
    # a random model's conversation replies have no labels: refused with a reason, raw reply kept
    conv = [r for r in records if r["task"] == "conversation" and r["id"] != "conversation/broken0"]
    for r in conv:
        expected = parse_reply(r["raw_reply"], "conversation")
        assert r["parse_status"] == expected.status and r["parse_reason"] == expected.reason
    assert Counter(r["parse_reason"] for r in conv)["no_pair"] >= 1
    # descriptions take the whole reply: they parse, and are valid llava samples with their image embedded
    desc = by_id["detail_description/street/img01"]
    assert desc["parse_status"] == "ok" and desc["conversations"][0]["value"].startswith("<image>\n")
    assert desc["conversations"][1]["value"] == parse_reply(desc["raw_reply"], "detail_description",
                                                             question="q").conversations[1]["value"]
    assert check_record({"id": desc["id"], "image": "x.jpg", "conversations": desc["conversations"]}) is None
    assert desc["image"] == {"bytes": (images / "street" / "img01.jpg").read_bytes(), "path": "street/img01.jpg"}
    assert desc["model"] and desc["backend"] == "transformers" and desc["prompt_id"] == "detail_description-zh-v1"
    assert desc["generation"]["max_new_tokens"] == 3 and desc["generation"]["do_sample"] is True
    assert desc["timing"]["batch_size"] == 3 and 1 <= desc["timing"]["output_tokens"] <= 3
    assert summary.ok + summary.failed == 12 and summary.reasons["image_error"] == 2
    config = json.loads((tmp_path / "out" / "regen_config.json").read_text())
    assert config["backend"] == "transformers" and config["tasks"] == ["conversation", "detail_description"]


def test_the_same_command_again_skips_finished_ids_and_loads_no_model(tmp_path, tiny, capsys):
    images = make_image_folder(tmp_path / "imgs", 7)
    first = run(tiny, images, tmp_path / "out", limit=4, progress=True)
    assert (first.processed, first.remaining) == (4, 3)
    bar = capsys.readouterr().err  # the progress bar: samples/s, output tokens/s, parsed and refused counts
    assert "4/4" in bar and "sample/s" in bar and "tok_s=" in bar and "failed=" in bar
    second = run(tiny, images, tmp_path / "out")
    assert (second.already_done, second.processed, second.remaining) == (4, 3, 0)
    ids = read_ids(str(tmp_path / "out"))
    assert len(ids) == len(set(ids)) == 7
    # nothing left to do: returns before building a backend (this model path does not exist)
    third = regenerate(images=images, task="conversation", model=str(tmp_path / "no-such-model"),
                       out=tmp_path / "out", progress=False)
    assert (third.already_done, third.processed) == (7, 0)


KILLED_RUN = textwrap.dedent(
    """
    import sys

    import torch

    import llava_zh
    from llava_zh.tiny_models import build_tiny_vlm

    torch.set_num_threads(1)  # a tiny model: threads only add contention
    processor, model = build_tiny_vlm("qwen2_5_vl", image_size=112)
    llava_zh.regenerate(images=sys.argv[1], task=["conversation", "complex_reasoning"], model=model, out=sys.argv[2],
                        batch_size=2, max_new_tokens=8, records_per_file=3, progress=False,
                        backend_options={"processor": processor, "device": "cpu",
                                         "generate_kwargs": {"min_new_tokens": 8}})
    """
)


def test_a_run_killed_with_sigkill_resumes_without_duplicates_or_gaps(tmp_path, tiny):
    images = make_image_folder(tmp_path / "imgs", 12)
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script), str(images), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not out.is_dir() or len(read_ids(str(out))) < 4:  # a few batches on disk, many more to go
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the run wrote nothing in 120 s")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # every file is a complete parquet file: nothing half-written is ever in data/, failed/ or .pending/
    for path in part_files(str(out)) + pending_files(str(out)):
        pq.read_table(path)
    visible = read_ids(str(out), pending=False)
    written = read_ids(str(out))
    assert len(written) == len(set(written)) and set(visible) <= set(written)
    assert 0 < len(written) < 24, "the kill must land mid-run"

    summary = run(tiny, images, out, task=["conversation", "complex_reasoning"], batch_size=4, records_per_file=3,
                  max_new_tokens=2)
    ids = read_ids(str(out))
    expected = {item_id(t, m) for t in ("conversation", "complex_reasoning")
                for m in [f"img{i:02d}.jpg" if i % 2 == 0 else f"street/img{i:02d}.jpg" for i in range(12)]}
    assert len(ids) == len(set(ids)) and set(ids) == expected  # no duplicates, no gaps
    assert sorted(read_ids(str(out), pending=False)) == sorted(ids)  # all visible once the run has finished
    assert summary.already_done == len(written) and summary.processed == 24 - len(written)  # nothing written was redone
    assert not [n for n in os.listdir(out / ".tmp") if n.endswith(".tmp")]


def test_shards_split_the_inputs_with_no_overlap(tmp_path, tiny):
    images = make_image_folder(tmp_path / "imgs", 6)
    out = tmp_path / "out"
    per_shard = []
    for shard in range(3):
        summary = run(tiny, images, out, task=["conversation", "complex_reasoning"], shard_index=shard, num_shards=3)
        shard_ids = [os.path.basename(p) for p in part_files(str(out)) if f"-{shard:05d}-of-00003-" in p]
        assert shard_ids, f"shard {shard} wrote nothing"
        per_shard.append(summary.processed)
    ids = read_ids(str(out))
    assert len(ids) == len(set(ids)) == 12 == sum(per_shard)
    items = image_items(images, ["conversation", "complex_reasoning"])
    for shard in range(3):
        expected = {it.id for it in select_shard(items, shard, 3)}
        got = {r["id"] for r in all_records(out) if shard_of(r["id"], 3) == shard}
        assert got == expected


def test_shard_of_partitions_ids_stably():
    ids = [f"conversation/{i}" for i in range(2000)]
    shards = [shard_of(i, 7) for i in ids]
    assert Counter(shards).keys() == set(range(7)) and min(Counter(shards).values()) > 200
    # a fixed function of the id: the same in every process and on every machine
    assert shard_of("conversation/0", 7) == shard_of("conversation/0", 7)
    assert [shard_of(i, 1) for i in ids[:5]] == [0] * 5
    code = "from llava_zh.regenerate.inputs import shard_of; print([shard_of(f'conversation/{i}', 7) for i in range(50)])"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED="123")
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == shards[:50]


def test_a_ready_backend_is_used_as_it_is_and_left_open(tmp_path, tiny):
    from llava_zh.regenerate.backends import GenerationParams, create_backend

    processor, model = tiny
    backend = create_backend("transformers", model, processor=processor, device="cpu", model_id="my-tiny-vlm",
                             generation=GenerationParams(max_new_tokens=2, temperature=0.0, seed=9))
    images = make_image_folder(tmp_path / "imgs", 2)
    summary = regenerate(images=images, task="detail_description", backend=backend, out=tmp_path / "out",
                         progress=False)
    assert summary.processed == 2 and backend.model is not None  # not closed: the caller owns it
    for r in all_records(tmp_path / "out"):
        assert r["model"] == "my-tiny-vlm" and r["generation"]["seed"] == 9 and r["generation"]["max_new_tokens"] == 2


# --- inputs -----------------------------------------------------------------------------------------------------------

def test_zip_and_tar_inputs(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("LLAVA_ZH_CACHE", str(tmp_path / "cache"))
    data = {f"photos/p{i}.jpg": jpeg(i) for i in range(3)}
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        for name, b in data.items():
            z.writestr(name, b)
    with tarfile.open(tmp_path / "imgs.tar.gz", "w:gz") as t:
        for name, b in data.items():
            info = tarfile.TarInfo(name)
            info.size = len(b)
            t.addfile(info, io.BytesIO(b))
    for archive in ("imgs.zip", "imgs.tar.gz"):
        out = tmp_path / f"out-{archive}"
        run(tiny, tmp_path / archive, out, task="detail_description", max_new_tokens=4)
        records = {r["id"]: r for r in all_records(out)}
        assert sorted(records) == ["detail_description/photos/p0", "detail_description/photos/p1",
                                   "detail_description/photos/p2"]
        assert records["detail_description/photos/p1"]["image"] == {"bytes": data["photos/p1.jpg"], "path": "photos/p1.jpg"}


def test_redo_the_samples_of_a_dataset(tmp_path, tiny):
    import datasets

    rows = [
        {"id": "conv_0001", "task": "conversation", "language": "zh", "source": "llava-instruct-zh-600k",
         "image": {"bytes": jpeg(1), "path": "0001.jpg"},
         "conversations": [{"from": "human", "value": "<image>\n这是哪里?"}, {"from": "gpt", "value": "公园。"}]},
        {"id": "detail_0002", "task": "detail_description", "language": "zh", "source": "llava-instruct-zh-600k",
         "image": {"bytes": jpeg(2), "path": "0002.jpg"},
         "conversations": [{"from": "human", "value": "<image>\n请描述这张图片的细节。"}, {"from": "gpt", "value": "旧的描述。"}]},
        {"id": "detail_0003", "task": "detail_description", "language": "en", "source": "mine",
         "image": {"bytes": jpeg(3), "path": "0003.jpg"},
         "conversations": [{"from": "human", "value": "Describe it.\n<image>"}, {"from": "gpt", "value": "old"}]},
    ]
    ds = datasets.Dataset.from_list(rows, features=FEATURES)
    summary = run(tiny, None, tmp_path / "out", dataset=ds, task=None, batch_size=2)
    assert summary.processed == 3
    records = {r["id"]: r for r in all_records(tmp_path / "out")}
    assert sorted(records) == ["conv_0001", "detail_0002", "detail_0003"]
    d2, d3 = records["detail_0002"], records["detail_0003"]
    assert d2["conversations"][0]["value"] == "<image>\n请描述这张图片的细节。"  # the sample's own question is kept
    assert (d3["language"], d3["source"], d3["prompt_id"]) == ("en", "mine", "detail_description-en-v1")
    assert d3["conversations"][0]["value"] == "<image>\nDescribe it."
    assert d2["image"] == {"bytes": jpeg(2), "path": "0002.jpg"}
    assert records["conv_0001"]["prompt_id"] == "conversation-zh-v1"
    # only some ids, only some tasks
    only = run(tiny, None, tmp_path / "out2", dataset=ds, task="detail_description", ids=["detail_0003"])
    assert only.processed == 1 and read_ids(str(tmp_path / "out2")) == ["detail_0003"]
    with pytest.raises(ValueError, match="not in the dataset"):
        run(tiny, None, tmp_path / "out3", dataset=ds, task=None, ids=["nope"])


def test_custom_prompt_english_and_jsonl_output(tmp_path, tiny):
    images = make_image_folder(tmp_path / "imgs", 3)
    run(tiny, images, tmp_path / "out", task="complex_reasoning", language="en", output_format="jsonl",
        prompt="Ask one hard question about this picture and answer it. Format: Question:...\n\nAnswer:...")
    records = all_records(tmp_path / "out")
    assert len(records) == 3 and all(p.endswith(".jsonl") for p in part_files(str(tmp_path / "out")))
    validator = json_schema_validator("regen_record")
    for r in records:
        validator.validate(r)
        assert r["language"] == "en" and r["prompt_id"].startswith("custom-") and r["prompt"].startswith("Ask one")
    assert sorted(r["image"] for r in records) == ["img00.jpg", "img02.jpg", "street/img01.jpg"]
    ds = llava_zh.regenerate.load_records(tmp_path / "out", keep_failures=True)
    assert ds.num_rows == 3 and ds.features["image"].dtype == "string"


# --- loading the output ----------------------------------------------------------------------------------------------

def test_parsed_records_load_with_load_dataset_and_failures_by_option(tmp_path, tiny):
    images = make_image_folder(tmp_path / "imgs", 4, broken=1)
    summary = run(tiny, images, tmp_path / "out", task=["conversation", "detail_description"])
    assert summary.ok and summary.failed
    ds, report = llava_zh.load_dataset(str(tmp_path / "out"), return_report=True)  # the run folder itself
    assert ds.num_rows == summary.ok and report.ok
    assert any("/failed/" in f for f in report.ignored_files)  # refused replies are listed, not loaded
    assert llava_zh.load_dataset(str(tmp_path / "out" / "data")).num_rows == summary.ok
    assert set(ds.features) == set(FEATURES)
    sample = ds.filter(lambda s: s["task"] == "detail_description")[0]
    assert sample["image"].size == (56, 56) and sample["conversations"][0]["from"] == "human"
    full = llava_zh.regenerate.load_records(tmp_path / "out")
    assert full.num_rows == summary.ok and set(full["parse_status"]) == {"ok"}
    kept = llava_zh.regenerate.load_records(tmp_path / "out", keep_failures=True)
    assert kept.num_rows == summary.ok + summary.failed
    failed = kept.filter(lambda r: r["parse_status"] == "failed")
    assert set(failed["parse_reason"]) <= {"no_pair", "image_error", "empty_reply"} and failed.num_rows == summary.failed
    # the folder's README configures plain datasets.load_dataset: data/ by default, the refusals as "failed"
    import datasets

    plain = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert plain.num_rows == summary.ok and "raw_reply" in plain.features
    assert datasets.load_dataset(str(tmp_path / "out"), "failed", split="train").num_rows == summary.failed


# --- API and CLI -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("first", ["function", "submodule"])
def test_llava_zh_regenerate_is_both_the_function_and_the_package(first):
    code = {
        "function": "import llava_zh; f = llava_zh.regenerate; from llava_zh.regenerate import prompts, runner",
        "submodule": "from llava_zh.regenerate import prompts, runner; import llava_zh; f = llava_zh.regenerate",
    }[first] + textwrap.dedent(
        """
        import llava_zh.regenerate.parsers
        assert callable(f) and f is llava_zh.regenerate
        assert llava_zh.regenerate.prompts is prompts and llava_zh.regenerate.parsers.parse_reply
        from llava_zh.regenerate import regenerate
        assert regenerate is runner.regenerate
        import inspect
        assert list(inspect.signature(f).parameters)[:4] == ["images", "dataset", "task", "model"]
        try:
            f(images=None, task="conversation", model="m")
        except ValueError as e:
            assert "exactly one input" in str(e), e
        else:
            raise AssertionError("expected a ValueError")
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_cli_regenerate(tmp_path, tiny_dir, capsys):
    from llava_zh.cli import main

    images = make_image_folder(tmp_path / "imgs", 3)
    ids = tmp_path / "ids.txt"
    ids.write_text("complex_reasoning/img00\ncomplex_reasoning/street/img01\n")
    argv = ["regenerate", "--images", str(images), "--task", "complex_reasoning", "--model", tiny_dir,
            "--out", str(tmp_path / "out"), "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "4",
            "--temperature", "0", "--ids-file", str(ids), "--no-progress", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["inputs"], summary["processed"], summary["remaining"]) == (2, 2, 0)
    assert sorted(read_ids(str(tmp_path / "out"))) == ["complex_reasoning/img00", "complex_reasoning/street/img01"]
    record = all_records(tmp_path / "out")[0]
    assert record["model"] == tiny_dir and record["generation"]["do_sample"] is False
    assert main(argv[:-1]) == 0  # again: nothing to do
    assert "2 already done, 0 generated" in capsys.readouterr().out


def test_cli_backend_options():
    import argparse

    from llava_zh.cli.regenerate import backend_options, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="verb"), "regenerate", "help")
    base = ["regenerate", "--images", "x", "--model", "m", "--out", "o"]
    vllm = parser.parse_args(base + ["--backend", "vllm", "--tensor-parallel-size", "4", "--max-model-len", "8192"])
    assert backend_options(vllm) == {"dtype": "auto", "tensor_parallel_size": 4, "max_model_len": 8192,
                                     "gpu_memory_utilization": 0.9}
    ray = parser.parse_args(base + ["--backend", "ray", "--inner-backend", "vllm", "--tensor-parallel-size", "2",
                                    "--num-actors", "8", "--ray-address", "auto"])
    opts = backend_options(ray)
    assert (opts["inner"], opts["num_actors"], opts["gpus_per_actor"], opts["address"]) == ("vllm", 8, 2, "auto")
    assert opts["inner_options"]["tensor_parallel_size"] == 2
    hf = parser.parse_args(base + ["--device-map", "auto", "--attn-implementation", "sdpa"])
    assert backend_options(hf) == {"dtype": "auto", "device_map": "auto", "attn_implementation": "sdpa"}


def test_bad_arguments_are_named(tmp_path, tiny):
    images = make_image_folder(tmp_path / "imgs", 1)
    with pytest.raises(ValueError, match="exactly one input"):
        regenerate(model="m", out=tmp_path / "o")
    with pytest.raises(ValueError, match="task is required"):
        regenerate(images=images, model="m", out=tmp_path / "o")
    with pytest.raises(ValueError, match="unknown task 'caption'"):
        regenerate(images=images, task="caption", model="m", out=tmp_path / "o")
    with pytest.raises(ValueError, match="shard_index"):
        regenerate(images=images, task="conversation", model="m", out=tmp_path / "o", shard_index=3, num_shards=3)
    with pytest.raises(ValueError, match="no images found"):
        regenerate(images=tmp_path / "o", task="conversation", model="m", out=tmp_path / "o2") if (tmp_path / "o").mkdir() is None else None
