"""Pad and stack encoded samples into a PyTorch batch (left or right padding).

Rows come from ``ChatTemplateEncoder`` (directly or through a ``Dataset``): per-token sequences
(``input_ids``, ``attention_mask``, ``labels``, ``mm_token_type_ids``...) are padded to the longest row,
image outputs (``pixel_values``, ``image_grid_thw``...) are concatenated along their first axis, which is
how Qwen2-VL and LLaVA models take a batch of images. Rows without images contribute none.

Example:
    >>> collator = VLMCollator(pad_token_id=0, padding_side="left")
    >>> batch = collator([{"input_ids": [5, 6], "attention_mask": [1, 1], "labels": [-100, 6]},
    ...                   {"input_ids": [7], "attention_mask": [1], "labels": [7]}])
    >>> batch["input_ids"].tolist(), batch["labels"].tolist()
    ([[5, 6], [0, 7]], [[-100, 6], [-100, 7]])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

IGNORE_INDEX = -100
#: Per-token keys and the value they are padded with (other 1-D keys as long as input_ids pad with 0).
PAD_VALUES: dict[str, Optional[int]] = {
    "input_ids": None,  # the pad token id
    "labels": IGNORE_INDEX,
    "attention_mask": 0,
    "token_type_ids": 0,
    "mm_token_type_ids": 0,
}


def _require_torch():
    try:
        import torch
    except ImportError:
        raise ImportError('collating for PyTorch needs torch: pip install "llava-zh[regen]"') from None
    return torch


def _to_tensor(value: Any):
    torch = _require_torch()
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value) if hasattr(value, "__array__") else torch.tensor(value)


def _length(value: Any) -> Optional[int]:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) == 1 else None
    if isinstance(value, (list, tuple)) and (not value or not isinstance(value[0], (list, tuple))):
        return len(value)
    return None


def pad_sequences(sequences: Sequence[Any], value: int, *, padding_side: str = "right",
                  pad_to_multiple_of: Optional[int] = None):
    """Pad 1-D sequences (lists, arrays or tensors) into one ``(batch, length)`` tensor."""
    torch = _require_torch()
    tensors = [_to_tensor(s).reshape(-1) for s in sequences]
    length = max((t.shape[0] for t in tensors), default=0)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    dtype = tensors[0].dtype if tensors else torch.long
    out = torch.full((len(tensors), length), value, dtype=dtype)
    for i, t in enumerate(tensors):
        n = t.shape[0]
        if padding_side == "left":
            out[i, length - n:] = t
        else:
            out[i, :n] = t
    return out


def resolve_pad_token_id(processor_or_tokenizer: Any = None, pad_token_id: Optional[int] = None) -> int:
    """The id to pad with: the one given, else the tokenizer's pad token, else its end-of-sequence token."""
    if pad_token_id is None and processor_or_tokenizer is not None:
        tokenizer = getattr(processor_or_tokenizer, "tokenizer", None) or processor_or_tokenizer
        pad_token_id = getattr(tokenizer, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = getattr(tokenizer, "eos_token_id", None)
    if pad_token_id is None:
        raise ValueError("no pad token id: pass pad_token_id=... or a tokenizer that has a pad or eos token")
    return int(pad_token_id)


class VLMCollator:
    """Collate encoded rows for a PyTorch ``DataLoader`` or a Trainer's ``data_collator``.

    Args:
        processor_or_tokenizer: where the pad token id comes from (``pad_token_id``, else ``eos_token_id``).
        pad_token_id: the id to pad ``input_ids`` with (instead of the tokenizer's).
        padding_side: ``"right"`` (training) or ``"left"`` (batched generation).
        pad_to_multiple_of: round the padded length up (tensor cores like multiples of 8).
    """

    def __init__(self, processor_or_tokenizer: Any = None, *, pad_token_id: Optional[int] = None,
                 padding_side: str = "right", pad_to_multiple_of: Optional[int] = None) -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.pad_token_id = resolve_pad_token_id(processor_or_tokenizer, pad_token_id)
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        torch = _require_torch()
        if not rows:
            raise ValueError("cannot collate an empty batch")
        lengths = [_length(r["input_ids"]) for r in rows]
        batch: dict[str, Any] = {}
        keys = list(dict.fromkeys(k for r in rows for k in r))
        for key in keys:
            values = [r.get(key) for r in rows]
            is_token_key = key in PAD_VALUES or all(
                v is not None and _length(v) == n for v, n in zip(values, lengths)
            )
            if is_token_key:
                if any(v is None for v in values):
                    raise ValueError(f"row {values.index(None)} has no {key!r}; every row needs its per-token values")
                pad = PAD_VALUES.get(key, 0)
                batch[key] = pad_sequences(values, self.pad_token_id if pad is None else pad,
                                           padding_side=self.padding_side,
                                           pad_to_multiple_of=self.pad_to_multiple_of)
                continue
            present = [v for v in values if v is not None]
            if not present:
                continue
            if isinstance(present[0], (str, bytes)):
                batch[key] = values  # ids and other strings travel as a list
                continue
            batch[key] = torch.cat([_to_tensor(v) for v in present], dim=0)
        for key in ("input_ids", "labels", "attention_mask"):
            if key in batch:
                batch[key] = batch[key].long()
        return batch


def collate(rows: Sequence[Mapping[str, Any]], pad_token_id: int, padding_side: str = "right") -> dict[str, Any]:
    """Functional form of :class:`VLMCollator`.

    Example:
        >>> rows = [{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3], "labels": [3]}]
        >>> collate(rows, pad_token_id=0)["input_ids"].tolist()
        [[1, 2], [3, 0]]
    """
    return VLMCollator(pad_token_id=pad_token_id, padding_side=padding_side)(rows)
