"""Converters from a loaded LLaVA sample to what trainers consume.

* ``messages``: LLaVA ``conversations`` <-> chat messages (TRL / ``processor.apply_chat_template`` format);
* ``sharegpt``: LLaVA <-> ShareGPT (``conversations`` + ``images`` list, LLaMA-Factory's layout);
* ``chat_template``: messages -> ``input_ids`` / ``labels`` / pixel values with any processor's own template;
* ``export``: a whole dataset -> files for LLaVA, LLaMA-Factory, ms-swift, TRL or InternVL.

Example:
    >>> from llava_zh.convert import to_messages, from_messages
    >>> s = {"id": "1", "image": None,
    ...      "conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好!"}]}
    >>> from_messages(to_messages(s)) == s
    True
"""

from __future__ import annotations

from .messages import (
    from_messages,
    from_messages_batch,
    is_llava,
    is_messages,
    maybe_from_messages,
    maybe_to_messages,
    to_messages,
    to_messages_batch,
)
from .sharegpt import from_sharegpt, from_sharegpt_batch, is_sharegpt, to_sharegpt, to_sharegpt_batch

__all__ = [
    "from_messages",
    "from_messages_batch",
    "from_sharegpt",
    "from_sharegpt_batch",
    "is_llava",
    "is_messages",
    "is_sharegpt",
    "maybe_from_messages",
    "maybe_to_messages",
    "to_messages",
    "to_messages_batch",
    "to_sharegpt",
    "to_sharegpt_batch",
]
