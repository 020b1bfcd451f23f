"""Tiny random-weight vision-language models and their processors, built offline.

Tests, examples and benchmarks need a *real* processor (tokenizer + image processor + chat template) and a
*real* model of the families the project targets, without downloading anything. Everything here is made
locally in well under a second:

- ``"qwen2_5_vl"`` (and ``"qwen2_vl"``): Qwen2-VL style. Byte-level BPE tokenizer with the Qwen special tokens,
  ChatML template (``<|im_start|>role\\n...<|im_end|>\\n``, images as
  ``<|vision_start|><|image_pad|><|vision_end|>``), dynamic resolution: an image of ``h x w`` pixels becomes
  ``(h/28) * (w/28)`` ``<|image_pad|>`` tokens once each side is rounded to a multiple of 28 within the pixel
  budget (patch 14, merge 2; 448x448 -> 256). :func:`num_image_tokens` asks the processor itself.
- ``"llava"``: LLaVA-1.5 style. Llama-like tokenizer (``<s>``, ``</s>``, ``<unk>``, ``<image>``, ``<pad>``; BOS
  added by the tokenizer, byte fallback), template ``USER: <image>\\n... ASSISTANT: ...</s>``, CLIP image
  processor at a fixed square size: ``(size/14)**2`` ``<image>`` tokens per image (112 -> 64).

Example:
    >>> from llava_zh.tiny_models import build_tiny_vlm, make_image
    >>> processor, model = build_tiny_vlm("qwen2_5_vl")
    >>> messages = [{"role": "user", "content": [{"type": "image", "image": make_image(448, 448)},
    ...                                          {"type": "text", "text": "这是哪里?"}]}]
    >>> batch = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
    ...                                       return_dict=True, return_tensors="pt")
    >>> int((batch["input_ids"] == processor.image_token_id).sum())
    256
    >>> out = model.generate(**batch, max_new_tokens=4)

``processor(text=..., images=...)`` works the same way for both families (the text holds one image token per
image: ``<|vision_start|><|image_pad|><|vision_end|>`` or ``<image>``, as the template renders them).
``build_processor(..., generation_markers=True)`` gives a template with ``{% generation %}`` markers, for
``apply_chat_template(..., return_assistant_tokens_mask=True)``. Saved folders (:func:`build_tiny_vlm` with a
folder) load back with ``AutoModelForImageTextToText.from_pretrained`` and :func:`load_processor`, a drop-in for
``AutoProcessor.from_pretrained``: the Qwen processor is an image-only subclass (no torchvision needed) that
plain ``AutoProcessor`` finds only in a process that imported this module (elsewhere it returns the tokenizer).

:func:`build_qwen2_tokenizer_from_ranks` rebuilds the *real* Qwen2 / Qwen2.5 tokenizer from the
``qwen.tiktoken`` ranks file (see :func:`find_qwen_tiktoken`), for benchmarks.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from pathlib import Path
from typing import Any

# Families served here. "qwen2_vl" shares the Qwen2.5-VL tokenizer, template and processor; only the model
# differs (Qwen2VLForConditionalGeneration).
FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen2_vl", "llava")

_FAMILY_ALIASES: dict[str, str] = {
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen2.5-vl": "qwen2_5_vl",
    "qwen2.5_vl": "qwen2_5_vl",
    "qwen": "qwen2_5_vl",
    "qwen2_vl": "qwen2_vl",
    "qwen2-vl": "qwen2_vl",
    "llava": "llava",
    "llava-1.5": "llava",
    "llava_1_5": "llava",
}

_INSTALL_HINT = 'pip install "llava-zh[regen]"'

# The Qwen2 pre-tokenizer pattern (contractions, letters with one leading non-letter, single digits,
# punctuation runs, newlines, spaces) - the same split that Qwen's tiktoken encoding uses.
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5-VL added tokens in id order (the real ids start at 151643); the first 14 are special (skipped when
# decoding with skip_special_tokens=True), the tool / fill-in-the-middle ones are not.
QWEN_ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
_QWEN_NUM_SPECIAL = 14
QWEN_FIRST_SPECIAL_ID = 151643

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."

# LLaVA-1.5 (Llama) layout: <unk> 0, <s> 1, </s> 2, then the 256 byte-fallback pieces; <image> and <pad> are
# appended after the learned vocabulary, as in llava-hf's checkpoints.
LLAVA_SPECIAL_TOKENS: tuple[str, ...] = ("<unk>", "<s>", "</s>")
LLAVA_IMAGE_TOKEN = "<image>"
LLAVA_PAD_TOKEN = "<pad>"

_CORPUS_FILE = Path(__file__).with_name("_tiny_corpus.txt")
_TINY_VOCAB_SIZE = 4000

DEFAULT_LLAVA_IMAGE_SIZE = 112
QWEN_PATCH_SIZE = 14
QWEN_MERGE_SIZE = 2
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 1280


def _canonical_family(family: str) -> str:
    key = str(family).strip().lower()
    if key not in _FAMILY_ALIASES:
        raise ValueError(f"unknown model family {family!r}: expected one of {', '.join(FAMILIES)}")
    return _FAMILY_ALIASES[key]


def _tokenizer_family(family: str) -> str:
    """Qwen2-VL and Qwen2.5-VL share tokenizer, template and processor."""
    family = _canonical_family(family)
    return "llava" if family == "llava" else "qwen2_5_vl"


def _require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"tiny models need transformers and torch: {_INSTALL_HINT}") from exc
    return transformers


def _has_torchvision() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


# --------------------------------------------------------------------------------------------------------------
# Corpus and tokenizers
# --------------------------------------------------------------------------------------------------------------


def corpus_lines() -> list[str]:
    """The built-in Chinese + English text the tiny tokenizers are trained on (deterministic, offline).

    Example:
        >>> lines = corpus_lines()
        >>> any("图片" in line for line in lines)
        True
    """
    text = _CORPUS_FILE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    # A few generated lines widen the numbers and mixed-script coverage without hand-writing them.
    for n in range(0, 200, 7):
        lines.append(f"第{n}张图片中有{n % 13}个物体，编号为{n:03d}。Image {n} has {n % 13} objects.")
    return lines


@functools.lru_cache(maxsize=None)
def _trained_tokenizer_json(family: str) -> str:
    """Train the family's backend tokenizer once per process; return it serialized (cheap to copy)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers

    lines = [line + "\n" for line in corpus_lines()]
    if family == "qwen2_5_vl":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=_TINY_VOCAB_SIZE,
            min_frequency=1,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(lines, trainer=trainer)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        tok.add_tokens(
            [
                AddedToken(t, special=i < _QWEN_NUM_SPECIAL, normalized=False)
                for i, t in enumerate(QWEN_ADDED_TOKENS)
            ]
        )
        return tok.to_str()

    # LLaVA-1.5 / Llama style: "▁" marks spaces, BPE over pieces, bytes as <0xNN> for unseen characters.
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        special_tokens=list(LLAVA_SPECIAL_TOKENS),
    )
    trainer_tok.train_from_iterator(lines, trainer=trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = {t: i for i, t in enumerate(LLAVA_SPECIAL_TOKENS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAVA_SPECIAL_TOKENS])
    tok.add_tokens(
        [
            AddedToken(LLAVA_IMAGE_TOKEN, special=True, normalized=False),
            AddedToken(LLAVA_PAD_TOKEN, special=True, normalized=False),
        ]
    )
    return tok.to_str()


def _qwen_tokenizer(backend, template: str, padding_side: str, *, model_max_length: int):
    """A Qwen-style fast tokenizer (``<|im_end|>`` ends a turn, ``<|endoftext|>`` pads, no BOS) over ``backend``."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        padding_side=padding_side,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        chat_template=template,
    )


def build_tokenizer(family: str = "qwen2_5_vl", *, padding_side: str = "left", generation_markers: bool = False):
    """A real ``tokenizers``-backed tokenizer for ``family``, trained offline on the built-in corpus.

    Qwen family: byte-level BPE (NFC, Qwen2 pre-tokenizer regex), eos ``<|im_end|>``, pad ``<|endoftext|>``,
    no BOS. LLaVA family: Llama-like BPE with byte fallback, BOS ``<s>`` added by the tokenizer, eos ``</s>``,
    pad ``<pad>``. Any text round-trips through encode/decode (Qwen: after NFC). The family's chat template
    is attached (with ``{% generation %}`` markers if asked). ``padding_side`` is set in the constructor so
    that it is saved.

    Example:
        >>> tok = build_tokenizer("qwen2_5_vl")
        >>> tok.decode(tok("图片里有一只猫。")["input_ids"])
        '图片里有一只猫。'
    """
    _require_transformers()
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    family = _tokenizer_family(family)
    backend = Tokenizer.from_str(_trained_tokenizer_json(family))
    template = chat_template(family, generation_markers=generation_markers)
    if family == "qwen2_5_vl":
        return _qwen_tokenizer(backend, template, padding_side, model_max_length=32768)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token=LLAVA_PAD_TOKEN,
        add_bos_token=True,
        add_eos_token=False,
        padding_side=padding_side,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
        chat_template=template,
    )


# --------------------------------------------------------------------------------------------------------------
# Chat templates (written for this project in each family's format)
# --------------------------------------------------------------------------------------------------------------

_GEN_OPEN = "[[GEN]]"
_GEN_CLOSE = "[[/GEN]]"

_QWEN_TEMPLATE = r"""{%- macro render_content(content) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}{%- for item in content -%}
{%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif item.type == 'video' or 'video' in item -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif 'text' in item -%}{{- item.text -}}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- if messages[0].role != 'system' -%}{{- '<|im_start|>system\nDEFAULT_SYSTEM<|im_end|>\n' -}}{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}[[GEN]]{{- render_content(message.content) + '<|im_end|>' -}}[[/GEN]]{{- '\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\n' + render_content(message.content) + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"""

_LLAVA_TEMPLATE = r"""{%- macro render_content(content) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}{%- for item in content -%}
{%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}{{- '<image>\n' -}}
{%- elif 'text' in item -%}{{- item.text -}}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}{{- render_content(message.content) + ' ' -}}
{%- elif message.role == 'assistant' -%}{{- 'ASSISTANT: ' -}}[[GEN]]{{- render_content(message.content) + '</s>' -}}[[/GEN]]
{%- else -%}{{- 'USER: ' + render_content(message.content) + ' ' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"""


def chat_template(family: str = "qwen2_5_vl", *, generation_markers: bool = False) -> str:
    """The Jinja chat template of ``family``, optionally with ``{% generation %}`` markers.

    Qwen: ``<|im_start|>role\\n...<|im_end|>\\n`` per message, a default system prompt when the conversation
    has none, images as ``<|vision_start|><|image_pad|><|vision_end|>``, ``<|im_start|>assistant\\n`` as the
    generation prompt. LLaVA-1.5: ``[system ]USER: <image>\\n... ASSISTANT: ...</s>USER: ...``, generation
    prompt ``ASSISTANT:``. With markers, each assistant reply *and* its end-of-turn token are inside
    ``{% generation %}`` (so ``assistant_masks`` cover what ``labels`` must).

    Example:
        >>> "{% generation %}" in chat_template("qwen2_5_vl", generation_markers=True)
        True
    """
    family = _tokenizer_family(family)
    if family == "qwen2_5_vl":
        template = _QWEN_TEMPLATE.replace("DEFAULT_SYSTEM", QWEN_DEFAULT_SYSTEM)
    else:
        template = _LLAVA_TEMPLATE
    opening, closing = ("{% generation %}", "{% endgeneration %}") if generation_markers else ("", "")
    return template.replace(_GEN_OPEN, opening).replace(_GEN_CLOSE, closing)


# --------------------------------------------------------------------------------------------------------------
# Processors
# --------------------------------------------------------------------------------------------------------------


try:  # transformers is this module's one real dependency; the error names the extra when it is missing
    from transformers import AutoProcessor as _AutoProcessor
    from transformers import PreTrainedConfig as _PreTrainedConfig
    from transformers import Qwen2_5_VLProcessor as _Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin as _ProcessorMixin
except ImportError:  # pragma: no cover - depends on the environment
    _Qwen2_5_VLProcessor = None

if _Qwen2_5_VLProcessor is not None:

    class Qwen2VLImageOnlyProcessor(_Qwen2_5_VLProcessor):
        """Qwen2-VL / Qwen2.5-VL processor for images only (no video processor).

        ``Qwen2_5_VLProcessor`` requires a video processor, and the Qwen video processors require torchvision;
        images need only the image processor (its PIL variant works without torchvision). The outputs for
        images are the same: ``input_ids`` with one ``<|image_pad|>`` per merged patch, ``pixel_values``,
        ``image_grid_thw``, ``mm_token_type_ids``.
        """

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
                self.image_token
            )
            self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
                self.video_token
            )
            _ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    class _ImageOnlyProcessorKey(_PreTrainedConfig):
        """Private key under which AutoProcessor learns the class name (no real model type is touched)."""

        model_type = "llava_zh_image_only"

    # AutoProcessor resolves a saved "processor_class" by name among registered processors.
    _AutoProcessor.register(_ImageOnlyProcessorKey, Qwen2VLImageOnlyProcessor, exist_ok=True)


def _image_only_processor_class():
    if _Qwen2_5_VLProcessor is None:  # pragma: no cover - depends on the environment
        _require_transformers()
    return Qwen2VLImageOnlyProcessor


def build_image_processor(
    family: str = "qwen2_5_vl",
    *,
    image_size: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """The family's image processor (the torchvision one when installed, else the PIL one - same outputs).

    Qwen: dynamic resolution within ``[min_pixels, max_pixels]`` (defaults 56*56 and 28*28*1280);
    ``image_size`` caps the budget at ``image_size**2`` pixels. LLaVA: CLIP resize + center crop to
    ``image_size`` (default 112).

    Example:
        >>> build_image_processor("llava", image_size=56).crop_size["height"]
        56
    """
    _require_transformers()
    family = _tokenizer_family(family)
    tv = _has_torchvision()
    if family == "qwen2_5_vl":
        if tv:
            from transformers import Qwen2VLImageProcessor as cls
        else:
            from transformers import Qwen2VLImageProcessorPil as cls
        if max_pixels is None:
            max_pixels = image_size * image_size if image_size is not None else QWEN_MAX_PIXELS
        if min_pixels is None:
            min_pixels = min(QWEN_MIN_PIXELS, max_pixels)
        if min_pixels > max_pixels:
            raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
        return cls(
            size={"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)},
            patch_size=QWEN_PATCH_SIZE,
            merge_size=QWEN_MERGE_SIZE,
            temporal_patch_size=2,
        )
    if min_pixels is not None or max_pixels is not None:
        raise ValueError("min_pixels/max_pixels apply to the Qwen family; use image_size for LLaVA")
    size = DEFAULT_LLAVA_IMAGE_SIZE if image_size is None else int(image_size)
    if size % QWEN_PATCH_SIZE:
        raise ValueError(f"LLaVA image_size must be a multiple of the patch size 14, got {size}")
    if tv:
        from transformers import CLIPImageProcessor as cls
    else:
        from transformers import CLIPImageProcessorPil as cls
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def build_processor(
    family: str = "qwen2_5_vl",
    *,
    image_size: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    generation_markers: bool = False,
    padding_side: str = "left",
):
    """A real transformers processor of ``family``: tokenizer + image processor + chat template.

    Qwen: :class:`Qwen2VLImageOnlyProcessor` (a ``Qwen2_5_VLProcessor`` without video, works with and without
    torchvision). LLaVA: ``LlavaProcessor`` (patch 14, strategy "default": ``(image_size/14)**2`` tokens).
    Both work with ``processor.apply_chat_template(messages, tokenize=True, return_dict=True)`` (images as
    ``{"type": "image", "image": PIL.Image}`` items or ``processor_kwargs={"images": [...]}``) and with
    ``processor(text=rendered, images=[...])``.

    Example:
        >>> processor = build_processor("llava", image_size=56)
        >>> num_image_tokens(processor, 300, 200)
        16
    """
    family = _tokenizer_family(family)
    tokenizer = build_tokenizer(family, padding_side=padding_side, generation_markers=generation_markers)
    image_processor = build_image_processor(
        family, image_size=image_size, min_pixels=min_pixels, max_pixels=max_pixels
    )
    template = chat_template(family, generation_markers=generation_markers)
    if family == "qwen2_5_vl":
        cls = _image_only_processor_class()
        return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=QWEN_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=LLAVA_IMAGE_TOKEN,
        chat_template=template,
    )


def load_processor(path: str | os.PathLike, family: str | None = None, **kwargs: Any):
    """Load a saved processor; a drop-in for ``AutoProcessor.from_pretrained`` that also finds the image-only Qwen one.

    For a local folder, the class named in its ``processor_config.json`` is used (``family`` is the fallback
    when the folder names none). ``AutoProcessor.from_pretrained`` alone returns only the tokenizer for an
    image-only Qwen folder in a process that has not imported this module. Anything else (a Hub id, a folder
    of another class) goes to ``AutoProcessor.from_pretrained(path, **kwargs)``.

    Example:
        >>> processor = build_processor("qwen2_5_vl")
        >>> _ = processor.save_pretrained(tmp)          # doctest: +SKIP
        >>> type(load_processor(tmp)).__name__           # doctest: +SKIP
        'Qwen2VLImageOnlyProcessor'
    """
    _require_transformers()
    from transformers import AutoProcessor

    folder = Path(path)
    processor_class = None
    if folder.is_dir():
        config_file = folder / "processor_config.json"
        if config_file.is_file():
            processor_class = json.loads(config_file.read_text(encoding="utf-8")).get("processor_class")
        if processor_class is None and family is not None:
            processor_class = (
                "LlavaProcessor" if _tokenizer_family(family) == "llava" else "Qwen2VLImageOnlyProcessor"
            )
    image_only = _image_only_processor_class()
    if processor_class == image_only.__name__:
        return image_only.from_pretrained(str(folder), **kwargs)
    if processor_class == "LlavaProcessor":
        from transformers import LlavaProcessor

        return LlavaProcessor.from_pretrained(str(folder), **kwargs)
    return AutoProcessor.from_pretrained(str(path), **kwargs)


def num_image_tokens(processor, height: int, width: int) -> int:
    """How many image tokens ``processor`` expands one ``height x width`` image into.

    Example:
        >>> num_image_tokens(build_processor("qwen2_5_vl"), 448, 448)
        256
    """
    data = processor._get_num_multimodal_tokens(image_sizes=[(int(height), int(width))])
    return int(data["num_image_tokens"][0])


def make_image(width: int = 448, height: int = 448, seed: int = 0):
    """A deterministic RGB test image (smooth gradient plus seeded noise) of ``width x height`` pixels.

    Example:
        >>> make_image(64, 32).size
        (64, 32)
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    xs = np.arange(width, dtype=np.uint32)[None, :]
    ys = np.arange(height, dtype=np.uint32)[:, None]
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = (xs * 255 // max(width - 1, 1)).astype(np.uint8)
    image[..., 1] = (ys * 255 // max(height - 1, 1)).astype(np.uint8)
    image[..., 2] = ((xs + ys) * 127 // max(width + height, 1)).astype(np.uint8)
    image += rng.integers(0, 48, size=(height, width, 3), dtype=np.uint8)  # wraps around modulo 256
    return Image.fromarray(image, mode="RGB")


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


def _round_up(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


def tiny_config(family: str, processor, *, num_layers: int = 2, hidden_size: int = 64):
    """The tiny model configuration of ``family`` matched to ``processor`` (token ids, vocab, patch size).

    The Qwen pitfalls are handled here: ``mrope_section`` sums to head_dim/2, the vision ``out_hidden_size``
    equals the text hidden size, the vocabulary covers the tokenizer, the patch/merge sizes are the image
    processor's.

    Example:
        >>> tiny_config("llava", build_processor("llava")).image_seq_length
        64
    """
    _require_transformers()
    family = _canonical_family(family)
    qwen_like = hasattr(getattr(processor, "image_processor", None), "merge_size")
    if qwen_like == (family == "llava"):
        raise ValueError(
            f"a {type(processor).__name__} does not fit the {family!r} family: build it with "
            f"build_processor({_tokenizer_family(family)!r})"
        )
    tokenizer = processor.tokenizer
    vocab_size = _round_up(len(tokenizer))
    num_heads = 4
    if hidden_size % (num_heads * 4):
        raise ValueError(f"hidden_size must be a multiple of {num_heads * 4}, got {hidden_size}")
    head_dim = hidden_size // num_heads
    text = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    )
    if family in ("qwen2_5_vl", "qwen2_vl"):
        ip = processor.image_processor
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_ADDED_TOKENS}
        half = head_dim // 2
        mrope = [half - 2 * (half // 3), half // 3, half // 3]  # sums to head_dim / 2 (16 -> [2, 3, 3])
        text.update(
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            use_sliding_window=False,
        )
        common = dict(
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=False,
        )
        if family == "qwen2_5_vl":
            from transformers import Qwen2_5_VLConfig

            vision = dict(
                depth=num_layers,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                in_channels=3,
                patch_size=ip.patch_size,
                spatial_merge_size=ip.merge_size,
                temporal_patch_size=ip.temporal_patch_size,
                window_size=ip.patch_size * ip.merge_size * 4,
                out_hidden_size=hidden_size,
                fullatt_block_indexes=[num_layers - 1],
            )
            return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
        from transformers import Qwen2VLConfig

        vision = dict(
            depth=num_layers,
            embed_dim=32,
            hidden_size=hidden_size,
            mlp_ratio=2,
            num_heads=2,
            in_channels=3,
            patch_size=ip.patch_size,
            spatial_merge_size=ip.merge_size,
            temporal_patch_size=ip.temporal_patch_size,
        )
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)

    from transformers import LlavaConfig

    size = processor.image_processor.crop_size["height"]
    patch = processor.patch_size
    text.update(
        model_type="llama",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        image_size=size,
        patch_size=patch,
        projection_dim=32,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN),
        image_seq_length=(size // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )


def build_model(
    family: str,
    processor,
    *,
    seed: int = 0,
    num_layers: int = 2,
    hidden_size: int = 64,
    dtype: Any = None,
    attn_implementation: str | None = None,
):
    """A tiny random-weight ``AutoModelForImageTextToText`` of ``family`` that fits ``processor``; eval mode.

    Weights are deterministic for a given ``seed``. ``dtype`` (e.g. ``torch.bfloat16``) and
    ``attn_implementation`` (``"eager"``, ``"sdpa"``, ...) go to ``from_config``. The generation config stops
    at the family's end-of-turn token(s), pads with the tokenizer's pad token and decodes greedily unless told
    otherwise.

    Example:
        >>> processor = build_processor("qwen2_5_vl")
        >>> model = build_model("qwen2_5_vl", processor)
        >>> type(model).__name__
        'Qwen2_5_VLForConditionalGeneration'
    """
    _require_transformers()
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    family = _canonical_family(family)
    config = tiny_config(family, processor, num_layers=num_layers, hidden_size=hidden_size)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        options: dict[str, Any] = {}
        if dtype is not None:
            options["dtype"] = dtype
        if attn_implementation is not None:
            options["attn_implementation"] = attn_implementation
        model = AutoModelForImageTextToText.from_config(config, **options)
    finally:
        torch.random.set_rng_state(state)
    tokenizer = processor.tokenizer
    if family == "llava":
        eos = [tokenizer.eos_token_id]
        bos = tokenizer.bos_token_id
    else:
        eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
        bos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.eval()
    return model


def build_tiny_vlm(
    family: str = "qwen2_5_vl",
    tmp_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    num_layers: int = 2,
    hidden_size: int = 64,
    dtype: Any = None,
    attn_implementation: str | None = None,
    **processor_options: Any,
):
    """Build ``(processor, model)`` of ``family``; with ``tmp_dir``, also save both there.

    The saved folder loads back with ``AutoModelForImageTextToText.from_pretrained(tmp_dir)`` and
    :func:`load_processor` (or ``AutoProcessor.from_pretrained`` in a process that imported this module).
    ``processor_options`` go to :func:`build_processor` (``image_size``, ``min_pixels``, ``max_pixels``,
    ``generation_markers``, ``padding_side``); the other options to :func:`build_model`.

    Example:
        >>> processor, model = build_tiny_vlm("llava")
        >>> model.config.image_seq_length
        64
    """
    processor = build_processor(family, **processor_options)
    model = build_model(
        family,
        processor,
        seed=seed,
        num_layers=num_layers,
        hidden_size=hidden_size,
        dtype=dtype,
        attn_implementation=attn_implementation,
    )
    if tmp_dir is not None:
        save_tiny_vlm(processor, model, tmp_dir)
    return processor, model


def save_tiny_vlm(processor, model, folder: str | os.PathLike) -> Path:
    """Save a processor and model into one folder that ``from_pretrained`` reads back; returns the folder.

    Example:
        >>> save_tiny_vlm(*build_tiny_vlm("llava"), tmp)        # doctest: +SKIP
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


# --------------------------------------------------------------------------------------------------------------
# The real Qwen2 tokenizer from its BPE ranks (benchmarks)
# --------------------------------------------------------------------------------------------------------------

QWEN_TIKTOKEN_ENV = "LLAVA_ZH_QWEN_TIKTOKEN"


def find_qwen_tiktoken() -> Path | None:
    """Locate a local ``qwen.tiktoken`` ranks file: ``$LLAVA_ZH_QWEN_TIKTOKEN``, then an installed ``dashscope``.

    Nothing is downloaded; ``None`` when there is none. (``pip download --no-deps dashscope==2.0.2`` gives a
    wheel holding ``dashscope/resources/qwen.tiktoken``.)

    Example:
        >>> path = find_qwen_tiktoken()     # a Path, or None when no ranks file is available
    """
    env = os.environ.get(QWEN_TIKTOKEN_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_file():
            return p
    try:
        import importlib.util

        spec = importlib.util.find_spec("dashscope")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            p = Path(root) / "resources" / "qwen.tiktoken"
            if p.is_file():
                return p
    return None


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 convention, used by Qwen)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1))
        + list(range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected '<base64 token> <rank>', got {line[:80]!r}")
            ranks[base64.b64decode(parts[0])] = int(parts[1])
    return ranks


def _split_by_ranks(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Replay BPE on ``token`` using only merges ranked below ``max_rank``; the two last parts are its merge."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_i, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_i, best_rank = i, r
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


@functools.lru_cache(maxsize=4)
def _qwen2_tokenizer_json(path: str, mtime: float) -> str:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ranks = _read_ranks(Path(path))
    byte_char = _bytes_to_unicode()

    def as_str(b: bytes) -> str:
        return "".join(byte_char[x] for x in b)

    vocab = {as_str(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) < 2:
            continue
        parts = _split_by_ranks(ranks, tok, rank)
        if len(parts) != 2:
            raise ValueError(f"{path}: token of rank {rank} ({tok!r}) is not reachable by one merge of lower ranks")
        merges.append((as_str(parts[0]), as_str(parts[1])))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    if backend.get_vocab_size() != QWEN_FIRST_SPECIAL_ID:
        raise ValueError(
            f"{path}: expected {QWEN_FIRST_SPECIAL_ID} ranks (Qwen2's vocabulary), got {backend.get_vocab_size()}"
        )
    backend.add_tokens(
        [AddedToken(t, special=i < _QWEN_NUM_SPECIAL, normalized=False) for i, t in enumerate(QWEN_ADDED_TOKENS)]
    )
    return backend.to_str()


def build_qwen2_tokenizer_from_ranks(
    path: str | os.PathLike | None = None, *, padding_side: str = "left", generation_markers: bool = False
):
    """The real Qwen2 / Qwen2.5(-VL) tokenizer rebuilt offline from the ``qwen.tiktoken`` BPE ranks.

    Byte-level BPE whose merges are replayed from the ranks (one merge per multi-byte token), NFC, the Qwen2
    pre-tokenizer regex then ByteLevel without its own regex, and the Qwen2.5-VL added tokens from id 151643
    (``<|im_start|>`` 151644, ``<|image_pad|>`` 151655...). The Qwen chat template of this module is attached.
    Takes a few seconds the first time in a process (cached afterwards). ``path`` defaults to
    :func:`find_qwen_tiktoken`.

    Example:
        >>> tok = build_qwen2_tokenizer_from_ranks()                  # doctest: +SKIP
        >>> tok.convert_tokens_to_ids("<|im_start|>")                  # doctest: +SKIP
        151644
    """
    _require_transformers()
    from tokenizers import Tokenizer

    if path is None:
        path = find_qwen_tiktoken()
        if path is None:
            raise FileNotFoundError(
                f"no qwen.tiktoken ranks file found: set ${QWEN_TIKTOKEN_ENV} to its path or install the "
                "'dashscope' package (its wheel ships dashscope/resources/qwen.tiktoken)"
            )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"qwen.tiktoken ranks file not found: {path}")
    backend = Tokenizer.from_str(_qwen2_tokenizer_json(str(path.resolve()), path.stat().st_mtime))
    template = chat_template("qwen2_5_vl", generation_markers=generation_markers)
    return _qwen_tokenizer(backend, template, padding_side, model_max_length=131072)


__all__ = [
    "FAMILIES",
    "QWEN2_PRETOKENIZE_REGEX",
    "QWEN_ADDED_TOKENS",
    "QWEN_DEFAULT_SYSTEM",
    "Qwen2VLImageOnlyProcessor",
    "build_image_processor",
    "build_model",
    "build_processor",
    "build_qwen2_tokenizer_from_ranks",
    "build_tiny_vlm",
    "build_tokenizer",
    "chat_template",
    "corpus_lines",
    "find_qwen_tiktoken",
    "load_processor",
    "make_image",
    "num_image_tokens",
    "save_tiny_vlm",
    "tiny_config",
]
