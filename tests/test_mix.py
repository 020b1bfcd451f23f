"""llava_zh.mix: exact shares by samples and by tokens, determinism, stopping, streaming == map-style,
splitting by node, task alignment, the report, writing the mix, the CLI verb, and epochs (set_epoch)."""

import json
from collections import Counter

import datasets
import numpy as np
import pytest
from datasets.distributed import split_dataset_by_node

import llava_zh
from factories import jpeg_bytes, make_dataset
from llava_zh.mixing import MixedDataset, MixExamplesIterable, count_tokens, estimate_tokens, write_mix
from llava_zh.schema import FEATURES, TASKS

ZH = "这张图片展示了一条繁忙的街道，行人和车辆来来往往。"
EN = "The picture shows a busy street with people and cars passing by, under a grey sky in the late afternoon. "


def rows(lang, n, image=False, task_cycle=(0, 1, 2), source=None, **extra):
    """Synthetic samples of varied length; Chinese rows can carry a JPEG."""
    text = ZH if lang == "zh" else EN
    img = jpeg_bytes(8, 6) if image else None
    out = []
    for i in range(n):
        rounds = 1 + i % 3
        conv = []
        for r in range(rounds):
            conv.append({"from": "human", "value": ("<image>\n" if r == 0 and image else "") + text[: 5 + i % 13]})
            conv.append({"from": "gpt", "value": text * (1 + (i * 7 + r) % 9)})
        out.append({
            "id": f"{lang}-{i:05d}",
            "task": TASKS[task_cycle[i % len(task_cycle)]],
            "language": lang,
            "source": source,
            "image": {"bytes": img, "path": f"{i}.jpg"} if image else None,
            "conversations": conv,
            **extra,
        })
    return out


def dataset(lang, n, **kw):
    return datasets.Dataset.from_list(rows(lang, n, **kw), features=FEATURES)


@pytest.fixture(scope="module")
def zh():
    return dataset("zh", 3000, task_cycle=(0, 0, 1, 2))


@pytest.fixture(scope="module")
def en():
    return dataset("en", 5000)


def ids(ds):
    return [r["id"] for r in ds.select_columns(["id"])] if isinstance(ds, datasets.Dataset) else [r["id"] for r in ds]


def streamed(ds, shards=2):
    return ds.to_iterable_dataset(num_shards=shards)


# ---------------------------------------------------------------------------------------------------- token counts


def test_token_estimate_counts_cjk_and_other_characters_and_drops_the_placeholder():
    assert estimate_tokens("一二三四五六七") == 5  # 7 / 1.4
    assert estimate_tokens("abcdefgh") == 2  # 8 / 4
    assert estimate_tokens("一二三四五六七abcdefgh") == 7
    conv = [[{"from": "human", "value": "<image>\n一二三四五六七"}, {"from": "gpt", "value": "abcdefg"}], []]
    # "\n" + 7 CJK in one turn, 7 others in the other: ceil(7/1.4 + 8/4) = 7; an empty conversation is 0
    assert count_tokens(conv).tolist() == [7, 0]


def test_cjk_count_from_bytes_equals_the_regex():
    import random

    import pyarrow as pa
    import pyarrow.compute as pc

    from llava_zh.mixing import CJK_PATTERN, _char_counts

    rng = random.Random(0)
    blocks = [(0x20, 0x7E), (0xA0, 0x7FF), (0x800, 0x2FFF), (0x3000, 0x9FFF), (0xA000, 0xD7FF), (0xE000, 0xF8FF),
              (0xF900, 0xFAFF), (0xFB00, 0xFEFF), (0xFF00, 0xFFFF), (0x10000, 0x10FFFF)]
    texts = ["".join(chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(0, 20))) for _ in range(3000)]
    texts = [t.encode("utf-8", "replace").decode("utf-8", "replace") for t in texts] + [None, "中文，ｆｕｌｌ。"]
    values = pa.array(texts).slice(3)  # an offset into the buffers, as a flattened column has
    chars, cjk = _char_counts(values)
    assert chars.tolist() == pc.fill_null(pc.utf8_length(values), 0).to_pylist()
    assert cjk.tolist() == pc.fill_null(pc.count_substring_regex(values, CJK_PATTERN), 0).to_pylist()


def test_token_counts_with_a_real_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "cat": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    conv = [[{"from": "human", "value": "<image>\na cat sits"}, {"from": "gpt", "value": "a cat ."}]]
    assert count_tokens(conv, tok).tolist() == [6]
    assert count_tokens(conv, PreTrainedTokenizerFast(tokenizer_object=tok)).tolist() == [6]
    assert count_tokens(conv, lambda text: text.split()).tolist() == [6]


# ---------------------------------------------------------------------------------------------------- shares


def _shares(values):
    c = Counter(values)
    return {k: v / sum(c.values()) for k, v in c.items()}


@pytest.mark.parametrize("weights", [{"zh": 0.6, "en": 0.4}, {"zh": 0.15, "en": 0.85}])
def test_shares_by_samples_within_one_percent_on_10000(zh, en, weights):
    mixed, report = llava_zh.mix({"zh": zh, "en": en}, weights, total=10_000, seed=3)
    assert len(mixed) == 10_000
    got = _shares(mixed["language"])  # counted from the data, not taken from the report
    for name, want in weights.items():
        assert abs(got[name] - want) < 0.01
        assert abs(report.achieved()[name] - want) < 0.01
    assert report.achieved() == pytest.approx(got)
    assert report.num_samples == 10_000


def test_shares_by_tokens_within_one_percent_on_10000(zh, en):
    weights = {"zh": 0.3, "en": 0.7}
    mixed, report = llava_zh.mix({"zh": zh, "en": en}, weights, by="tokens", total=10_000, seed=1)
    assert len(mixed) == 10_000
    tokens = count_tokens(mixed.with_format("arrow")[:]["conversations"])
    languages = np.asarray(mixed["language"])
    whole = tokens.sum()
    for name, want in weights.items():
        assert abs(tokens[languages == name].sum() / whole - want) < 0.01
    assert report.achieved("tokens") == pytest.approx(report.achieved())
    assert report.max_deviation() < 0.01
    # by samples the same weights give other token shares: the weighting really is by tokens
    _, by_samples = llava_zh.mix({"zh": zh, "en": en}, weights, total=10_000, seed=1)
    assert abs(by_samples.achieved("tokens")["zh"] - 0.3) > 0.05


def test_shares_by_tokens_counted_with_a_tokenizer(zh, en):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # English words; a Chinese sentence is a few tokens
    weights = {"zh": 0.5, "en": 0.5}
    mixed, report = llava_zh.mix({"zh": zh, "en": en}, weights, by="tokens", total=10_000, tokenizer=tok)
    tokens = count_tokens(list(mixed["conversations"]), tok)
    en_share = tokens[np.asarray(mixed["language"]) == "en"].sum() / tokens.sum()
    assert abs(en_share - 0.5) < 0.01
    assert report.token_counter == "tokenizer"
    assert report.achieved()["en"] == pytest.approx(en_share)


# ---------------------------------------------------------------------------------------------------- order


def test_same_seed_same_mix_other_seed_other_order(zh, en):
    a, _ = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 1}, total=2000, seed=7)
    b, _ = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 1}, total=2000, seed=7)
    c, _ = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 1}, total=2000, seed=8)
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)
    assert Counter(ids(a)) == Counter(ids(c))  # the seed orders, the weights compose
    assert a._fingerprint == b._fingerprint != c._fingerprint


def test_each_source_keeps_its_own_order(zh, en):
    mixed, _ = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 2}, stopping_strategy="first_exhausted")
    got = ids(mixed)
    assert [i for i in got if i.startswith("zh")] == zh["id"][: sum(i.startswith("zh") for i in got)]
    assert [i for i in got if i.startswith("en")] == en["id"][: sum(i.startswith("en") for i in got)]


def test_stopping_first_exhausted_repeats_nothing_and_ends_with_the_first_source_to_run_out(zh, en):
    mixed, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 0.5, "en": 0.5}, stopping_strategy="first_exhausted")
    got = ids(mixed)
    assert len(set(got)) == len(got)
    assert got[-1] == zh["id"][-1]  # zh (3000 at 1/2) runs out before en (5000 at 1/2)
    assert sum(i.startswith("zh") for i in got) == len(zh)
    assert abs(sum(i.startswith("en") for i in got) - len(zh)) <= 1
    assert report.stopping_strategy == "first_exhausted"


def test_stopping_all_exhausted_sees_every_sample_and_repeats_the_shorter_source(zh, en):
    mixed, _ = llava_zh.mix({"zh": zh, "en": en}, {"zh": 0.5, "en": 0.5}, stopping_strategy="all_exhausted")
    got = ids(mixed)
    assert set(got) == set(zh["id"]) | set(en["id"])
    assert got[-1] == en["id"][-1]  # the mix ends when en, the last source, finishes its first pass
    assert Counter(got)[en["id"][-1]] == 1
    n_zh = sum(i.startswith("zh") for i in got)
    assert abs(n_zh - len(en)) <= 1 and n_zh > len(zh)  # zh cycled to keep its share
    assert Counter(got)[zh["id"][0]] == 2


def test_total_overrides_stopping_and_cycles(zh, en):
    for strategy in ("first_exhausted", "all_exhausted"):
        mixed, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 0.5, "en": 0.5}, stopping_strategy=strategy, total=12_000)
        assert len(mixed) == 12_000 and report.num_samples == 12_000
        assert Counter(mixed["language"]) == {"zh": 6000, "en": 6000}


# ---------------------------------------------------------------------------------------------------- streaming


CASES = {
    "samples, all_exhausted": dict(),
    "samples, first_exhausted": dict(stopping_strategy="first_exhausted"),
    "tokens, total": dict(by="tokens", total=7000),
    "task_aligned by tokens": dict(by="tokens", task_aligned=True, stopping_strategy="first_exhausted"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_streaming_gives_the_same_sequence_as_map_style(zh, en, case):
    kwargs = CASES[case]
    weights = {"zh": 0.6, "en": 0.4}
    mapped, map_report = llava_zh.mix({"zh": zh, "en": en}, weights, seed=5, **kwargs)
    stream, stream_report = llava_zh.mix({"zh": streamed(zh), "en": streamed(en, 3)}, weights, seed=5, **kwargs)
    assert isinstance(stream, datasets.IterableDataset)
    assert isinstance(stream._ex_iterable, MixExamplesIterable) and stream._ex_iterable.iter_arrow
    assert ids(stream) == ids(mapped)
    assert not stream_report.ready  # computed on first use, by the same schedule
    assert stream_report.to_dict() == map_report.to_dict()


def test_streaming_python_path_matches_too(zh, en):
    """Inputs without an Arrow path (here after a Python .map) go through the per-example path."""
    mapped, _ = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 3}, by="tokens", total=3000, seed=2)
    stream, _ = llava_zh.mix(
        {"zh": streamed(zh).map(lambda x: x), "en": streamed(en)}, {"zh": 1, "en": 3}, by="tokens", total=3000, seed=2
    )
    assert stream._ex_iterable.iter_arrow is None
    assert ids(stream) == ids(mapped)


def test_map_style_and_streaming_inputs_mix_as_streaming(zh, en):
    mapped, _ = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 1}, total=500)
    mixed, _ = llava_zh.mix({"zh": zh, "en": streamed(en)}, {"zh": 1, "en": 1}, total=500)
    assert isinstance(mixed, datasets.IterableDataset)
    assert ids(mixed) == ids(mapped)


def test_streaming_mix_resumes_from_its_state_dict(zh, en):
    mixed, _ = llava_zh.mix({"zh": streamed(zh), "en": streamed(en)}, {"zh": 1, "en": 1}, total=1500)
    full = ids(mixed)
    it = iter(mixed)
    head = [next(it)["id"] for _ in range(700)]
    state = mixed.state_dict()
    again, _ = llava_zh.mix({"zh": streamed(zh), "en": streamed(en)}, {"zh": 1, "en": 1}, total=1500)
    again.load_state_dict(state)
    assert head + ids(again) == full


# ---------------------------------------------------------------------------------------------------- nodes


@pytest.mark.parametrize("world_size", [2, 3])
def test_split_by_node_gives_disjoint_parts_that_make_the_mix(zh, en, world_size):
    weights = {"zh": 0.5, "en": 0.5}
    mapped, _ = llava_zh.mix({"zh": zh, "en": en}, weights, stopping_strategy="first_exhausted")
    full = ids(mapped)
    assert len(set(full)) == len(full)

    parts = [ids(split_dataset_by_node(mapped, rank=r, world_size=world_size)) for r in range(world_size)]
    assert sum(parts, []) == full  # contiguous blocks, in order
    stream, _ = llava_zh.mix({"zh": streamed(zh), "en": streamed(en)}, weights, stopping_strategy="first_exhausted")
    sparts = [ids(split_dataset_by_node(stream, rank=r, world_size=world_size)) for r in range(world_size)]
    for part in (parts, sparts):
        seen = [set(p) for p in part]
        assert all(not (seen[a] & seen[b]) for a in range(world_size) for b in range(a + 1, world_size))
        assert set().union(*seen) == set(full)
        assert max(map(len, part)) - min(map(len, part)) <= 1
    rebuilt = [sparts[i % world_size][i // world_size] for i in range(len(full))]  # every world_size-th sample
    assert rebuilt == full


# ---------------------------------------------------------------------------------------------------- alignment


def test_task_aligned_gives_every_source_the_chinese_task_proportions(zh, en):
    mixed, report = llava_zh.mix({"en": en, "zh": zh}, {"zh": 0.5, "en": 0.5}, task_aligned=True, total=8000)
    want = {"conversation": 0.5, "complex_reasoning": 0.25, "detail_description": 0.25}  # zh: 2:1:1
    assert report.task_proportions == pytest.approx(want)
    for lang in ("zh", "en"):
        tasks = [t for t, l in zip(mixed["task"], mixed["language"]) if l == lang]
        assert len(tasks) == 4000
        for task, share in _shares(tasks).items():
            assert abs(share - want[task]) <= 2 / 4000
    _, plain = llava_zh.mix({"en": en, "zh": zh}, {"zh": 0.5, "en": 0.5}, total=8000)
    en_rows = [r for r in plain.rows if r.source == "en"]
    assert {r.task: r.samples for r in en_rows}["conversation"] < 1400  # en's own 1:1:1 without alignment


def test_task_aligned_with_given_proportions(zh, en):
    _, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 1}, total=3000,
                             task_aligned={"conversation": 1, "detail_description": 1})
    assert {r.task for r in report.rows} == {"conversation", "detail_description"}


def test_sources_are_cast_to_one_set_of_features_with_a_source_column(zh):
    bare = datasets.Dataset.from_list(
        [{"id": f"b{i}", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]} for i in range(50)]
    )
    undecoded = zh.select(range(50)).cast_column("image", datasets.Image(decode=False))
    mixed, report = llava_zh.mix({"zh": undecoded, "bare": bare}, {"zh": 1, "bare": 1})
    assert list(mixed.features) == list(FEATURES)
    assert set(mixed["source"]) == {"zh", "bare"}  # empty source values take the name given to mix
    assert {r.language for r in report.rows} == {"zh", None}
    assert mixed.features["image"] == datasets.Image(decode=False)  # the inputs' choice is kept
    stream, _ = llava_zh.mix({"zh": streamed(undecoded), "bare": streamed(bare)}, {"zh": 1, "bare": 1})
    assert list(stream) == list(mixed)


def test_text_only_english_with_image_bearing_chinese(tmp_path):
    root, _, _ = make_dataset(tmp_path, "jsonl", "zip", n_per_task=10)
    zh = llava_zh.load_dataset(str(root))
    records = [{"id": f"{i:012d}", "image": f"{i:012d}.jpg",
                "conversations": [{"from": "human", "value": "<image>\nWhat is on the table?"},
                                  {"from": "gpt", "value": "A red apple next to a cup."}]} for i in range(45)]
    (tmp_path / "complex_reasoning_77k.json").write_text(json.dumps(records))
    en = llava_zh.load_llava_instruct_150k(str(tmp_path / "complex_reasoning_77k.json"))  # no images: text-only
    mixed, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 0.4, "en": 0.6}, total=100)
    assert mixed.features == FEATURES
    for row in mixed:
        if row["language"] == "en":
            assert row["image"] is None and "<image>" not in row["conversations"][0]["value"]
            assert row["source"] == "llava-instruct-150k"
        else:
            assert row["image"].size[0] > 0 and row["conversations"][0]["value"].startswith("<image>")
    assert Counter(mixed["language"]) == {"zh": 40, "en": 60}
    stream, _ = llava_zh.mix({"zh": llava_zh.load_dataset(str(root), streaming=True), "en": en},
                             {"zh": 0.4, "en": 0.6}, total=100)
    assert ids(stream) == ids(mixed)

    # an input after a Python .map has no Arrow iterator: the mix's Python path, written out
    (tmp_path / "llava_instruct_150k.json").write_text(json.dumps(records))
    en_stream = llava_zh.load_llava_instruct_150k(str(tmp_path / "llava_instruct_150k.json"), streaming=True)
    en_stream = en_stream.map(lambda s: {**s, "id": s["id"]}, features=en_stream.features)
    stream, stream_report = llava_zh.mix({"zh": llava_zh.load_dataset(str(root), streaming=True), "en": en_stream},
                                         {"zh": 0.4, "en": 0.6}, total=100)
    assert stream._ex_iterable.iter_arrow is None
    write_mix(stream, tmp_path / "out", stream_report)
    back = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert back["id"] == mixed["id"] and back.features == FEATURES
    assert [r is None for r in back["image"]] == [lang == "en" for lang in back["language"]]
    assert stream_report.to_dict() == report.to_dict()


# ---------------------------------------------------------------------------------------------------- report


def test_report_table_and_dict(zh, en):
    _, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 0.6, "en": 0.4}, total=1000)
    text = str(report)
    assert "requested (samples)" in text and "60.00%" in text and "40.00%" in text
    assert "zh      conversation" in text and "en      detail_description" in text
    d = report.to_dict()
    assert d["num_samples"] == 1000 and sum(r["samples"] for r in d["rows"]) == 1000
    assert d["requested"] == {"zh": 0.6, "en": 0.4}
    json.dumps(d)


@pytest.mark.parametrize("bad", [
    dict(weights={"zh": 1}), dict(weights={"zh": -1, "en": 2}), dict(by="bytes"), dict(stopping_strategy="never"),
    dict(total=0), dict(task_aligned="fr"), dict(epoch_shuffle=0), dict(epoch_shuffle="full"),
])
def test_bad_arguments_are_refused(zh, en, bad):
    kwargs = {"weights": {"zh": 1, "en": 1}, **bad}
    with pytest.raises(ValueError):
        llava_zh.mix({"zh": zh, "en": en}, **kwargs)


def test_a_dataset_dict_is_refused_with_a_hint(zh):
    with pytest.raises(TypeError, match="split"):
        llava_zh.mix({"zh": datasets.DatasetDict({"train": zh})}, {"zh": 1})


def test_zero_weight_leaves_a_source_out(zh, en):
    mixed, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 0})
    assert set(mixed["language"]) == {"zh"} and len(mixed) == len(zh)
    assert report.achieved() == {"zh": 1.0, "en": 0.0}


# ---------------------------------------------------------------------------------------------------- writing, CLI


def test_write_mix_keeps_the_order_and_embeds_images(tmp_path):
    zh = dataset("zh", 40, image=True)
    en = dataset("en", 60)
    mapped, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 1}, by="tokens")
    files = write_mix(mapped, tmp_path / "out", report, max_shard_size=4000)
    assert len(files) > 1 and all("-of-" in f for f in files)
    back = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert back["id"] == mapped["id"]
    assert back.features["image"] == datasets.Image()
    assert back[ids(back).index("zh-00000")]["image"].size == (8, 6)
    saved = json.loads((tmp_path / "out" / "mix_report.json").read_text())
    assert saved == report.to_dict()
    with pytest.raises(FileExistsError):
        write_mix(mapped, tmp_path / "out", report)

    stream, stream_report = llava_zh.mix({"zh": streamed(zh), "en": streamed(en)}, {"zh": 1, "en": 1}, by="tokens")
    write_mix(stream, tmp_path / "out2", stream_report)
    assert stream_report.ready and stream_report.to_dict() == report.to_dict()  # filled while writing
    assert datasets.load_dataset(str(tmp_path / "out2"), split="train")["id"] == mapped["id"]

    rank1 = split_dataset_by_node(stream, rank=1, world_size=2)  # any IterableDataset: written as it iterates
    write_mix(rank1, tmp_path / "out3")
    assert datasets.load_dataset(str(tmp_path / "out3"), split="train")["id"] == mapped["id"][1::2]


def test_cli_mix_writes_parquet_and_prints_the_report(tmp_path, capsys):
    from llava_zh.cli import main

    root, _, _ = make_dataset(tmp_path, "json", "folder", n_per_task=4)
    records = [{"id": f"{i:012d}", "image": f"{i:012d}.jpg",
                "conversations": [{"from": "human", "value": "Describe the following image.\n<image>"},
                                  {"from": "gpt", "value": "Two dogs on the grass. " * (1 + i % 3)}]} for i in range(30)]
    (tmp_path / "detail_23k.json").write_text(json.dumps(records))
    out = tmp_path / "mixed"
    code = main(["mix", "--source", f"zh={root}", "--source", f"en={tmp_path / 'detail_23k.json'}",
                 "--weights", "zh=0.6,en=0.4", "--by", "tokens", "--total", "40", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "requested (tokens)" in printed and "60.00%" in printed
    back = datasets.load_dataset(str(out), split="train")
    assert len(back) == 40 and set(back["language"]) == {"zh", "en"}
    zh = llava_zh.load_dataset(str(root))
    en = llava_zh.load_llava_instruct_150k(str(tmp_path / "detail_23k.json"))
    expected, _ = llava_zh.mix({"zh": zh, "en": en}, {"zh": 0.6, "en": 0.4}, by="tokens", total=40)
    assert back["id"] == expected["id"]
    assert json.loads((out / "mix_report.json").read_text())["by"] == "tokens"
    code = main(["mix", "--source", f"zh={root}", "--source", f"en={tmp_path / 'detail_23k.json'}",
                 "--weights", "zh=0.6,en=0.4", "--by", "tokens", "--total", "40", "--epoch", "1",
                 "--out", str(tmp_path / "epoch1")])
    assert code == 0
    expected.set_epoch(1)
    epoch1 = datasets.load_dataset(str(tmp_path / "epoch1"), split="train")
    assert epoch1["id"] == expected["id"]  # the library's epoch-1 order
    assert epoch1["id"] != back["id"] and len(epoch1) == len(back)  # a new order of the same size


# ---------------------------------------------------------------------------------------------------- epochs


@pytest.fixture(scope="module")
def small():
    return {"zh": dataset("zh", 600, task_cycle=(0, 0, 1, 2)), "en": dataset("en", 1000)}


def streamed_all(named):
    return {"zh": streamed(named["zh"]), "en": streamed(named["en"], 3)}


def at_epoch(ds, epoch):
    ds.set_epoch(epoch)
    return ids(ds)


def test_epoch_zero_is_the_order_mix_returned_and_set_epoch_goes_back_to_it(small):
    mapped, _ = llava_zh.mix(small, {"zh": 0.6, "en": 0.4}, seed=4)
    stream, _ = llava_zh.mix(streamed_all(small), {"zh": 0.6, "en": 0.4}, seed=4)
    assert isinstance(mapped, datasets.Dataset) and isinstance(mapped, MixedDataset)
    first, fingerprint = ids(mapped), mapped._fingerprint
    assert mapped.epoch == stream.epoch == 0 and ids(stream) == first
    assert at_epoch(mapped, 0) == first and mapped._fingerprint == fingerprint  # a no-op
    assert at_epoch(mapped, 3) != first and mapped._fingerprint != fingerprint  # new content, new fingerprint
    assert at_epoch(stream, 3) != first
    assert at_epoch(mapped, 0) == first == at_epoch(stream, 0)
    with pytest.raises(ValueError, match="epoch"):
        mapped.set_epoch(-1)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
@pytest.mark.parametrize("epoch_shuffle", ["auto", 50, None])
def test_every_epoch_a_new_deterministic_order_of_the_same_composition(small, streaming, epoch_shuffle):
    def make(seed=4, **kw):
        inputs = streamed_all(small) if streaming else small
        return llava_zh.mix(inputs, {"zh": 0.6, "en": 0.4}, seed=seed, epoch_shuffle=epoch_shuffle, **kw)[0]

    mixed = make()
    orders = [at_epoch(mixed, e) for e in range(3)]
    assert len({tuple(o) for o in orders}) == 3  # every epoch its own order...
    again, other_seed = make(), make(seed=5)
    assert at_epoch(again, 2) == orders[2]  # ...the same for the same seed and epoch
    assert at_epoch(other_seed, 2) != orders[2]
    for order in orders:
        assert set(order) == set(small["zh"]["id"]) | set(small["en"]["id"])  # all_exhausted: every sample
        n_zh = sum(i.startswith("zh") for i in order)
        assert abs(n_zh - 0.6 * len(order)) <= 2  # the shares hold every epoch
        assert abs(len(order) - len(orders[0])) <= 2
        assert order[-1].startswith("en")  # en (1000 at 0.4) is the last input to finish its pass
    en_orders = [[i for i in o if i.startswith("en")] for o in orders]
    assert en_orders[0] == small["en"]["id"]  # epoch 0: each input in its own order
    if epoch_shuffle is None:
        assert en_orders[1] == en_orders[2] == en_orders[0]  # rows in input order, only the interleave moves
        assert [i[:2] for i in orders[1]] != [i[:2] for i in orders[0]]
    else:
        assert en_orders[1] != en_orders[0] and en_orders[2] != en_orders[1]
        assert sorted(en_orders[1]) == sorted(small["en"]["id"])  # a permutation: each row once

    first, _ = llava_zh.mix(streamed_all(small) if streaming else small, {"zh": 0.5, "en": 0.5},
                            stopping_strategy="first_exhausted", epoch_shuffle=epoch_shuffle)
    for e in range(3):
        order = at_epoch(first, e)
        assert len(set(order)) == len(order)  # first_exhausted: nothing repeats in any epoch
        assert {i for i in order if i.startswith("zh")} == set(small["zh"]["id"])  # zh runs out first
        assert order[-1].startswith("zh") and abs(len(order) - 1200) <= 2


def test_a_map_style_epoch_is_a_full_permutation_of_each_source(small):
    mixed, _ = llava_zh.mix(small, {"zh": 1, "en": 1}, stopping_strategy="first_exhausted", seed=2)
    positions = {i: k for k, i in enumerate(small["en"]["id"])}
    mixed.set_epoch(1)
    en = [positions[i] for i in ids(mixed) if i.startswith("en")]
    assert len(en) in (599, 600, 601)
    # a permutation of all 1000 rows, cut at ~600: rows from the whole input, not a buffer's neighbourhood
    assert max(en) > 900 and np.corrcoef(np.arange(len(en)), en)[0, 1] < 0.2


@pytest.mark.parametrize("epoch_shuffle", [None, 64])
@pytest.mark.parametrize("case", ["samples, all_exhausted", "tokens, total", "task_aligned by tokens"])
def test_map_style_and_streaming_give_the_same_sequence_every_epoch(small, case, epoch_shuffle):
    kwargs = CASES[case] if case != "tokens, total" else dict(by="tokens", total=1500)
    weights = {"zh": 0.6, "en": 0.4}
    mapped, _ = llava_zh.mix(small, weights, seed=5, epoch_shuffle=epoch_shuffle, **kwargs)
    stream, _ = llava_zh.mix(streamed_all(small), weights, seed=5, epoch_shuffle=epoch_shuffle, **kwargs)
    for epoch in (1, 2):
        assert at_epoch(stream, epoch) == at_epoch(mapped, epoch)


def test_auto_shuffle_streaming_keeps_the_map_style_length_and_sources_by_samples(small):
    """"auto": a full permutation (map-style) against shards and a buffer (streaming): by samples, the same
    length and the same source and task at every position; the rows inside each source differ."""
    mapped, _ = llava_zh.mix(small, {"zh": 0.3, "en": 0.7}, seed=1, task_aligned=True)
    stream, _ = llava_zh.mix(streamed_all(small), {"zh": 0.3, "en": 0.7}, seed=1, task_aligned=True)
    columns = stream.select_columns(["language", "task"])  # a derived IterableDataset has its own epoch
    for epoch in (1, 2):
        mapped.set_epoch(epoch)
        columns.set_epoch(epoch)
        a = [(r["language"], r["task"]) for r in mapped.select_columns(["language", "task"])]
        assert a == [(r["language"], r["task"]) for r in columns]
        assert at_epoch(stream, epoch) != ids(mapped)


def test_shares_by_tokens_hold_every_epoch(zh, en):
    mixed, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 0.3, "en": 0.7}, by="tokens", total=6000)
    for epoch in (1, 2):
        mixed.set_epoch(epoch)
        assert len(mixed) == 6000
        tokens = count_tokens(mixed.with_format("arrow")[:]["conversations"])
        zh_share = tokens[np.asarray(mixed["language"]) == "zh"].sum() / tokens.sum()
        assert abs(zh_share - 0.3) < 0.01
    assert report.num_samples == 6000  # the report describes epoch 0


def test_the_buffer_order_is_what_the_streaming_buffer_does_to_rows():
    from llava_zh.mixing import _buffer_order, _buffer_shuffled

    rng = np.random.default_rng(0)
    for n, size in [(0, 4), (3, 10), (10, 10), (11, 10), (100, 1), (100, 2), (257, 7), (1000, 64)]:
        order = _buffer_order(n, size, np.random.default_rng(n + size))
        assert sorted(order.tolist()) == list(range(n))
        cuts = np.sort(rng.choice(np.arange(1, n), size=min(5, max(n - 1, 0)), replace=False)) if n > 1 else []
        bounds = [0, *cuts, n]
        batches = iter([([f"r{i}" for i in range(a, b)], np.arange(a, b), None, b - a)
                        for a, b in zip(bounds[:-1], bounds[1:])])
        rows, costs = [], []
        for payload, c, _, m in _buffer_shuffled(batches, size, np.random.default_rng(n + size)):
            assert len(payload) == len(c) == m
            rows += payload
            costs += c.tolist()
        assert rows == [f"r{i}" for i in order] and costs == order.tolist()


@pytest.mark.parametrize("world_size", [2, 3])
def test_split_by_node_every_epoch_is_disjoint_complete_and_balanced(small, world_size):
    kw = dict(stopping_strategy="first_exhausted", seed=3)  # every sample at most once: disjoint parts by id
    mapped, _ = llava_zh.mix(small, {"zh": 1, "en": 1}, **kw)
    stream, _ = llava_zh.mix(streamed_all(small), {"zh": 1, "en": 1}, **kw)
    map_parts = [split_dataset_by_node(mapped, rank=r, world_size=world_size) for r in range(world_size)]
    stream_parts = [split_dataset_by_node(stream, rank=r, world_size=world_size) for r in range(world_size)]
    seen_lengths = set()
    for epoch in (0, 1, 2, 1):
        for full_mix, parts in ((mapped, map_parts), (stream, stream_parts)):
            full = at_epoch(full_mix, epoch)
            got = [at_epoch(p, epoch) for p in parts]
            sets = [set(g) for g in got]
            assert all(not (sets[a] & sets[b]) for a in range(world_size) for b in range(a + 1, world_size))
            assert set().union(*sets) == set(full) and sum(map(len, got)) == len(full)
            assert max(map(len, got)) - min(map(len, got)) <= 1
            if parts is map_parts:
                assert sum(got, []) == full  # contiguous blocks of this epoch's mix
                # splitting after set_epoch gives the same parts
                assert [ids(split_dataset_by_node(mapped, rank=r, world_size=world_size))
                        for r in range(world_size)] == got
            else:
                assert [got[i % world_size][i // world_size] for i in range(len(full))] == full
            seen_lengths.add(len(full))
    assert len(seen_lengths) > 1  # the length moved between epochs, and the parts followed


def _collate_ids(batch):
    return [row["id"] for row in batch]


def test_a_torch_dataloader_follows_set_epoch(small):
    from torch.utils.data import DataLoader

    stream, _ = llava_zh.mix(streamed_all(small), {"zh": 1, "en": 1}, total=500)
    expected = [at_epoch(stream, e) for e in range(3)]
    for workers in (0, 1):  # one persistent worker: the epoch reaches it through shared memory
        ds = stream.select_columns(["id"])
        loader = DataLoader(ds, batch_size=32, num_workers=workers, persistent_workers=bool(workers),
                            collate_fn=_collate_ids)
        for epoch in range(3):
            ds.set_epoch(epoch)
            assert [i for batch in loader for i in batch] == expected[epoch]
    mapped, _ = llava_zh.mix(small, {"zh": 1, "en": 1}, total=500)
    loader = DataLoader(mapped, batch_size=32, collate_fn=_collate_ids)
    seen = []
    for epoch in range(3):
        mapped.set_epoch(epoch)
        seen.append([i for batch in loader for i in batch])
        assert seen[-1] == ids(mapped)
    assert seen[0] == expected[0] and len({tuple(s) for s in seen}) == 3


def test_datasets_derived_from_a_map_style_mix_follow_set_epoch(small):
    mixed, _ = llava_zh.mix(small, {"zh": 1, "en": 1}, total=800)
    view = mixed.select_columns(["id", "language"]).with_format("numpy")
    head = mixed.select(range(100))
    shuffled = mixed.shuffle(seed=0)
    filtered = mixed.filter(lambda row: row["language"] == "zh")
    mixed.set_epoch(1)
    full = ids(mixed)
    for derived in (view, head, shuffled):
        derived.set_epoch(1)
    assert list(view["id"]) == full and isinstance(view, MixedDataset)
    assert ids(head) == full[:100]
    assert sorted(ids(shuffled)) == sorted(full) and ids(shuffled) != full
    with pytest.raises(ValueError, match="rewrites its rows"):
        filtered.set_epoch(1)  # filter re-indexes: fixed at the epoch it was made at


def test_streaming_mix_resumes_within_an_epoch(small):
    mixed, _ = llava_zh.mix(streamed_all(small), {"zh": 1, "en": 1}, total=900)
    mixed.set_epoch(2)
    full = ids(mixed)
    it = iter(mixed)
    head = [next(it)["id"] for _ in range(333)]
    state = mixed.state_dict()
    again, _ = llava_zh.mix(streamed_all(small), {"zh": 1, "en": 1}, total=900)
    again.set_epoch(2)
    again.load_state_dict(state)
    assert head + ids(again) == full


def test_write_mix_writes_the_current_epoch(small, tmp_path):
    stream, report = llava_zh.mix(streamed_all(small), {"zh": 1, "en": 1}, total=300)
    epoch0 = ids(stream)
    stream.set_epoch(1)
    write_mix(stream, tmp_path / "out", report)
    back = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert back["id"] == at_epoch(stream, 1) != epoch0
    assert report.num_samples == 300


def test_epochs_with_inputs_that_have_an_indices_mapping_and_a_shuffled_streaming_mix():
    zh = dataset("zh", 300, source="s-zh").shuffle(seed=1).select(range(250))  # kept as an indices mapping
    en = dataset("en", 500, source="s-en").select(range(0, 500, 2))
    mapped, _ = llava_zh.mix({"zh": zh, "en": en}, {"zh": 1, "en": 1}, epoch_shuffle=16)
    stream, _ = llava_zh.mix({"zh": streamed(zh), "en": streamed(en)}, {"zh": 1, "en": 1}, epoch_shuffle=16)
    assert mapped._mix_plan.base_index is not None
    for epoch in range(3):
        got = at_epoch(mapped, epoch)
        assert set(got) == set(zh["id"]) | set(en["id"]) and got == at_epoch(stream, epoch)
        assert all(r["source"] == "s-" + r["id"][:2] for r in mapped.select_columns(["id", "source"]))
    shuffled = stream.shuffle(seed=3, buffer_size=10)  # datasets' own shuffle of the mix: salted by its seed
    orders = [at_epoch(shuffled, e) for e in (0, 1, 0)]
    assert orders[0] == orders[2] != orders[1] and sorted(orders[1]) == sorted(ids(stream))
