"""llava_zh.pack and PackedCollator: packs of whole samples, positions restarting per sample, images in order,
and a packed batch whose loss is that of its samples run one by one."""

import datasets
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import llava_zh
from llava_zh.collate import VLMCollator
from llava_zh.convert.chat_template import ChatTemplateEncoder
from llava_zh.encoding import encode
from llava_zh.packing import (
    PackedCollator,
    PackingError,
    assign_packs,
    mrope_position_ids,
    pack,
    padded_tokens,
)
from llava_zh.tiny_models import build_model, build_processor, make_image

BUDGET = 112 * 112  # 16 image tokens at most per image: fast CPU forwards


def sample(sample_id, images=(), rounds=1, reply="好的。"):
    """A messages-form sample with ``images`` (PIL) in its first user turn."""
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": f"问题{sample_id}:图里有什么?"}]
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": reply}]}]
    for r in range(1, rounds):
        messages += [{"role": "user", "content": [{"type": "text", "text": f"第{r}个追问"}]},
                     {"role": "assistant", "content": [{"type": "text", "text": reply * (r + 1)}]}]
    return {"id": sample_id, "messages": messages, "images": list(images)}


def samples():
    return [
        sample("a", [make_image(120, 80, 1)], rounds=2),
        sample("b", [], rounds=1, reply="纯文本的回答。"),
        sample("c", [make_image(60, 200, 2), make_image(90, 90, 3)], rounds=1),  # two images, tall then square
        sample("d", [make_image(300, 100, 4)], rounds=3, reply="第三个样本。"),
        sample("e", [], rounds=2),
    ]


@pytest.fixture(scope="module")
def qwen():
    processor = build_processor("qwen2_5_vl", max_pixels=BUDGET)
    return processor, build_model("qwen2_5_vl", processor, attn_implementation="eager")


def encoded_rows(processor, assistant_only_loss=True):
    return ChatTemplateEncoder(processor, assistant_only_loss=assistant_only_loss).encode_batch(samples())


# -- assigning samples to packs ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=60), st.integers(50, 120))
def test_every_sample_lands_in_exactly_one_pack_within_max_length(lengths, max_length):
    greedy = assign_packs(lengths, max_length, "greedy")
    first_fit = assign_packs(lengths, max_length, "first_fit")
    for packs in (greedy, first_fit):
        assert sorted(i for p in packs for i in p) == list(range(len(lengths)))
        assert all(p and sum(lengths[i] for i in p) <= max_length for p in packs)
        assert all(p == sorted(p) for p in packs)
    assert [i for p in greedy for i in p] == list(range(len(lengths)))  # greedy keeps the dataset order
    # first fit (longest first) can need more packs than greedy on some inputs ([11, 15, 15, 25, 11, 14] in
    # 50: 3 against 2), so the bounds that hold always: never fewer packs than the tokens need, and at most
    # one pack half full or less (a sample that fit in it would have gone there)
    total = sum(lengths)
    assert -(-total // max_length) <= len(first_fit) <= 2 * total / max_length + 1
    assert sum(1 for p in first_fit if 2 * sum(lengths[i] for i in p) <= max_length) <= 1


def test_assign_errors():
    with pytest.raises(PackingError, match="sample 1: expected a length between 0 and max_length=10, got 11"):
        assign_packs([3, 11], 10)
    with pytest.raises(ValueError, match="strategy"):
        assign_packs([3], 10, "best_fit")


# -- multimodal positions ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_mrope_positions_match_the_models_get_rope_index(family):
    processor = build_processor(family, max_pixels=BUDGET)
    model = build_model(family, processor)
    for row in ChatTemplateEncoder(processor).encode_batch(samples()):
        grids = None if row["image_grid_thw"] is None else torch.as_tensor(np.asarray(row["image_grid_thw"]))
        ref, _ = model.model.get_rope_index(torch.tensor([row["input_ids"]]), torch.tensor([row["mm_token_type_ids"]]),
                                            image_grid_thw=grids)
        ours = mrope_position_ids(row["mm_token_type_ids"], row["image_grid_thw"], merge_size=2)
        np.testing.assert_array_equal(ours, ref[:, 0].numpy())


def test_mrope_errors():
    with pytest.raises(PackingError, match=r"sample 'x': image grid \[1, 4, 4\] \(merge 2\): expected 4 image tokens, got a run of 3"):
        mrope_position_ids([0, 1, 1, 1, 0], [[1, 4, 4]], 2, "x")
    with pytest.raises(PackingError, match="more image grids"):
        mrope_position_ids([0, 0], [[1, 2, 2]], 2)


# -- packed rows ---------------------------------------------------------------------------------------


def test_packed_rows_join_whole_samples_with_their_images(qwen):
    processor, _ = qwen
    rows = encoded_rows(processor, assistant_only_loss=False)
    rows = [r | {"id": s["id"]} for r, s in zip(rows, samples())]
    lengths = [len(r["input_ids"]) for r in rows]
    max_length = max(lengths) + min(lengths) + 5
    packed, report = pack(rows, max_length, "first_fit", return_report=True)
    assert report.packs == len(packed) < len(rows) and report.tokens == sum(lengths)
    assert report.efficiency == pytest.approx(sum(lengths) / (len(packed) * max_length))
    assert sorted(i for p in packed["sample_index"] for i in p) == list(range(len(rows)))
    image_id = processor.image_token_id
    for p in packed:
        members = [rows[i] for i in p["sample_index"]]
        assert p["id"] == [m["id"] for m in members] and p["length"] <= max_length
        assert p["seq_lengths"] == [len(m["input_ids"]) for m in members]
        assert p["cu_seqlens"] == np.concatenate([[0], np.cumsum(p["seq_lengths"])]).tolist()
        assert p["input_ids"] == [t for m in members for t in m["input_ids"]]
        assert p["position_ids"] == [j for m in members for j in range(len(m["input_ids"]))]
        starts = p["cu_seqlens"][:-1]
        for k, m in enumerate(members):  # labels: each sample's own, but its first one is never learned
            got = p["labels"][starts[k]:starts[k] + len(m["labels"])]
            assert got[0] == -100 and got[1:] == m["labels"][1:]
        mrope = np.asarray(p["mrope_position_ids"])
        assert mrope.shape == (3, p["length"])
        for k, m in enumerate(members):  # restarting at 0 at every sample
            np.testing.assert_array_equal(mrope[:, starts[k]:starts[k] + len(m["input_ids"])],
                                          mrope_position_ids(m["mm_token_type_ids"], m["image_grid_thw"], 2))
        with_images = [m for m in members if m["pixel_values"] is not None]
        if with_images:
            np.testing.assert_array_equal(np.asarray(p["pixel_values"], dtype=np.float32),
                                          np.concatenate([np.asarray(m["pixel_values"]) for m in with_images]))
            grids = np.concatenate([np.asarray(m["image_grid_thw"]) for m in with_images])
            assert p["image_grid_thw"] == grids.tolist()
            assert p["input_ids"].count(image_id) == int(grids.prod(axis=1).sum()) // 4
        else:
            assert p["pixel_values"] is None
    greedy = pack(rows, max_length, "greedy")
    assert [i for p in greedy["sample_index"] for i in p] == list(range(len(rows)))


def test_a_sample_longer_than_max_length_is_reported_never_dropped_silently(qwen):
    processor, _ = qwen
    rows = [r | {"id": s["id"]} for r, s in zip(encoded_rows(processor), samples())]
    longest = int(np.argmax([len(r["input_ids"]) for r in rows]))
    limit = len(rows[longest]["input_ids"]) - 1
    with pytest.raises(PackingError, match=rf"1 sample\(s\) longer than max_length={limit}: sample '{rows[longest]['id']}'"):
        pack(rows, limit)
    packed, report = pack(rows, limit, on_too_long="drop", return_report=True)
    assert report.too_long == [(longest, rows[longest]["id"], limit + 1)]
    assert sorted(i for p in packed["sample_index"] for i in p) == [i for i in range(len(rows)) if i != longest]
    assert "1 longer than max_length left out" in str(report)


# -- the loss of a packed batch ------------------------------------------------------------------------


def token_weighted_mean_loss(model, rows, collator):
    """Each sample run alone: sum over samples of (mean loss x learned tokens) / all learned tokens.

    transformers shifts labels inside the loss, so a sample's learned tokens are its labels[1:] != -100.
    """
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            batch = collator([row])
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += model(**batch).loss.double().item() * n
            count += n
    return total / count


@pytest.mark.parametrize("assistant_only_loss", [True, False])
@pytest.mark.parametrize("attention", ["mask", "positions"])
def test_packed_loss_equals_the_samples_run_one_by_one(qwen, attention, assistant_only_loss):
    processor, model = qwen
    rows = encoded_rows(processor, assistant_only_loss)
    reference = token_weighted_mean_loss(model, rows, VLMCollator(processor))
    lengths = [len(r["input_ids"]) for r in rows]
    packed = pack(rows, sum(lengths[:3]) + 1, "greedy")  # several packs of several samples, padded in the batch
    assert len(packed) >= 2 and max(len(p) for p in packed["sample_index"]) >= 2
    batch = PackedCollator(processor, attention=attention)(list(packed))
    assert batch["input_ids"].shape[0] == len(packed) and batch["position_ids"].shape[:2] == (4, len(packed))
    assert ("attention_mask" in batch) == (attention == "mask")
    with torch.no_grad():
        loss = model(**batch).loss.double().item()
    assert loss == pytest.approx(reference, rel=1e-5, abs=1e-6)
    # without restricting attention to each sample the loss differs: the test can tell
    leaky = {k: v for k, v in batch.items() if k not in ("attention_mask", "use_cache")}
    leaky["position_ids"] = leaky["position_ids"][1:]  # plain 3-row positions: no packing detected
    with torch.no_grad():
        assert model(**leaky).loss.double().item() != pytest.approx(reference, rel=1e-5, abs=1e-6)


def test_llava_packed_loss_equals_the_samples_run_one_by_one():
    processor = build_processor("llava", image_size=56)
    model = build_model("llava", processor, attn_implementation="eager")
    rows = ChatTemplateEncoder(processor, assistant_only_loss=False).encode_batch(samples())
    reference = token_weighted_mean_loss(model, rows, VLMCollator(processor))
    packed = pack(rows, 2 * max(len(r["input_ids"]) for r in rows), "first_fit")
    batch = PackedCollator(processor)(list(packed))
    assert batch["position_ids"].ndim == 2 and batch["pixel_values"].shape[0] == 4  # four images in order
    with torch.no_grad():
        assert model(**batch).loss.double().item() == pytest.approx(reference, rel=1e-5, abs=1e-6)


def test_packing_an_encoded_set_recomputes_pixels_from_the_image_bytes(qwen):
    processor, model = qwen
    ds = llava_zh.load_dataset("sample").select(range(8))
    refs = encode(ds, processor, max_pixels=BUDGET)  # ids + image bytes, no pixels
    with_pixels = ChatTemplateEncoder(processor, max_pixels=BUDGET).map(ds)
    assert refs["input_ids"] == with_pixels["input_ids"]
    a, report = pack(refs, 1500, "first_fit", return_report=True)
    b = pack(with_pixels, 1500, "first_fit")
    assert a["sample_index"] == b["sample_index"] and a["mrope_position_ids"] == b["mrope_position_ids"]
    assert a.features["images"] == datasets.List(datasets.Image()) and "pixel_values" not in a.column_names
    from_bytes = PackedCollator(processor, max_pixels=BUDGET)(list(a.select(range(2))))
    from_pixels = PackedCollator(processor)(list(b.select(range(2))))
    for key in ("input_ids", "labels", "position_ids", "attention_mask", "pixel_values", "image_grid_thw"):
        torch.testing.assert_close(from_bytes[key], from_pixels[key])
    assert 0.5 < report.efficiency <= 1.0
    # packed again: read from the cache file written beside the encoded set's
    again = pack(refs, 1500, "first_fit")
    assert again.cache_files == a.cache_files and a.cache_files
    with pytest.raises(ValueError, match="image references but no pixels"):
        PackedCollator(pad_token_id=0)(list(a.select(range(1))))


def test_collator_padding_and_cu_seqlens():
    rows = [{"input_ids": [5, 6, 7, 8, 9], "labels": [5, 6, 7, 8, 9], "seq_lengths": [2, 3], "position_ids": [0, 1, 0, 1, 2]},
            {"input_ids": [3, 4], "labels": [3, 4], "seq_lengths": [2], "position_ids": [0, 1]}]
    packed = pack(rows, 5)  # rows of one sample each; the collator packs rows of several (above)
    assert packed["seq_lengths"] == [[5], [2]]
    batch = PackedCollator(pad_token_id=0, return_cu_seqlens=True, pad_to_multiple_of=4)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 0, 0], [3, 4, 0, 0, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 2, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4, 5]]
    assert batch["cu_seqlens"].tolist() == [0, 2, 5, 8, 10, 16] and batch["max_seqlen"] == 6
    allowed = batch["attention_mask"][0, 0] == 0
    assert allowed[4].tolist() == [False, False, True, True, True, False, False, False]  # its own sample, causal
    assert allowed[6].tolist() == [False] * 5 + [True, True, False]  # padding sees only padding: no NaN rows
    assert batch["labels"][0, 5:].tolist() == [-100] * 3
    assert padded_tokens([5, 2, 9, 1], 2) == 10 + 18


def test_pack_is_public():
    assert llava_zh.pack is pack and llava_zh.PackedCollator is PackedCollator


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.bool])
def test_sdpa_takes_the_block_diagonal_mask_float_or_boolean(mask_dtype):
    processor = build_processor("qwen2_5_vl", max_pixels=BUDGET)
    model = build_model("qwen2_5_vl", processor, attn_implementation="sdpa")
    rows = encoded_rows(processor, assistant_only_loss=False)
    reference = token_weighted_mean_loss(model, rows, VLMCollator(processor))
    packed = pack(rows, sum(len(r["input_ids"]) for r in rows), "greedy")  # all five samples in one pack
    batch = PackedCollator(processor, mask_dtype=mask_dtype)(list(packed))
    assert batch["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))
    assert batch["attention_mask"].dtype == mask_dtype
    with torch.no_grad():
        assert model(**batch).loss.double().item() == pytest.approx(reference, rel=1e-5, abs=1e-6)
