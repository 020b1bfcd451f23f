"""llava_zh.encode / llava-zh encode: the tokenized cache, its keys, the parquet output and image references."""

import io
import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

import llava_zh
from llava_zh.cli import main
from llava_zh.convert.chat_template import ChatTemplateEncoder
from llava_zh.encoding import (
    ImageReprocessor,
    encode,
    encoder_fingerprint,
    image_grids,
    load_encoded,
    load_processor,
)
from llava_zh.schema import FEATURES
from llava_zh.tiny_models import build_processor, chat_template, make_image

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 112 * 112


@pytest.fixture(scope="module")
def qwen():
    return build_processor("qwen2_5_vl")


@pytest.fixture()
def sample():
    return llava_zh.load_dataset("sample")  # prepared by the builder: a dataset with cache files


def jpeg(width, height, seed=0):
    buffer = io.BytesIO()
    make_image(width, height, seed).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_a_second_run_reads_the_cache_and_tokenizes_nothing(qwen, sample):
    first, r1 = encode(sample, qwen, max_pixels=BUDGET, return_report=True)
    assert (r1.encoded, r1.from_cache, r1.rows) == (len(sample), False, len(sample))
    second, r2 = encode(sample, qwen, max_pixels=BUDGET, return_report=True)
    assert r2.encoded == 0 and r2.from_cache  # the encoder was never called: datasets read cache-<fingerprint>.arrow
    assert r2.fingerprint == r1.fingerprint and second.cache_files == first.cache_files
    assert Path(second.cache_files[0]["filename"]).name == f"cache-{r1.fingerprint}.arrow"
    assert second[0]["input_ids"] == first[0]["input_ids"]
    # the same folder loaded again by another processor object gives the same key
    again, r3 = encode(sample, build_processor("qwen2_5_vl"), max_pixels=BUDGET, return_report=True)
    assert r3.from_cache and r3.fingerprint == r1.fingerprint


@pytest.mark.parametrize("change", ["max_length", "max_pixels", "chat_template", "all_tokens", "data"])
def test_the_cache_key_changes_with_the_template_the_options_and_the_data(qwen, sample, change):
    _, base = encode(sample, qwen, max_pixels=BUDGET, return_report=True)
    kwargs = {"max_pixels": BUDGET}
    data = sample
    if change == "max_length":
        kwargs["max_length"] = 2048
    elif change == "max_pixels":
        kwargs["max_pixels"] = 224 * 224
    elif change == "chat_template":  # the same family's template with generation markers: another template text
        kwargs["chat_template"] = chat_template("qwen2_5_vl", generation_markers=True)
    elif change == "all_tokens":
        kwargs["assistant_only_loss"] = False
    else:
        data = sample.select(range(len(sample) - 1))
    out, report = encode(data, qwen, return_report=True, **kwargs)
    assert report.fingerprint != base.fingerprint
    assert not report.from_cache and report.encoded == len(data)  # tokenized again
    assert out.cache_files[0]["filename"] != base.fingerprint
    if change == "max_pixels":
        image_id = qwen.image_token_id
        assert sum(r.count(image_id) for r in out["input_ids"]) != 0
        assert report.tokens != base.tokens


def test_the_processors_template_is_part_of_the_key(qwen):
    other = build_processor("qwen2_5_vl")
    other.chat_template = other.chat_template.replace("You are a helpful assistant.", "你是一个有用的助手。")
    assert encoder_fingerprint(ChatTemplateEncoder(other)) != encoder_fingerprint(ChatTemplateEncoder(qwen))
    assert encoder_fingerprint(ChatTemplateEncoder(build_processor("qwen2_5_vl"))) == \
        encoder_fingerprint(ChatTemplateEncoder(qwen))


def test_rows_keep_ids_lengths_and_the_original_image_bytes(qwen):
    rows = [
        {"id": "wide", "task": "conversation", "language": "zh", "source": "t",
         "image": {"bytes": jpeg(900, 300), "path": "wide.jpg"},
         "conversations": [{"from": "human", "value": "<image>\n这是什么?"}, {"from": "gpt", "value": "一张宽图。"}]},
        {"id": "text", "task": "conversation", "language": "zh", "source": "t", "image": None,
         "conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好!"}]},
        {"id": "tall", "task": "detail_description", "language": "zh", "source": "t",
         "image": {"bytes": jpeg(200, 700, 1), "path": "tall.jpg"},
         "conversations": [{"from": "human", "value": "<image>\n请详细描述这张图片。"}, {"from": "gpt", "value": "很高。"}]},
    ]
    ds = datasets.Dataset.from_list(rows, features=FEATURES)
    encoded = encode(ds, qwen, max_pixels=224 * 224)
    assert encoded["id"] == ["wide", "text", "tall"]
    assert encoded["length"] == [len(x) for x in encoded["input_ids"]]
    raw = encoded.cast_column("images", datasets.List(datasets.Image(decode=False)))["images"]
    assert [[im["bytes"] for im in r] for r in raw] == [[rows[0]["image"]["bytes"]], [], [rows[2]["image"]["bytes"]]]
    # the grids computed from the image sizes are what the processor gives when it makes the pixels
    full = ChatTemplateEncoder(qwen, max_pixels=224 * 224).encode_batch(rows)
    for row, ref in zip(encoded, full):
        assert row["input_ids"] == ref["input_ids"] and row["labels"] == ref["labels"]
        assert row["mm_token_type_ids"] == ref["mm_token_type_ids"]
        if ref["image_grid_thw"] is None:
            assert row["image_grid_thw"] is None
            continue
        assert row["image_grid_thw"] == np.asarray(ref["image_grid_thw"]).tolist()
        again = ImageReprocessor(qwen, max_pixels=224 * 224)(row)  # pixels recomputed at training time
        np.testing.assert_array_equal(again["pixel_values"], np.asarray(ref["pixel_values"]))
    with pytest.raises(ValueError, match=r"sample 'wide': expected image grids"):
        ImageReprocessor(qwen, max_pixels=448 * 448)(encoded[0])  # trained with another budget than encoded


def test_image_grids_follow_the_processors_resize_rule(qwen):
    kwargs = {"images_kwargs": {"size": {"shortest_edge": 3136, "longest_edge": 448 * 448}}}
    grids = image_grids(qwen, [(3000, 4000), (448, 448), (20, 900)], kwargs)
    out = qwen.image_processor(images=[make_image(4000, 3000), make_image(448, 448), make_image(900, 20)],
                               size=kwargs["images_kwargs"]["size"])
    assert grids == np.asarray(out["image_grid_thw"]).tolist()
    assert image_grids(build_processor("llava"), [(100, 100)]) is None


def test_cli_writes_parquet_that_trainers_read_back(tmp_path, qwen, capsys):
    folder = tmp_path / "processor"
    qwen.save_pretrained(folder)
    out = tmp_path / "encoded"
    args = ["encode", "sample", "--processor", str(folder), "--out", str(out), "--max-pixels", str(BUDGET),
            "--max-length", "4096"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "30 samples -> 30 rows" in printed and "encoded 30 in this process" in printed
    info = json.loads((out / "encoding.json").read_text(encoding="utf-8"))
    assert info["options"]["max_pixels"] == BUDGET and info["options"]["max_length"] == 4096
    assert info["processor_class"] == "Qwen2VLImageOnlyProcessor" and info["report"]["rows"] == 30
    files = sorted((out / "data").glob("train-*.parquet"))
    assert [f.name for f in files] == ["train-00000-of-00001.parquet"]
    plain = datasets.load_dataset(str(out), split="train")  # the README's configs: plain datasets reads it
    encoded, read_info = load_encoded(out, return_info=True)
    assert plain["input_ids"] == encoded["input_ids"] and read_info == info
    assert {"id", "input_ids", "attention_mask", "labels", "length", "images", "image_grid_thw",
            "mm_token_type_ids"} <= set(encoded.column_names)
    assert encoded[0]["images"][0].size == llava_zh.load_dataset("sample")[0]["image"].size
    pixels = ImageReprocessor.from_info(load_processor(folder), read_info)(encoded[0])
    assert int(np.prod(pixels["image_grid_thw"], axis=-1).sum()) == np.asarray(pixels["pixel_values"]).shape[0]
    # the same command again: nothing tokenized, the parquet files refused until --overwrite
    with pytest.raises(FileExistsError, match="overwrite"):
        main(args)
    assert main(args + ["--overwrite"]) == 0
    assert "read from the cache" in capsys.readouterr().out


def test_the_key_is_the_same_in_another_process(tmp_path, qwen):
    folder = tmp_path / "processor"
    qwen.save_pretrained(folder)
    code = ("import sys; from llava_zh.encoding import encoder_fingerprint, load_processor; "
            "from llava_zh.convert.chat_template import ChatTemplateEncoder; "
            f"print(encoder_fingerprint(ChatTemplateEncoder(load_processor(sys.argv[1]), max_pixels={BUDGET})))")
    there = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=ROOT, capture_output=True, text=True,
                           check=True, timeout=120).stdout.strip()
    assert there == encoder_fingerprint(ChatTemplateEncoder(load_processor(folder), max_pixels=BUDGET))


@pytest.mark.parametrize("family,hub_class", [("qwen2_5_vl", "Qwen2_5_VLProcessor"), ("llava", "LlavaProcessor")])
def test_load_processor_reads_a_hub_style_folder(tmp_path, family, hub_class):
    # the layout of a Hub checkpoint: preprocessor_config.json names the model's processor class. For Qwen2.5-VL
    # AutoProcessor needs a video processor (torchvision); the image-only class is used when it fails.
    processor = build_processor(family)
    processor.save_pretrained(tmp_path)
    config = tmp_path / "processor_config.json"
    image_config = json.loads(config.read_text(encoding="utf-8"))["image_processor"]
    image_config["processor_class"] = hub_class
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(image_config), encoding="utf-8")
    config.unlink()
    loaded = load_processor(tmp_path)
    assert loaded.image_processor is not None and type(loaded.image_processor) is type(processor.image_processor)
    assert loaded.tokenizer("图片")["input_ids"] == processor.tokenizer("图片")["input_ids"]


def test_errors(qwen, sample):
    with pytest.raises(TypeError, match="one split"):
        encode(datasets.DatasetDict({"train": sample}), qwen)
    with pytest.raises(TypeError, match="streaming"):
        encode(sample.to_iterable_dataset(), qwen)
