"""Filters and dedup on Dataset and IterableDataset: what each rule keeps and removes, and why."""

from __future__ import annotations

import json

import datasets
import pytest
from PIL import Image

import llava_zh
from inspect_data import byte_tokenizer, draw_image, known_dataset, make, row, turns, write_source
from llava_zh.inspect.dedup import MinHashIndex, minhash, shingle_jaccard
from llava_zh.inspect.filters import (
    RULES,
    CJKShareBounds,
    DuplicateAnswer,
    DuplicateImage,
    LengthBounds,
    NearDuplicateAnswer,
    ParseStatus,
    filter_cjk_share,
    filter_dataset,
    filter_length,
    remove_duplicate_answers,
    remove_duplicate_images,
    remove_near_duplicate_answers,
)
from llava_zh.schema import FEATURES

T1 = (
    "图片中有一只橘色的猫趴在木质窗台上晒太阳，窗台旁边放着一盆枝叶茂盛的绿萝，窗外可以看到蓝色的天空和几朵白云。"
    "猫的眼睛半闭着，尾巴自然地垂在窗台边缘，阳光照在它的毛上显得格外明亮。房间里还有一张木桌，桌上摆着一本打开的书"
    "和一个白色的咖啡杯，整个画面显得温暖而安静，给人一种悠闲的午后时光的感觉。"
)
T1_NEAR = T1.replace("橘色", "黑色")  # one character changed
T2 = "这是一条繁忙的城市街道，两旁是高楼大厦，路上有许多汽车和行人，远处的红绿灯正亮着红灯，天空灰蒙蒙的，像是要下雨了。"
T3 = "照片里是一片宁静的湖面，湖边停着两条小木船，远处有连绵的青山，山顶覆盖着白雪，湖水清澈地倒映着山的影子。"
T1_HALF = T1[:70] + T3 + T2[:30]  # shares part of T1 only

IMG = {k: draw_image(48 + 4 * k, 36, seed=k) for k in range(8)}


def dedup_rows() -> list[dict]:
    return [
        row("a0", "detail_description", turns("<image>\n描述图片。", T1), IMG[0]),
        row("a1", "detail_description", turns("<image>\n描述图片。", T2), IMG[0]),  # image of a0
        row("a2", "complex_reasoning", turns("<image>\n图里有什么?", T1), IMG[1]),  # answer of a0
        row("a3", "detail_description", turns("<image>\n描述图片。", T1_NEAR), IMG[2]),  # near a0
        row("a4", "detail_description", turns("<image>\n描述图片。", T3), IMG[3]),
        row("a5", "conversation", turns("湖里有什么?", "  " + T3 + "\n")),  # a4's answer with spaces, no image
        row("a6", "conversation", turns("<image>\n有猫吗?", "是的。"), IMG[4]),
        row("a7", "conversation", turns("<image>\n有狗吗?", "是的。"), IMG[5]),  # short: exact dup only
        row("a8", "detail_description", turns("<image>\n描述图片。", T1_HALF), IMG[6]),  # partly like a0
    ]


def run(ds, rules, kind):
    """Filter a Dataset or its IterableDataset twin; returns (result, kept ids, removed as (id, rule, dup_of))."""
    src = ds if kind == "dataset" else ds.to_iterable_dataset(num_shards=3)
    result = filter_dataset(src, rules, progress=False)
    if kind == "dataset":
        assert isinstance(result.kept, datasets.Dataset)
        kept_ids = list(result.kept["id"])
    else:
        assert isinstance(result.kept, datasets.IterableDataset)
        kept_ids = [e["id"] for e in result.kept]
    removed = [(r.id, r.rule, r.duplicate_of) for r in result.removed]
    # removed + kept = input, each sample exactly once, in input order when merged by index
    assert sorted(kept_ids + [r[0] for r in removed], key=list(ds["id"]).index) == list(ds["id"])
    assert len(kept_ids) + len(removed) == len(ds)
    return result, kept_ids, removed


KINDS = ["dataset", "stream"]


def test_texts_are_what_the_tests_say():
    assert shingle_jaccard(T1, T1_NEAR) > 0.9
    assert 0.2 < shingle_jaccard(T1, T1_HALF) < 0.6
    assert shingle_jaccard(T1, T2) < 0.05 and shingle_jaccard(T2, T3) < 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_image(kind):
    result, kept, removed = run(make(dedup_rows()), [DuplicateImage()], kind)
    assert removed == [("a1", "duplicate_image", "a0")]
    assert "same image bytes" in result.removed[0].reason and result.removed[0].duplicate_of_index == 0
    assert "a5" in kept  # no image: passes
    assert result.counts == {"duplicate_image": 1}


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_answer(kind):
    result, kept, removed = run(make(dedup_rows()), [DuplicateAnswer()], kind)
    assert removed == [("a2", "duplicate_answer", "a0"), ("a5", "duplicate_answer", "a4"), ("a7", "duplicate_answer", "a6")]
    assert kept == ["a0", "a1", "a3", "a4", "a6", "a8"]


@pytest.mark.parametrize("kind", KINDS)
def test_near_duplicate_answer(kind):
    result, kept, removed = run(make(dedup_rows()), [NearDuplicateAnswer(threshold=0.8)], kind)
    # identical answers are near-duplicates too; "是的。" is too short to judge; a8 shares only part of T1
    assert removed == [
        ("a2", "near_duplicate_answer", "a0"),
        ("a3", "near_duplicate_answer", "a0"),
        ("a5", "near_duplicate_answer", "a4"),
    ]
    assert "estimated Jaccard" in result.removed[1].reason
    assert kept == ["a0", "a1", "a4", "a6", "a7", "a8"]


def test_near_duplicate_threshold_is_respected():
    # a8 shares about 30% of a0's shingles: kept at 0.8 (above), removed at 0.2
    loose = filter_dataset(make(dedup_rows()), [NearDuplicateAnswer(threshold=0.2, max_bands=16)], progress=False)
    assert ("a8", "a0") in [(r.id, r.duplicate_of) for r in loose.removed]
    with pytest.raises(ValueError, match="more than 8 LSH bands"):
        NearDuplicateAnswer(threshold=0.2)


def test_minhash_index_estimates_jaccard():
    index = MinHashIndex(threshold=0.8)
    index.add(minhash(T1), "t1")
    hit = index.query(minhash(T1_NEAR))
    assert hit[0] == "t1" and abs(hit[1] - shingle_jaccard(T1, T1_NEAR)) < 0.1
    assert index.query(minhash(T2)) is None and index.query(minhash(T1_HALF)) is None
    assert minhash("") is None
    assert (minhash(T1) == minhash(T1)).all()  # fixed seeds: reproducible


@pytest.mark.parametrize("kind", KINDS)
def test_rules_compose_in_one_pass(kind):
    rules = [DuplicateImage(), DuplicateAnswer(), NearDuplicateAnswer()]
    result, kept, removed = run(make(dedup_rows()), rules, kind)
    assert removed == [
        ("a1", "duplicate_image", "a0"),
        ("a2", "duplicate_answer", "a0"),
        ("a3", "near_duplicate_answer", "a0"),
        ("a5", "duplicate_answer", "a4"),
        ("a7", "duplicate_answer", "a6"),
    ]
    assert result.counts == {"duplicate_image": 1, "duplicate_answer": 3, "near_duplicate_answer": 1}
    assert kept == ["a0", "a4", "a6", "a8"]


@pytest.mark.parametrize("kind", KINDS)
def test_results_chain_through_kept(kind):
    ds = make(dedup_rows())
    src = ds if kind == "dataset" else ds.to_iterable_dataset()
    first = remove_duplicate_images(src, progress=False)
    second = remove_duplicate_answers(first.kept, progress=False)
    third = remove_near_duplicate_answers(second.kept, progress=False)
    ids = [e["id"] for e in third.kept]
    assert ids == ["a0", "a4", "a6", "a8"]
    assert [r.id for r in first.removed + second.removed + third.removed] == ["a1", "a2", "a5", "a7", "a3"]


def test_duplicates_point_at_kept_samples_only():
    rows = [
        row("x", "conversation", turns("<image>\n问?", "短"), IMG[7]),  # removed for length first
        row("y", "conversation", turns("<image>\n问?", "足够长的回答。"), IMG[7]),  # same image, now the first kept
    ]
    result = filter_dataset(make(rows), [LengthBounds(min=3), DuplicateImage()], progress=False)
    assert [(r.id, r.rule) for r in result.removed] == [("x", "length_chars")]
    assert list(result.kept["id"]) == ["y"]


@pytest.mark.parametrize("kind", KINDS)
def test_length_bounds_in_characters(kind):
    rows = [
        row("short", "conversation", turns("问?", "嗯")),  # answer 1 char
        row("ok", "conversation", turns("问?", "三个字", "再问?", "十个字十个字十个字十")),  # 3 and 10
        row("long", "conversation", turns("问?", "十一个字十一个字十一个")),  # 11
        row("longq", "conversation", turns("<image>\n" + "问" * 12, "好的。")),
    ]
    result, kept, removed = run(make(rows), [LengthBounds(min=2, max=10, unit="chars", scope="answer")], kind)
    assert kept == ["ok", "longq"]
    reasons = {r.id: r.reason for r in result.removed}
    assert reasons == {
        "short": "answer 1 has 1 chars, below the minimum 2",
        "long": "answer 1 has 11 chars, above the maximum 10",
    }
    _, kept_q, _ = run(make(rows), [LengthBounds(max=10, scope="question")], kind)
    assert kept_q == ["short", "ok", "long"]  # the <image> placeholder is not counted, 12 chars are
    _, kept_s, removed_s = run(make(rows), [LengthBounds(min=5, max=18, scope="sample")], kind)
    # sample totals: short 2+1=3, ok 2+3+3+10=18, long 2+11=13, longq 12+3=15
    assert kept_s == ["ok", "long", "longq"] and removed_s == [("short", "length_chars", None)]


def test_length_bounds_in_tokens():
    rows = [
        row("a", "conversation", turns("问?", "猫")),  # 3 tokens (UTF-8 bytes)
        row("b", "conversation", turns("问?", "cat and dog")),  # 11 tokens
        row("c", "conversation", turns("问?", "两只猫")),  # 9 tokens
    ]
    result = filter_length(make(rows), min=4, max=10, unit="tokens", tokenizer=byte_tokenizer(), progress=False)
    assert list(result.kept["id"]) == ["c"]
    assert {r.id: r.reason for r in result.removed} == {
        "a": "answer 1 has 3 tokens, below the minimum 4",
        "b": "answer 1 has 11 tokens, above the maximum 10",
    }
    assert result.counts == {"length_tokens": 2}
    with pytest.raises(ValueError, match="needs a tokenizer"):
        LengthBounds(max=3, unit="tokens")
    with pytest.raises(ValueError, match="min or max"):
        LengthBounds()


@pytest.mark.parametrize("kind", KINDS)
def test_cjk_share_bounds(kind):
    # shares of the known set: c1 .917, c2 .909, r1 .5, d1 1.0, e1 0.0, d2 .947
    result, kept, removed = run(known_dataset(), [CJKShareBounds(min=0.6)], kind)
    assert kept == ["c1", "c2", "d1", "d2"]
    assert {r.id: r.reason for r in result.removed} == {
        "r1": "CJK share 0.500 below the minimum 0.6",
        "e1": "CJK share 0.000 below the minimum 0.6",
    }
    _, kept_max, _ = run(known_dataset(), [CJKShareBounds(max=0.95)], kind)
    assert kept_max == ["c1", "c2", "r1", "e1", "d2"]
    both = filter_cjk_share(known_dataset(), min=0.6, max=0.95, progress=False)
    assert list(both.kept["id"]) == ["c1", "c2", "d2"]


REGEN_FEATURES = datasets.Features(
    {**FEATURES, "parse_status": datasets.Value("string"), "parse_reason": datasets.Value("string"),
     "parse_message": datasets.Value("string")}
)


@pytest.mark.parametrize("kind", KINDS)
def test_parse_status(kind):
    rows = [
        row("ok", "conversation", turns("<image>\n问?", "答。"), IMG[1], parse_status="ok", parse_reason=None, parse_message=None),
        row("bad", "conversation", [], IMG[2], parse_status="failed", parse_reason="no_turns",
            parse_message="no 用户/助手 turns in the reply"),
        row("orig", "conversation", turns("<image>\n问?", "答。"), IMG[3], parse_status=None, parse_reason=None, parse_message=None),
    ]
    ds = make(rows, REGEN_FEATURES)
    result, kept, removed = run(ds, [ParseStatus()], kind)
    assert kept == ["ok", "orig"] and removed == [("bad", "parse_status", None)]
    assert result.removed[0].reason == "parse_status 'failed' not in ['ok']: no_turns - no 用户/助手 turns in the reply"
    _, kept_all, _ = run(ds, [ParseStatus(allowed=("ok", "failed"))], kind)
    assert kept_all == ["ok", "bad", "orig"]
    # original data has no parse_status column: everything passes
    _, kept_orig, removed_orig = run(known_dataset(), [ParseStatus()], kind)
    assert len(kept_orig) == 6 and removed_orig == []


def test_stream_keeps_features_decodes_images_and_restarts_cleanly():
    stream = make(dedup_rows()).to_iterable_dataset(num_shards=2)
    result = filter_dataset(stream, [DuplicateImage(), DuplicateAnswer()], progress=False)
    assert result.kept.features == stream.features
    first = list(result.kept)
    assert all(isinstance(e["image"], Image.Image) or e["image"] is None for e in first)
    assert [e["id"] for e in first] == ["a0", "a3", "a4", "a6", "a8"]  # each with its image
    assert sum(isinstance(e["image"], Image.Image) for e in first) == 5
    n_removed = len(result.removed)
    second = list(result.kept)  # a second pass starts the rules over
    assert [e["id"] for e in second] == [e["id"] for e in first] and len(result.removed) == n_removed == 4


def test_dataset_kept_is_a_view_with_decoded_images():
    ds = make(dedup_rows())
    result = filter_dataset(ds, ["duplicate_image"], progress=False)
    assert isinstance(result.kept[0]["image"], Image.Image)
    assert list(result.removed_samples()["id"]) == ["a1"]
    untouched = filter_dataset(ds, [("cjk_share", {"max": 1.0})], progress=False)
    assert untouched.kept is ds and untouched.removed == []


def test_rules_by_name_and_errors():
    assert set(RULES) == {"duplicate_image", "duplicate_answer", "near_duplicate_answer", "length_chars",
                          "length_tokens", "cjk_share", "parse_status"}
    ds = make(dedup_rows())
    r = filter_dataset(ds, ["duplicate_image", ("length_chars", {"min": 4})], progress=False)
    assert r.counts == {"duplicate_image": 1, "length_chars": 2}  # a1 by image, "是的。" (3 chars) twice
    with pytest.raises(ValueError, match="unknown filter rule 'nope'"):
        filter_dataset(ds, ["nope"])
    with pytest.raises(ValueError, match="at least one rule"):
        filter_dataset(ds, [])
    with pytest.raises(ValueError, match="once"):
        filter_dataset(ds, ["duplicate_image", "duplicate_image"])


@pytest.mark.parametrize("kind", KINDS)
def test_save_writes_parquet_and_removed_jsonl(tmp_path, kind):
    ds = make(dedup_rows())
    src = ds if kind == "dataset" else ds.to_iterable_dataset(num_shards=2)
    result = filter_dataset(src, [DuplicateImage(), DuplicateAnswer()], progress=False)
    paths = result.save(tmp_path / "out")
    kept = datasets.load_dataset("parquet", data_files=str(paths["kept"]), split="train")
    assert list(kept["id"]) == ["a0", "a3", "a4", "a6", "a8"]
    assert kept.features == FEATURES
    raw = kept.cast_column("image", datasets.Image(decode=False))
    assert raw[0]["image"]["bytes"] == IMG[0] and raw[3]["image"]["bytes"] == IMG[4]
    lines = [json.loads(x) for x in paths["removed"].read_text(encoding="utf-8").splitlines()]
    assert [(x["id"], x["rule"], x["duplicate_of"]) for x in lines] == [
        ("a1", "duplicate_image", "a0"), ("a2", "duplicate_answer", "a0"),
        ("a5", "duplicate_answer", "a4"), ("a7", "duplicate_answer", "a6"),
    ]
    assert lines[0]["sample"]["conversations"][1]["value"] == T2 and lines[0]["sample"]["image"] == "a1.jpg"
    assert lines[2]["sample"]["image"] is None
    report = json.loads(paths["report"].read_text(encoding="utf-8"))
    assert report["input"] == 9 and report["kept"] == 5 and report["removed"] == 4
    assert report["removed_per_rule"] == {"duplicate_image": 1, "duplicate_answer": 3}


def test_cli_filter(tmp_path, capsys):
    from llava_zh.cli import main

    src = write_source(tmp_path / "src", dedup_rows())
    out = tmp_path / "out"
    code = main(["filter", str(src), "--out", str(out), "--dedup-images", "--dedup-answers", "--near-dup-answers",
                 "--min-chars", "2", "--min-cjk", "0.5"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "input: 9 samples" in printed
    for rule, n in (("length_chars", 0), ("cjk_share", 0), ("duplicate_image", 1), ("duplicate_answer", 3),
                    ("near_duplicate_answer", 1)):
        assert f"removed by {rule}" in printed
        assert json.loads((out / "filter_report.json").read_text())["removed_per_rule"][rule] == n
    assert "kept: 4" in printed
    kept = datasets.load_dataset("parquet", data_files=str(out / "kept.parquet"), split="train")
    assert list(kept["id"]) == ["a0", "a4", "a6", "a8"]
    assert len((out / "removed.jsonl").read_text(encoding="utf-8").splitlines()) == 5
    # the kept data loads back through llava_zh.load_dataset
    again = llava_zh.load_dataset(str(out / "kept.parquet"))
    assert list(again["id"]) == ["a0", "a4", "a6", "a8"]
    # streaming gives the same counts
    assert main(["filter", str(src), "--out", str(tmp_path / "out2"), "--dedup-images", "--dedup-answers",
                 "--near-dup-answers", "--streaming"]) == 0
    rep2 = json.loads((tmp_path / "out2" / "filter_report.json").read_text())
    assert rep2["input"] == 9 and rep2["kept"] == 4
    # no rule, or token bounds without a tokenizer: usage errors
    assert main(["filter", str(src), "--out", str(out)]) == 2
    assert main(["filter", str(src), "--out", str(out), "--max-tokens", "5"]) == 2


def test_cli_filter_parse_status_on_regeneration_parquet(tmp_path, capsys):
    from llava_zh.cli import main

    rows = [
        row("ok", "conversation", turns("<image>\n问?", "答。"), IMG[1], parse_status="ok", parse_reason=None, parse_message=None),
        row("bad", "conversation", [], IMG[2], parse_status="failed", parse_reason="no_turns", parse_message="none"),
        row("ok2", "detail_description", turns("<image>\n描述。", "一张图。"), IMG[3], parse_status="ok",
            parse_reason=None, parse_message=None),
    ]
    shards = tmp_path / "regen"
    shards.mkdir()
    make(rows[:2], REGEN_FEATURES).to_parquet(str(shards / "part-0.parquet"))
    make(rows[2:], REGEN_FEATURES).to_parquet(str(shards / "part-1.parquet"))
    for streaming in ([], ["--streaming"]):
        out = tmp_path / f"out{len(streaming)}"
        assert main(["filter", str(shards), "--out", str(out), "--parse-status", *streaming]) == 0
        report = json.loads((out / "filter_report.json").read_text())
        assert report["removed_per_rule"] == {"parse_status": 1} and report["kept"] == 2
        removed = json.loads((out / "removed.jsonl").read_text(encoding="utf-8"))
        assert removed["id"] == "bad" and "no_turns" in removed["reason"]
        kept = datasets.load_dataset("parquet", data_files=str(out / "kept.parquet"), split="train")
        assert list(kept["id"]) == ["ok", "ok2"] and "parse_status" in kept.column_names
    assert "removed by parse_status" in capsys.readouterr().out
