"""LLaVA <-> ShareGPT, the layout LLaMA-Factory reads: ``conversations`` of ``from``/``value`` turns and an
``images`` list, with the ``<image>`` placeholder kept in the text.

The two differ in the image field (one ``image`` vs an ``images`` list), in role spellings (ShareGPT files
also say ``user``/``assistant``; they are normalised to ``human``/``gpt``) and in the system prompt, which
ShareGPT may give as a ``system`` column instead of a first turn.

Example:
    >>> s = {"id": "1", "image": "1.jpg",
    ...      "conversations": [{"from": "human", "value": "<image>\\n?"}, {"from": "gpt", "value": "!"}]}
    >>> to_sharegpt(s)["images"], from_sharegpt(to_sharegpt(s)) == s
    (['1.jpg'], True)
"""

from __future__ import annotations

from typing import Any, Mapping

from ..records import RECORD_FORMATS
from ..roles import to_llava_role
from ..schema import IMAGE_PLACEHOLDER
from .messages import ConversionError, _as_mapping, _llava_images, _where, columns_of, rows_of

#: ShareGPT's own keys; other fields (id, task, language, source) are carried over unchanged.
_SHAREGPT_KEYS = ("conversations", "images", "system")


def is_sharegpt(example: Mapping[str, Any]) -> bool:
    """True for a ShareGPT sample (``conversations`` and an ``images`` list)."""
    return "conversations" in example and "images" in example


def _turns(conversations: Any, sample_id: Any, role_tag: str, content_tag: str) -> list[dict[str, str]]:
    if not isinstance(conversations, (list, tuple)):
        raise ConversionError(f"{_where(sample_id)}expected 'conversations' as a list, "
                              f"got {type(conversations).__name__}")
    turns = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, Mapping) or role_tag not in turn or content_tag not in turn:
            raise ConversionError(f"{_where(sample_id)}turn {i}: expected {{{role_tag!r}, {content_tag!r}}}, "
                                  f"got {turn!r}")
        turns.append({"from": to_llava_role(turn[role_tag], sample_id), "value": turn[content_tag]})
    return turns


def to_sharegpt(sample: Mapping[str, Any]) -> dict[str, Any]:
    """A LLaVA sample as ShareGPT: ``conversations`` (human/gpt/system) + ``images`` + other fields.

    Example:
        >>> to_sharegpt({"id": "a", "image": None, "conversations": [{"from": "USER", "value": "hi"}]})
        {'id': 'a', 'conversations': [{'from': 'human', 'value': 'hi'}], 'images': []}
    """
    sample = _as_mapping(sample)
    sample_id = sample.get("id")
    if "conversations" not in sample:
        raise ConversionError(f"{_where(sample_id)}expected a LLaVA sample with 'conversations', "
                              f"got keys {sorted(sample)}")
    conversations = _turns(sample["conversations"], sample_id, "from", "value")
    images = _llava_images(sample)
    placeholders = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in conversations)
    if placeholders != len(images):
        raise ConversionError(f"{_where(sample_id)}expected one {IMAGE_PLACEHOLDER} placeholder per image "
                              f"({len(images)} image(s)), got {placeholders}")
    out = {k: v for k, v in sample.items() if k not in ("conversations", "image", "images")}
    out["conversations"] = conversations
    out["images"] = images
    return out


def from_sharegpt(example: Mapping[str, Any], *, role_tag: str = "from", content_tag: str = "value",
                  system_key: str = "system") -> dict[str, Any]:
    """A ShareGPT sample as a LLaVA sample (``image`` is the single image or None).

    A non-empty ``system`` column becomes a first system turn. ``role_tag`` / ``content_tag`` name the
    turn keys for ShareGPT variants (``role`` / ``content``).

    Example:
        >>> ex = {"conversations": [{"from": "user", "value": "hi"}], "images": [], "system": "be brief"}
        >>> from_sharegpt(ex)["conversations"]
        [{'from': 'system', 'value': 'be brief'}, {'from': 'human', 'value': 'hi'}]
    """
    example = _as_mapping(example)
    sample_id = example.get("id")
    if "conversations" not in example:
        raise ConversionError(f"{_where(sample_id)}expected a ShareGPT sample with 'conversations', "
                              f"got keys {sorted(example)}")
    conversations = _turns(example["conversations"], sample_id, role_tag, content_tag)
    system = example.get(system_key)
    if system:
        if conversations and conversations[0]["from"] == "system":
            raise ConversionError(f"{_where(sample_id)}expected one system prompt, got both a {system_key!r} "
                                  "column and a system turn")
        conversations.insert(0, {"from": "system", "value": system})
    images = example.get("images") or []
    if isinstance(images, (str, bytes)) or not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) > 1:
        raise ConversionError(f"{_where(sample_id)}a LLaVA sample holds at most one image, got {len(images)}")
    placeholders = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in conversations if isinstance(t["value"], str))
    if placeholders != len(images):
        raise ConversionError(f"{_where(sample_id)}expected one {IMAGE_PLACEHOLDER} placeholder per image "
                              f"({len(images)} image(s)), got {placeholders}")
    out = {k: v for k, v in example.items() if k not in _SHAREGPT_KEYS}
    out["image"] = images[0] if images else None
    out["conversations"] = conversations
    return out


def to_sharegpt_batch(batch: Mapping[str, list]) -> dict[str, list]:
    """Batched ``to_sharegpt`` for ``Dataset.map(batched=True)``."""
    return columns_of([to_sharegpt(row) for row in rows_of(batch)])


def from_sharegpt_batch(batch: Mapping[str, list]) -> dict[str, list]:
    """Batched ``from_sharegpt`` for ``Dataset.map(batched=True)``."""
    return columns_of([from_sharegpt(row) for row in rows_of(batch)])


def sharegpt_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A raw ShareGPT record (LLaMA-Factory JSON) as a LLaVA record for the builder."""
    out = from_sharegpt(record)
    if out["image"] is None:
        del out["image"]
    return out


RECORD_FORMATS.setdefault("sharegpt", sharegpt_record)
