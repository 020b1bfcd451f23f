"""The generation prompts of llava-instruct-zh-600k, with English counterparts, chosen by task and language.

The three Chinese prompts are the ones published on the dataset card, kept byte for byte (they contain
the two characters backslash-n where they show the reply format, as published). The English ones ask
for the same thing in English with ``User:``/``Assistant:`` and ``Question:``/``Answer:`` labels, for
regenerating English data. A user may pass their own prompt text instead.

Example:
    >>> from llava_zh.regenerate.prompts import get_prompt
    >>> p = get_prompt("complex_reasoning", "zh")
    >>> p.id, p.text.endswith("的格式返回。")
    ('complex_reasoning-zh-v1', True)
    >>> get_prompt("conversation", text="用一问一答描述这张图。").id
    'custom-6b2f22611ea3'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

from ..schema import TASKS

#: Languages that have built-in prompts.
LANGUAGES: tuple[str, ...] = ("zh", "en")

# --- the published prompts (dataset card of llava-instruct-zh-600k), byte for byte -----------------------

CONVERSATION_ZH = r"""设计一个你和一个询问这张照片的人之间的对话。答案应该是视觉AI助手看到图像并回答问题的语气。
你需要提出不同的问题并给出相应的答案。问题可以包括询问图像视觉内容的问题,包括对象类型、对象计数、对象动作、对象位置、对象之间的相对位置等。必须是有明确答案的问题,即
(1) 人们可以在图像中明确看到问题所问的内容,并且可以自信地回答;
(2) 人们可以从图像中肯定地确定它不在图像中。
问题还可以包括与图像中的内容相关的复杂问题,例如,询问图像中对象的背景知识,要求讨论图像中发生的事件等。同样,不要问不确定的细节。
在回答复杂问题时要提供详细的答案。例如,给出详细的例子或推理步骤,使内容更具说服力和组织性。如有必要,您可以包含多个段落。最多不超过5轮对话。
以 用户:...\n\n助手:...\n\n用户:...\n\n助手:...\n\n 的格式返回。"""

COMPLEX_REASONING_ZH = r"""设计一个关于这张照片的问题,并提供详细的答案。必须是除了描述场景以外的复杂问题。
要回答这些问题,首先需要理解视觉内容,然后根据背景知识进行推理,来解释事情为什么会这样发生,或者为用户的请求提供指导和帮助。你可以通过不在问题中包含视觉内容的细节来使问题具有挑战性,这样回答问题时必须先根据视觉内容进行推理。
以 问题:...\n\n回答:...\n\n 的格式返回。"""

DETAIL_DESCRIPTION_ZH = r"""详细描述这张照片的场景。包括对象计数、对象位置、对象之间的相对位置等详细信息。
当图片中存在文字时,需要将文字提取出来进行描述。描述应尽可能全面,尽量覆盖所有对象。"""

# --- English counterparts, written for this package in the same spirit ------------------------------------

CONVERSATION_EN = r"""Design a conversation between you and a person asking about this photo. The answers should be in the tone of a visual AI assistant that sees the image and answers the questions.
Ask a variety of questions and give the matching answers. Questions can be about the visual content of the image: object types, counting objects, object actions, object locations, relative positions between objects, and so on. Only ask questions that have definite answers, that is
(1) one can clearly see in the image what the question asks about and answer it confidently;
(2) one can tell with certainty from the image that it is not in the image.
Questions may also be complex ones related to the content of the image, for example about background knowledge of the objects in the image, or asking to discuss events happening in the image. Again, do not ask about uncertain details.
Give detailed answers to complex questions, for example with concrete examples or reasoning steps, so that the content is convincing and well organised. Use several paragraphs if needed. At most 5 rounds of conversation.
Return it in the format User:...\n\nAssistant:...\n\nUser:...\n\nAssistant:...\n\n"""

COMPLEX_REASONING_EN = r"""Design one question about this photo and give a detailed answer. It must be a complex question, not a request to describe the scene.
Answering it should first require understanding the visual content and then reasoning with background knowledge, to explain why things happen the way they do, or to give guidance and help for a request of the user. Make the question challenging by leaving the visual details out of it, so that answering requires reasoning about the visual content first.
Return it in the format Question:...\n\nAnswer:...\n\n"""

DETAIL_DESCRIPTION_EN = r"""Describe the scene of this photo in detail, including object counts, object locations, relative positions between objects and other details.
When there is text in the image, transcribe it as part of the description. The description should be as complete as possible and cover all the objects."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """An instruction given to the model with one image: its id (recorded with every sample), task, language, text."""

    id: str
    task: str
    language: str
    text: str


#: (task, language) -> built-in prompt.
PROMPTS: dict[tuple[str, str], Prompt] = {
    (task, lang): Prompt(f"{task}-{lang}-v1", task, lang, text)
    for (task, lang), text in {
        ("conversation", "zh"): CONVERSATION_ZH,
        ("complex_reasoning", "zh"): COMPLEX_REASONING_ZH,
        ("detail_description", "zh"): DETAIL_DESCRIPTION_ZH,
        ("conversation", "en"): CONVERSATION_EN,
        ("complex_reasoning", "en"): COMPLEX_REASONING_EN,
        ("detail_description", "en"): DETAIL_DESCRIPTION_EN,
    }.items()
}

#: The question put in the human turn of a description sample made from a new image (one picked per id).
DESCRIPTION_QUESTIONS: dict[str, tuple[str, ...]] = {
    "zh": (
        "请详细描述这张图片。",
        "详细描述一下这张照片里的场景。",
        "这张图片里有什么?请尽可能详细地描述。",
        "请全面描述这张图片的内容,包括其中的文字。",
        "仔细看这张照片,描述你看到的一切。",
        "能详细介绍一下这张图片吗?",
    ),
    "en": (
        "Describe this image in detail.",
        "Give a detailed description of the scene in this photo.",
        "What is in this picture? Describe it as thoroughly as you can.",
        "Describe everything you can see in this image, including any text.",
        "Look carefully at this photo and describe it in detail.",
        "Can you explain what this image shows, in detail?",
    ),
}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")


def get_prompt(task: str, language: str = "zh", text: Optional[str] = None) -> Prompt:
    """The prompt for ``task`` in ``language``, or a custom prompt when ``text`` is given.

    A custom prompt gets the id ``custom-<12 hex of its sha256>``, so records say which text made them.

    Example:
        >>> get_prompt("detail_description", "en").id
        'detail_description-en-v1'
    """
    _check_task(task)
    if text is not None:
        if not text.strip():
            raise ValueError("a custom prompt must not be empty")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        return Prompt(f"custom-{digest}", task, language, text)
    try:
        return PROMPTS[(task, language)]
    except KeyError:
        raise ValueError(
            f"no built-in prompt for language {language!r}; expected one of {list(LANGUAGES)}, "
            f"or pass your own prompt text"
        ) from None


def description_question(sample_id: str, language: str = "zh") -> str:
    """The human question of a new description sample: one of ``DESCRIPTION_QUESTIONS``, fixed by the id.

    Example:
        >>> description_question("cat.jpg", "en") in DESCRIPTION_QUESTIONS["en"]
        True
    """
    questions = DESCRIPTION_QUESTIONS.get(language, DESCRIPTION_QUESTIONS["en"])
    digest = hashlib.blake2b(sample_id.encode("utf-8"), digest_size=8).digest()
    return questions[int.from_bytes(digest, "big") % len(questions)]
