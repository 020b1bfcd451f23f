"""The embedded sample: 30 samples, 10 per task, shaped like the real data, loadable offline."""

import re
from collections import Counter

import datasets

import llava_zh
from llava_zh.sources import sample_dir

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_sample_loads_offline_through_the_builder():
    ds = llava_zh.load_dataset("sample")
    assert len(ds) == 30
    assert Counter(ds["task"]) == {"conversation": 10, "complex_reasoning": 10, "detail_description": 10}
    assert len(set(ds["id"])) == 30


def test_sample_is_shaped_like_the_real_data():
    ds = llava_zh.load_dataset("sample").cast_column("image", datasets.Image(decode=False))
    hashes = set()
    for row in ds:
        rounds = len(row["conversations"]) // 2
        answers = [t["value"] for t in row["conversations"] if t["from"] == "gpt"]
        if row["task"] == "conversation":
            assert 3 <= rounds <= 5
        else:
            assert rounds == 1 and len(answers[0]) >= 150  # long reasoning and description answers
        assert all(CJK.search(a) for a in answers)
        assert row["image"]["bytes"][:3] == b"\xff\xd8\xff"  # JPEG, original bytes
        hashes.add(hash(row["image"]["bytes"]))
    assert len(hashes) == 30  # one distinct image each
    conversation_rounds = Counter(len(r) // 2 for r, t in zip(ds["conversations"], ds["task"]) if t == "conversation")
    assert conversation_rounds[5] >= 5  # usually five rounds


def test_sample_images_decode_and_are_small():
    ds = llava_zh.load_dataset("sample", config="detail_description")
    for image in ds["image"]:
        assert image.mode == "RGB" and image.width >= 200 and image.height >= 150
    total = sum(p.stat().st_size for p in (sample_dir() / "images").iterdir())
    assert total < 1_500_000


def test_sample_validates_clean():
    report = llava_zh.validate("sample")
    assert report.ok and report.read == 30 and report.loaded == 30


def test_placeholder_positions_vary():
    ds = llava_zh.load_dataset("sample")
    firsts = [conv[0]["value"] for conv in ds["conversations"]]
    assert any(v.startswith("<image>") for v in firsts)
    assert any(v.rstrip().endswith("<image>") for v in firsts)
