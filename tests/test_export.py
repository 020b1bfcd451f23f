"""llava_zh.export: every format's files, images written once as original bytes, and reading back equal."""

import json
import os

import datasets
import pyarrow.parquet as pq
import pytest

import llava_zh
from factories import jpeg_bytes
from llava_zh.cli import main as cli_main
from llava_zh.convert.export import ImageWriter, export, image_extension, iter_records, safe_stem
from llava_zh.convert.formats import FORMATS
from llava_zh.schema import FEATURES

ALL = sorted(FORMATS)


def _png():
    return jpeg_bytes(9, 7, (10, 200, 10), fmt="PNG")


def rows():
    shared = jpeg_bytes(30, 20, (200, 30, 30))
    turn = lambda f, v: {"from": f, "value": v}  # noqa: E731
    base = {"language": "zh", "source": "llava-instruct-zh-600k"}
    return [
        {**base, "id": "conv_0001", "task": "conversation", "image": {"bytes": shared, "path": "coco/1.jpg"},
         "conversations": [turn("human", "<image>\n这是哪里?"), turn("gpt", "北京。"),
                           turn("human", "真的吗?"), turn("gpt", "是的。")]},
        # same picture as conv_0001: written once
        {**base, "id": "detail_0001", "task": "detail_description", "image": {"bytes": shared, "path": "coco/1.jpg"},
         "conversations": [turn("human", "请详细描述这张图片。\n<image>"), turn("gpt", "一条街道。")]},
        {**base, "id": "cr/0002 x", "task": "complex_reasoning", "image": {"bytes": _png(), "path": None},
         "conversations": [turn("human", "图中<image>的人为什么笑?"), turn("gpt", "因为开心。")]},
        {**base, "id": "conv_0003", "task": "conversation", "image": None,
         "conversations": [turn("system", "你是一个有用的助手。"), turn("human", "你好"), turn("gpt", "你好!")]},
    ]


@pytest.fixture()
def dataset():
    return datasets.Dataset.from_list(rows(), features=FEATURES)


def as_samples(ds):
    ds = ds.cast_column("image", datasets.Image(decode=False))
    return {r["id"]: (r["task"], r["language"], r["source"], r["conversations"],
                      r["image"]["bytes"] if r["image"] else None) for r in ds}


@pytest.mark.parametrize("fmt", ALL)
def test_every_format_reads_back_into_the_same_samples(tmp_path, dataset, fmt):
    out = tmp_path / fmt
    result = export(dataset, fmt, out, progress=False)
    assert result.samples == 4 and result.images_written == 2 and result.images_shared == 1
    assert result.files == ["llava_zh" + FORMATS[fmt].suffix]
    back = llava_zh.load_dataset(str(out))
    assert back.features == FEATURES
    assert as_samples(back) == as_samples(dataset)


@pytest.mark.parametrize("fmt", [f for f in ALL if f != "trl"])
def test_images_are_written_once_as_original_bytes(tmp_path, dataset, fmt):
    export(dataset, fmt, tmp_path, progress=False)
    files = sorted(os.listdir(tmp_path / "images"))
    assert files == ["conv_0001.jpg", "cr_0002_x.png"]  # named after the first sample using them
    assert (tmp_path / "images" / "conv_0001.jpg").read_bytes() == rows()[0]["image"]["bytes"]
    assert (tmp_path / "images" / "cr_0002_x.png").read_bytes() == _png()


def test_record_shapes(tmp_path, dataset):
    def first(fmt):
        return next(iter_records(dataset, fmt))

    assert first("llava") == {"id": "conv_0001", "image": "images/conv_0001.jpg", "task": "conversation",
                              "language": "zh", "source": "llava-instruct-zh-600k",
                              "conversations": rows()[0]["conversations"]}
    assert first("sharegpt")["images"] == ["images/conv_0001.jpg"]
    assert first("sharegpt")["conversations"][0] == {"from": "human", "value": "<image>\n这是哪里?"}
    for fmt in ("llamafactory", "swift"):
        rec = first(fmt)
        assert rec["messages"][0] == {"role": "user", "content": "<image>\n这是哪里?"}
        assert rec["images"] == ["images/conv_0001.jpg"]
    trl = first("trl")
    assert trl["messages"][0] == {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "这是哪里?"}]}
    assert trl["images"][0]["bytes"] == rows()[0]["image"]["bytes"]
    internvl = first("internvl")
    assert (internvl["image"], internvl["width"], internvl["height"]) == ("conv_0001.jpg", 30, 20)


@pytest.mark.parametrize("fmt, tags", [
    ("sharegpt", {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}),
    ("llamafactory", {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}),
])
def test_llamafactory_dataset_info(tmp_path, dataset, fmt, tags):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "o.json"}}))
    export(dataset, fmt, tmp_path, progress=False)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["other"] == {"file_name": "o.json"}  # existing entries are kept
    entry = info["llava_zh"]
    assert entry["file_name"] == "llava_zh.json" and entry["formatting"] == "sharegpt"
    column = "conversations" if fmt == "sharegpt" else "messages"
    assert entry["columns"] == {"messages": column, "images": "images"}
    assert {k: entry["tags"][k] for k in tags} == tags and entry["tags"]["system_tag"] == "system"
    records = json.loads((tmp_path / "llava_zh.json").read_text())
    assert all(column in r and "images" in r for r in records)
    assert all(os.path.exists(tmp_path / p) for r in records for p in r["images"])


def test_swift_and_internvl_files(tmp_path, dataset):
    export(dataset, "swift", tmp_path / "swift", progress=False)
    lines = (tmp_path / "swift" / "llava_zh.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and json.loads(lines[3])["messages"][0] == {"role": "system", "content": "你是一个有用的助手。"}

    export(dataset, "internvl", tmp_path / "ivl", progress=False)
    meta = json.loads((tmp_path / "ivl" / "llava_zh_internvl_meta.json").read_text())
    entry = meta["llava_zh"]
    assert set(entry) == {"root", "annotation", "data_augment", "repeat_time", "length"}
    assert entry["length"] == 4 and entry["repeat_time"] == 1 and entry["data_augment"] is False
    records = [json.loads(line) for line in open(entry["annotation"], encoding="utf-8")]
    for r in records:
        if "image" in r:
            assert os.path.exists(os.path.join(entry["root"], r["image"]))
    assert "image" not in records[3]


def test_trl_parquet_is_a_datasets_table_with_images(tmp_path, dataset):
    export(dataset, "trl", tmp_path, progress=False)
    assert not (tmp_path / "images").exists()
    table = pq.read_table(tmp_path / "llava_zh.parquet")
    assert {"messages", "images"} <= set(table.column_names)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "llava_zh.parquet"), split="train")
    assert ds.features["images"] == datasets.List(datasets.Image())
    assert ds[0]["images"][0].size == (30, 20)  # decodes as a PIL image, ready for TRL
    assert ds[2]["messages"][0]["content"][1]["newline"] is False  # "图中<image>的人..." keeps its exact text


def test_dataset_dict_writes_one_file_per_split_and_reads_back(tmp_path, dataset):
    dd = datasets.DatasetDict({"train": dataset.select([0, 1, 3]), "validation": dataset.select([2])})
    result = export(dd, "swift", tmp_path, progress=False)
    assert result.files == ["llava_zh_train.jsonl", "llava_zh_validation.jsonl"]
    back = llava_zh.load_dataset(str(tmp_path), split=None)
    assert sorted(back) == ["train", "validation"]
    assert as_samples(back["validation"]) == as_samples(dataset.select([2]))


def test_streaming_dataset_and_refusals(tmp_path, dataset):
    result = export(dataset.to_iterable_dataset(), "llava", tmp_path, progress=False)
    assert result.samples == 4
    with pytest.raises(FileExistsError, match="overwrite"):
        export(dataset, "llava", tmp_path, progress=False)
    assert export(dataset, "llava", tmp_path, overwrite=True, progress=False).samples == 4
    with pytest.raises(ValueError, match="unknown export format 'axolotl'"):
        export(dataset, "axolotl", tmp_path)


def test_helpers():
    assert safe_stem("a/b c:d") == "a_b_c_d" and safe_stem("..") == "image"
    assert image_extension(jpeg_bytes()) == ".jpg" and image_extension(_png()) == ".png"
    assert image_extension(b"RIFF\0\0\0\0WEBPVP8 ") == ".webp" and image_extension(b"????", "x.JPEG") == ".jpeg"
    writer = ImageWriter("", write=False)
    a = writer.add({"bytes": jpeg_bytes(5, 5), "path": None}, "same")
    b = writer.add({"bytes": jpeg_bytes(6, 6), "path": None}, "same")  # same id, other picture: no clash
    assert a.relpath == "images/same.jpg" and b.relpath.startswith("images/same-") and b.relpath != a.relpath


def test_cli_export_verb(tmp_path, capsys):
    assert cli_main(["export", "sample", "--format", "llamafactory", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "llamafactory" in printed and "dataset_info.json" in printed
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["llava_zh_train"]["file_name"] == "llava_zh_train.json"
    original = as_samples(llava_zh.load_dataset("sample"))
    assert as_samples(llava_zh.load_dataset(str(tmp_path))) == original


def test_internvl_records_with_numeric_ids_are_read():
    from llava_zh.records import RecordFormatError, detect_format, to_llava_record

    turns = [{"from": "human", "value": "<image>\n看"}, {"from": "gpt", "value": "好"}]
    raw = {"id": 7, "image": ["a.jpg"], "width": 30, "height": 20, "conversations": turns}
    assert detect_format(raw) == "internvl"
    assert to_llava_record(raw) == {"id": "7", "image": "a.jpg", "conversations": turns}
    with pytest.raises(RecordFormatError, match=r"sample '8'.*one image.*got 2"):
        to_llava_record({"id": 8, "image": ["a.jpg", "b.jpg"], "conversations": turns})
