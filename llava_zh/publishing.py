"""Publish a dataset as a Hub repo: parquet shards with the images inside, a generated card, and an upload.

``datasets`` runs no loading scripts any more, so the way to make data loadable with a plain
``datasets.load_dataset(repo, config)`` is a repo of parquet files whose ``README.md`` declares the configs.
``publish`` writes that layout into a local folder (``data/<config>/<split>-XXXXX-of-YYYYY.parquet`` and
``README.md``) and, with ``push=True``, uploads it to the Hugging Face Hub or ModelScope.

Choices:

* Images are written as the original encoded bytes (the Arrow storage of ``datasets.Image`` is copied as
  it is, never decoded); rows whose image is only a local path get the file's bytes embedded.
* A dataset with a ``task`` column is stored once per task (``data/<task>/...``); the ``all`` config is a
  union whose ``data_files`` list the task folders, so no image is stored twice and
  ``load_dataset(repo, "all")`` still reads everything (tasks in ``TASKS`` order, input order within a task).
* Shards are planned from the rows' byte sizes, so every file stays under ``max_shard_size`` (a single row
  larger than that gets a shard of its own). Row groups aim at ``datasets``' 100 MB default; columns use
  ``datasets``' own per-column options (images stored uncompressed, text with snappy, content-defined
  chunking for deduplicating uploads).
* Atomic and resumable: each shard is written to a hidden ``.<name>.partial`` file and renamed when
  complete; the manifest ``.llava_zh_publish.json`` records each finished shard (what it was made from,
  rows, size, crc32, and the sha256 once uploaded). A re-run skips shards that are complete and unchanged,
  rewrites those that are not, and removes leftovers; the upload skips files the remote already holds.

Example:
    >>> import llava_zh
    >>> ds = llava_zh.load_dataset("sample", split=None)                              # doctest: +SKIP
    >>> result = llava_zh.publish(ds, "me/llava-zh-sample", local_dir="hub_copy")     # doctest: +SKIP
    >>> sorted(result.configs)                                                        # doctest: +SKIP
    ['all', 'complex_reasoning', 'conversation', 'detail_description']
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from .card import ConfigLayout, DataStats, SplitLayout, check_card, render_card
from .schema import TASKS

logger = logging.getLogger(__name__)

#: Name of the resume manifest in the local folder (hidden: no data_files pattern matches it, never uploaded).
MANIFEST_NAME = ".llava_zh_publish.json"
PARTIAL_SUFFIX = ".partial"
#: Bump when the bytes written for the same input change, so old shards are not taken as complete.
LAYOUT_VERSION = 1
UNION_CONFIG = "all"
DEFAULT_MAX_SHARD_SIZE = "500MB"
#: Files per commit when pushing to the Hugging Face Hub; each commit is a point a re-run resumes from.
COMMIT_BATCH_FILES = 50
#: ``--to`` targets; the ModelScope one needs the ``modelscope`` extra.
TARGETS: tuple[str, ...] = ("hf", "modelscope")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SPLIT = re.compile(r"^\w+(\.\w+)*$")
_READ_CHUNK = 8 << 20


class PublishError(RuntimeError):
    """Publishing cannot start or go on (no token, a bad layout, a config clash); the message says why."""


@dataclass(frozen=True)
class Shard:
    """One planned parquet file: rows ``[start, stop)`` of a (config, split) part, cut into row groups."""

    config: str
    split: str
    index: int
    count: int
    start: int
    stop: int
    est_bytes: int
    row_groups: tuple[tuple[int, int], ...]

    @property
    def path(self) -> str:
        return f"data/{self.config}/{self.split}-{self.index:05d}-of-{self.count:05d}.parquet"

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


@dataclass
class PublishResult:
    """What ``publish`` did: where the copy is, which files it wrote or reused, and what was uploaded."""

    repo_id: str
    local_dir: Path
    card: Any
    #: config -> split -> rows (union configs included)
    configs: dict[str, dict[str, int]]
    files: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    pushed: list[str] = field(default_factory=list)
    deleted_remote: list[str] = field(default_factory=list)
    url: Optional[str] = None


# --------------------------------------------------------------------------------------------- input shape


def _name_check(kind: str, name: str, pattern: re.Pattern) -> None:
    if not isinstance(name, str) or not pattern.match(name):
        raise ValueError(
            f"{kind} name {name!r} cannot be used in a Hub layout; expected letters, digits, '_', '-', '.'"
        )


def _splits_of(value, where: str) -> dict[str, Any]:
    import datasets

    if isinstance(value, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise TypeError(
            f"{where}: publish needs a map-style Dataset (it plans shards from the rows' sizes); "
            "load it without streaming=True"
        )
    if isinstance(value, datasets.Dataset):
        # a sliced split ("train[:10%]") is published under its base name
        name = re.split(r"[\[+]", str(value.split))[0] if value.split is not None else "train"
        return {name or "train": value}
    if isinstance(value, datasets.DatasetDict):
        if not len(value):
            raise ValueError(f"{where}: the DatasetDict has no split")
        return dict(value.items())
    raise TypeError(f"{where}: expected a datasets.Dataset or DatasetDict, got {type(value).__name__}")


def _take(values: np.ndarray, ds) -> np.ndarray:
    """Per-row values computed on the dataset's underlying table, put in the dataset's row order."""
    if ds._indices is None:
        return values
    return values[ds._indices.column(0).to_numpy()]


def _column(ds, name: str):
    """A column of the dataset's underlying table as one Arrow array (in table order, not row order)."""
    col = ds.data.table.column(name)
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _ordered(names) -> list[str]:
    names = list(dict.fromkeys(names))
    return [t for t in TASKS if t in names] + [t for t in names if t not in TASKS]


def split_by_task(
    dd: Mapping[str, Any], by_task: Optional[bool] = None
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, ...]]]:
    """``({config: {split: Dataset}}, {union config: members})`` for a dataset dict.

    With a ``task`` column (and ``by_task`` not False) each task becomes a stored config and ``all`` a
    union of them; otherwise the data is stored as the single config ``all``.
    """
    has_task = all("task" in ds.column_names for ds in dd.values())
    if by_task and not has_task:
        raise ValueError("by_task=True needs a 'task' column in every split")
    task_values = {}
    if has_task and by_task is not False:
        for split, ds in dd.items():
            arr = _column(ds, "task")
            if arr.null_count:
                if by_task:
                    first = int(np.flatnonzero(_take(arr.is_null().to_numpy(zero_copy_only=False), ds))[0])
                    raise ValueError(f"split {split!r}: sample {ds[first]['id']!r} (row {first}) has no task")
                task_values = None
                break
            task_values[split] = arr
    if not task_values:
        return {UNION_CONFIG: dict(dd)}, {}
    parts: dict[str, dict[str, Any]] = {}
    seen: list[str] = []
    for split, ds in dd.items():
        encoded = task_values[split].dictionary_encode()
        names = encoded.dictionary.to_pylist()
        codes = _take(encoded.indices.to_numpy(zero_copy_only=False), ds)
        for code, task in enumerate(names):
            if task == UNION_CONFIG:
                raise ValueError(f"split {split!r}: a task named {UNION_CONFIG!r} clashes with the union config")
            _name_check("task", task, _NAME)
            rows = np.flatnonzero(codes == code)
            if len(rows):
                parts.setdefault(task, {})[split] = ds.select(rows) if len(rows) < len(ds) else ds
                seen.append(task)
    order = _ordered(seen)
    return {task: parts[task] for task in order}, {UNION_CONFIG: tuple(order)}


def as_parts(data, by_task: Optional[bool] = None) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, ...]]]:
    """Normalise ``publish``'s input to stored configs and union configs (see ``split_by_task``).

    A ``Dataset`` or ``DatasetDict`` is split by task; a dict ``{config: Dataset | DatasetDict}`` is
    published as given, one stored config per key.
    """
    import datasets

    if isinstance(
        data, (datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset, datasets.IterableDatasetDict)
    ):
        parts, unions = split_by_task(_splits_of(data, "data"), by_task)
    elif isinstance(data, Mapping):
        if not data:
            raise ValueError("data: the config dict is empty")
        parts = {str(cfg): _splits_of(value, f"config {cfg!r}") for cfg, value in data.items()}
        unions = {}
    else:
        raise TypeError(
            f"data: expected a Dataset, a DatasetDict or a dict config -> dataset, got {type(data).__name__}"
        )
    for cfg, splits in parts.items():
        _name_check("config", cfg, _NAME)
        for split in splits:
            _name_check("split", split, _SPLIT)
    return parts, unions


def publish_features(features):
    """The features written to the files and the card: images decode by default on the way back in."""
    import datasets

    fixed = {
        name: datasets.Image(mode=feat.mode, decode=True) if isinstance(feat, datasets.Image) else feat
        for name, feat in features.items()
    }
    return datasets.Features(fixed)


def _image_columns(features) -> list[str]:
    import datasets

    return [name for name, feat in features.items() if isinstance(feat, datasets.Image)]


# ------------------------------------------------------------------------------------------------ sizes


def array_row_nbytes(arr) -> np.ndarray:
    """Bytes each row of an Arrow array takes in Arrow memory (values and offsets, not validity bitmaps).

    Example:
        >>> import pyarrow as pa
        >>> array_row_nbytes(pa.array(["ab", None, "中"])).tolist()
        [6, 4, 7]
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        parts = [array_row_nbytes(c) for c in arr.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    t, n = arr.type, len(arr)
    if pa.types.is_binary(t) or pa.types.is_string(t):
        return pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) + 4
    if pa.types.is_large_binary(t) or pa.types.is_large_string(t):
        return pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) + 8
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        child = array_row_nbytes(arr.flatten())
        parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
        out = np.bincount(parents, weights=child, minlength=n).astype(np.int64) if len(child) else np.zeros(n, np.int64)
        return out + (8 if pa.types.is_large_list(t) else 4)
    if pa.types.is_fixed_size_list(t):
        child = array_row_nbytes(arr.flatten())
        return child.reshape(n, t.list_size).sum(axis=1) if n else np.zeros(0, np.int64)
    if pa.types.is_struct(t):
        out = np.zeros(n, dtype=np.int64)
        for child in arr.flatten():
            out += array_row_nbytes(child)
        return out
    if pa.types.is_dictionary(t):
        return np.full(n, t.index_type.bit_width // 8, dtype=np.int64)
    if pa.types.is_null(t):
        return np.zeros(n, dtype=np.int64)
    try:
        width = max(1, t.bit_width // 8)
    except ValueError:  # variable-width type not handled above (views): the average is good enough
        width = max(1, arr.nbytes // max(1, n))
    return np.full(n, width, dtype=np.int64)


def row_nbytes(ds) -> tuple[np.ndarray, bool]:
    """Per-row size of a dataset as it will be written (path-only images count their file's size).

    Returns ``(sizes in row order, whether some image must be read from its path)``.
    """
    table = ds.data.table
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for name in table.column_names:
        sizes += array_row_nbytes(table.column(name))
    needs_embed = False
    for name in _image_columns(ds.features):
        col = _column(ds, name)
        if col.null_count == len(col):
            continue
        byts, paths = col.field("bytes"), col.field("path")
        missing = np.flatnonzero(
            byts.is_null().to_numpy(zero_copy_only=False) & paths.is_valid().to_numpy(zero_copy_only=False)
        )
        if len(missing):
            needs_embed = True
            for i in missing.tolist():
                path = paths[i].as_py()
                if "://" in path:  # a remote file: embedded by datasets on the way, size unknown here
                    continue
                if not os.path.isfile(path):
                    sample = ds.data.table.column("id")[i].as_py() if "id" in table.column_names else None
                    raise PublishError(
                        f"sample {sample!r}: column {name!r} has no image bytes and its path {path!r} is not a file "
                        f"(from {os.getcwd()}); load the data with its images or fix the path before publishing"
                    )
                sizes[i] += os.path.getsize(path)
    return _take(sizes, ds), needs_embed


def _cut(sizes: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Greedy contiguous ranges whose summed size stays within ``budget`` (a row larger than it stands alone)."""
    n = len(sizes)
    if n == 0:
        return [(0, 0)]
    cum = np.cumsum(sizes)
    ranges, start = [], 0
    while start < n:
        base = int(cum[start - 1]) if start else 0
        stop = int(np.searchsorted(cum, base + budget, side="right"))
        stop = max(stop, start + 1)
        ranges.append((start, stop))
        start = stop
    return ranges


def plan_shards(
    config: str, split: str, sizes: np.ndarray, max_shard_bytes: int, row_group_bytes: int, overhead: int = 0
) -> list[Shard]:
    """Cut one part into shards under ``max_shard_bytes`` and each shard into row groups.

    ``overhead`` is what an empty file of the schema takes (footer, schema metadata); a further 2% and a
    few KB per row group are kept for page headers, levels and the page index.
    """
    groups_per_shard = -(-max_shard_bytes // row_group_bytes)
    reserve = overhead + 2048 * groups_per_shard + max_shard_bytes // 50
    ranges = _cut(sizes, max(1, max_shard_bytes - reserve))
    shards = []
    for index, (start, stop) in enumerate(ranges):
        groups = (
            tuple((start + a, start + b) for a, b in _cut(sizes[start:stop], row_group_bytes)) if stop > start else ()
        )
        shards.append(Shard(config, split, index, len(ranges), start, stop, int(sizes[start:stop].sum()), groups))
    return shards


def empty_parquet_size(features) -> int:
    """Size of a parquet file of this schema with no rows: the fixed cost of every shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = features.arrow_schema
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, schema, **_writer_options(features, schema)) as writer:
        writer.write_table(pa.Table.from_batches([], schema=schema))
    return len(buf.getvalue())


# --------------------------------------------------------------------------------------------- manifest


def _load_manifest(local_dir: Path) -> dict:
    path = local_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": LAYOUT_VERSION, "shards": {}}
    except ValueError:
        logger.warning("%s is not valid JSON; every shard will be rewritten", path)
        return {"version": LAYOUT_VERSION, "shards": {}}
    if manifest.get("version") != LAYOUT_VERSION or not isinstance(manifest.get("shards"), dict):
        return {"version": LAYOUT_VERSION, "shards": {}}
    return manifest


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _save_manifest(local_dir: Path, manifest: dict) -> None:
    _atomic_write_text(local_dir / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True))


def _shard_key(ds, shard: Shard, schema_json: str) -> str:
    """What a shard's bytes depend on: the data's fingerprint, the row range, the schema, the layout version."""
    h = hashlib.sha256()
    for part in (
        str(LAYOUT_VERSION),
        ds._fingerprint,
        shard.path,
        f"{shard.start}:{shard.stop}",
        repr(shard.row_groups),
        schema_json,
    ):
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_crc32(path: Union[str, Path]) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _is_complete(path: Path, entry: Optional[dict], key: str, verify: bool) -> bool:
    if not entry or entry.get("key") != key:
        return False
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != entry.get("size"):
        return False
    if not verify and st.st_mtime_ns == entry.get("mtime_ns"):
        return True
    return file_crc32(path) == entry.get("crc32")


# ------------------------------------------------------------------------------------------------ writing


def _leaf_paths(path: str, pa_type) -> list[str]:
    import pyarrow as pa

    if isinstance(pa_type, pa.ExtensionType):
        pa_type = pa_type.storage_type
    if pa.types.is_struct(pa_type):
        return [leaf for f in pa_type for leaf in _leaf_paths(f"{path}.{f.name}", f.type)]
    if pa.types.is_list(pa_type) or pa.types.is_large_list(pa_type) or pa.types.is_fixed_size_list(pa_type):
        return _leaf_paths(f"{path}.list.element", pa_type.value_type)
    return [path]


def _writer_options(features, schema) -> dict:
    """``datasets``' per-column parquet options, plus: no min/max statistics on image bytes.

    Statistics of a binary column copy its smallest and largest value into the footer and the page index
    (several times the size of an image, per row group) and no reader filters on image bytes.
    """
    import datasets

    options: dict[str, Any] = {"write_page_index": True}
    try:
        from datasets.arrow_writer import get_parquet_column_options

        options.update(get_parquet_column_options(features, schema))
    except ImportError:  # older datasets: pyarrow defaults
        pass
    images = {f"{name}.bytes" for name in _image_columns(features)}
    leaves = [leaf for f in schema for leaf in _leaf_paths(f.name, f.type)]
    if images:
        options["write_statistics"] = [leaf for leaf in leaves if leaf not in images]
    cdc = getattr(datasets.config, "DEFAULT_CDC_OPTIONS", None)
    if cdc:
        options["use_content_defined_chunking"] = cdc
    return options


def gather(table, indices: np.ndarray):
    """Rows ``indices`` of an Arrow table, copied chunk by chunk (``Table.take`` would first join all chunks).

    Example:
        >>> import pyarrow as pa
        >>> t = pa.concat_tables([pa.table({"x": [0, 1, 2]}), pa.table({"x": [3, 4]})])
        >>> gather(t, np.array([4, 0, 1, 3]))["x"].to_pylist()
        [4, 0, 1, 3]
    """
    import pyarrow as pa

    indices = np.asarray(indices, dtype=np.int64)  # datasets keeps uint64 indices; uint64 - int64 is float
    batches = table.to_batches()  # zero-copy, aligned across columns
    if not len(indices) or not batches:
        return table.slice(0, 0)
    if len(batches) == 1:
        return pa.Table.from_batches([batches[0].take(pa.array(indices))], schema=table.schema)
    bounds = np.cumsum([b.num_rows for b in batches])
    which = np.searchsorted(bounds, indices, side="right")
    starts = np.concatenate([[0], bounds[:-1]])
    cuts = np.flatnonzero(np.diff(which)) + 1
    pieces = []
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(indices)]])):
        b = int(which[lo])
        pieces.append(batches[b].take(pa.array(indices[lo:hi] - starts[b])))
    return pa.Table.from_batches(pieces, schema=table.schema).combine_chunks()


def _rows(ds, start: int, stop: int):
    """Rows ``[start, stop)`` of a dataset as an Arrow table, following its indices mapping if it has one."""
    if ds._indices is None:
        return ds.data.table.slice(start, stop - start)
    idx = ds._indices.column(0).slice(start, stop - start).to_numpy(zero_copy_only=False)
    return gather(ds.data.table, idx)


class _ChecksumFile(io.RawIOBase):
    """A file being written that keeps the crc32 and size of what went through it (no second read)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._f = open(path, "wb", buffering=0)  # parquet hands over whole pages: no second copy in a buffer
        self.crc = 0
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.crc = zlib.crc32(b, self.crc)
        n = self._f.write(b)
        self.size += n
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        if not self.closed:
            super().close()  # flushes through self.flush first
            self._f.close()


def write_shard(ds, shard: Shard, features, target: Path, *, embed: bool, durable: bool = False) -> dict:
    """Write one shard to ``target`` through a hidden partial file; returns its manifest entry (no key).

    The rows are taken from the Arrow table as stored (image bytes are never decoded); rows whose image is
    a path only get the file's bytes embedded. The crc32 is computed on the way to the disk.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.table import embed_table_storage, table_cast

    schema = features.arrow_schema
    options = _writer_options(features, schema)
    tmp = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    try:
        with _ChecksumFile(tmp) as sink:
            try:
                writer = pq.ParquetWriter(sink, schema, **options)
            except TypeError:  # a pyarrow without content-defined chunking
                options.pop("use_content_defined_chunking", None)
                writer = pq.ParquetWriter(sink, schema, **options)
            with writer:
                for start, stop in shard.row_groups:
                    table = _rows(ds, start, stop)
                    if embed:
                        table = embed_table_storage(table)
                    if not table.schema.equals(schema, check_metadata=False):
                        table = table_cast(table, schema)
                    writer.write_table(table, row_group_size=max(1, stop - start))
                if "use_content_defined_chunking" in options:
                    writer.add_key_value_metadata(
                        {"content_defined_chunking": json.dumps(options["use_content_defined_chunking"])}
                    )
                if shard.num_rows == 0:
                    writer.write_table(pa.Table.from_batches([], schema=schema))
            sink.flush()
            if durable:
                os.fsync(sink.fileno())
            crc = f"{sink.crc:08x}"
        os.replace(tmp, target)
        if durable:
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = target.stat()
    return {"num_rows": shard.num_rows, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "crc32": crc}


def _remove_leftovers(local_dir: Path, keep: set[str]) -> list[str]:
    """Delete partial files and parquet files under ``data/`` that the new plan does not name."""
    removed = []
    data_dir = local_dir / "data"
    if not data_dir.is_dir():
        return removed
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(local_dir).as_posix()
        if path.name.endswith(PARTIAL_SUFFIX) or (path.suffix == ".parquet" and rel not in keep):
            path.unlink()
            removed.append(rel)
    for folder in sorted((p for p in data_dir.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if removed:
        logger.info("removed %d leftover or stale files under %s", len(removed), data_dir)
    return removed


# --------------------------------------------------------------------------------------------- statistics


def _codes(ds, column: str) -> tuple[list, np.ndarray]:
    """A string column as (distinct values, per-row code in row order); nulls get the code -1."""
    encoded = _column(ds, column).dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return encoded.dictionary.to_pylist(), _take(codes, ds)


def _stats(parts: Mapping[str, Mapping[str, Any]]) -> DataStats:
    """Counts per task and split, rows with an image, rounds, languages and sources, from the data itself."""
    import pyarrow.compute as pc

    stats = DataStats(has_images=False)
    for config, splits in parts.items():
        for split, ds in splits.items():
            names, n = ds.column_names, len(ds)
            has_image = np.zeros(n, dtype=bool)
            for name in _image_columns(ds.features):
                stats.has_images = True
                has_image |= _take(_column(ds, name).is_valid().to_numpy(zero_copy_only=False), ds)
            rounds = np.zeros(n, dtype=np.int64)
            if "conversations" in names and n:
                conv = _column(ds, "conversations")
                human = pc.equal(pc.struct_field(conv.flatten(), "from"), "human").fill_null(False)
                parents = pc.list_parent_indices(conv).to_numpy(zero_copy_only=False)
                per_row = np.bincount(parents, weights=human.to_numpy(zero_copy_only=False), minlength=len(conv))
                rounds = _take(per_row.astype(np.int64), ds)
            tasks, codes = _codes(ds, "task") if "task" in names else ([], np.full(n, -1, dtype=np.int64))
            for code in np.unique(codes):
                task = str(tasks[code]) if code >= 0 else config  # rows without a task count under their config
                mask = codes == code
                per_split = stats.task_counts.setdefault(task, {})
                per_split[split] = per_split.get(split, 0) + int(mask.sum())
                stats.with_image[task] = stats.with_image.get(task, 0) + int(has_image[mask].sum())
                stats.rounds[task] = stats.rounds.get(task, 0) + int(rounds[mask].sum())
            for column, counter in (("language", stats.languages), ("source", stats.sources)):
                if column in names:
                    values, value_codes = _codes(ds, column)
                    counts = np.bincount(value_codes[value_codes >= 0], minlength=len(values))
                    for value, count in zip(values, counts.tolist()):
                        if count:
                            counter[str(value)] = counter.get(str(value), 0) + count
    return stats


# ---------------------------------------------------------------------------------------------- pushing


def _import_modelscope():
    try:
        from modelscope.hub.api import HubApi
    except ImportError as e:
        raise ImportError(
            'publishing to ModelScope needs the modelscope package: pip install "llava-zh[modelscope]"'
        ) from e
    return HubApi


def resolve_push_token(to: str = "hf", token: Optional[str] = None) -> str:
    """The token an upload will use; raises ``PublishError`` (naming where a token can come from) if none.

    Called before any data is read or written, so a missing token costs nothing. The token itself never
    appears in a message.
    """
    if to not in TARGETS:
        raise ValueError(f"to must be one of {list(TARGETS)}, got {to!r}")
    if to == "hf":
        from huggingface_hub import get_token

        found = token or get_token()
        if not found:
            raise PublishError(
                "push=True needs a Hugging Face token with write access: pass token=..., set HF_TOKEN, "
                "or run `hf auth login`. Nothing was written."
            )
        return found
    _import_modelscope()
    found = token or os.environ.get("MODELSCOPE_API_TOKEN")
    if not found:
        raise PublishError(
            "pushing to ModelScope needs an access token: pass token=... or set MODELSCOPE_API_TOKEN. "
            "Nothing was written."
        )
    return found


def _remote_data_files(api, repo_id: str, revision: Optional[str]) -> dict[str, Optional[str]]:
    """``{path: lfs sha256 or None}`` of the files under ``data/`` in the remote repo (empty when none)."""
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    try:
        entries = list(
            api.list_repo_tree(repo_id, path_in_repo="data", recursive=True, repo_type="dataset", revision=revision)
        )
    except (EntryNotFoundError, RevisionNotFoundError):
        return {}
    return {e.path: (e.lfs.sha256 if e.lfs is not None else None) for e in entries if isinstance(e, RepoFile)}


def push_to_hf(
    local_dir: Path,
    files: list[str],
    repo_id: str,
    *,
    token: Optional[str],
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    api=None,
    manifest: Optional[dict] = None,
    batch_files: Optional[int] = None,
) -> tuple[list[str], list[str], Optional[str]]:
    """Upload the local copy with ``create_commit``: data files in batches, then the card and deletions.

    Files the remote already holds with the same sha256 are left out, so a re-run after an interruption
    uploads only what is missing. Remote files under ``data/`` that the local copy does not have are
    deleted in the last commit. Returns ``(uploaded paths, deleted paths, repo url)``.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    from . import __version__

    api = api or HfApi(token=token, library_name="llava-zh", library_version=__version__)
    repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    remote = _remote_data_files(api, repo_id, revision)
    message = commit_message or "Publish dataset with llava-zh"
    from tqdm.auto import tqdm

    todo = []
    shards = (manifest or {}).get("shards", {})
    for rel in tqdm(files, desc="Hashing shards", unit=" files", disable=None):
        op = CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(local_dir / rel))  # computes the sha256
        sha = op.upload_info.sha256.hex()
        if rel in shards:
            shards[rel]["sha256"] = sha
        if remote.get(rel) != sha:
            todo.append(op)
    batch_files = batch_files or COMMIT_BATCH_FILES
    batches = [todo[i : i + batch_files] for i in range(0, len(todo), batch_files)]
    uploaded: list[str] = []
    for number, batch in enumerate(batches, 1):
        api.create_commit(
            repo_id,
            operations=batch,
            repo_type="dataset",
            revision=revision,
            commit_message=f"{message} (data {number}/{len(batches)})",
        )
        uploaded += [op.path_in_repo for op in batch]
        logger.info("committed %d/%d data files", len(uploaded), len(todo))
    stale = sorted(set(remote) - set(files))
    final_ops = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(local_dir / "README.md"))]
    final_ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
    api.create_commit(
        repo_id, operations=final_ops, repo_type="dataset", revision=revision, commit_message=f"{message} (card)"
    )
    uploaded.append("README.md")
    return uploaded, stale, str(repo_url) if repo_url is not None else None


def push_to_modelscope(
    local_dir: Path,
    files: list[str],
    repo_id: str,
    *,
    token: Optional[str],
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    api=None,
    manifest: Optional[dict] = None,
) -> tuple[list[str], list[str], Optional[str]]:
    """Upload the same folder to ModelScope with its ``HubApi`` (``create_repo`` then ``upload_folder``).

    ModelScope's ``upload_folder`` is itself resumable; only ``README.md`` and ``data/`` are sent. Remote
    files that the local copy no longer has are not deleted on ModelScope.
    """
    if api is None:
        HubApi = _import_modelscope()
        try:
            api = HubApi(token=token)
        except TypeError:  # modelscope releases whose HubApi takes no token: log in instead
            api = HubApi()
            api.login(token)
    api.create_repo(
        repo_id, repo_type="dataset", visibility="private" if private else "public", exist_ok=True, token=token
    )
    kwargs = dict(
        repo_id=repo_id,
        folder_path=str(local_dir),
        repo_type="dataset",
        commit_message=commit_message or "Publish dataset with llava-zh",
        allow_patterns=["README.md", "data/*"],
        ignore_patterns=[f"*{PARTIAL_SUFFIX}", MANIFEST_NAME],
        token=token,
    )
    if revision is not None:
        kwargs["revision"] = revision
    api.upload_folder(**kwargs)
    return ["README.md"] + list(files), [], f"https://modelscope.cn/datasets/{repo_id}"


PUSHERS: dict[str, Callable[..., tuple[list[str], list[str], Optional[str]]]] = {
    "hf": push_to_hf,
    "modelscope": push_to_modelscope,
}


# ------------------------------------------------------------------------------------------------ publish


def _default_local_dir(repo_id: str) -> Path:
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "llava_zh_publish" / repo_id.replace("/", "--")


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") > 1:
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")
    validate_repo_id(repo_id)


def publish(
    data,
    repo_id: str,
    local_dir: Optional[Union[str, os.PathLike]] = None,
    push: bool = False,
    private: bool = False,
    max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE,
    token: Optional[str] = None,
    *,
    to: str = "hf",
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    license: Optional[str] = None,
    pretty_name: Optional[str] = None,
    description: Optional[str] = None,
    by_task: Optional[bool] = None,
    default_config: Optional[str] = None,
    verify: bool = False,
    durable: bool = False,
    api=None,
) -> PublishResult:
    """Write ``data`` as a Hub dataset repo (parquet shards + card) in ``local_dir``; upload it with ``push``.

    Args:
        data: a ``Dataset``, a ``DatasetDict`` (one entry per split), or ``{config: Dataset | DatasetDict}``.
            With a ``task`` column, a Dataset/DatasetDict is stored per task plus the union config ``all``.
        repo_id: ``owner/name`` on the Hub (or on ModelScope with ``to="modelscope"``).
        local_dir: where the repo layout is written (default: a folder under the ``datasets`` cache named
            after ``repo_id``). Re-running into the same folder resumes.
        push: upload after writing; needs a token (``token``, ``HF_TOKEN`` or a saved login), checked first.
        private: create the repo private (an existing repo keeps its visibility).
        max_shard_size: largest parquet file, e.g. ``"500MB"`` or bytes.
        to: ``"hf"`` or ``"modelscope"`` (needs ``pip install "llava-zh[modelscope]"``).
        license: the card's license (default ``apache-2.0``).
        by_task: force (True) or refuse (False) one config per task; default: when there is a task column.
        verify: re-check the crc32 of every shard a re-run would reuse (default: size and mtime).
        durable: fsync each shard before renaming it (survives a power cut; slower).
        api: an ``HfApi`` (or ModelScope ``HubApi``) to upload with, instead of a new one.

    The ``data/`` folder mirrors this call: parquet files an earlier publish left there (locally, and on the
    Hub when pushing) that this one does not write are deleted, so the card's globs match only this data.

    Example:
        >>> result = publish(ds, "me/llava-zh-mine", local_dir="hub_copy", max_shard_size="200MB")  # doctest: +SKIP
        >>> datasets.load_dataset("hub_copy", "conversation", split="train")                        # doctest: +SKIP
    """
    import datasets
    from datasets.utils.py_utils import convert_file_size_to_int

    # Everything that can refuse is checked before any data is read or any file is written.
    _check_repo_id(repo_id)
    if to not in TARGETS:
        raise ValueError(f"to must be one of {list(TARGETS)}, got {to!r}")
    push_token = resolve_push_token(to, token) if push else None
    max_bytes = convert_file_size_to_int(max_shard_size)
    if max_bytes <= 0:
        raise ValueError(f"max_shard_size must be positive, got {max_shard_size!r}")
    parts, unions = as_parts(data, by_task)
    features = _config_features(parts, unions)
    config_names = list(unions) + list(parts)
    default = default_config or (UNION_CONFIG if UNION_CONFIG in config_names else config_names[0])
    if default not in config_names:
        raise ValueError(f"default_config {default!r} is not one of the configs {config_names}")

    row_group_bytes = convert_file_size_to_int(datasets.config.MAX_ROW_GROUP_SIZE)
    plans, split_sizes = _plan(parts, features, max_bytes, row_group_bytes)
    local_dir = Path(local_dir) if local_dir is not None else _default_local_dir(repo_id)
    local_dir.mkdir(parents=True, exist_ok=True)
    planned = sorted({shard.path for _, shard, _ in plans})
    manifest = _load_manifest(local_dir)
    removed = _remove_leftovers(local_dir, set(planned))
    manifest["shards"] = {k: v for k, v in manifest["shards"].items() if k in planned}
    written, skipped = _write_planned(plans, features, local_dir, manifest, repo_id, verify=verify, durable=durable)

    layouts = _layouts(parts, unions, features, default, plans, split_sizes, manifest)
    text = render_card(
        layouts, _stats(parts), repo_id=repo_id, pretty_name=pretty_name, license=license, description=description
    )
    card = check_card(text, str(local_dir))
    _atomic_write_text(local_dir / "README.md", text)
    logger.info("wrote %d shards, reused %d, in %s", len(written), len(skipped), local_dir)
    result = PublishResult(
        repo_id=repo_id,
        local_dir=local_dir,
        card=card,
        configs={layout.name: {s: sl.num_examples for s, sl in layout.splits.items()} for layout in layouts},
        files=["README.md"] + planned,
        written=written,
        skipped=skipped,
        removed=removed,
    )
    if push:
        result.pushed, result.deleted_remote, result.url = PUSHERS[to](
            local_dir,
            planned,
            repo_id,
            token=push_token,
            private=private,
            revision=revision,
            commit_message=commit_message,
            api=api,
            manifest=manifest,
        )
        _save_manifest(local_dir, manifest)  # with the sha256 of every uploaded shard
    return result


def _config_features(parts, unions) -> dict[str, Any]:
    """The published features of each stored config; every split, and every member of a union, must agree."""
    clash = set(parts) & set(unions)
    if clash:
        raise ValueError(f"config names {sorted(clash)} are both stored and union configs")
    features = {cfg: publish_features(next(iter(splits.values())).features) for cfg, splits in parts.items()}
    for cfg, splits in parts.items():
        for split, ds in splits.items():
            if publish_features(ds.features) != features[cfg]:
                raise PublishError(
                    f"config {cfg!r}: split {split!r} has features {ds.features}, expected {features[cfg]}"
                )
    for union, members in unions.items():
        for member in members:
            if features[member] != features[members[0]]:
                raise PublishError(f"union config {union!r}: {member!r} and {members[0]!r} have different features")
    return features


def _plan(parts, features, max_bytes: int, row_group_bytes: int):
    """Every shard of every stored (config, split), from the rows' sizes; and each part's size in bytes."""
    plans: list[tuple[Any, Shard, bool]] = []
    split_sizes: dict[tuple[str, str], int] = {}
    for cfg, splits in parts.items():
        overhead = empty_parquet_size(features[cfg])
        for split, ds in splits.items():
            sizes, embed = row_nbytes(ds)
            split_sizes[(cfg, split)] = int(sizes.sum())
            for shard in plan_shards(cfg, split, sizes, max_bytes, row_group_bytes, overhead):
                if shard.est_bytes + overhead > max_bytes:
                    logger.warning(
                        "%s: row %d alone (%d bytes with the file's overhead) is larger than max_shard_size (%d)",
                        shard.path,
                        shard.start,
                        shard.est_bytes + overhead,
                        max_bytes,
                    )
                plans.append((ds, shard, embed))
    return plans, split_sizes


def _write_planned(plans, features, local_dir: Path, manifest: dict, repo_id: str, *, verify: bool, durable: bool):
    """Write the shards that are not complete on disk; the manifest is saved after each one."""
    from tqdm.auto import tqdm

    written, skipped = [], []
    schema_json = {cfg: json.dumps(f.to_dict(), sort_keys=True) for cfg, f in features.items()}
    total = sum(shard.est_bytes for _, shard, _ in plans)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"Publishing {repo_id}", disable=None) as bar:
        for ds, shard, embed in plans:
            target = local_dir / shard.path
            key = _shard_key(ds, shard, schema_json[shard.config])
            if _is_complete(target, manifest["shards"].get(shard.path), key, verify):
                skipped.append(shard.path)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                entry = write_shard(ds, shard, features[shard.config], target, embed=embed, durable=durable)
                manifest["shards"][shard.path] = {"key": key, **entry}
                _save_manifest(local_dir, manifest)
                written.append(shard.path)
            bar.update(shard.est_bytes)
    _save_manifest(local_dir, manifest)
    return written, skipped


def _layouts(parts, unions, features, default: str, plans, split_sizes, manifest) -> list[ConfigLayout]:
    """The card's configs: stored ones point at their folder, union ones at their members' folders."""
    split_files: dict[tuple[str, str], list[str]] = {}
    for _, shard, _ in plans:
        split_files.setdefault((shard.config, shard.split), []).append(shard.path)

    def split_layout(members: list[str], split: str) -> SplitLayout:
        present = [m for m in members if (m, split) in split_files]
        return SplitLayout(
            patterns=[f"data/{m}/{split}-*.parquet" for m in present],
            num_examples=sum(len(parts[m][split]) for m in present),
            num_bytes=sum(split_sizes[(m, split)] for m in present),
            download_size=sum(manifest["shards"][p]["size"] for m in present for p in split_files[(m, split)]),
        )

    layouts = []
    for name in list(unions) + list(parts):
        members = list(unions.get(name, (name,)))
        splits = list(dict.fromkeys(s for m in members for s in parts[m]))
        layouts.append(
            ConfigLayout(
                name=name,
                splits={s: split_layout(members, s) for s in splits},
                features=features[members[0]],
                default=name == default,
                members=tuple(members) if name in unions else (),
            )
        )
    return layouts


__all__ = [
    "COMMIT_BATCH_FILES",
    "MANIFEST_NAME",
    "PUSHERS",
    "PublishError",
    "PublishResult",
    "Shard",
    "TARGETS",
    "array_row_nbytes",
    "as_parts",
    "check_card",
    "plan_shards",
    "publish",
    "push_to_hf",
    "push_to_modelscope",
    "resolve_push_token",
    "row_nbytes",
    "split_by_task",
    "write_shard",
]
