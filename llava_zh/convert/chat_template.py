"""Samples -> training tensors with any processor's own chat template: ``input_ids``, ``attention_mask``,
``labels`` (-100 outside the assistant replies) and what the processor returns for the images.

No per-model template lives here. The conversation is rendered with the processor's (or tokenizer's)
chat template through the same transformers function its ``apply_chat_template`` calls, then tokenized
by the processor itself, so image placeholders are expanded exactly as the model expects. The assistant
spans to learn are found in one of three ways:

* ``markers``: the template's ``{% generation %}`` blocks (used whenever the template has them);
* ``sentinels``: each assistant reply is wrapped in two private-use characters, the conversation is
  rendered once, the characters are located and removed, and the reply's end-of-turn (learned once from
  the template, e.g. ``<|im_end|>``) is appended to each span. Checked against ``prefixes`` on a probe
  conversation when the encoder is built, and used only when both agree;
* ``prefixes``: the reference method, rendering growing prefixes of the conversation (the prompt up to
  each reply with the generation prompt, then up to the end of the reply). Slow (two renders per
  reply); it assumes only that the template renders a message the same way whatever follows it (checked,
  with an error naming the message otherwise). The fallback for templates that change the reply text.

Truncation never cuts through image tokens: a sample longer than ``max_length`` is re-encoded with its
whole turns up to the last reply that fits (so the images, their tokens and their pixels stay whole).

Image budgets (``min_pixels`` / ``max_pixels``) go through the processor's own resizing options, never
through resizing the images here, so the image tokens always match the pixels the processor produces.

Example:
    >>> encoder = ChatTemplateEncoder(processor, max_length=2048)                  # doctest: +SKIP
    >>> row = encoder(llava_zh.load_dataset("sample")[0])                          # doctest: +SKIP
    >>> sorted(row)                                                                # doctest: +SKIP
    ['attention_mask', 'image_grid_thw', 'input_ids', 'labels', 'mm_token_type_ids', 'pixel_values']
    >>> tokens = encoder.map(ds)  # ds.map(encoder, batched=True, remove_columns=..., features=...)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .messages import count_images, maybe_to_messages

IGNORE_INDEX = -100
ON_TOO_LONG = ("drop", "truncate", "raise")
SPAN_METHODS = ("auto", "markers", "sentinels", "prefixes")
#: Private-use characters wrapped around each assistant reply by the ``sentinels`` method.
OPEN, CLOSE = "\ue000", "\ue001"
_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
#: Keys a processor returns per token (padded by the collator) rather than per image.
TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids")
_TEXT_ONLY_KEYS = ("offset_mapping", "text_replacement_offsets", "attention_mask", "input_ids", "token_type_ids")


class TemplateError(ValueError):
    """The chat template cannot be used to find the assistant replies (or there is none)."""


class SampleTooLongError(ValueError):
    """A sample longer than ``max_length`` with ``on_too_long="raise"``."""


@dataclass
class _Rendered:
    """One sample rendered: its text and the character spans to learn (replies + end-of-turn)."""

    text: str
    spans: list[tuple[int, int]]


@dataclass
class _TextBatch:
    """Texts ready for the tokenizer, with their label spans and whether to add special tokens."""

    texts: list[str] = field(default_factory=list)
    spans: list[list[tuple[int, int]]] = field(default_factory=list)
    flags: list[bool] = field(default_factory=list)
    image_counts: list[list[int]] = field(default_factory=list)  # image tokens inserted per image


@dataclass
class _Encoded:
    input_ids: list[int]
    labels: list[int]
    extras: dict[str, Any] = field(default_factory=dict)  # per-token lists and image outputs


def _assistant_indices(messages: Sequence[Mapping[str, Any]]) -> list[int]:
    return [i for i, m in enumerate(messages) if m.get("role") == "assistant"]


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join((item.get("text") or "") for item in content or () if isinstance(item, Mapping))


def _wrap_reply(message: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """A copy of an assistant message with its text wrapped in the sentinels (None if it has no text)."""
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": OPEN + content + CLOSE}
    texts = [i for i, item in enumerate(content or ()) if isinstance(item, Mapping) and item.get("type") == "text"]
    if not texts:
        return None
    items = [dict(item) for item in content]
    first, last = texts[0], texts[-1]
    items[first]["text"] = OPEN + (items[first].get("text") or "")
    items[last]["text"] = (items[last].get("text") or "") + CLOSE
    return {**message, "content": items}


def _image_size(image: Any) -> tuple[int, int]:
    """(height, width) of a PIL image, a ``{bytes, path}`` dict or a path, reading only the header."""
    from PIL import Image

    if hasattr(image, "size") and hasattr(image, "mode"):
        width, height = image.size
        return height, width
    if isinstance(image, Mapping):
        data, path = image.get("bytes"), image.get("path")
        source = io.BytesIO(data) if data is not None else path
    else:
        source = image
    with Image.open(source) as im:
        width, height = im.size
    return height, width


def _load_image(image: Any):
    """A PIL image from what a dataset row may hold (PIL image, ``{bytes, path}`` dict, path)."""
    from PIL import Image

    if hasattr(image, "size") and hasattr(image, "mode"):
        return image
    if isinstance(image, Mapping):
        data, path = image.get("bytes"), image.get("path")
        im = Image.open(io.BytesIO(data)) if data is not None else Image.open(path)
    else:
        im = Image.open(image)
    im.load()
    return im


def _shift(spans: Sequence[tuple[int, int]], replacements: Sequence[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Move character spans of the rendered text to the text with image placeholders expanded.

    ``replacements`` are ``(start, end, new_length)`` of each expanded placeholder, in text order.
    """
    if not replacements:
        return list(spans)
    ends = [end for _, end, _ in replacements]
    gained = [0]
    for start, end, new_length in replacements:
        gained.append(gained[-1] + new_length - (end - start))
    return [(s + gained[bisect_right(ends, s)], e + gained[bisect_right(ends, e)]) for s, e in spans]


def _same_spans(a: _Rendered, b: _Rendered) -> bool:
    """Same text and the same learned text in each span (a space the template writes between the
    generation prompt and the reply may fall on either side; it is tokenized with the reply anyway)."""
    if a.text != b.text or len(a.spans) != len(b.spans):
        return False
    return all(a.text[s1:e1].strip() == b.text[s2:e2].strip() for (s1, e1), (s2, e2) in zip(a.spans, b.spans))


def _replacements_from_runs(text: str, ids: Sequence[int], token: str, token_id: int) -> list[tuple[int, int, int]]:
    """Where a processor that does not report its replacements expanded ``token`` into runs of ids."""
    runs, previous = [], None
    for i in ids:
        if i == token_id:
            if previous == token_id:
                runs[-1] += 1
            else:
                runs.append(1)
        previous = i
    out, pos = [], 0
    for n in runs:
        at = text.find(token, pos)
        if at < 0:
            break
        out.append((at, at + len(token), len(token) * n))
        pos = at + len(token)
    return out


def _qwen_like(image_processor: Any) -> bool:
    """An image processor that resizes within a pixel budget (``size={"shortest_edge", "longest_edge"}`` in pixels,
    patches merged: Qwen2-VL, Qwen2.5-VL and their kin)."""
    size = getattr(image_processor, "size", None)
    get = size.get if isinstance(size, Mapping) else (lambda key: getattr(size, key, None))
    return (hasattr(image_processor, "merge_size") and hasattr(image_processor, "patch_size")
            and get("shortest_edge") is not None and get("longest_edge") is not None)


def _fixed_size(image_processor: Any) -> Optional[tuple[int, int]]:
    """(height, width) every image is resized/cropped to by a fixed-size image processor (CLIP...), else None."""
    for name in ("crop_size", "size"):
        size = getattr(image_processor, name, None)
        get = size.get if isinstance(size, Mapping) else (lambda key, size=size: getattr(size, key, None))
        if size is not None and get("height") and get("width"):
            if name == "size" or getattr(image_processor, "do_center_crop", True):
                return int(get("height")), int(get("width"))
    return None


def pixel_budget_kwargs(processor: Any, min_pixels: Optional[int] = None,
                        max_pixels: Optional[int] = None) -> dict[str, Any]:
    """The processor-call arguments that keep every image within ``[min_pixels, max_pixels]`` pixels.

    Dispatch on what the image processor offers:

    * a budget (Qwen2-VL family: ``size={"shortest_edge": min_pixels, "longest_edge": max_pixels}``, the
      current name of the deprecated ``min_pixels``/``max_pixels`` call options): ``{"images_kwargs": {"size": ...}}``,
      the other bound kept from the processor (the lower one lowered to ``max_pixels`` if above it);
    * a fixed output size (LLaVA-1.5's CLIP processor): nothing to pass when that size is within the budget;
      ``ValueError`` otherwise, as no option of the processor can honour it.

    Example:
        >>> from llava_zh.tiny_models import build_processor
        >>> pixel_budget_kwargs(build_processor("qwen2_5_vl"), max_pixels=448 * 448)
        {'images_kwargs': {'size': {'shortest_edge': 3136, 'longest_edge': 200704}}}
        >>> pixel_budget_kwargs(build_processor("llava", image_size=112), max_pixels=448 * 448)
        {}
    """
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"{name} must be a positive number of pixels or None, got {value!r}")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    if min_pixels is None and max_pixels is None:
        return {}
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        raise TemplateError(f"{type(processor).__name__} has no image processor: a pixel budget needs the model's processor")
    if _qwen_like(image_processor):
        size = image_processor.size
        get = size.get if isinstance(size, Mapping) else (lambda key: getattr(size, key, None))
        low = int(min_pixels if min_pixels is not None else get("shortest_edge"))
        high = int(max_pixels if max_pixels is not None else get("longest_edge"))
        if min_pixels is None:
            low = min(low, high)
        if low > high:
            raise ValueError(f"min_pixels ({low}) must not exceed max_pixels ({high}) of {type(image_processor).__name__}")
        return {"images_kwargs": {"size": {"shortest_edge": low, "longest_edge": high}}}
    fixed = _fixed_size(image_processor)
    if fixed is not None:
        pixels = fixed[0] * fixed[1]
        if max_pixels is not None and pixels > max_pixels:
            raise ValueError(f"{type(image_processor).__name__} resizes every image to a fixed {fixed[1]}x{fixed[0]} "
                             f"({pixels} pixels), above max_pixels={max_pixels}; build the processor with a smaller size")
        if min_pixels is not None and pixels < min_pixels:
            raise ValueError(f"{type(image_processor).__name__} resizes every image to a fixed {fixed[1]}x{fixed[0]} "
                             f"({pixels} pixels), below min_pixels={min_pixels}; build the processor with a larger size")
        return {}  # the fixed size already honours the budget
    raise ValueError(f"{type(image_processor).__name__} has no pixel budget option known to llava-zh; pass its own "
                     "resizing options through processor_kwargs={'images_kwargs': {...}}")


def _merge_images_kwargs(kwargs: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``extra["images_kwargs"]`` merged into its own ``images_kwargs`` (``extra`` wins)."""
    out = dict(kwargs)
    if extra.get("images_kwargs"):
        out["images_kwargs"] = {**dict(out.get("images_kwargs") or {}), **extra["images_kwargs"]}
    return out


def _count_kwargs(processor: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Processor-call kwargs as ``_get_num_multimodal_tokens`` reads them.

    transformers' token counter for the Qwen2-VL family reads ``min_pixels``/``max_pixels`` from the image
    options but ignores ``size``, which the processor call uses: a ``size`` budget is translated so that
    counting and processing agree.
    """
    images = kwargs.get("images_kwargs")
    size = images.get("size") if isinstance(images, Mapping) else None
    if not isinstance(size, Mapping) or not _qwen_like(getattr(processor, "image_processor", None)):
        return dict(kwargs)
    extra = {}
    if size.get("shortest_edge") is not None:
        extra["min_pixels"] = size["shortest_edge"]
    if size.get("longest_edge") is not None:
        extra["max_pixels"] = size["longest_edge"]
    return {**kwargs, "images_kwargs": {**images, **extra}}


class ChatTemplateEncoder:
    """Turn LLaVA or messages samples into model inputs with labels, using the processor's own template.

    Args:
        processor_or_tokenizer: a transformers processor (Qwen2-VL, LLaVA, ...) or, for text-only
            samples, a tokenizer with a chat template.
        max_length: longest allowed ``input_ids`` (None: no limit).
        assistant_only_loss: labels only on the assistant replies and their end-of-turn token; when
            False every token but image and padding tokens is learned.
        on_too_long: ``"drop"`` (counted in ``dropped``), ``"truncate"`` (keep the whole turns that fit,
            re-encoded so image tokens and pixels stay whole; dropped when not even one fits) or ``"raise"``.
        process_images: run the image processor (``pixel_values``, ``image_grid_thw``, ...). With False the
            image tokens are still inserted, their number computed from the image size alone (fast
            pre-tokenization; pixels are then computed at training time).
        span_method: ``"auto"`` (markers if the template has them, else sentinels when they agree with
            prefixes on a probe, else prefixes) or one of ``"markers"``, ``"sentinels"``, ``"prefixes"``.
        chat_template: a template string or name, instead of the processor's default.
        template_kwargs: extra variables for the template (``add_vision_id=True``...).
        processor_kwargs: extra arguments for the processor call (``images_kwargs={...}``...).
        min_pixels, max_pixels: pixel budget per image, applied through the processor's own options (see
            :func:`pixel_budget_kwargs`): Qwen2-VL style processors resize every image to at most
            ``max_pixels`` (and at least ``min_pixels``) pixels, keeping its aspect ratio, so a 4000x3000 photo
            under ``max_pixels=448*448`` becomes 504x364 pixels and 234 image tokens instead of 1,230. LLaVA
            style processors resize to a fixed size: a budget is accepted when that size fits it and refused
            otherwise (build the processor with a smaller size).

    Calling it on one sample returns a dict (None when dropped); on a batch (columns, as in
    ``Dataset.map(batched=True)``) it returns columns without the dropped rows, so map it with
    ``remove_columns=ds.column_names`` and ``features=encoder.features`` (``encoder.map(ds)`` does both).
    Every row has the same keys (``output_keys``; image outputs are None for a text-only sample).
    Counts: ``encoded``, ``truncated``, ``dropped`` (reason -> count), for the calls made in this process
    (not cached ``map`` results, nor ``num_proc`` workers). The encoder pickles without its counts, so its
    ``datasets`` fingerprint does not change as it is used and ``map`` finds its cache again.

    Example:
        >>> enc = ChatTemplateEncoder(processor, max_length=4096, on_too_long="truncate")   # doctest: +SKIP
        >>> tokens = enc.map(ds)                                                         # doctest: +SKIP
        >>> enc.report()                                                                 # doctest: +SKIP
        'encoded 641868, truncated 12, dropped: 3 no_whole_turn_fits'
    """

    #: samples per tokenizer call when a large batch is pipelined (render / tokenize / label overlap)
    PIPELINE_CHUNK = 128

    def __init__(
        self,
        processor_or_tokenizer: Any,
        max_length: Optional[int] = None,
        assistant_only_loss: bool = True,
        on_too_long: str = "drop",
        *,
        process_images: bool = True,
        span_method: str = "auto",
        chat_template: Optional[str] = None,
        template_kwargs: Optional[Mapping[str, Any]] = None,
        processor_kwargs: Optional[Mapping[str, Any]] = None,
        min_pixels: Optional[int] = None,
        max_pixels: Optional[int] = None,
    ) -> None:
        if on_too_long not in ON_TOO_LONG:
            raise ValueError(f"on_too_long must be one of {list(ON_TOO_LONG)}, got {on_too_long!r}")
        if span_method not in SPAN_METHODS:
            raise ValueError(f"span_method must be one of {list(SPAN_METHODS)}, got {span_method!r}")
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be a positive number of tokens or None, got {max_length!r}")
        self.processor = processor_or_tokenizer
        self.max_length = max_length
        self.assistant_only_loss = assistant_only_loss
        self.on_too_long = on_too_long
        self.process_images = process_images
        self.template_kwargs = dict(template_kwargs or {})
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.processor_kwargs = dict(processor_kwargs or {})
        if min_pixels is not None or max_pixels is not None:
            self.processor_kwargs = _merge_images_kwargs(
                self.processor_kwargs, pixel_budget_kwargs(processor_or_tokenizer, min_pixels, max_pixels))
        self.chat_template = self._resolve_template(chat_template)
        self.has_markers = bool(_GENERATION.search(self.chat_template))
        self.end_of_turn = "" if span_method == "markers" else self._learn_end_of_turn()
        self.span_method = self._choose_span_method(span_method)
        self._reset_counts()

    # -- set-up ---------------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", None) or self.processor

    @property
    def is_processor(self) -> bool:
        return getattr(self.processor, "image_processor", None) is not None

    @property
    def image_token(self) -> Optional[str]:
        return getattr(self.processor, "image_token", None)

    @property
    def _image_token_ids(self) -> frozenset[int]:
        """Ids never learned: the processor's image and video tokens (looked up once)."""
        ids = self.__dict__.get("_special_ids")
        if ids is None:
            found = (getattr(self.processor, name, None) for name in ("image_token_id", "video_token_id"))
            ids = self.__dict__["_special_ids"] = frozenset(v for v in found if isinstance(v, int))
        return ids

    @property
    def _mm_types(self) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """(type, token ids) pairs of the processor's ``mm_token_type_ids``; empty when it returns none."""
        types = self.__dict__.get("_mm_type_ids")
        if types is None:
            types = ()
            if self.is_processor and getattr(self.processor, "return_mm_token_type_ids", False):
                names = ((1, "image_token_ids"), (2, "video_token_ids"), (3, "audio_token_ids"))
                types = tuple((value, tuple(t for t in getattr(self.processor, name, None) or () if isinstance(t, int)))
                              for value, name in names)
            self.__dict__["_mm_type_ids"] = types
        return types

    def _reset_counts(self) -> None:
        self.encoded = 0
        self.truncated = 0
        self.dropped: Counter[str] = Counter()

    def _resolve_template(self, chat_template: Optional[str]) -> str:
        owner = self.processor
        try:
            if hasattr(owner, "_resolve_chat_template") and getattr(owner, "chat_template", None) is not None:
                return owner._resolve_chat_template(chat_template)
            tokenizer = self.tokenizer
            if chat_template is None and getattr(tokenizer, "chat_template", None) is None:
                raise ValueError("no chat template")
            return tokenizer.get_chat_template(chat_template)
        except ValueError as e:
            raise TemplateError(
                f"{type(owner).__name__} has no usable chat template ({e}); pass chat_template=... or use the "
                "model's processor, which carries its template"
            ) from None

    def _render(self, conversations: list[list[Mapping[str, Any]]], *, add_generation_prompt: bool = False,
                indices: bool = False) -> tuple[list[str], list[list[tuple[int, int]]]]:
        """Render with the processor's template exactly as its ``apply_chat_template`` does."""
        from transformers.utils.chat_template_utils import render_jinja_template

        kwargs = {**self.tokenizer.special_tokens_map, **self.template_kwargs}
        texts, generation = render_jinja_template(
            conversations=conversations,
            chat_template=self.chat_template,
            return_assistant_tokens_mask=indices,
            add_generation_prompt=add_generation_prompt,
            **kwargs,
        )
        return texts, generation

    def _learn_end_of_turn(self) -> str:
        """What the template writes right after every assistant reply and belongs to it (``<|im_end|>``).

        Found on a probe conversation: the common start of what follows a final and a non-final reply,
        without trailing whitespace. Empty when the template closes replies with nothing but spaces.
        """
        def text(t: str) -> list[dict[str, str]]:
            return [{"type": "text", "text": t}]

        user1, reply1 = {"role": "user", "content": text("Ping")}, {"role": "assistant", "content": text("Pong")}
        user2, reply2 = {"role": "user", "content": text("Again")}, {"role": "assistant", "content": text("Done")}
        user1, reply1, user2, reply2 = self._adapt([user1, reply1, user2, reply2])
        try:
            (head,), _ = self._render([[user1]], add_generation_prompt=True)
            (one, two), _ = self._render([[user1, reply1], [user1, reply1, user2, reply2]])
        except Exception as e:  # a template that refuses the probe: sentinel and prefix methods still work
            raise TemplateError(f"the chat template cannot render a plain user/assistant exchange: {e}") from None
        if not (one.startswith(head) and two.startswith(head)):
            return ""
        at = one.find("Pong", len(head))  # the template may write a space between the prompt and the reply
        if at < 0 or two.find("Pong", len(head)) != at or one[len(head):at].strip():
            return ""
        end = at + len("Pong")
        after_final = one[end:]
        next_user = two.find("Again", end)
        after_turn = two[end:next_user] if next_user >= 0 else two[end:]
        return os.path.commonprefix([after_final, after_turn]).rstrip()

    def _choose_span_method(self, wanted: str) -> str:
        if wanted == "markers" and not self.has_markers:
            raise TemplateError("span_method='markers' needs a chat template with {% generation %} blocks")
        if wanted != "auto":
            return wanted
        if self.has_markers:
            return "markers"
        probe = [
            {"role": "user", "content": [{"type": "text", "text": " Ping \n"}]},
            {"role": "assistant", "content": [{"type": "text", "text": " Pong\n "}]},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "\nDone "}]},
        ]
        probe = self._adapt(probe)
        try:
            by_prefixes = self._spans_by_prefixes(probe)
        except TemplateError:
            by_prefixes = None
        by_sentinels = self._spans_by_sentinels([probe])[0]
        if by_sentinels is not None and (by_prefixes is None or _same_spans(by_sentinels, by_prefixes)):
            return "sentinels"
        return "prefixes"

    # -- finding the assistant spans ------------------------------------------------------------------

    def _spans_by_prefixes(self, messages: list[Mapping[str, Any]]) -> _Rendered:
        """The reference method: render the prompt before each reply and the conversation up to its end."""
        (full,), _ = self._render([messages])
        spans = []
        for i in _assistant_indices(messages):
            (head,), _ = self._render([messages[:i]], add_generation_prompt=True)
            (upto,), _ = self._render([messages[: i + 1]])
            end = len(upto.rstrip())
            if not (upto.startswith(head) and full.startswith(upto[:end]) and end >= len(head)):
                raise TemplateError(
                    f"the chat template renders message {i} differently once more messages follow it, so its "
                    "reply cannot be located by rendering prefixes; add {% generation %} markers to the template"
                )
            spans.append((len(head), end))
        return _Rendered(full, spans)

    def _spans_by_sentinels(self, batch: list[list[Mapping[str, Any]]]) -> list[Optional[_Rendered]]:
        """Render each conversation once with its replies wrapped in sentinels (None where that fails)."""
        wrapped: list[Optional[list[Mapping[str, Any]]]] = []
        for messages in batch:
            replies = _assistant_indices(messages)
            texts = [_message_text(m) for m in messages]
            if any(OPEN in t or CLOSE in t for t in texts):
                wrapped.append(None)
                continue
            copy = list(messages)
            for i in replies:
                copy[i] = _wrap_reply(messages[i])
            wrapped.append(None if any(copy[i] is None for i in replies) else copy)
        todo = [w for w in wrapped if w is not None]
        rendered, _ = self._render(todo) if todo else ([], [])
        out: list[Optional[_Rendered]] = []
        it = iter(rendered)
        for messages, w in zip(batch, wrapped):
            out.append(None if w is None else self._parse_sentinels(next(it), len(_assistant_indices(messages))))
        return out

    def _parse_sentinels(self, text: str, replies: int) -> Optional[_Rendered]:
        pieces: list[str] = []
        spans: list[tuple[int, int]] = []
        pos = 0
        for k in range(replies):
            o = text.find(OPEN, pos)
            c = text.find(CLOSE, o + 1) if o >= 0 else -1
            if o < 0 or c < 0 or text.find(OPEN, o + 1, c) >= 0:
                return None
            pieces.append(text[pos:o])
            pieces.append(text[o + 1:c])
            spans.append((o - 2 * k, c - 1 - 2 * k))
            pos = c + 1
        rest = text[pos:]
        if OPEN in rest or CLOSE in rest:
            return None
        pieces.append(rest)
        clean = "".join(pieces)
        eot = self.end_of_turn
        if eot:
            for k, (s, e) in enumerate(spans):
                if not clean.startswith(eot, e):
                    return None
                spans[k] = (s, e + len(eot))
        return _Rendered(clean, spans)

    def _render_with_spans(self, batch: list[list[Mapping[str, Any]]]) -> list[_Rendered]:
        if self.span_method == "markers":
            texts, generation = self._render(batch, indices=True)
            return [_Rendered(t, [tuple(s) for s in g]) for t, g in zip(texts, generation)]
        if self.span_method == "sentinels":
            found = self._spans_by_sentinels(batch)
            return [r if r is not None else self._spans_by_prefixes(m) for r, m in zip(found, batch)]
        return [self._spans_by_prefixes(m) for m in batch]

    # -- tokenizing -----------------------------------------------------------------------------------

    def _add_special_tokens(self, text: str) -> bool:
        # As transformers does: a tokenizer's chat template adds no special tokens; a processor adds them
        # unless the rendered text already starts with the BOS token.
        if not self.is_processor:
            return False
        bos = getattr(self.tokenizer, "bos_token", None)
        return not (bos and text.startswith(bos))

    def count_image_tokens(self, images: Sequence[Any]) -> list[int]:
        """How many image tokens the processor expands each image into, from the image sizes alone.

        Counts are remembered per image size (asking the processor costs more than tokenizing a sample).
        """
        counter = getattr(self.processor, "_get_num_multimodal_tokens", None)
        if counter is None:
            raise TemplateError(f"{type(self.processor).__name__} cannot count image tokens without processing the "
                                "images; use process_images=True")
        sizes = [_image_size(im) for im in images]
        cache = self.__dict__.setdefault("_count_cache", {})
        missing = list(dict.fromkeys(size for size in sizes if size not in cache))
        if missing:
            counts = counter(image_sizes=missing, **_count_kwargs(self.processor, self.processor_kwargs))["num_image_tokens"]
            cache.update(zip(missing, (int(n) for n in counts)))
        return [cache[size] for size in sizes]

    def _expand(self, text: str, counts: Sequence[int]) -> tuple[str, list[tuple[int, int, int]]]:
        token = self.image_token
        pieces, replacements, pos = [], [], 0
        for n in counts:
            at = text.find(token, pos)
            if at < 0:
                raise TemplateError(f"the rendered text holds fewer {token!r} placeholders than images ({len(counts)})")
            pieces += [text[pos:at], token * n]
            replacements.append((at, at + len(token), len(token) * n))
            pos = at + len(token)
        pieces.append(text[pos:])
        return "".join(pieces), replacements

    def _labels(self, ids: Sequence[int], offsets: Any, spans: Sequence[tuple[int, int]]) -> list[int]:
        """Labels from token offsets: a token is learned when it overlaps a span (never an image token)."""
        import numpy as np

        ids_arr = np.asarray(ids, dtype=np.int64)
        if self.assistant_only_loss:
            off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
            mask = np.zeros(len(ids_arr), dtype=bool)
            for s, e in spans:
                mask |= (off[:, 0] < e) & (off[:, 1] > s)
        else:
            mask = np.ones(len(ids_arr), dtype=bool)
        for special in self._image_token_ids:
            mask &= ids_arr != special
        labels = np.where(mask, ids_arr, IGNORE_INDEX)
        return labels.tolist()

    def _labels_from_encoding(self, encoding: Any, spans: Sequence[tuple[int, int]],
                              ids: Optional[list[int]] = None) -> list[int]:
        """The same labels as ``_labels``, located through a ``tokenizers.Encoding`` span by span.

        Only the tokens at each span's edges are looked up (``char_to_token`` / ``token_to_chars``), instead of
        converting every token's offsets; a span whose edge is not covered by a token falls back to
        ``_labels``.
        """
        if ids is None:
            ids = encoding.ids
        if not self.assistant_only_loss:
            return self._labels(ids, (), ())
        n = len(ids)
        labels = [IGNORE_INDEX] * n
        special = self._image_token_ids
        for s, e in spans:
            if e <= s:
                continue
            a, b = encoding.char_to_token(s), encoding.char_to_token(e - 1)
            if a is None or b is None:
                return self._labels(ids, encoding.offsets, spans)
            while a > 0:  # a character split over several byte-level tokens: take all of them
                chars = encoding.token_to_chars(a - 1)
                if chars is None or chars[1] <= s:
                    break
                a -= 1
            while b + 1 < n:
                chars = encoding.token_to_chars(b + 1)
                if chars is None or chars[0] >= e or chars[1] <= chars[0]:
                    break
                b += 1
            learned = ids[a:b + 1]
            if special and not special.isdisjoint(learned):
                return self._labels(ids, encoding.offsets, spans)
            labels[a:b + 1] = learned
        return labels

    def _mm_token_type_ids(self, ids: list[int], image_counts: Sequence[int] = ()) -> Optional[list[int]]:
        """What the processor's ``create_mm_token_type_ids`` gives (1 image, 2 video, 3 audio).

        With the runs of image tokens known (``image_counts``, one run per inserted image) the list is built
        from the runs; otherwise, or when the ids hold other multimodal tokens, by comparing every id.
        """
        kinds = self._mm_types
        if not kinds:
            return None
        fast = self._mm_types_from_runs(ids, image_counts, kinds)
        if fast is not None:
            return fast
        import numpy as np

        arr = np.asarray(ids, dtype=np.int64)
        types = np.zeros(len(arr), dtype=np.int64)
        for value, token_ids in kinds:
            for token_id in token_ids:
                types[arr == token_id] = value
        return types.tolist()

    def _mm_types_from_runs(self, ids: list[int], image_counts: Sequence[int],
                            kinds: tuple[tuple[int, tuple[int, ...]], ...]) -> Optional[list[int]]:
        image_id = getattr(self.processor, "image_token_id", None)
        others = [t for value, token_ids in kinds for t in token_ids if t != image_id]
        if any(ids.count(t) for t in others) or ids.count(image_id) != sum(image_counts):
            return None
        types = [0] * len(ids)
        pos = 0
        for n in image_counts:
            at = ids.index(image_id, pos)
            if ids[at:at + n] != [image_id] * n:
                return None
            types[at:at + n] = [1] * n
            pos = at + n
        return types

    def _backend(self):
        """The tokenizer's ``tokenizers.Tokenizer`` when calling it directly gives what the wrapper would."""
        tokenizer = self.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(tokenizer, "split_special_tokens", False):
            return None
        return backend

    def _tokenize_processed(self, rendered: _Rendered, images: list[Any]) -> _Encoded:
        """One sample through the processor itself: pixels, expanded image tokens and offsets."""
        import numpy as np

        out = self.processor(
            text=[rendered.text],
            images=[_load_image(im) for im in images],
            return_offsets_mapping=True,
            return_text_replacement_offsets=True,
            add_special_tokens=self._add_special_tokens(rendered.text),
            **self.processor_kwargs,
        )
        ids = list(out["input_ids"][0])
        if "text_replacement_offsets" in out:
            replacements = [
                (r["span"][0], r["span"][1], r["new_span"][1] - r["new_span"][0])
                for r in out["text_replacement_offsets"][0]
            ]
        else:  # an older processor: the runs of image tokens tell how each placeholder grew
            replacements = _replacements_from_runs(rendered.text, ids, self.image_token, self.processor.image_token_id)
        labels = self._labels(ids, out["offset_mapping"][0], _shift(rendered.spans, replacements))
        extras: dict[str, Any] = {}
        for key, value in out.items():
            if key in _TEXT_ONLY_KEYS:
                continue
            if key in TOKEN_KEYS:
                extras[key] = list(value[0])
            else:
                extras[key] = np.asarray(value)
        return _Encoded(ids, labels, extras)

    def _prepare_texts(self, items: list[tuple[_Rendered, list[Any]]]) -> "_TextBatch":
        """Expand image placeholders by count and move the spans accordingly (no tokenizing yet)."""
        batch = _TextBatch()
        for rendered, images in items:
            if images:
                if self.image_token is None:
                    raise TemplateError(f"{type(self.processor).__name__} has no image token; encode image samples "
                                        "with the model's processor")
                counts = self.count_image_tokens(images)
                text, replacements = self._expand(rendered.text, counts)
            else:
                counts, text, replacements = [], rendered.text, []
            batch.image_counts.append(counts)
            batch.texts.append(text)
            batch.spans.append(_shift(rendered.spans, replacements))
            batch.flags.append(self._add_special_tokens(rendered.text))
        return batch

    def _run_tokenizer(self, batch: "_TextBatch") -> list[Any]:
        """Tokenize a prepared batch: ``tokenizers.Encoding`` objects, or (ids, offsets) from the wrapper.

        Runs without Python work of its own, so it can run in a thread while the next batch is rendered
        (``tokenizers`` releases the GIL while it encodes).
        """
        out: list[Any] = [None] * len(batch.texts)
        backend = self._backend()
        for flag in sorted(set(batch.flags)):
            idx = [i for i, f in enumerate(batch.flags) if f == flag]
            texts = [batch.texts[i] for i in idx]
            if backend is not None:
                encoded = backend.encode_batch(texts, add_special_tokens=flag)
            else:
                enc = self.tokenizer(texts, add_special_tokens=flag, return_offsets_mapping=True,
                                     return_attention_mask=False, return_token_type_ids=False)
                encoded = list(zip(enc["input_ids"], enc["offset_mapping"]))
            for i, e in zip(idx, encoded):
                out[i] = e
        return out

    def _finish_texts(self, batch: "_TextBatch", tokenized: list[Any]) -> list[_Encoded]:
        results = []
        for token_info, spans, counts in zip(tokenized, batch.spans, batch.image_counts):
            if isinstance(token_info, tuple):
                ids, offsets = token_info
                encoded = _Encoded(ids, self._labels(ids, offsets, spans), {})
            else:
                ids = token_info.ids
                encoded = _Encoded(ids, self._labels_from_encoding(token_info, spans, ids), {})
            types = self._mm_token_type_ids(encoded.input_ids, counts)
            if types is not None:
                encoded.extras["mm_token_type_ids"] = types
            results.append(encoded)
        return results

    def _encode_texts(self, samples: list[tuple[list[Mapping[str, Any]], list[Any]]]) -> list[_Encoded]:
        """Samples without pixel processing: render, expand, tokenize in batches, label.

        Large batches are cut in chunks and pipelined: the tokenizer works on one chunk in a thread while
        Python renders the next and labels the previous one.
        """
        chunk = self.PIPELINE_CHUNK
        if len(samples) <= chunk:
            rendered = self._render_with_spans([m for m, _ in samples])
            batch = self._prepare_texts(list(zip(rendered, (im for _, im in samples))))
            return self._finish_texts(batch, self._run_tokenizer(batch))
        from concurrent.futures import ThreadPoolExecutor

        results: list[_Encoded] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llava_zh-tokenize") as pool:
            previous = None
            for start in range(0, len(samples), chunk):
                part = samples[start:start + chunk]
                rendered = self._render_with_spans([m for m, _ in part])
                batch = self._prepare_texts(list(zip(rendered, (im for _, im in part))))
                future = pool.submit(self._run_tokenizer, batch)
                if previous is not None:
                    results.extend(self._finish_texts(previous[0], previous[1].result()))
                previous = (batch, future)
            results.extend(self._finish_texts(previous[0], previous[1].result()))
        return results

    # -- the pipeline ---------------------------------------------------------------------------------

    def _encode_many(self, samples: list[tuple[list[Mapping[str, Any]], list[Any]]]) -> list[_Encoded]:
        results: list[Optional[_Encoded]] = [None] * len(samples)
        pixels = [i for i, (_, images) in enumerate(samples) if images and self.process_images]
        if pixels and not self.is_processor:
            raise TemplateError(f"{type(self.processor).__name__} is not a processor; image samples need the "
                                "model's processor (or use process_images=False with a processor)")
        if pixels:
            rendered = self._render_with_spans([samples[i][0] for i in pixels])
            for i, r in zip(pixels, rendered):
                results[i] = self._tokenize_processed(r, samples[i][1])
        texts = [i for i in range(len(samples)) if results[i] is None]
        if texts:
            for i, encoded in zip(texts, self._encode_texts([samples[i] for i in texts])):
                results[i] = encoded
        return results  # type: ignore[return-value]

    def _fit(self, sample_id: Any, messages: list[Mapping[str, Any]], images: list[Any],
             encoded: _Encoded) -> Optional[_Encoded]:
        """Apply ``max_length`` and ``on_too_long`` to one encoded sample."""
        length = len(encoded.input_ids)
        if self.max_length is None or length <= self.max_length:
            return encoded
        who = f"sample {sample_id!r}" if sample_id is not None else "a sample"
        if self.on_too_long == "raise":
            raise SampleTooLongError(f"{who}: expected at most max_length={self.max_length} tokens, got {length}")
        if self.on_too_long == "truncate":
            replies = _assistant_indices(messages)
            for i in reversed(replies[:-1] if replies and replies[-1] == len(messages) - 1 else replies):
                kept = list(messages[: i + 1])
                kept_images = images[: sum(count_images(m["content"]) for m in kept)]
                shorter = self._encode_many([(kept, kept_images)])[0]
                if len(shorter.input_ids) <= self.max_length:
                    self.truncated += 1
                    return shorter
            self.dropped["no_whole_turn_fits"] += 1
            return None
        self.dropped["longer_than_max_length"] += 1
        return None

    def _adapt(self, messages: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Content as the template expects it: item lists for a processor; for a plain tokenizer (a text
        model's template reads ``message.content`` as a string) text-only content joined into one string."""
        if self.is_processor:
            return messages
        out = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, (list, tuple)) and all(
                    isinstance(i, Mapping) and i.get("type") == "text" for i in content):
                m = {**m, "content": "".join(i.get("text") or "" for i in content)}
            out.append(m)
        return out

    def _prepare(self, example: Mapping[str, Any]) -> tuple[Any, list[Mapping[str, Any]], list[Any]]:
        sample = maybe_to_messages(example)
        messages = list(sample["messages"])
        images = list(sample.get("images") or [])
        wanted = sum(count_images(m["content"]) for m in messages)
        if wanted != len(images):
            raise ValueError(f"sample {sample.get('id')!r}: expected one image per image item ({wanted}), "
                             f"got {len(images)} image(s)")
        return sample.get("id"), self._adapt(messages), images

    @property
    def output_keys(self) -> tuple[str, ...]:
        """The keys of every row, whatever the sample (None where a sample has no image), so that the
        columns of ``Dataset.map`` are the same in every batch."""
        return tuple(self._output_kinds())

    @property
    def features(self):
        """``datasets.Features`` of the rows, for ``Dataset.map(..., features=encoder.features)``.

        Needed when the first batch may hold no image at all (its image columns would be all None, which
        ``datasets`` cannot type); :meth:`map` passes it for you.
        """
        import datasets

        def nested(dtype: str, depth: int):
            feature = datasets.Value(dtype)
            for _ in range(depth):
                feature = datasets.List(feature)
            return feature

        return datasets.Features({key: nested(dtype, depth) for key, (dtype, depth) in self._output_kinds().items()})

    def map(self, dataset, **kwargs):
        """``dataset.map(self, batched=True)`` with the original columns removed and the row features set.

        Example:
            >>> tokens = ChatTemplateEncoder(processor, max_length=2048).map(ds, num_proc=4)   # doctest: +SKIP
        """
        kwargs.setdefault("batched", True)
        kwargs.setdefault("remove_columns", dataset.column_names)
        if getattr(dataset, "features", None) is not None or "features" in kwargs:
            kwargs.setdefault("features", self.features)
        return dataset.map(self, **kwargs)

    def _output_kinds(self) -> dict[str, tuple[str, int]]:
        """key -> (dtype, nesting depth) of every row value, image outputs learned once on a probe image."""
        kinds = self.__dict__.get("_output_keys")
        if kinds is None:
            kinds = {"input_ids": ("int32", 1), "attention_mask": ("int8", 1), "labels": ("int32", 1)}
            if self._mm_types:
                kinds["mm_token_type_ids"] = ("int8", 1)
            if self.process_images and self.is_processor and self.image_token:
                for key, kind in self._image_output_kinds().items():
                    kinds.setdefault(key, kind)
            self.__dict__["_output_keys"] = kinds
        return kinds

    def _image_output_kinds(self) -> dict[str, tuple[str, int]]:
        """What the processor returns for an image besides tokens, learned on a small probe image."""
        import numpy as np
        from PIL import Image

        try:
            out = self.processor(text=[self.image_token], images=[Image.new("RGB", (56, 56))], **self.processor_kwargs)
        except Exception:  # noqa: BLE001 - a processor that needs more context: rows keep their own keys
            return {}
        kinds = {}
        for key, value in out.items():
            if key in _TEXT_ONLY_KEYS or key in TOKEN_KEYS:
                continue
            arr = np.asarray(value)
            kinds[key] = (str(arr.dtype), arr.ndim)
        return kinds

    def _row(self, encoded: _Encoded) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(self.output_keys)
        row.update(input_ids=encoded.input_ids, attention_mask=[1] * len(encoded.input_ids), labels=encoded.labels)
        row.update(encoded.extras)
        return row

    def encode_batch(self, examples: Sequence[Mapping[str, Any]]) -> list[Optional[dict[str, Any]]]:
        """Encode several samples (LLaVA or messages form); None in place of a dropped one."""
        prepared = [self._prepare(e) for e in examples]
        encoded = self._encode_many([(m, im) for _, m, im in prepared])
        rows: list[Optional[dict[str, Any]]] = []
        for (sample_id, messages, images), enc in zip(prepared, encoded):
            fitted = self._fit(sample_id, messages, images, enc)
            if fitted is None:
                rows.append(None)
            else:
                self.encoded += 1
                rows.append(self._row(fitted))
        return rows

    def encode(self, example: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        """Encode one sample; None when it is dropped for its length."""
        return self.encode_batch([example])[0]

    @staticmethod
    def _is_batch(example: Mapping[str, Any]) -> bool:
        for key in ("messages", "conversations"):
            value = example.get(key)
            if isinstance(value, (list, tuple)) and value:
                return isinstance(value[0], (list, tuple))
        return False

    def __call__(self, example: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        """One sample -> one row (or None if dropped); a batch of columns -> columns of the kept rows."""
        if not self._is_batch(example):
            return self.encode(example)
        keys = list(example)
        n = len(example[keys[0]])
        rows = [r for r in self.encode_batch([{k: example[k][i] for k in keys} for i in range(n)]) if r is not None]
        columns: dict[str, list] = {}
        for key in dict.fromkeys(k for r in rows for k in r):
            columns[key] = [r.get(key) for r in rows]
        for key in self.output_keys:
            columns.setdefault(key, [])
        return columns

    def report(self) -> str:
        """One line: how many samples were encoded, truncated and dropped (by reason) in this process."""
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        return f"encoded {self.encoded}, truncated {self.truncated}, dropped: {dropped}"

    # -- pickling: counts are not part of the state, so datasets' fingerprint of the encoder stays stable

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("encoded", "truncated", "dropped", "_count_cache", "_special_ids", "_mm_type_ids", "_output_keys"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_counts()

    def __repr__(self) -> str:
        return (f"ChatTemplateEncoder({type(self.processor).__name__}, max_length={self.max_length}, "
                f"assistant_only_loss={self.assistant_only_loss}, on_too_long={self.on_too_long!r}, "
                f"span_method={self.span_method!r}, end_of_turn={self.end_of_turn!r})")
