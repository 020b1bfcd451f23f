"""LLaVA conversations <-> chat messages, the format of TRL and of ``processor.apply_chat_template``.

A LLaVA sample says ``{"from": "human", "value": "<image>\\n这是哪里?"}``; a chat message says
``{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "这是哪里?"}]}`` and the images
travel beside the messages in an ``images`` list. The ``<image>`` placeholder becomes an image item where
it stood (before, after or inside the text). LLaVA writes one newline between the placeholder and its
text; that newline is the separator of the two items, so it is dropped from the text and put back by
``from_messages``. The rare placeholder written without that newline gets ``"newline": False`` on its item,
which keeps ``from_messages(to_messages(s)) == s`` exact for every sample.

Every function here is pure (the input is never modified) and works in ``Dataset.map``; the ``*_batch``
forms take and return columns for ``Dataset.map(batched=True)``.

Example:
    >>> s = {"id": "1", "image": "1.jpg",
    ...      "conversations": [{"from": "human", "value": "<image>\\n这是哪里?"}, {"from": "gpt", "value": "北京。"}]}
    >>> m = to_messages(s)
    >>> m["messages"][0]
    {'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': '这是哪里?'}]}
    >>> m["images"], from_messages(m) == s
    (['1.jpg'], True)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from ..records import RECORD_FORMATS
from ..roles import normalize_role, to_llava_role
from ..schema import IMAGE_PLACEHOLDER

#: Key set to ``False`` on an image item whose placeholder had no newline between it and its text.
NEWLINE_KEY = "newline"
#: Keys a LLaVA sample holds that become ``messages`` / ``images`` (everything else is carried over).
_LLAVA_KEYS = ("conversations", "image", "images")
_MESSAGES_KEYS = ("messages", "images")


class ConversionError(ValueError):
    """A sample that cannot be expressed in the target format; the message names the sample."""


def _where(sample_id: Any) -> str:
    return f"sample {sample_id!r}: " if sample_id is not None else ""


def _as_mapping(sample: Any) -> Mapping[str, Any]:
    if isinstance(sample, Mapping):
        return sample
    to_dict = getattr(sample, "to_dict", None)  # llava_zh.schema.Sample
    if callable(to_dict):
        return to_dict()
    raise ConversionError(f"expected a sample dict, got {type(sample).__name__}")


# ---------------------------------------------------------------------------------------------------
# one turn's text <-> one message's content


def text_to_content(value: str) -> list[dict[str, Any]]:
    """Split a LLaVA turn's text at its ``<image>`` placeholders into content items.

    Each image's separator is the one newline on the side of the text it belongs to: the text after it
    when there is one, else the text before it.

    Example:
        >>> text_to_content("图中<image>是什么?")
        [{'type': 'text', 'text': '图中'}, {'type': 'image', 'newline': False}, {'type': 'text', 'text': '是什么?'}]
    """
    parts = value.split(IMAGE_PLACEHOLDER)
    if len(parts) == 1:
        return [{"type": "text", "text": value}]
    texts = list(parts)
    newline: list[bool] = []
    for j in range(len(parts) - 1):
        if parts[j + 1]:  # the text after the image
            text = texts[j + 1]
            stripped = len(text) > 1 and text.startswith("\n")
            if stripped:
                texts[j + 1] = text[1:]
        elif parts[j]:  # the text before it
            text = texts[j]
            stripped = len(text) > 1 and text.endswith("\n")
            if stripped:
                texts[j] = text[:-1]
        else:  # no text beside it: nothing to separate
            stripped = True
        newline.append(stripped)
    items: list[dict[str, Any]] = []
    for j, text in enumerate(texts):
        if j:
            items.append({"type": "image"} if newline[j - 1] else {"type": "image", NEWLINE_KEY: False})
        if parts[j]:  # a text item exists exactly where the original text was not empty
            items.append({"type": "text", "text": text})
    return items


def _is_text(item: Optional[Mapping[str, Any]]) -> bool:
    return item is not None and item.get("type") == "text"


def content_to_text(content: Any, sample_id: Any = None) -> str:
    """Join content items back into one LLaVA text with ``<image>`` placeholders (a string is kept).

    Example:
        >>> content_to_text([{"type": "image"}, {"type": "text", "text": "这是哪里?"}])
        '<image>\\n这是哪里?'
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, (list, tuple)):
        raise ConversionError(f"{_where(sample_id)}expected message content as a string or a list of items, "
                              f"got {type(content).__name__}")
    out: list[str] = []
    last = len(content) - 1
    for i, item in enumerate(content):
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind == "text":
            out.append(item.get("text") or "")
        elif kind == "image":
            flag = item.get(NEWLINE_KEY)
            sep = "" if flag is False else "\n"
            if _is_text(content[i + 1] if i < last else None):
                out.append(IMAGE_PLACEHOLDER + sep)
            elif _is_text(content[i - 1] if i else None):
                out.append(sep + IMAGE_PLACEHOLDER)
            else:
                out.append(IMAGE_PLACEHOLDER)
        else:
            raise ConversionError(f"{_where(sample_id)}content item {i}: expected type 'text' or 'image', got {item!r}")
    return "".join(out)


def count_images(content: Any) -> int:
    """Number of images a message's content refers to (image items, or placeholders in a string)."""
    if isinstance(content, str):
        return content.count(IMAGE_PLACEHOLDER)
    return sum(1 for item in content if isinstance(item, Mapping) and item.get("type") == "image")


# ---------------------------------------------------------------------------------------------------
# whole samples


def _llava_images(sample: Mapping[str, Any]) -> list[Any]:
    if "image" in sample:
        image = sample["image"]
        return [] if image is None else [image]
    return list(sample.get("images") or [])


def is_llava(example: Mapping[str, Any]) -> bool:
    """True for a LLaVA sample (``conversations`` of ``from``/``value`` turns)."""
    return "conversations" in example and "messages" not in example


def is_messages(example: Mapping[str, Any]) -> bool:
    """True for a chat-messages sample (``messages`` of ``role``/``content``)."""
    return "messages" in example


def to_messages(sample: Mapping[str, Any]) -> dict[str, Any]:
    """A LLaVA sample as ``{"messages": [...], "images": [...]}`` plus its other fields (id, task, ...).

    Roles are normalised (``human``/``用户``/``USER`` -> ``user`` ...); an unknown role raises
    ``UnknownRoleError`` naming the sample. The image (PIL image, ``{bytes, path}`` dict or path) is
    passed through untouched in ``images``.

    Example:
        >>> to_messages({"id": "a", "image": None, "conversations": [{"from": "用户", "value": "你好"}]})["messages"]
        [{'role': 'user', 'content': [{'type': 'text', 'text': '你好'}]}]
    """
    sample = _as_mapping(sample)
    sample_id = sample.get("id")
    try:
        conversations = sample["conversations"]
    except KeyError:
        raise ConversionError(f"{_where(sample_id)}expected a LLaVA sample with 'conversations', "
                              f"got keys {sorted(sample)}") from None
    images = _llava_images(sample)
    messages = []
    placeholders = 0
    for i, turn in enumerate(conversations):
        try:
            role, value = turn["from"], turn["value"]
        except (KeyError, TypeError):
            raise ConversionError(f"{_where(sample_id)}turn {i}: expected {{'from', 'value'}}, got {turn!r}") from None
        if not isinstance(value, str):
            raise ConversionError(f"{_where(sample_id)}turn {i}: expected a string value, got {type(value).__name__}")
        content = text_to_content(value)
        placeholders += value.count(IMAGE_PLACEHOLDER)
        messages.append({"role": normalize_role(role, sample_id), "content": content})
    if placeholders != len(images):
        raise ConversionError(f"{_where(sample_id)}expected one {IMAGE_PLACEHOLDER} placeholder per image "
                              f"({len(images)} image(s)), got {placeholders} placeholder(s)")
    out = {k: v for k, v in sample.items() if k not in _LLAVA_KEYS}
    out["messages"] = messages
    out["images"] = images
    return out


def messages_to_conversations(messages: Any, sample_id: Any = None) -> list[dict[str, str]]:
    """Chat messages as LLaVA turns (``from`` in human/gpt/system, ``<image>`` placeholders in ``value``)."""
    if not isinstance(messages, (list, tuple)):
        raise ConversionError(f"{_where(sample_id)}expected 'messages' as a list, got {type(messages).__name__}")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ConversionError(f"{_where(sample_id)}message {i}: expected {{'role', 'content'}}, got {message!r}")
        turns.append({"from": to_llava_role(message["role"], sample_id),
                      "value": content_to_text(message["content"], sample_id)})
    return turns


def from_messages(example: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``to_messages``: a LLaVA sample from ``messages`` + ``images`` (+ other fields).

    Content may be a list of items (TRL) or a string holding ``<image>`` placeholders (ms-swift,
    LLaMA-Factory). A LLaVA sample holds at most one image; more raise ``ConversionError``.

    Example:
        >>> from_messages({"id": "a", "images": [], "messages": [{"role": "user", "content": "你好"}]})
        {'id': 'a', 'image': None, 'conversations': [{'from': 'human', 'value': '你好'}]}
    """
    example = _as_mapping(example)
    sample_id = example.get("id")
    try:
        messages = example["messages"]
    except KeyError:
        raise ConversionError(f"{_where(sample_id)}expected a messages sample with 'messages', "
                              f"got keys {sorted(example)}") from None
    images = list(example.get("images") or [])
    conversations = messages_to_conversations(messages, sample_id)
    placeholders = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in conversations)
    if placeholders != len(images):
        raise ConversionError(f"{_where(sample_id)}expected one image item per image ({len(images)} image(s)), "
                              f"got {placeholders}")
    if len(images) > 1:
        raise ConversionError(f"{_where(sample_id)}a LLaVA sample holds at most one image, got {len(images)}")
    out = {k: v for k, v in example.items() if k not in _MESSAGES_KEYS}
    out["image"] = images[0] if images else None
    out["conversations"] = conversations
    return out


def maybe_to_messages(example: Mapping[str, Any]) -> Mapping[str, Any]:
    """``to_messages`` for a LLaVA sample; a messages sample is returned as it is."""
    return example if is_messages(example) else to_messages(example)


def maybe_from_messages(example: Mapping[str, Any]) -> Mapping[str, Any]:
    """``from_messages`` for a messages sample; a LLaVA sample is returned as it is."""
    return from_messages(example) if is_messages(example) else example


# ---------------------------------------------------------------------------------------------------
# batched forms (columns in, columns out) for Dataset.map(batched=True)


def rows_of(batch: Mapping[str, list]) -> list[dict[str, Any]]:
    """The rows of a columnar batch."""
    keys = list(batch)
    if not keys:
        return []
    n = len(batch[keys[0]])
    return [{k: batch[k][i] for k in keys} for i in range(n)]


def columns_of(rows: list[Mapping[str, Any]], keys: Optional[list[str]] = None) -> dict[str, list]:
    """Rows back into columns (the keys of the first row, in order, unless given)."""
    if keys is None:
        keys = list(rows[0]) if rows else []
    return {k: [row.get(k) for row in rows] for k in keys}


def batched(fn: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> Callable[[Mapping[str, list]], dict[str, list]]:
    """Turn a per-example converter into its columnar form."""

    def apply(batch: Mapping[str, list]) -> dict[str, list]:
        return columns_of([fn(row) for row in rows_of(batch)])

    apply.__name__ = f"{fn.__name__}_batch"
    apply.__doc__ = f"Batched form of ``{fn.__name__}`` for ``Dataset.map(batched=True)``."
    return apply


def to_messages_batch(batch: Mapping[str, list]) -> dict[str, list]:
    """Columns of LLaVA samples -> columns of messages samples.

    Example:
        >>> ds = ds.map(to_messages_batch, batched=True, remove_columns=["image", "conversations"])  # doctest: +SKIP
    """
    return columns_of([to_messages(row) for row in rows_of(batch)])


def from_messages_batch(batch: Mapping[str, list]) -> dict[str, list]:
    """Columns of messages samples -> columns of LLaVA samples."""
    return columns_of([from_messages(row) for row in rows_of(batch)])


# ---------------------------------------------------------------------------------------------------
# reading exported files back: a raw ``messages`` record (ms-swift JSONL, LLaMA-Factory, TRL parquet)


def messages_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A raw on-disk messages record as a LLaVA record for the builder (no ``image`` key when text-only)."""
    out = from_messages(record)
    if out["image"] is None:
        del out["image"]
    return out


RECORD_FORMATS.setdefault("messages", messages_record)
