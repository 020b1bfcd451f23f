"""VLMCollator: left/right padding, image outputs concatenated, and a real tiny model's loss on the batch."""

import numpy as np
import pytest
import torch

from llava_zh.collate import VLMCollator, collate, pad_sequences
from llava_zh.convert.chat_template import ChatTemplateEncoder
from llava_zh.tiny_models import build_model, build_processor, make_image


def sample(sample_id, image, rounds=1):
    turns = []
    for r in range(rounds):
        turns += [{"from": "human", "value": ("<image>\n" if r == 0 and image is not None else "") + f"问题{r}?"},
                  {"from": "gpt", "value": f"回答{r}。" * (r + 1)}]
    return {"id": sample_id, "image": image, "conversations": turns}


@pytest.fixture(scope="module")
def qwen():
    processor = build_processor("qwen2_5_vl")
    rows = ChatTemplateEncoder(processor).encode_batch(
        [sample("a", make_image(56, 56), 1), sample("b", make_image(112, 84), 3), sample("c", None, 2)])
    return processor, rows


def test_pad_sequences_both_sides():
    seqs = [[1, 2, 3], np.array([4]), torch.tensor([5, 6])]
    assert pad_sequences(seqs, 0).tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]
    assert pad_sequences(seqs, 9, padding_side="left").tolist() == [[1, 2, 3], [9, 9, 4], [9, 5, 6]]
    assert pad_sequences(seqs, 0, pad_to_multiple_of=8).shape == (3, 8)


@pytest.mark.parametrize("side", ["right", "left"])
def test_token_keys_are_padded_and_image_outputs_concatenated(qwen, side):
    processor, rows = qwen
    batch = VLMCollator(processor, padding_side=side)(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    pad = processor.tokenizer.pad_token_id
    for key in ("input_ids", "labels", "attention_mask", "mm_token_type_ids"):
        assert batch[key].shape == (3, longest) and batch[key].dtype == torch.long
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        real = slice(0, n) if side == "right" else slice(longest - n, longest)
        padding = slice(n, longest) if side == "right" else slice(0, longest - n)
        assert batch["input_ids"][i, real].tolist() == row["input_ids"]
        assert batch["labels"][i, real].tolist() == row["labels"]
        assert set(batch["input_ids"][i, padding].tolist()) <= {pad}
        assert set(batch["labels"][i, padding].tolist()) <= {-100}
        assert batch["attention_mask"][i].sum().item() == n
    # two images (the text-only row has none): patches and grids stacked along the first axis
    assert batch["image_grid_thw"].tolist() == np.concatenate([rows[0]["image_grid_thw"], rows[1]["image_grid_thw"]]).tolist()
    assert batch["pixel_values"].shape[0] == sum(int(np.prod(g)) for g in batch["image_grid_thw"].tolist())


def test_llava_pixel_values_stack_per_image():
    processor = build_processor("llava")
    rows = ChatTemplateEncoder(processor).encode_batch([sample("a", make_image(40, 30)), sample("b", make_image(90, 60))])
    batch = collate(rows, pad_token_id=processor.tokenizer.pad_token_id)
    assert tuple(batch["pixel_values"].shape) == (2, 3, 112, 112)


def test_string_columns_and_errors():
    rows = [{"input_ids": [1], "labels": [1], "id": "x"}, {"input_ids": [2, 3], "labels": [2, 3], "id": "y"}]
    assert collate(rows, 0)["id"] == ["x", "y"]
    with pytest.raises(ValueError, match="pad token"):
        VLMCollator()
    with pytest.raises(ValueError, match="padding_side"):
        VLMCollator(pad_token_id=0, padding_side="middle")


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_loss_equals_the_token_weighted_mean_of_single_losses(qwen, side):
    processor, rows = qwen
    model = build_model("qwen2_5_vl", processor)
    collator = VLMCollator(processor, padding_side=side)
    with torch.no_grad():
        batch_loss = model(**collator(rows)).loss
        singles = [(model(**collator([r])).loss, sum(label != -100 for label in r["labels"][1:])) for r in rows]
    expected = sum(loss * n for loss, n in singles) / sum(n for _, n in singles)
    assert torch.isfinite(batch_loss)
    assert torch.allclose(batch_loss, expected, atol=1e-4)
