"""Turn a model's reply into the conversation of a sample, one parser per task.

The prompts ask for ``用户:...\\n\\n助手:...`` (conversation, up to 5 rounds), ``问题:...\\n\\n回答:...``
(complex reasoning) or free text (detailed description: the whole reply is the answer). Real replies
stray from that, so the labelled parsers accept the full-width colon ``：``, English labels
(User/Assistant, Question/Answer), markdown bold or headings around a label, a label alone on its line,
round numbers (``问题1：``), a preamble before the first label, extra blank lines, trailing whitespace,
the two characters ``\\n`` echoed from the prompt, code fences around the reply and a leading
``<think>`` block. A reply they cannot trust is refused with a reason from ``REASONS``.

Example:
    >>> parse_reply("问题：图中的人为什么打伞？\\n\\n回答：因为在下雨。", "complex_reasoning").conversations
    [{'from': 'human', 'value': '<image>\\n图中的人为什么打伞？'}, {'from': 'gpt', 'value': '因为在下雨。'}]
    >>> parse_reply("好的。", "conversation").reason
    'no_pair'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..schema import GPT, HUMAN, IMAGE_PLACEHOLDER

#: Refusal reasons: name -> what it means. Recorded in ``parse_reason`` of a regeneration record.
REASONS: dict[str, str] = {
    "empty_reply": "the reply is empty",
    "no_pair": "no labelled question/answer pair was found",
    "answer_without_question": "an answer label comes before any question label",
    "question_without_answer": "a question is not followed by an answer",
    "empty_question": "a question label has no text after it",
    "empty_answer": "an answer label has no text after it",
    "too_many_rounds": "the reply has more rounds than allowed",
}

#: What to do with a reply that has more rounds than allowed.
TOO_MANY_ROUNDS = ("refuse", "keep_first")

#: Default round limits per task (the conversation prompt says at most 5; complex reasoning asks for one).
MAX_ROUNDS: dict[str, int] = {"conversation": 5, "complex_reasoning": 1, "detail_description": 1}

# Labels, longest first so that the regex alternation prefers 问题 over 问 and Assistant over A.
# Single letters (Q/A) are left out: an answer listing options "A：红色" must not start a new turn.
QUESTION_LABELS: tuple[str, ...] = ("用户", "人类", "提问", "问题", "问", "User", "Human", "Question")
ANSWER_LABELS: tuple[str, ...] = ("视觉AI助手", "AI助手", "助手", "回答", "答案", "答", "Assistant", "Answer")
_ROLE_OF_LABEL = {label.lower(): HUMAN for label in QUESTION_LABELS} | {label.lower(): GPT for label in ANSWER_LABELS}

_EMPHASIS = r"(?:\*\*|__|\*|_)"
_LABEL_LINE = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?(?:>[ \t]*)?(?:[-+•][ \t]+)?"  # heading, quote or bullet marker
    rf"{_EMPHASIS}?[ \t]*[【\[]?[ \t]*"  # opening bold/italic or bracket
    r"(?P<label>" + "|".join(re.escape(x) for x in sorted(QUESTION_LABELS + ANSWER_LABELS, key=len, reverse=True)) + r")"
    r"[ \t]*(?:[0-9]{1,2}|[一二三四五六七八九十]{1,3}|[(（][0-9]{1,2}[)）])?[ \t]*"  # round number: 问题1, User (2)
    rf"[】\]]?[ \t]*{_EMPHASIS}?[ \t]*"  # closing bracket or bold before the colon
    r"(?:(?P<colon>[:：])[ \t]*" + rf"{_EMPHASIS}?" + r"|(?=[ \t]*$))",  # a colon, or nothing else on the line
    re.MULTILINE | re.IGNORECASE,
)
_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"^\s*```[a-zA-Z]*[ \t]*\n(?P<body>.*)\n[ \t]*```\s*$", re.DOTALL)
_RULE_LINE = re.compile(r"^[ \t]*(?:-{3,}|\*{3,}|_{3,})[ \t]*$", re.MULTILINE)
_ROUND_HEADING = re.compile(
    rf"^[ \t]*(?:#{{1,6}}[ \t]*)?{_EMPHASIS}?[ \t]*(?:第[ \t]*[0-9一二三四五六七八九十]{{1,3}}[ \t]*轮(?:对话)?|Round[ \t]*[0-9]{{1,2}})"
    rf"[ \t]*[:：]?[ \t]*{_EMPHASIS}?[ \t]*$",
    re.MULTILINE | re.IGNORECASE,
)
_TRAILING_WS = re.compile(r"[ \t\u3000]+$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")


class ReplyParseError(ValueError):
    """A reply the parser refuses; ``reason`` is a key of ``REASONS``, the message says what was found."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True, slots=True)
class ParseResult:
    """Outcome of parsing one reply: the conversation (empty when refused), or the reason for refusing it."""

    conversations: list[dict[str, str]] = field(default_factory=list)
    reason: Optional[str] = None
    message: Optional[str] = None
    rounds: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def status(self) -> str:
        return "ok" if self.reason is None else "failed"


def clean_text(text: str) -> str:
    """Trailing whitespace off every line, runs of blank lines down to one, ``<image>`` tokens removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace(IMAGE_PLACEHOLDER, "")
    text = _TRAILING_WS.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def normalize_reply(reply: str) -> str:
    """Undo the wrappers models put around a reply: a ``<think>`` block, code fences, echoed ``\\n``."""
    text = reply.replace("\r\n", "\n").replace("\r", "\n")
    text = _THINK.sub("", text, count=1)
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body")
    if "\\n" in text:  # the prompt shows the format with the two characters backslash-n; some models copy them
        text = text.replace("\\n", "\n")
    return text.strip()


def _strip_rules(text: str) -> str:
    # Horizontal rules and round headings between rounds (---, **第二轮**) belong to no turn.
    return clean_text(_ROUND_HEADING.sub("", _RULE_LINE.sub("", text)))


def split_labelled(reply: str) -> list[tuple[str, str]]:
    """The ``(role, text)`` segments of a labelled reply in order; the preamble before the first label is dropped.

    Example:
        >>> split_labelled("好的，对话如下：\\n**用户：** 这是什么？\\n**助手：** 一只猫。")
        [('human', '这是什么？'), ('gpt', '一只猫。')]
    """
    text = normalize_reply(reply)
    matches = list(_LABEL_LINE.finditer(text))
    segments = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        segments.append((_ROLE_OF_LABEL[m.group("label").lower()], _strip_rules(text[m.end():end])))
    return segments


def _with_placeholder(conversations: list[dict[str, str]], image: bool) -> list[dict[str, str]]:
    if image and conversations:
        first = conversations[0]
        conversations[0] = {"from": first["from"], "value": f"{IMAGE_PLACEHOLDER}\n{first['value']}"}
    return conversations


def parse_labelled(
    reply: str,
    *,
    max_rounds: int = 5,
    on_too_many_rounds: str = "refuse",
    image: bool = True,
) -> list[dict[str, str]]:
    """Question/answer pairs of a labelled reply as LLaVA turns; raises ``ReplyParseError`` when refused.

    The first human turn gets the ``<image>`` placeholder (``image=False`` for a text-only sample).
    More than ``max_rounds`` pairs are refused, or cut to the first ``max_rounds`` with
    ``on_too_many_rounds="keep_first"``.
    """
    if on_too_many_rounds not in TOO_MANY_ROUNDS:
        raise ValueError(f"on_too_many_rounds must be one of {TOO_MANY_ROUNDS}, got {on_too_many_rounds!r}")
    if not reply or not reply.strip():
        raise ReplyParseError("empty_reply", "the model returned no text")
    segments = split_labelled(reply)
    if not segments:
        raise ReplyParseError("no_pair", f"no question/answer label found in {_preview(reply)}")
    conversations: list[dict[str, str]] = []
    expected = HUMAN
    for role, text in segments:
        if role != expected:
            if role == GPT:
                raise ReplyParseError("answer_without_question", f"answer {_preview(text)} has no question before it")
            raise ReplyParseError(
                "question_without_answer", f"question {_preview(conversations[-1]['value'])} has no answer"
            )
        if not text:
            which = "question" if role == HUMAN else "answer"
            raise ReplyParseError(f"empty_{which}", f"{which} {len(conversations) // 2 + 1} is empty")
        conversations.append({"from": role, "value": text})
        expected = GPT if role == HUMAN else HUMAN
    if expected == GPT:
        raise ReplyParseError("question_without_answer", f"question {_preview(conversations[-1]['value'])} has no answer")
    rounds = len(conversations) // 2
    if rounds > max_rounds:
        if on_too_many_rounds == "refuse":
            raise ReplyParseError("too_many_rounds", f"expected at most {max_rounds} rounds, got {rounds}")
        conversations = conversations[: 2 * max_rounds]
    return _with_placeholder(conversations, image)


def parse_conversation(reply: str, *, max_rounds: int = 5, on_too_many_rounds: str = "refuse",
                       image: bool = True, question: Optional[str] = None) -> list[dict[str, str]]:
    """A ``用户:...\\n\\n助手:...`` reply (up to ``max_rounds`` rounds) as LLaVA turns."""
    return parse_labelled(reply, max_rounds=max_rounds, on_too_many_rounds=on_too_many_rounds, image=image)


def parse_complex_reasoning(reply: str, *, max_rounds: int = 1, on_too_many_rounds: str = "refuse",
                            image: bool = True, question: Optional[str] = None) -> list[dict[str, str]]:
    """A ``问题:...\\n\\n回答:...`` reply (one pair unless ``max_rounds`` says more) as LLaVA turns."""
    return parse_labelled(reply, max_rounds=max_rounds, on_too_many_rounds=on_too_many_rounds, image=image)


def parse_description(reply: str, *, question: Optional[str] = None, image: bool = True,
                      max_rounds: int = 1, on_too_many_rounds: str = "refuse") -> list[dict[str, str]]:
    """The whole reply is the answer to ``question`` (the human turn of the description sample)."""
    if question is None or not question.strip():
        raise ValueError("a description sample needs the question of its human turn (question=...)")
    text = clean_text(_THINK.sub("", reply or "", count=1))
    if not text:
        raise ReplyParseError("empty_reply", "the model returned no text")
    conversations = [{"from": HUMAN, "value": clean_text(question)}, {"from": GPT, "value": text}]
    return _with_placeholder(conversations, image)


#: task -> parser (reply, **options) -> LLaVA turns, raising ``ReplyParseError``.
PARSERS: dict[str, Callable[..., list[dict[str, str]]]] = {
    "conversation": parse_conversation,
    "complex_reasoning": parse_complex_reasoning,
    "detail_description": parse_description,
}


def parse_reply(
    reply: str,
    task: str,
    *,
    max_rounds: Optional[int] = None,
    on_too_many_rounds: str = "refuse",
    image: bool = True,
    question: Optional[str] = None,
) -> ParseResult:
    """Parse ``reply`` with the parser of ``task``; a refused reply gives a result with ``reason``, never raises.

    ``question`` is the human turn of a description sample (required for ``detail_description``).

    Example:
        >>> r = parse_reply("用户: 图里有几只猫?\\n\\n助手:", "conversation")
        >>> r.status, r.reason
        ('failed', 'empty_answer')
    """
    try:
        parser = PARSERS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {list(PARSERS)}") from None
    limit = MAX_ROUNDS[task] if max_rounds is None else max_rounds
    try:
        turns = parser(reply, max_rounds=limit, on_too_many_rounds=on_too_many_rounds, image=image, question=question)
    except ReplyParseError as e:
        return ParseResult(reason=e.reason, message=e.message)
    return ParseResult(conversations=turns, rounds=len(turns) // 2)


def _preview(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "…")
