"""The part-file store: atomic batches, merging, and recovery from every point where a run can die."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from llava_zh.regenerate.record import build_record
from llava_zh.regenerate.store import ShardLockedError, ShardStore, part_files, pending_files, read_ids


def record(i: int, ok: bool = True) -> dict:
    convs = [{"from": "human", "value": "<image>\n这是什么?"}, {"from": "gpt", "value": f"这是第{i}张图。"}]
    return build_record(
        sample_id=f"conversation/img{i:03d}", task="conversation", language="zh", source="test",
        image_path=f"img{i:03d}.jpg", image_bytes=b"\xff\xd8" + bytes([i % 256]), conversations=convs if ok else [],
        raw_reply="用户:这是什么?\n\n助手:..." if ok else "乱码", reason=None if ok else "no_pair",
        message=None if ok else "no label", model="tiny", backend="transformers", prompt_id="conversation-zh-v1",
        prompt="p", generation={"max_new_tokens": 8, "temperature": 0.0, "seed": 0, "do_sample": False},
        timing={"generated_at": "2025-01-01T00:00:00+00:00", "batch_seconds": 0.1, "batch_size": 2,
                "input_tokens": 10, "output_tokens": 3},
    )


def names(out, folder, pending=False):
    paths = pending_files(str(out), folder) if pending else part_files(str(out), folder)
    return sorted(os.path.basename(p) for p in paths)


def test_batches_are_pending_until_enough_records_make_a_visible_part(tmp_path):
    with ShardStore(tmp_path, records_per_file=4) as store:
        store.write([record(0), record(1, ok=False)])
        store.write([record(2), record(3)])
        assert names(tmp_path, "data") == []
        assert names(tmp_path, "data", pending=True) == ["part-00000-of-00001-000000-000000.parquet",
                                                         "part-00000-of-00001-000001-000001.parquet"]
        # pending batches are finished work: a new run skips them
        assert len(read_ids(str(tmp_path))) == 4 and read_ids(str(tmp_path), pending=False) == []
        store.write([record(4), record(5)])  # data reaches 5 records >= 4: gathered into one visible part
        assert names(tmp_path, "data") == ["part-00000-of-00001-000000-000002.parquet"]
        assert names(tmp_path, "data", pending=True) == []
        assert names(tmp_path, "failed") == [] and len(names(tmp_path, "failed", pending=True)) == 1
    assert names(tmp_path, "failed") == ["part-00000-of-00001-000000-000000.parquet"]  # close gathers the rest
    assert sorted(read_ids(str(tmp_path), "data")) == [f"conversation/img{i:03d}" for i in (0, 2, 3, 4, 5)]
    assert read_ids(str(tmp_path), "failed") == ["conversation/img001"]
    table = pq.read_table(part_files(str(tmp_path), "data")[0])
    assert table.column("image").to_pylist()[0] == {"bytes": b"\xff\xd8\x00", "path": "img000.jpg"}
    # the parquet schema carries the datasets features, so the image column loads as datasets.Image
    assert b"huggingface" in table.schema.metadata


def test_close_gathers_the_pending_batches_and_a_reopened_store_continues_numbering(tmp_path):
    with ShardStore(tmp_path, records_per_file=100) as store:
        for i in range(3):
            store.write([record(i)])
    assert names(tmp_path, "data") == ["part-00000-of-00001-000000-000002.parquet"]
    with ShardStore(tmp_path, records_per_file=100) as store:
        store.write([record(3)])
    assert names(tmp_path, "data") == ["part-00000-of-00001-000000-000002.parquet",
                                        "part-00000-of-00001-000003-000003.parquet"]


def killed(store):
    """What SIGKILL does to an open store: nothing more is written, the kernel drops the lock."""
    store._unlock()


def test_a_run_killed_with_pending_batches_keeps_them_and_shows_them_on_the_next_start(tmp_path):
    store = ShardStore(tmp_path, records_per_file=100).open()
    store.write([record(0)])
    store.write([record(1), record(2, ok=False)])
    killed(store)
    assert part_files(str(tmp_path)) == [] and len(read_ids(str(tmp_path))) == 3
    with ShardStore(tmp_path, records_per_file=100) as again:
        again.write([record(3)])
    assert names(tmp_path, "data") == ["part-00000-of-00001-000000-000002.parquet"]
    assert sorted(read_ids(str(tmp_path), pending=False)) == [f"conversation/img{i:03d}" for i in range(4)]


def test_a_write_killed_before_its_rename_leaves_nothing_visible(tmp_path):
    store = ShardStore(tmp_path).open()
    store.write([record(0)])
    # what a process killed inside write() leaves: a half-written temporary file
    tmp = tmp_path / ".tmp" / "part-00000-of-00001-000001-000001.parquet.999.tmp"
    tmp.write_bytes(b"PAR1 half a file")
    killed(store)
    assert read_ids(str(tmp_path)) == ["conversation/img000"]
    with ShardStore(tmp_path) as again:
        assert not tmp.exists()
        again.write([record(1)])
    assert sorted(read_ids(str(tmp_path))) == ["conversation/img000", "conversation/img001"]


def test_a_gather_killed_after_its_rename_shows_no_duplicate_and_is_finished_on_the_next_start(tmp_path):
    store = ShardStore(tmp_path, records_per_file=100).open()
    for i in range(3):
        store.write([record(i)])
    pending = tmp_path / ".pending" / "data"
    copies = {p.name: p.read_bytes() for p in pending.iterdir()}
    store.close()
    # the gather renamed its part into place, then the process died before deleting the pending batches
    for name, data in copies.items():
        (pending / name).write_bytes(data)
    assert names(tmp_path, "data") == ["part-00000-of-00001-000000-000002.parquet"]
    assert sorted(read_ids(str(tmp_path))) == [f"conversation/img{i:03d}" for i in range(3)]  # no duplicates
    with ShardStore(tmp_path, records_per_file=100):
        assert list(pending.iterdir()) == []
    assert sorted(read_ids(str(tmp_path))) == [f"conversation/img{i:03d}" for i in range(3)]


def test_one_process_per_shard(tmp_path):
    with ShardStore(tmp_path, 0, 2):
        with pytest.raises(ShardLockedError, match="shard 0 of 2"):
            ShardStore(tmp_path, 0, 2).open()
        with ShardStore(tmp_path, 1, 2) as other:  # another shard of the same run is fine
            other.write([record(1)])
    with ShardStore(tmp_path, 0, 2) as store:  # released on close
        store.write([record(0)])
    assert names(tmp_path, "data") == ["part-00000-of-00002-000000-000000.parquet",
                                        "part-00001-of-00002-000000-000000.parquet"]


def test_jsonl_parts_hold_image_paths(tmp_path):
    with ShardStore(tmp_path, output_format="jsonl", records_per_file=2) as store:
        store.write([record(0)])
        store.write([record(1), record(2, ok=False)])
    [data] = part_files(str(tmp_path), "data")
    rows = [json.loads(line) for line in open(data, encoding="utf-8")]
    assert [r["image"] for r in rows] == ["img000.jpg", "img001.jpg"]
    assert sorted(read_ids(str(tmp_path))) == [f"conversation/img{i:03d}" for i in range(3)]


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="shard_index"):
        ShardStore(tmp_path, 2, 2)
    with pytest.raises(ValueError, match="output_format"):
        ShardStore(tmp_path, output_format="csv")
    with pytest.raises(RuntimeError, match="open the store"):
        ShardStore(tmp_path).write([record(0)])
