"""Write a dataset in the files a trainer reads: LLaVA, ShareGPT, LLaMA-Factory, ms-swift, TRL, InternVL.

Images are written once each (identical bytes are shared between samples) under ``images/``, named after
the id of the first sample that uses them, as their original bytes: the image column is read with
``decode=False``, so nothing is re-encoded. The record shapes live in ``llava_zh.convert.formats``.
Every export reads back into the same samples through ``llava_zh.load_dataset(out_dir)``.

Example:
    >>> ds = llava_zh.load_dataset("sample")                                    # doctest: +SKIP
    >>> llava_zh.export(ds, "llamafactory", "out/")                             # doctest: +SKIP
    ExportResult(format='llamafactory', samples=30, images_written=30, ...)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

from .formats import FORMATS, IMAGES_DIR, ExportFormat, WrittenFile, WrittenImage, trl_features

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: leading bytes -> file extension, for images whose path says nothing
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)
_KNOWN_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class ExportResult:
    """What an export wrote (paths relative to ``out_dir``)."""

    format: str
    out_dir: str
    samples: int = 0
    images_written: int = 0
    images_shared: int = 0
    files: list[str] = field(default_factory=list)
    side_files: list[str] = field(default_factory=list)


def image_extension(data: bytes, path: Optional[str] = None) -> str:
    """The file extension of image bytes: sniffed from the bytes, else taken from the original path."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    suffix = os.path.splitext(path or "")[1].lower()
    return suffix if suffix in _KNOWN_SUFFIXES else ".img"


def safe_stem(sample_id: Any) -> str:
    """A file name stem from a sample id: ASCII letters, digits, ``._-``; other runs become ``_``."""
    stem = _UNSAFE.sub("_", str(sample_id)).strip("._")[:120]
    return stem or "image"


def original_bytes(image: Any, sample_id: Any = None) -> tuple[bytes, Optional[str]]:
    """The stored bytes of an image cell (``{bytes, path}``, a path, or a PIL image) and its original path."""
    if isinstance(image, Mapping):
        data, path = image.get("bytes"), image.get("path")
        if data is not None:
            return bytes(data), path
        if path:
            with open(path, "rb") as f:
                return f.read(), path
    elif isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return f.read(), str(image)
    elif hasattr(image, "save"):  # a decoded PIL image: only its file still holds the original bytes
        filename = getattr(image, "filename", None)
        if filename:
            with open(filename, "rb") as f:
                return f.read(), filename
        buf = io.BytesIO()
        fmt = image.format or "PNG"
        image.save(buf, format=fmt)
        return buf.getvalue(), None
    raise ValueError(f"sample {sample_id!r}: expected an image as {{bytes, path}}, a path or a PIL image, "
                     f"got {type(image).__name__}")


class ImageWriter:
    """Writes each distinct image once under ``images/``, named from the id of its first sample."""

    def __init__(self, out_dir: str, write: bool = True) -> None:
        self.out_dir = out_dir
        self.write = write
        self._by_digest: dict[str, WrittenImage] = {}
        self._names: set[str] = set()
        self.written = 0
        self.shared = 0

    def add(self, image: Any, sample_id: Any) -> WrittenImage:
        data, path = original_bytes(image, sample_id)
        digest = hashlib.sha1(data).hexdigest()
        found = self._by_digest.get(digest)
        if found is not None:
            self.shared += 1
            return found
        ext = image_extension(data, path)
        name = safe_stem(sample_id) + ext
        if name.lower() in self._names:  # another image already took this id's name
            name = f"{safe_stem(sample_id)}-{digest[:10]}{ext}"
        self._names.add(name.lower())
        relpath = f"{IMAGES_DIR}/{name}"
        width = height = None
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
        except Exception:  # noqa: BLE001 - the size is informative only (InternVL records)
            pass
        if self.write:
            target = os.path.join(self.out_dir, IMAGES_DIR, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        written = WrittenImage(relpath, data, width, height)
        self._by_digest[digest] = written
        self.written += 1
        return written


def _rows(dataset: Any) -> tuple[Iterable[Mapping[str, Any]], Optional[int]]:
    """Rows of a Dataset / IterableDataset / list with the image column left undecoded."""
    import datasets

    if isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        features = dataset.features
        if features is not None and isinstance(features.get("image"), datasets.Image) and features["image"].decode:
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        total = len(dataset) if isinstance(dataset, datasets.Dataset) else None
        return dataset, total
    rows = list(dataset)
    return rows, len(rows)


def _splits(dataset: Any, name: str) -> list[tuple[str, str, Any]]:
    """(split, file stem, dataset) for a dataset or each split of a dataset dict."""
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return [(split, f"{name}_{split}", ds) for split, ds in dataset.items()]
    return [("train", name, dataset)]


class _JsonArrayFile:
    def __init__(self, path: str) -> None:
        self.f = open(path, "w", encoding="utf-8")
        self.f.write("[")
        self.first = True

    def write(self, record: dict[str, Any]) -> None:
        self.f.write("\n" if self.first else ",\n")
        self.f.write(json.dumps(record, ensure_ascii=False))
        self.first = False

    def close(self) -> None:
        self.f.write("\n]\n" if not self.first else "]\n")
        self.f.close()


class _JsonLinesFile:
    def __init__(self, path: str) -> None:
        self.f = open(path, "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.f.write(json.dumps(record, ensure_ascii=False))
        self.f.write("\n")

    def close(self) -> None:
        self.f.close()


class _ParquetFile:
    """TRL parquet written in row groups with the ``datasets`` features in its schema metadata."""

    def __init__(self, path: str, batch_size: int = 256) -> None:
        import pyarrow.parquet as pq

        self.features = trl_features()
        self.schema = self.features.arrow_schema
        self.writer = pq.ParquetWriter(path, self.schema)
        self.rows: list[dict[str, Any]] = []
        self.batch_size = batch_size

    def write(self, record: dict[str, Any]) -> None:
        self.rows.append(record)
        if len(self.rows) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            encoded = [self.features.encode_example(r) for r in self.rows]
            self.writer.write_table(pa.Table.from_pylist(encoded, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


_FILE_KINDS = {".json": _JsonArrayFile, ".jsonl": _JsonLinesFile, ".parquet": _ParquetFile}


def export(
    dataset: Any,
    fmt: str,
    out_dir: Union[str, os.PathLike],
    *,
    name: str = "llava_zh",
    overwrite: bool = False,
    progress: Optional[bool] = None,
) -> ExportResult:
    """Write ``dataset`` (Dataset, IterableDataset, DatasetDict or a list of samples) as ``fmt`` into ``out_dir``.

    Formats: ``llava``, ``sharegpt``, ``llamafactory``, ``swift``, ``trl``, ``internvl`` (see
    ``llava_zh.convert.formats.FORMATS``). One annotation file per split (``<name>.<ext>``, or
    ``<name>_<split>.<ext>`` for a dataset dict), images under ``images/`` (embedded for ``trl``), and the
    format's side files. Refuses to replace existing annotation files unless ``overwrite=True``.

    Example:
        >>> result = export(ds, "swift", "swift_out/")           # doctest: +SKIP
        >>> result.files                                         # doctest: +SKIP
        ['llava_zh.jsonl']
    """
    try:
        spec: ExportFormat = FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {sorted(FORMATS)}") from None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"name must be a plain file stem (letters, digits, ._-), got {name!r}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    splits = _splits(dataset, name)
    for _, stem, _ in splits:
        target = os.path.join(out_dir, stem + spec.suffix)
        if os.path.exists(target) and not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
    from tqdm.auto import tqdm

    result = ExportResult(format=fmt, out_dir=out_dir)
    images = ImageWriter(out_dir, write=not spec.embeds_images)
    written_files: list[WrittenFile] = []
    for split, stem, ds in splits:
        rows, total = _rows(ds)
        file_name = stem + spec.suffix
        path = os.path.join(out_dir, file_name)
        tmp = f"{path}.tmp.{os.getpid()}"
        sink = _FILE_KINDS[spec.suffix](tmp)
        count = 0
        try:
            disable = None if progress is None else not progress  # None: shown on a terminal only
            bar = tqdm(rows, total=total, desc=f"export {fmt} {split}", unit="sample", disable=disable)
            for row in bar:
                image = row.get("image")
                written = images.add(image, row.get("id")) if image is not None else None
                sink.write(spec.to_record(row, written))
                count += 1
        except BaseException:
            sink.close()
            os.remove(tmp)
            raise
        sink.close()
        os.replace(tmp, path)
        written_files.append(WrittenFile(file_name, split, count))
        result.files.append(file_name)
        result.samples += count
    if spec.write_side_files is not None:
        result.side_files = [os.path.relpath(p, out_dir) for p in spec.write_side_files(out_dir, written_files, name)]
    result.images_written = images.written
    result.images_shared = images.shared
    return result


def iter_records(dataset: Any, fmt: str) -> Iterator[dict[str, Any]]:
    """The records ``export`` would write, without writing anything (images are referenced, not written)."""
    spec = FORMATS[fmt]
    images = ImageWriter("", write=False)
    rows, _ = _rows(dataset)
    for row in rows:
        image = row.get("image")
        yield spec.to_record(row, images.add(image, row.get("id")) if image is not None else None)
