"""Reading what a sample holds without decoding its image: texts, CJK share, image bytes and header.

Statistics, the preview and the filters all walk a dataset with the image column cast to
``Image(decode=False)``, so a row's image is ``{"bytes": ..., "path": ...}`` (or None) and nothing is
decoded unless asked. The helpers here turn such rows into the numbers those tools need.

Example:
    >>> questions_answers([{"from": "human", "value": "<image>\\n这是哪里?"}, {"from": "gpt", "value": "北京。"}])
    (['这是哪里?'], ['北京。'])
    >>> round(cjk_share("这是 a 猫"), 2)
    0.75
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from llava_zh.schema import GPT, HUMAN, IMAGE_PLACEHOLDER

#: Characters counted as CJK: Han ideographs (unified, extensions A to G, compatibility), CJK symbols and
#: punctuation (、。「」…), and full-width forms (，！？：and full-width letters and digits).
CJK_CLASS = (
    "\u3000-\u303f"  # CJK symbols and punctuation
    "\u3400-\u4dbf"  # extension A
    "\u4e00-\u9fff"  # unified ideographs
    "\uf900-\ufaff"  # compatibility ideographs
    "\uff00-\uffef"  # half-width and full-width forms
    "\U00020000-\U0003134f"  # extensions B to G
)
_CJK_RE = re.compile(f"[{CJK_CLASS}]")
_SPACE_RE = re.compile(r"\s+")
_PLACEHOLDER_RE = re.compile(r"\s*" + re.escape(IMAGE_PLACEHOLDER) + r"\s*")

IMAGE_COLUMN = "image"


def strip_placeholder(text: str) -> str:
    """The text without the ``<image>`` placeholder and the blank space around it."""
    if IMAGE_PLACEHOLDER not in text:
        return text
    return _PLACEHOLDER_RE.sub(" ", text).strip()


def questions_answers(conversations: Sequence[Mapping[str, str]]) -> tuple[list[str], list[str]]:
    """Human turns (placeholder removed) and assistant turns of one conversation; system turns are skipped."""
    questions: list[str] = []
    answers: list[str] = []
    for turn in conversations or ():
        role = turn.get("from")
        if role == HUMAN:
            questions.append(strip_placeholder(turn.get("value") or ""))
        elif role == GPT:
            answers.append(turn.get("value") or "")
    return questions, answers


def sample_text(conversations: Sequence[Mapping[str, str]]) -> str:
    """All the words of a conversation, one turn a line, without the image placeholder."""
    questions, answers = questions_answers(conversations)
    out: list[str] = []
    for i in range(max(len(questions), len(answers))):
        if i < len(questions):
            out.append(questions[i])
        if i < len(answers):
            out.append(answers[i])
    return "\n".join(out)


def count_cjk(text: str) -> int:
    """Number of CJK characters (see ``CJK_CLASS``) in ``text``."""
    return len(_CJK_RE.findall(text))


def count_visible(text: str) -> int:
    """Number of characters that are not white space."""
    return len(text) - sum(len(m) for m in _SPACE_RE.findall(text))


def cjk_share(text: str) -> Optional[float]:
    """Share of CJK characters among the non-space characters of ``text``; None for a text with none."""
    visible = count_visible(text)
    if visible == 0:
        return None
    return count_cjk(text) / visible


def conversation_cjk_share(conversations: Sequence[Mapping[str, str]]) -> Optional[float]:
    """CJK share of a whole conversation (questions and answers, placeholder removed)."""
    return cjk_share(sample_text(conversations))


# --------------------------------------------------------------------------------------------- images


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What an image file says about itself without being decoded."""

    width: int
    height: int
    format: Optional[str]
    mode: str


def image_bytes(value: Any) -> Optional[bytes]:
    """The original bytes of an undecoded image cell (``{"bytes", "path"}``), reading the path if needed.

    Returns None for a row without an image. A decoded ``PIL.Image`` is re-encoded only as a last resort
    (its original bytes are gone), in its own format when known, else PNG.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        data = value.get("bytes")
        if data is not None:
            return bytes(data)
        path = value.get("path")
        if path:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"image file {path!r} is missing (the row has a path and no bytes)")
            with open(path, "rb") as f:
                return f.read()
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        with open(value, "rb") as f:
            return f.read()
    fmt = getattr(value, "format", None) or "PNG"
    buf = io.BytesIO()
    value.save(buf, format=fmt)
    return buf.getvalue()


def image_header(value: Any) -> Optional[ImageHeader]:
    """Width, height, format and mode from the image's header only (PIL opens lazily, decodes nothing).

    Raises ``PIL.UnidentifiedImageError`` (an ``OSError``) when the bytes are not an image.
    """
    from PIL import Image as PILImage

    if value is None:
        return None
    if isinstance(value, PILImage.Image):
        return ImageHeader(value.width, value.height, value.format, value.mode)
    data = image_bytes(value)
    if data is None:
        return None
    with PILImage.open(io.BytesIO(data)) as im:
        return ImageHeader(im.width, im.height, im.format, im.mode)


# ------------------------------------------------------------------------------------------ iteration


def _is_iterable_dataset(dataset: Any) -> bool:
    import datasets

    return isinstance(dataset, datasets.IterableDataset)


def single_split(dataset: Any, what: str) -> Any:
    """The one split of a ``DatasetDict`` (or the dataset itself); several splits must be chosen from."""
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if len(dataset) == 1:
            return next(iter(dataset.values()))
        raise ValueError(
            f"{what} takes one split; got a dict with splits {sorted(dataset)}: pass one, e.g. ds['train']"
        )
    return dataset


def undecoded(dataset: Any) -> Any:
    """The dataset with its image column (if any) cast to ``Image(decode=False)``: no pixel is decoded.

    Casting is lazy for both ``Dataset`` (features only, no rewrite) and ``IterableDataset``.
    """
    import datasets

    features = dataset.features
    if features is None or IMAGE_COLUMN not in features:
        return dataset
    feature = features[IMAGE_COLUMN]
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(IMAGE_COLUMN, datasets.Image(decode=False))
    return dataset


def column_names(dataset: Any) -> list[str]:
    """Column names of a Dataset or IterableDataset (from the features when the stream knows them)."""
    names = getattr(dataset, "column_names", None)
    if names:
        return list(names)
    features = getattr(dataset, "features", None)
    return list(features) if features else []


def iter_rows(dataset: Any, columns: Optional[Sequence[str]] = None, batch_size: int = 1000) -> Iterator[dict]:
    """Rows of a Dataset / IterableDataset as plain dicts, images undecoded, reading only ``columns``.

    Reads in Arrow batches (much faster than row by row) and keeps one batch in memory at a time.
    """
    ds = undecoded(dataset)
    if columns is not None:
        have = set(column_names(ds))
        wanted = [c for c in columns if c in have]
        if wanted and set(wanted) != have:
            ds = ds.select_columns(wanted)
    for batch in ds.iter(batch_size=batch_size):
        keys = list(batch)
        if not keys:
            continue
        for values in zip(*(batch[k] for k in keys)):
            yield dict(zip(keys, values))


def dataset_length(dataset: Any) -> Optional[int]:
    """Number of rows when known without iterating (None for a stream)."""
    if _is_iterable_dataset(dataset):
        return None
    try:
        return len(dataset)
    except TypeError:
        return None


# ----------------------------------------------------------------------------------------- tokenizers

TokenCounter = Callable[[list[str]], list[int]]


def load_tokenizer(path: Union[str, os.PathLike]) -> Any:
    """A tokenizer from a ``tokenizer.json`` file (``tokenizers``) or a folder (``transformers.AutoTokenizer``)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - tokenizers comes with transformers
            raise ImportError('reading a tokenizer.json needs tokenizers: pip install "llava-zh[regen]"') from e
        return Tokenizer.from_file(path)
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise ImportError(f'loading the tokenizer {path!r} needs transformers: pip install "llava-zh[regen]"') from e
    return AutoTokenizer.from_pretrained(path)


def token_counter(tokenizer: Any) -> TokenCounter:
    """A function counting the tokens of each text in a list, special tokens left out.

    Accepts a ``tokenizers.Tokenizer``, a ``transformers`` tokenizer or processor (its ``.tokenizer``), or
    a path to either (see ``load_tokenizer``).
    """
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer)
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and not hasattr(tokenizer, "encode_batch") and callable(inner):
        tokenizer = inner  # a processor: count with its tokenizer
    if hasattr(tokenizer, "encode_batch") and not callable(getattr(tokenizer, "batch_decode", None)):
        # tokenizers.Tokenizer
        def count_fast(texts: list[str]) -> list[int]:
            if not texts:
                return []
            return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

        return count_fast
    if callable(tokenizer):

        def count_hf(texts: list[str]) -> list[int]:
            if not texts:
                return []
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            return [len(x) for x in ids]

        return count_hf
    raise TypeError(
        f"cannot count tokens with {type(tokenizer).__name__}: expected a tokenizers.Tokenizer, "
        "a transformers tokenizer, or a path to one"
    )
