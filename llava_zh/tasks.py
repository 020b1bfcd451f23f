"""Which task a record belongs to: its ``task`` field, else its file's name, else its shape.

The rule, in order:

1. the record's own ``task`` field (``conversation``, ``complex_reasoning``, ``detail_description``);
2. the annotation file's name: ``conversation*``, ``complex_reasoning*`` / ``complex*``, ``detail*``
   (so LLaVA-Instruct-150K's ``conversation_58k.json``, ``complex_reasoning_77k.json`` and
   ``detail_23k.json`` are recognised);
3. the shape: more than one round is a ``conversation``; one round whose question asks for a description
   (描述 / describe / detail...) is a ``detail_description``; any other single round is ``complex_reasoning``.

Example:
    >>> task_from_filename("data/detail_23k.json"), task_from_filename("llava_instruct_150k.json")
    ('detail_description', None)
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional, Sequence

from .roles import to_llava_role
from .schema import HUMAN

_FILENAME_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^conv(ersation)?s?(?![a-z])"), "conversation"),
    (re.compile(r"^complex(_?reasoning)?(?![a-z])"), "complex_reasoning"),
    (re.compile(r"^detail(ed)?(_?descriptions?)?(?![a-z])"), "detail_description"),
)
_DESCRIBE = re.compile(r"描述|描绘|介绍一下这张|describe|description|detail", re.IGNORECASE)


def task_from_filename(path: str) -> Optional[str]:
    """The task a file's name announces, or None (e.g. ``llava_instruct_150k.json`` mixes tasks)."""
    name = os.path.basename(path).lower()
    for pattern, task in _FILENAME_RULES:
        if pattern.match(name):
            return task
    return None


def task_from_shape(conversations: Sequence[Mapping[str, Any]]) -> str:
    """Guess the task from the conversation when neither the record nor its file name says."""
    questions = [t["value"] for t in conversations if to_llava_role(t["from"]) == HUMAN]
    if len(questions) > 1:
        return "conversation"
    if questions and _DESCRIBE.search(questions[0]):
        return "detail_description"
    return "complex_reasoning"


def infer_task(record: Mapping[str, Any], file_task: Optional[str]) -> str:
    return record.get("task") or file_task or task_from_shape(record["conversations"])
