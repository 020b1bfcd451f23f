"""Statistics on a known set of six samples: every number checked against values worked out by hand."""

from __future__ import annotations

import json
import sys
from fractions import Fraction

import datasets
import pytest
from PIL import ImageFile

import llava_zh
from inspect_data import byte_tokenizer, draw_image, known_dataset, known_rows, make, row, turns, write_source
from llava_zh.inspect.fields import cjk_share, questions_answers
from llava_zh.inspect.stats import HeavyHitters, IntHistogram

# The known set (tests/inspect_data.py), by hand. Questions have the <image> placeholder removed.
QUESTIONS = ["图中有几只猫?", "它们在做什么?", "图中有几只猫?", "图中有几只猫?", "详细描述这张图片。", "What is this?", "详细描述这张图片。"]
ANSWERS = ["两只猫。", "它们在睡觉。", "三只猫。", "A cat.", "一只橘猫趴在窗台上。", "It is a dog.", "图中有一只狗和 2 个球"]
QUESTION_CHARS = [7, 7, 7, 7, 9, 13, 9]
ANSWER_CHARS = [4, 6, 4, 6, 10, 12, 12]
# CJK characters / non-space characters per sample (c1, c2, r1, d1, e1, d2)
CJK_SHARES = [Fraction(22, 24), Fraction(10, 11), Fraction(6, 12), Fraction(19, 19), Fraction(0, 20), Fraction(18, 19)]


@pytest.fixture(scope="module")
def result():
    return llava_zh.stats(known_dataset(), progress=False).to_dict()


def test_hand_counts_agree_with_the_texts():
    # guards the hand-made tables above against a typo in the fixture
    qs, ans = [], []
    for r in known_rows():
        q, a = questions_answers(r["conversations"])
        qs += q
        ans += a
    assert qs == QUESTIONS and ans == ANSWERS
    assert [len(q) for q in QUESTIONS] == QUESTION_CHARS
    assert [len(a) for a in ANSWERS] == ANSWER_CHARS


def test_counts_per_task_language_source(result):
    assert result["samples"] == 6
    assert result["by_task"] == {"conversation": 3, "detail_description": 2, "complex_reasoning": 1}
    assert result["by_language"] == {"zh": 5, "en": 1}
    assert result["by_source"] == {"llava-instruct-zh-600k": 5, "llava-instruct-150k": 1}


def test_rounds_and_turns(result):
    rounds = result["rounds"]
    assert (rounds["count"], rounds["sum"], rounds["min"], rounds["max"]) == (6, 7, 1, 2)
    assert rounds["mean"] == round(7 / 6, 4)
    assert (rounds["p50"], rounds["p90"], rounds["p99"]) == (1, 2, 2)
    assert rounds["histogram"] == {"edges": [1, 2, 3], "counts": [5, 1], "overflow": 0}
    assert result["turns"]["sum"] == 14


def test_characters_per_question_and_answer(result):
    q = result["question_chars"]
    assert (q["count"], q["sum"], q["min"], q["max"]) == (7, 59, 7, 13)
    assert q["mean"] == round(59 / 7, 4)
    # nearest rank on [7, 7, 7, 7, 9, 9, 13]: p50 = 4th value, p90 = p99 = 7th
    assert (q["p50"], q["p90"], q["p99"]) == (7, 13, 13)
    assert q["histogram"]["edges"] == list(range(7, 15))
    assert q["histogram"]["counts"] == [4, 0, 2, 0, 0, 0, 1]
    a = result["answer_chars"]
    assert (a["count"], a["sum"], a["min"], a["max"], a["p50"], a["p90"]) == (7, 54, 4, 12, 6, 12)
    assert a["histogram"]["counts"] == [2, 0, 2, 0, 0, 0, 1, 0, 2]
    assert sum(a["histogram"]["counts"]) == 7


def test_tokens_per_question_and_answer():
    # one token per UTF-8 byte: a CJK character is 3 tokens, ASCII 1
    tok = byte_tokenizer()
    res = llava_zh.stats(known_dataset(), tokenizer=tok, progress=False).to_dict()
    q_tokens = [19, 19, 19, 19, 27, 13, 27]
    a_tokens = [12, 18, 12, 6, 30, 12, 30]
    assert [len(s.encode()) for s in QUESTIONS] == q_tokens and [len(s.encode()) for s in ANSWERS] == a_tokens
    assert (res["question_tokens"]["sum"], res["question_tokens"]["min"], res["question_tokens"]["max"]) == (143, 13, 27)
    assert res["question_tokens"]["p50"] == 19
    assert (res["answer_tokens"]["sum"], res["answer_tokens"]["min"], res["answer_tokens"]["max"]) == (120, 6, 30)
    assert res["answer_tokens"]["p50"] == 12
    # per sample: c1 19+19+12+18, c2 19+12, r1 19+6, d1 27+30, e1 13+12, d2 27+30
    assert res["sample_tokens"]["sum"] == 68 + 31 + 25 + 57 + 25 + 57
    assert (res["sample_tokens"]["min"], res["sample_tokens"]["max"]) == (25, 68)
    # a transformers tokenizer wrapping the same model counts the same
    from transformers import PreTrainedTokenizerFast

    res_hf = llava_zh.stats(known_dataset(), tokenizer=PreTrainedTokenizerFast(tokenizer_object=tok), progress=False)
    assert res_hf["answer_tokens"] == res["answer_tokens"] and res_hf["question_tokens"] == res["question_tokens"]


def test_no_token_section_without_tokenizer(result):
    assert "question_tokens" not in result and "answer_tokens" not in result


def test_cjk_share_per_sample(result):
    expected = [float(f) for f in CJK_SHARES]
    shares = [cjk_share("\n".join(sum(questions_answers(r["conversations"]), []))) for r in known_rows()]
    assert shares == pytest.approx(expected)
    cjk = result["cjk_share"]
    assert cjk["count"] == 6 and cjk["without_text"] == 0
    assert cjk["min"] == 0.0 and cjk["max"] == 1.0
    assert cjk["mean"] == round(float(sum(CJK_SHARES) / 6), 6)
    counts = cjk["histogram"]["counts"]
    assert len(counts) == 20 and sum(counts) == 6
    # 0.0 -> bin 0, 0.5 -> bin 10, 0.909 / 0.917 / 0.947 -> bin 18, 1.0 -> last bin
    assert {i: c for i, c in enumerate(counts) if c} == {0: 1, 10: 1, 18: 3, 19: 1}


def test_cjk_definition():
    assert cjk_share("猫") == 1.0
    assert cjk_share("cat") == 0.0
    assert cjk_share("猫，cat！") == pytest.approx(3 / 6)  # full-width punctuation counts as CJK
    assert cjk_share("  \n ") is None


def test_images_from_headers(result):
    img = result["images"]
    assert (img["with_image"], img["without_image"], img["unreadable"]) == (5, 1, 0)
    assert img["format"] == {"JPEG": 4, "PNG": 1}
    assert img["mode"] == {"RGB": 3, "L": 1, "RGBA": 1}
    w, h = img["width"], img["height"]
    assert (w["count"], w["sum"], w["min"], w["max"], w["p50"]) == (5, 32 + 64 + 100 + 64 + 128, 32, 128, 64)
    assert (h["count"], h["sum"], h["min"], h["max"], h["p50"]) == (5, 32 + 48 + 50 + 48 + 96, 32, 96, 48)


def test_most_repeated_questions(result):
    top = result["top_questions"]
    assert top["questions"] == 7 and top["exact"] is True and top["max_undercount"] == 0
    assert top["top"] == [{"question": "图中有几只猫?", "count": 3}, {"question": "详细描述这张图片。", "count": 2}]


def test_streaming_gives_the_same_numbers(result):
    stream = known_dataset().to_iterable_dataset(num_shards=2)
    assert isinstance(stream, datasets.IterableDataset)
    assert llava_zh.stats(stream, progress=False).to_dict() == result


def test_images_are_never_decoded(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise AssertionError("stats decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    res = llava_zh.stats(known_dataset(), progress=False)
    assert res["images"]["format"] == {"JPEG": 4, "PNG": 1}


def test_unreadable_image_is_counted_not_fatal():
    rows = known_rows()[:2]
    rows[1]["image"] = {"bytes": b"not an image at all", "path": "bad.jpg"}
    res = llava_zh.stats(make(rows), progress=False)
    assert res["images"]["unreadable"] == 1 and res["images"]["unreadable_ids"] == ["c2"]
    assert res["images"]["width"]["count"] == 1


def test_text_only_dataset_without_image_column():
    ds = known_dataset().remove_columns(["image"])
    res = llava_zh.stats(ds, progress=False)
    assert res["images"]["with_image"] == 0 and res["images"]["without_image"] == 6
    assert res["answer_chars"]["sum"] == 54


def test_dataset_dict_with_one_split_and_error_for_several():
    dd = datasets.DatasetDict({"train": known_dataset()})
    assert llava_zh.stats(dd, progress=False)["samples"] == 6
    dd["test"] = known_dataset()
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\]"):
        llava_zh.stats(dd, progress=False)


def test_int_histogram_quantiles_and_bins():
    h = IntHistogram()
    h.update([5, 1, 3, 3, 10])
    assert [h.quantile(q) for q in (0.0, 0.2, 0.4, 0.5, 0.8, 1.0)] == [1, 1, 3, 3, 5, 10]
    assert h.bins(max_bins=4) == {"edges": [1, 4, 7, 10, 13], "counts": [3, 1, 0, 1], "overflow": 0}
    # a far outlier is cut off the plot range and counted as overflow
    h2 = IntHistogram()
    h2.update([1] * 200 + [2] * 200 + [100_000])
    b = h2.bins()
    assert b["edges"] == [1, 2, 3] and b["counts"] == [200, 200] and b["overflow"] == 1
    # values past the exact limit go to power-of-two buckets: memory stays bounded
    h3 = IntHistogram(exact_limit=16)
    h3.update(range(1000))
    assert len(h3.counts) == 16 and len(h3.large) == 6 and not h3.exact
    assert (h3.min, h3.max, h3.n) == (0, 999, 1000)
    with pytest.raises(ValueError, match="non-negative"):
        h.add(-1)


def test_heavy_hitters_bounded_and_exact_when_small():
    hh = HeavyHitters(capacity=3)
    for key in "aabbc":
        hh.add(key)
    assert hh.exact and hh.top(5) == [("a", 2), ("b", 2), ("c", 1)]
    # past capacity: table stays bounded, a frequent key survives, counts are lower bounds within the error
    hh = HeavyHitters(capacity=50)
    stream = []
    for i in range(5000):
        stream.append("常见问题" if i % 4 == 0 else f"question {i}")
    for key in stream:
        hh.add(key)
    assert len(hh.counts) <= 50 and not hh.exact
    (key, count), = hh.top(1)
    assert key == "常见问题"
    assert 1250 - hh.decrements <= count <= 1250


def test_save_writes_json_markdown_and_plots(tmp_path):
    res = llava_zh.stats(known_dataset(), tokenizer=byte_tokenizer(), out_dir=tmp_path / "out", progress=False)
    out = tmp_path / "out"
    data = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(res.to_dict()))
    md = (out / "stats.md").read_text(encoding="utf-8")
    assert "| conversation | 3 | 50.0% |" in md
    assert "| characters per answer | 7 | 4 | 7.7143 | 6 | 12 | 12 | 12 |" in md
    assert "| 3 | 图中有几只猫? |" in md
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    for name in ("by_task", "rounds", "question_chars", "answer_chars", "question_tokens", "answer_tokens",
                 "image_width", "image_height", "cjk_share", "image_format", "image_mode"):
        assert f"{name}.png" in pngs
        assert f"(plots/{name}.png)" in md
    for p in (out / "plots").glob("*.png"):
        head = p.read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000


def test_plots_draw_chinese_labels_with_a_cjk_font(tmp_path):
    import warnings

    from matplotlib import font_manager

    from llava_zh.inspect.plots import CJK_FONTS

    if not {f.name for f in font_manager.fontManager.ttflist} & set(CJK_FONTS):
        pytest.skip("no CJK font installed (.ci/install-chromium installs fonts-wqy-zenhei)")
    rows = known_rows()
    rows[0]["source"] = "中文来源"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llava_zh.stats(make(rows), out_dir=tmp_path, progress=False)
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert (tmp_path / "plots" / "by_source.png").exists()


def test_plots_need_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "llava-zh\[plots\]"'):
        llava_zh.stats(known_dataset(), out_dir=tmp_path / "o", progress=False)
    llava_zh.stats(known_dataset(), out_dir=tmp_path / "o2", plots=False, progress=False)
    assert (tmp_path / "o2" / "stats.json").exists() and not (tmp_path / "o2" / "plots").exists()


def test_cli_stats(tmp_path, capsys):
    from llava_zh.cli import main

    rows = [r for r in known_rows() if r["image"] is None or r["image"]["path"].endswith(".jpg")]
    rows.append(row("c9", "conversation", turns(*(["<image>\n图中有几只猫?"] + ["一只。"])), draw_image(40, 30, 9)))
    src = write_source(tmp_path / "src", rows)
    tok_dir = tmp_path / "tok"
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=byte_tokenizer()).save_pretrained(tok_dir)
    assert main(["stats", str(src), "--out", str(tmp_path / "st"), "--tokenizer", str(tok_dir)]) == 0
    printed = capsys.readouterr().out
    assert "6 samples" in printed
    data = json.loads((tmp_path / "st" / "stats.json").read_text(encoding="utf-8"))
    assert data["samples"] == 6
    assert data["by_task"] == {"conversation": 4, "detail_description": 2}
    assert data["top_questions"]["top"][0] == {"question": "图中有几只猫?", "count": 3}
    assert data["answer_tokens"]["count"] == 7
    assert (tmp_path / "st" / "plots" / "answer_tokens.png").exists()
    # --streaming reads the same numbers; a tokenizer.json file works as --tokenizer too
    assert main(["stats", str(src), "--out", str(tmp_path / "st2"), "--streaming", "--no-plots",
                 "--tokenizer", str(tok_dir / "tokenizer.json")]) == 0
    data2 = json.loads((tmp_path / "st2" / "stats.json").read_text(encoding="utf-8"))
    assert data2 == data
