"""A tokenized copy of a dataset that is made once: ``encode`` runs ``ChatTemplateEncoder`` through
``datasets.map`` under a fingerprint of the data, the processor and every option, so a second run with the
same inputs reads the cache instead of tokenizing, and any change (template, ``max_length``,
``max_pixels``...) gives a new cache entry. With ``out_dir`` the encoded set is also written as parquet
shards that trainers read back with :func:`load_encoded` (or plain ``datasets.load_dataset(out_dir)``).

Rows of the encoded set (one per kept sample, in the source's order):

* ``id``: the sample id; ``input_ids``, ``attention_mask``, ``labels`` (-100 outside the learned spans),
  ``mm_token_type_ids`` (processors that return it: Qwen2-VL family), ``length`` (= ``len(input_ids)``,
  for packing and length-grouped sampling without reading the ids);
* ``images``: the original image files (``datasets.Image``: bytes + path), not pixel arrays. Pixels are
  recomputed at training time by the image processor with the same budget (:class:`ImageReprocessor`, or
  :class:`llava_zh.packing.PackedCollator` given the processor): float32 pixel arrays are 10-100 times
  larger than the JPEG bytes (a 448x448 image is 4.8 MB of Qwen2-VL patches against ~50 kB of JPEG);
* ``image_grid_thw`` (Qwen2-VL family): the patch grid each image will have, computed from the image size
  with the image processor's own resize rule; the multimodal position ids need it, and it checks the pixels
  recomputed later. ``pixels=True`` stores the processor's ``pixel_values`` as well (small images only).

``OUT/encoding.json`` records the options (budget, max_length...), the processor's class and fingerprint,
the counts, and the fingerprint of the encoded set; ``OUT/README.md`` lets ``datasets`` load the folder.

Example:
    >>> processor = load_processor("Qwen/Qwen2.5-VL-7B-Instruct")                         # doctest: +SKIP
    >>> encoded, report = encode(llava_zh.load_dataset("sample"), processor, max_length=2048,
    ...                          max_pixels=448 * 448, out_dir="encoded/", return_report=True)  # doctest: +SKIP
    >>> print(report)                                                                      # doctest: +SKIP
    30 samples -> 30 rows, 21,930 tokens (12,004 learned), 30 images; encoded 30 in this process ...
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .convert.chat_template import (
    ChatTemplateEncoder,
    _count_kwargs,
    _image_size,
    _load_image,
    _qwen_like,
)

ENCODING_INFO = "encoding.json"
#: Columns of the encoded set besides the encoder's own (documented in the module docstring).
REFERENCE_COLUMNS = ("id", "images", "image_grid_thw", "length")
_SOURCE_FILES = ("convert/chat_template.py", "convert/messages.py", "encoding.py")


# --------------------------------------------------------------------------------------------------
# loading a processor


def load_processor(path: Union[str, os.PathLike], family: Optional[str] = None, **kwargs: Any):
    """A processor from a folder or Hub id: ``AutoProcessor`` first, then the image-only classes it misses.

    ``AutoProcessor.from_pretrained`` fails for a Qwen2-VL checkpoint when torchvision is missing (its video
    processor needs it) and returns a bare tokenizer for folders saved by an image-only processor. In both
    cases the folder's ``preprocessor_config.json`` tells which image processor it holds and the matching
    image-only processor is built (Qwen2-VL family: ``Qwen2VLImageOnlyProcessor``; CLIP: ``LlavaProcessor``).
    ``family`` (``"qwen2_5_vl"``, ``"qwen2_vl"``, ``"llava"``) is the fallback when the folder names nothing.

    Example:
        >>> processor = load_processor("tiny-qwen/")                   # doctest: +SKIP
        >>> type(processor).__name__                                   # doctest: +SKIP
        'Qwen2VLImageOnlyProcessor'
    """
    try:
        from . import tiny_models
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError('loading a processor needs transformers: pip install "llava-zh[regen]"') from None
    error: Optional[BaseException] = None
    processor = None
    try:
        processor = tiny_models.load_processor(path, family=family, **kwargs)
    except (ImportError, OSError, ValueError, TypeError, KeyError) as e:  # e.g. a video processor without torchvision
        error = e
    if processor is not None and getattr(processor, "image_processor", None) is not None:
        return processor
    folder = Path(path)
    image_config = folder / "preprocessor_config.json"
    kind = None
    if image_config.is_file():
        config = json.loads(image_config.read_text(encoding="utf-8"))
        name = str(config.get("image_processor_type") or "")
        if "Qwen2VL" in name or "merge_size" in config:
            kind = "qwen"
        elif "CLIP" in name or "crop_size" in config:
            kind = "llava"
    if kind is None and family is not None:
        kind = "llava" if tiny_models._tokenizer_family(family) == "llava" else "qwen"
    if kind == "qwen":
        return tiny_models.Qwen2VLImageOnlyProcessor.from_pretrained(str(folder), **kwargs)
    if kind == "llava":
        from transformers import LlavaProcessor

        return LlavaProcessor.from_pretrained(str(folder), **kwargs)
    if error is not None:
        raise error
    return processor  # a tokenizer: text-only encoding still works


# --------------------------------------------------------------------------------------------------
# fingerprints


def _code_version() -> str:
    """Hash of the encoding code, so that a change to it invalidates the cached encodings."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for name in _SOURCE_FILES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def encoder_fingerprint(encoder: ChatTemplateEncoder) -> str:
    """Hash of everything that decides the encoded rows: processor (tokenizer, template, image options), the
    encoder's options (max_length, budget, span method...) and the encoding code.

    The same as ``datasets`` computes for ``Dataset.map(encoder)`` (the encoder pickles without its counts)
    plus the code version.

    Example:
        >>> from llava_zh.tiny_models import build_processor
        >>> p = build_processor("qwen2_5_vl")
        >>> encoder_fingerprint(ChatTemplateEncoder(p)) == encoder_fingerprint(ChatTemplateEncoder(p, max_length=64))
        False
    """
    from datasets.fingerprint import Hasher

    return Hasher.hash([Hasher.hash(encoder), _code_version()])


# --------------------------------------------------------------------------------------------------
# image references


def _image_bytes(image: Any) -> dict[str, Any]:
    """``{"bytes", "path"}`` of an image as found in a row: original bytes kept, a path read, a PIL image saved."""
    if isinstance(image, Mapping):
        data, path = image.get("bytes"), image.get("path")
        if data is None:
            if not path:
                raise ValueError("an image with neither bytes nor path")
            data = Path(path).read_bytes()
        return {"bytes": data, "path": path}
    if isinstance(image, (str, os.PathLike)):
        return {"bytes": Path(image).read_bytes(), "path": os.fspath(image)}
    if hasattr(image, "save"):  # a PIL image: its file's bytes when it came from one, else PNG
        buffer = io.BytesIO()
        fmt = getattr(image, "format", None) or "PNG"
        filename = getattr(image, "filename", None)
        if filename and os.path.isfile(filename):
            return {"bytes": Path(filename).read_bytes(), "path": filename}
        image.save(buffer, format=fmt)
        return {"bytes": buffer.getvalue(), "path": None}
    raise TypeError(f"expected an image (PIL image, {{bytes, path}} dict or path), got {type(image).__name__}")


def _resize_rule(image_processor: Any):
    """The image processor module's own ``smart_resize`` (Qwen2-VL family), or None."""
    module = sys.modules.get(type(image_processor).__module__)
    return getattr(module, "smart_resize", None)


def image_grids(processor: Any, sizes: Sequence[tuple[int, int]], processor_kwargs: Optional[Mapping[str, Any]] = None,
                sample_id: Any = None) -> Optional[list[list[int]]]:
    """``image_grid_thw`` the processor will give images of these ``(height, width)`` sizes, without pixels.

    Computed with the image processor's own resize rule and budget, and checked against its token count.
    None for processors without a patch grid (LLaVA's fixed size).

    Example:
        >>> from llava_zh.tiny_models import build_processor
        >>> image_grids(build_processor("qwen2_5_vl"), [(448, 448), (3000, 4000)],
        ...             {"images_kwargs": {"size": {"shortest_edge": 3136, "longest_edge": 448 * 448}}})
        [[1, 32, 32], [1, 26, 36]]
    """
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None or not _qwen_like(image_processor):
        return None
    rule = _resize_rule(image_processor)
    if rule is None:
        return None
    kwargs = _count_kwargs(processor, dict(processor_kwargs or {}))
    images_kwargs = dict(kwargs.get("images_kwargs") or {})
    size = image_processor.size
    get = size.get if isinstance(size, Mapping) else (lambda key: getattr(size, key, None))
    low = images_kwargs.get("min_pixels", get("shortest_edge"))
    high = images_kwargs.get("max_pixels", get("longest_edge"))
    patch = images_kwargs.get("patch_size", image_processor.patch_size)
    merge = images_kwargs.get("merge_size", image_processor.merge_size)
    counts = processor._get_num_multimodal_tokens(image_sizes=list(sizes), **kwargs)["num_image_tokens"]
    grids = []
    for (height, width), count in zip(sizes, counts):
        h, w = rule(int(height), int(width), factor=patch * merge, min_pixels=low, max_pixels=high)
        grid = [1, h // patch, w // patch]
        if grid[1] * grid[2] != int(count) * merge * merge:
            who = f"sample {sample_id!r}: " if sample_id is not None else ""
            raise ValueError(f"{who}image of {width}x{height}: expected a grid of {int(count) * merge * merge} patches "
                             f"({count} tokens), got {grid} from {type(image_processor).__name__}'s resize rule")
        grids.append(grid)
    return grids


# --------------------------------------------------------------------------------------------------
# the map function


def _images_of(example: Mapping[str, Any]) -> list[Any]:
    """The images of a LLaVA (``image``) or messages (``images``) sample, in order."""
    if "images" in example:
        return list(example["images"] or [])
    image = example.get("image")
    return [] if image is None else [image]


class EncodeRows:
    """``Dataset.map(batched=True)`` function: encoder rows plus the sample id and image references.

    Dropped samples (too long) leave no row; ``encoder`` keeps the counts of this process.
    """

    def __init__(self, encoder: ChatTemplateEncoder, keep_pixels: bool = False) -> None:
        self.encoder = encoder
        self.keep_pixels = keep_pixels
        self.grids = image_grids(encoder.processor, [(56, 56)], encoder.processor_kwargs) is not None \
            if encoder.is_processor else False

    def features(self):
        import datasets

        features = dict(self.encoder.features)
        if not self.keep_pixels:
            features.pop("pixel_values", None)
            features.pop("image_grid_thw", None)
        out = {"id": datasets.Value("string")}
        out.update(features)
        out["length"] = datasets.Value("int32")
        out["images"] = datasets.List(datasets.Image())
        if self.grids and "image_grid_thw" not in out:
            out["image_grid_thw"] = datasets.List(datasets.List(datasets.Value("int64")))
        return datasets.Features(out)

    def __call__(self, batch: Mapping[str, list]) -> dict[str, list]:
        keys = list(batch)
        n = len(batch[keys[0]]) if keys else 0
        examples = [{k: batch[k][i] for k in keys} for i in range(n)]
        rows = self.encoder.encode_batch(examples)
        features = self.features()
        out: dict[str, list] = {key: [] for key in features}
        for example, row in zip(examples, rows):
            if row is None:
                continue
            images = _images_of(example)
            row = dict(row)
            if not self.keep_pixels:
                row.pop("pixel_values", None)
                row.pop("image_grid_thw", None)
            row["id"] = None if example.get("id") is None else str(example.get("id"))
            row["length"] = len(row["input_ids"])
            row["images"] = [_image_bytes(im) for im in images]
            if self.grids and row.get("image_grid_thw") is None:
                row["image_grid_thw"] = (image_grids(self.encoder.processor, [_image_size(im) for im in images],
                                                     self.encoder.processor_kwargs, row["id"]) if images else None)
            for key in out:
                out[key].append(row.get(key))
        return out


# --------------------------------------------------------------------------------------------------
# encode


@dataclasses.dataclass
class EncodeReport:
    """What :func:`encode` did: rows in and out, tokens, and whether the cache answered."""

    samples: int
    rows: int
    tokens: int
    learned_tokens: int
    images: int
    encoded: int  # samples tokenized in this process (0 when read from the cache; unknown with num_proc > 1)
    truncated: int
    dropped: dict[str, int]
    from_cache: bool
    fingerprint: str
    seconds: float
    files: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())) or "none"
        if self.from_cache:
            where = "read from the cache"
        elif self.encoded == 0 and self.rows:
            where = "encoded in worker processes"
        else:
            where = f"encoded {self.encoded} in this process"
        line = (f"{self.samples} samples -> {self.rows} rows, {self.tokens:,} tokens ({self.learned_tokens:,} learned), "
                f"{self.images} images; {where}, truncated {self.truncated}, dropped: {dropped}; {self.seconds:.2f} s")
        if self.files:
            line += f"; wrote {len(self.files)} parquet file(s)"
        return line

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _cache_files_for(dataset, fingerprint: str) -> list[str]:
    files = getattr(dataset, "cache_files", None) or []
    if not files:
        return []
    folder = os.path.dirname(files[0]["filename"])
    return sorted(glob.glob(os.path.join(folder, f"cache-{fingerprint}*.arrow")))


def _with_image_references(dataset):
    """The dataset with its image columns left undecoded (bytes + path), so encoding reads only headers."""
    import datasets

    features = dataset.features
    for name in ("image", "images"):
        feature = features.get(name) if features is not None else None
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, (datasets.List, datasets.Sequence)) and isinstance(feature.feature, datasets.Image) \
                and feature.feature.decode:
            dataset = dataset.cast_column(name, datasets.List(datasets.Image(decode=False)))
    return dataset


def _counts(encoded) -> tuple[int, int, int]:
    """(tokens, learned tokens, images) of an encoded set, computed with pyarrow."""
    import pyarrow.compute as pc

    table = encoded.with_format("arrow")
    tokens = learned = images = 0
    columns = [c for c in ("length", "labels", "images") if c in encoded.column_names]
    for batch in table.select_columns(columns).iter(batch_size=10_000) if columns else ():
        if "length" in columns:
            tokens += int(pc.sum(batch["length"]).as_py() or 0)
        if "labels" in columns:
            flat = pc.list_flatten(batch["labels"])
            learned += int(pc.sum(pc.not_equal(flat, -100)).as_py() or 0)
        if "images" in columns:
            images += int(pc.sum(pc.list_value_length(batch["images"])).as_py() or 0)
    return tokens, learned, images


def encode(
    dataset: Any,
    processor: Any,
    out_dir: Union[str, os.PathLike, None] = None,
    *,
    max_length: Optional[int] = None,
    min_pixels: Optional[int] = None,
    max_pixels: Optional[int] = None,
    on_too_long: str = "truncate",
    assistant_only_loss: bool = True,
    pixels: bool = False,
    chat_template: Optional[str] = None,
    template_kwargs: Optional[Mapping[str, Any]] = None,
    processor_kwargs: Optional[Mapping[str, Any]] = None,
    batch_size: int = 64,
    num_proc: Optional[int] = None,
    cache_dir: Union[str, os.PathLike, None] = None,
    max_shard_size: Union[int, str] = "500MB",
    overwrite: bool = False,
    return_report: bool = False,
):
    """Encode a dataset once (cached by fingerprint) and optionally write it as parquet shards.

    Args:
        dataset: a map-style ``Dataset`` of LLaVA or messages samples, or a source for
            ``llava_zh.load_dataset`` (folder, file, ``"sample"``...).
        processor: the model's processor (or a path / Hub id, loaded with :func:`load_processor`).
        out_dir: also write ``out_dir/data/train-*.parquet``, ``encoding.json`` and a ``README.md``.
        max_length, on_too_long, assistant_only_loss, chat_template, template_kwargs, processor_kwargs,
        min_pixels, max_pixels: as for :class:`~llava_zh.convert.chat_template.ChatTemplateEncoder`
            (``on_too_long`` defaults to ``"truncate"`` here: whole turns kept).
        pixels: also keep the processor's ``pixel_values`` (large); by default images are kept as their
            original bytes and pixels are recomputed at training time.
        cache_dir: where to cache the encoding of an in-memory dataset (one with cache files is cached
            beside them, as ``datasets.map`` does).
        return_report: return ``(encoded, EncodeReport)``.

    The cache key (``report.fingerprint``) covers the data's fingerprint, the processor (tokenizer, chat
    template, image processor settings), every option above and the encoding code: an unchanged second run
    reads the cache and tokenizes nothing (``report.from_cache``, ``report.encoded == 0``).

    Example:
        >>> encoded = encode(llava_zh.load_dataset("sample"), processor, max_pixels=448 * 448)   # doctest: +SKIP
        >>> encoded.column_names                                                                # doctest: +SKIP
        ['id', 'input_ids', 'attention_mask', 'labels', 'mm_token_type_ids', 'length', 'images', 'image_grid_thw']
    """
    import datasets
    from datasets.fingerprint import Hasher

    start = time.perf_counter()
    if isinstance(dataset, (str, os.PathLike)):
        from .loading import load_dataset

        dataset = load_dataset(os.fspath(dataset))
    if isinstance(dataset, datasets.IterableDataset):
        raise TypeError("encode() caches a map-style Dataset; for a streaming dataset map it directly: "
                        "ChatTemplateEncoder(processor, ...).map(streaming_dataset)")
    if isinstance(dataset, datasets.DatasetDict):
        raise TypeError(f"encode() takes one split, got a DatasetDict with {sorted(dataset)}: pass dataset['train']")
    if isinstance(processor, (str, os.PathLike)):
        processor = load_processor(processor)
    encoder = ChatTemplateEncoder(
        processor, max_length=max_length, assistant_only_loss=assistant_only_loss, on_too_long=on_too_long,
        process_images=pixels, chat_template=chat_template, template_kwargs=template_kwargs,
        processor_kwargs=processor_kwargs, min_pixels=min_pixels, max_pixels=max_pixels,
    )
    rows = EncodeRows(encoder, keep_pixels=pixels)
    source = _with_image_references(dataset)
    fingerprint = Hasher.hash(["llava_zh.encode", source._fingerprint, encoder_fingerprint(encoder), pixels])
    kwargs: dict[str, Any] = {}
    cached_before = _cache_files_for(source, fingerprint)
    if not source.cache_files and cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        kwargs["cache_file_name"] = os.path.join(os.fspath(cache_dir), f"cache-{fingerprint}.arrow")
        cached_before = sorted(glob.glob(os.path.join(os.fspath(cache_dir), f"cache-{fingerprint}*.arrow")))
    encoded = source.map(
        rows, batched=True, batch_size=batch_size, num_proc=num_proc, remove_columns=source.column_names,
        features=rows.features(), new_fingerprint=fingerprint, desc="Encoding", **kwargs,
    )
    tokens, learned, images = _counts(encoded)
    report = EncodeReport(
        samples=len(source), rows=len(encoded), tokens=tokens, learned_tokens=learned, images=images,
        encoded=encoder.encoded, truncated=encoder.truncated, dropped=dict(encoder.dropped),
        from_cache=bool(cached_before) or (num_proc in (None, 1) and encoder.encoded == 0
                                            and not encoder.dropped and len(source) > 0),
        fingerprint=fingerprint, seconds=0.0,
    )
    if out_dir is not None:
        report.files = write_encoded(encoded, out_dir, encoder=encoder, report=report, max_shard_size=max_shard_size,
                                     overwrite=overwrite)
    report.seconds = time.perf_counter() - start
    if out_dir is not None:  # the final timing in the info file too
        _write_info(Path(out_dir), encoder, report)
    return (encoded, report) if return_report else encoded


# --------------------------------------------------------------------------------------------------
# writing and reading the encoded set


def _info(encoder: ChatTemplateEncoder, report: Optional[EncodeReport]) -> dict[str, Any]:
    from . import __version__

    processor = encoder.processor
    image_processor = getattr(processor, "image_processor", None)
    return {
        "format": "llava_zh.encoded/1",
        "llava_zh_version": __version__,
        "processor_class": type(processor).__name__,
        "image_processor_class": type(image_processor).__name__ if image_processor is not None else None,
        "encoder_fingerprint": encoder_fingerprint(encoder),
        "options": {
            "max_length": encoder.max_length,
            "min_pixels": encoder.min_pixels,
            "max_pixels": encoder.max_pixels,
            "on_too_long": encoder.on_too_long,
            "assistant_only_loss": encoder.assistant_only_loss,
            "span_method": encoder.span_method,
            "processor_kwargs": encoder.processor_kwargs,
            "template_kwargs": encoder.template_kwargs,
        },
        "chat_template_sha256": hashlib.sha256(encoder.chat_template.encode("utf-8")).hexdigest(),
        "report": report.to_dict() if report is not None else None,
    }


def _write_info(out: Path, encoder: ChatTemplateEncoder, report: Optional[EncodeReport]) -> None:
    text = json.dumps(_info(encoder, report), ensure_ascii=False, indent=2, default=str)
    tmp = out / (ENCODING_INFO + ".partial")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, out / ENCODING_INFO)


_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# Encoded with llava-zh

Token ids, labels (-100 where nothing is learned) and image references (original bytes) made by
`llava_zh.encode` / `llava-zh encode`; options in `encoding.json`. Read it back with
`llava_zh.encoding.load_encoded(folder)` or `datasets.load_dataset(folder, split="train")`.
"""


def write_encoded(encoded, out_dir: Union[str, os.PathLike], *, encoder: Optional[ChatTemplateEncoder] = None,
                  report: Optional[EncodeReport] = None, max_shard_size: Union[int, str] = "500MB",
                  overwrite: bool = False) -> list[str]:
    """Write an encoded set as ``out_dir/data/train-XXXXX-of-YYYYY.parquet`` (each about ``max_shard_size``).

    Example:
        >>> write_encoded(encoded, "encoded/")          # doctest: +SKIP
        ['encoded/data/train-00000-of-00001.parquet']
    """
    from datasets.utils.py_utils import convert_file_size_to_int
    from tqdm.auto import tqdm

    out = Path(out_dir)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    existing = sorted(p for p in data.iterdir() if p.name.endswith((".parquet", ".partial")))
    if existing:
        if not overwrite:
            raise FileExistsError(f"{data} already holds {len(existing)} parquet file(s); pass overwrite=True "
                                  "(--overwrite) to replace them")
        for p in existing:
            p.unlink()
    limit = convert_file_size_to_int(max_shard_size)
    if limit <= 0:
        raise ValueError(f"max_shard_size must be positive, got {max_shard_size!r}")
    nbytes = sum(os.path.getsize(f["filename"]) for f in encoded.cache_files) if encoded.cache_files else \
        encoded.data.nbytes
    shards = max(1, math.ceil(nbytes / limit)) if len(encoded) else 1
    shards = min(shards, max(1, len(encoded)))
    files = []
    for i in tqdm(range(shards), desc="Writing parquet", disable=shards < 2):
        path = data / f"train-{i:05d}-of-{shards:05d}.parquet"
        partial = path.with_name(path.name + ".partial")
        encoded.shard(num_shards=shards, index=i, contiguous=True).to_parquet(str(partial))
        os.replace(partial, path)
        files.append(str(path))
    (out / "README.md").write_text(_README, encoding="utf-8")
    if encoder is not None:
        _write_info(out, encoder, report)
    return files


def read_encoding_info(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """The ``encoding.json`` of an encoded folder (options, processor class, counts)."""
    file = Path(path) / ENCODING_INFO
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {ENCODING_INFO}; expected a folder written by llava_zh.encode / llava-zh encode")
    return json.loads(file.read_text(encoding="utf-8"))


def load_encoded(path: Union[str, os.PathLike], *, return_info: bool = False):
    """Read an encoded folder back as a ``Dataset`` (with ``encoding.json`` when ``return_info``).

    Example:
        >>> encoded, info = load_encoded("encoded/", return_info=True)     # doctest: +SKIP
        >>> info["options"]["max_pixels"]                                  # doctest: +SKIP
        200704
    """
    import datasets

    info = read_encoding_info(path)
    files = sorted(glob.glob(os.path.join(os.fspath(path), "data", "train-*.parquet")))
    if not files:
        raise FileNotFoundError(f"{path}: no data/train-*.parquet files")
    encoded = datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    return (encoded, info) if return_info else encoded


# --------------------------------------------------------------------------------------------------
# pixels at training time


class ImageReprocessor:
    """Recompute ``pixel_values`` / ``image_grid_thw`` of encoded rows from their ``images`` (original bytes).

    Runs the processor's image processor with the pixel budget the set was encoded with, and checks that each
    image gets the grid (or the number of image tokens) the row was tokenized for: a mismatch (another processor,
    another budget) raises an error naming the sample instead of training on misaligned tokens.

    Example:
        >>> encoded, info = load_encoded("encoded/", return_info=True)              # doctest: +SKIP
        >>> pixels = ImageReprocessor.from_info(processor, info)                     # doctest: +SKIP
        >>> row = pixels(encoded[0])  # adds pixel_values and image_grid_thw         # doctest: +SKIP
    """

    def __init__(self, processor: Any, *, min_pixels: Optional[int] = None, max_pixels: Optional[int] = None,
                 processor_kwargs: Optional[Mapping[str, Any]] = None) -> None:
        from .convert.chat_template import _merge_images_kwargs, pixel_budget_kwargs

        self.processor = processor
        kwargs = dict(processor_kwargs or {})
        if min_pixels is not None or max_pixels is not None:
            kwargs = _merge_images_kwargs(kwargs, pixel_budget_kwargs(processor, min_pixels, max_pixels))
        self.images_kwargs = dict(kwargs.get("images_kwargs") or {})
        self.image_token_id = getattr(processor, "image_token_id", None)

    @classmethod
    def from_info(cls, processor: Any, info: Mapping[str, Any]) -> "ImageReprocessor":
        """With the options recorded in ``encoding.json`` (budget and processor kwargs)."""
        options = info.get("options") or {}
        return cls(processor, processor_kwargs=options.get("processor_kwargs"))

    def pixels(self, images: Sequence[Any]) -> dict[str, Any]:
        import numpy as np

        out = self.processor.image_processor(images=[_load_image(im) for im in images], **self.images_kwargs)
        return {key: np.asarray(value) for key, value in out.items()}

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        row = dict(row)
        images = list(row.get("images") or [])
        if not images:
            row["pixel_values"] = None
            if "image_grid_thw" in row:
                row["image_grid_thw"] = None
            return row
        computed = self.pixels(images)
        who = f"sample {row.get('id')!r}" if row.get("id") is not None else "a row"
        stored = row.get("image_grid_thw")
        if stored is not None and "image_grid_thw" in computed:
            if not np.array_equal(np.asarray(stored, dtype=np.int64), computed["image_grid_thw"].astype(np.int64)):
                raise ValueError(f"{who}: expected image grids {np.asarray(stored).tolist()} (as encoded), got "
                                 f"{computed['image_grid_thw'].tolist()}: encode and train with the same processor and budget")
        elif self.image_token_id is not None and "input_ids" in row:
            merge = getattr(self.processor.image_processor, "merge_size", None)
            if "image_grid_thw" in computed and merge:
                expected = int(computed["image_grid_thw"].prod(axis=-1).sum()) // (merge * merge)
                got = int(np.sum(np.asarray(row["input_ids"]) == self.image_token_id))
                if expected != got:
                    raise ValueError(f"{who}: expected {got} image tokens' worth of patches, got {expected}")
        row.update(computed)
        return row
