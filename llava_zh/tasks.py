"""Which task a record belongs to: its ``task`` field, else its file's name, else its shape.

The rule, in order:

1. the record's own ``task`` field (``conversation``, ``complex_reasoning``, ``detail_description``);
2. the annotation file's name: ``conversation*``, ``complex_reasoning*`` / ``complex*``, ``detail*``
   (so LLaVA-Instruct-150K's ``conversation_58k.json``, ``complex_reasoning_77k.json`` and
   ``detail_23k.json`` are recognised);
3. the shape: more than one round is a ``conversation``; one round whose question is one of the fixed
   detailed-description questions of LLaVA (``DETAIL_QUESTIONS``, compared without case, placeholder and
   final punctuation) or asks for a description (描述 / describe / detail...) is a ``detail_description``;
   any other single round is ``complex_reasoning``. This decides the tasks of LLaVA-Instruct-150K's
   mixed files (``llava_instruct_150k.json``), whose records say nothing about their task.

Example:
    >>> task_from_filename("data/detail_23k.json"), task_from_filename("llava_instruct_150k.json")
    ('detail_description', None)
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional, Sequence

from .roles import to_llava_role
from .schema import HUMAN, IMAGE_PLACEHOLDER

_FILENAME_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^conv(ersation)?s?(?![a-z])"), "conversation"),
    (re.compile(r"^complex(_?reasoning)?(?![a-z])"), "complex_reasoning"),
    (re.compile(r"^detail(ed)?(_?descriptions?)?(?![a-z])"), "detail_description"),
)
_DESCRIBE = re.compile(r"描述|描绘|介绍一下这张|describe|description|detail", re.IGNORECASE)

#: Questions of LLaVA's detailed-description task (those seen in ``detail_23k.json`` and the list of
#: detailed-description instructions of the LLaVA paper), normalised by ``normalize_question``.
_DETAIL_QUESTIONS_RAW = (
    "What do you see happening in this image?",
    "What do you think is going on in this snapshot?",
    "Can you elaborate on the elements of the picture provided?",
    "Describe the following image.",
    "Describe the following scene.",
    "Write a detailed description of the given image.",
    "Explain the visual content of the image in great detail.",
    "Analyze the image in a comprehensive and detailed manner.",
    "Can you describe the main features of this image for me?",
    "What are the key elements in this picture?",
    "What is this photo about'?",
    "What's happening in the scene?",
    "Describe the following image in detail",
    "Provide a detailed description of the given image",
    "Give an elaborate explanation of the image you see",
    "Share a comprehensive rundown of the presented image",
    "Offer a thorough analysis of the image",
    "Explain the various aspects of the image before you",
    "Clarify the contents of the displayed image with great detail",
    "Characterize the image using a well-detailed description",
    "Break down the elements of the image in a detailed manner",
    "Walk through the important details of the image",
    "Portray the image with a rich, descriptive narrative",
    "Narrate the contents of the image with precision",
    "Illustrate the image through a descriptive explanation",
    "Examine the image closely and share its details",
    "Write an exhaustive depiction of the given image",
)
_SPACES = re.compile(r"\s+")


def normalize_question(text: str) -> str:
    """Lower case, no ``<image>``, single spaces, no final punctuation: how questions are compared."""
    text = _SPACES.sub(" ", text.replace(IMAGE_PLACEHOLDER, " ")).strip().lower()
    return text.rstrip(" .?!'\"")


DETAIL_QUESTIONS: frozenset[str] = frozenset(normalize_question(q) for q in _DETAIL_QUESTIONS_RAW)


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
    if questions and (normalize_question(questions[0]) in DETAIL_QUESTIONS or _DESCRIBE.search(questions[0])):
        return "detail_description"
    return "complex_reasoning"


def infer_task(record: Mapping[str, Any], file_task: Optional[str]) -> str:
    return record.get("task") or file_task or task_from_shape(record["conversations"])
