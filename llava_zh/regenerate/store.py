"""Where a run's records go: part files written atomically, so a killed run never leaves half a shard.

Layout of an output folder::

    out/regen_config.json            settings of the run (written once)
    out/data/part-...parquet         records whose reply parsed (the dataset)
    out/failed/part-...parquet       records whose reply was refused (kept for inspection, never redone)
    out/.pending/{data,failed}/      batches written but not yet gathered into a visible part
    out/.tmp/, out/.locks/           files being written, one lock per shard

Every batch is written as its own file into ``.pending/``: to ``.tmp/`` first, flushed and fsynced, then
renamed into place (``os.replace`` is atomic) and the folder fsynced, so a run killed at any moment loses
at most the batch in flight. Once about ``records_per_file`` records are pending (and when the run ends)
they are gathered into one visible part in ``data/`` or ``failed/``, written the same atomic way, and the
pending files are deleted. A visible part is named by the range of batch numbers it holds
(``part-<shard>-of-<n>-<first>-<last>``): a pending batch inside the range of a visible part is a copy
left by a run killed between the rename and the deletes, ignored by readers and deleted on the next
start. The visible folders therefore never hold a partial file or a duplicate, whenever the run dies.
The ids of visible and pending parts are the finished work: a new run skips them.

Example:
    >>> store = ShardStore("regen/", shard_index=0, num_shards=1)          # doctest: +SKIP
    >>> with store: store.write(records)                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from .inputs import check_shard
from .record import REGEN_FEATURES, to_json_record

#: record status -> folder of the output directory.
FOLDERS: dict[str, str] = {"ok": "data", "failed": "failed"}
#: output format -> file suffix.
FORMATS: dict[str, str] = {"parquet": ".parquet", "jsonl": ".jsonl"}
CONFIG_FILE = "regen_config.json"
PENDING = ".pending"
_PART = re.compile(r"^part-(?P<shard>\d{5})-of-(?P<num>\d{5})-(?P<first>\d{6,})-(?P<last>\d{6,})\.(?P<ext>parquet|jsonl)$")


@dataclass(frozen=True, order=True)
class Part:
    """A part file: the shard that wrote it and the range of batch numbers it holds."""

    first: int
    last: int
    shard: int
    num_shards: int
    path: str

    @classmethod
    def parse(cls, path: str) -> Optional["Part"]:
        m = _PART.match(os.path.basename(path))
        if not m:
            return None
        return cls(int(m["first"]), int(m["last"]), int(m["shard"]), int(m["num"]), path)


def part_name(shard: int, num_shards: int, first: int, last: int, suffix: str) -> str:
    return f"part-{shard:05d}-of-{num_shards:05d}-{first:06d}-{last:06d}{suffix}"


def fsync_dir(path: str) -> None:
    """Make a rename or delete in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# -- formats -------------------------------------------------------------------------------------------------


def _write_parquet(records: list[Mapping[str, Any]], f) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(records), schema=REGEN_FEATURES.arrow_schema)
    pq.write_table(table, f, compression="zstd")


def _write_jsonl(records: list[Mapping[str, Any]], f) -> None:
    for r in records:
        f.write(json.dumps(to_json_record(r, embed_image=False), ensure_ascii=False).encode("utf-8") + b"\n")


def _merge_parquet(paths: list[str], f) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in paths]
    pq.write_table(pa.concat_tables(tables), f, compression="zstd")


def _merge_jsonl(paths: list[str], f) -> None:
    for p in paths:
        with open(p, "rb") as src:
            f.write(src.read())


def _count_parquet(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _count_jsonl(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _ids_parquet(path: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["id"]).column("id").to_pylist()


def _ids_jsonl(path: str) -> list[str]:
    with open(path, "rb") as f:
        return [json.loads(line)["id"] for line in f if line.strip()]


_WRITERS = {"parquet": _write_parquet, "jsonl": _write_jsonl}
_MERGERS = {"parquet": _merge_parquet, "jsonl": _merge_jsonl}
_COUNTERS = {"parquet": _count_parquet, "jsonl": _count_jsonl}
_ID_READERS = {".parquet": _ids_parquet, ".jsonl": _ids_jsonl}


# -- reading what is done ------------------------------------------------------------------------------------


def part_files(out_dir: str, folder: Optional[str] = None) -> list[str]:
    """Visible part files of an output folder (``data`` and ``failed``, or one of them), sorted by name."""
    return _list_parts(out_dir, [folder] if folder else list(FOLDERS.values()))


def pending_files(out_dir: str, folder: Optional[str] = None) -> list[str]:
    """Pending batch files that no visible part holds yet (written by a run that did not finish)."""
    found = []
    for name in [folder] if folder else list(FOLDERS.values()):
        visible = [Part.parse(p) for p in _list_parts(out_dir, [name])]
        for path in _list_parts(os.path.join(out_dir, PENDING), [name]):
            if not _covered(Part.parse(path), visible):
                found.append(path)
    return found


def _list_parts(root: str, folders: list[str]) -> list[str]:
    found = []
    for name in folders:
        d = os.path.join(root, name)
        if os.path.isdir(d):
            found.extend(os.path.join(d, f) for f in sorted(os.listdir(d)) if Part.parse(f))
    return found


def _covered(part: Part, visible: list[Part]) -> bool:
    return any(
        v.shard == part.shard and v.num_shards == part.num_shards and v.first <= part.first and part.last <= v.last
        for v in visible
    )


def read_ids(out_dir: str, folder: Optional[str] = None, *, pending: bool = True) -> list[str]:
    """Every id written to the output folder: visible parts, plus pending batches unless ``pending=False``."""
    for _attempt in range(5):
        ids: list[str] = []
        try:
            paths = part_files(out_dir, folder) + (pending_files(out_dir, folder) if pending else [])
            for path in paths:
                ids.extend(_ID_READERS[os.path.splitext(path)[1]](path))
            return ids
        except FileNotFoundError:  # another shard gathered its pending batches while we listed them: list again
            continue
    raise RuntimeError(f"{out_dir}: part files keep changing while being read")


# -- the store -------------------------------------------------------------------------------------------------


class ShardLockedError(RuntimeError):
    """Another process is writing the same shard of the same output folder."""


class ShardStore:
    """The part files one shard of a run writes into ``out_dir`` (one process per shard, enforced by a lock).

    ``write(records)`` puts one batch on disk atomically (in ``.pending/``); once ``records_per_file``
    records are pending, and on ``close()``, they become one visible part in ``data/`` or ``failed/``.
    """

    def __init__(self, out_dir: str | os.PathLike, shard_index: int = 0, num_shards: int = 1, *,
                 output_format: str = "parquet", records_per_file: int = 1000) -> None:
        check_shard(shard_index, num_shards)
        if output_format not in FORMATS:
            raise ValueError(f"output_format must be one of {list(FORMATS)}, got {output_format!r}")
        if records_per_file < 1:
            raise ValueError(f"records_per_file must be at least 1, got {records_per_file}")
        self.out_dir = os.path.abspath(os.fspath(out_dir))
        self.shard_index, self.num_shards = shard_index, num_shards
        self.format = output_format
        self.suffix = FORMATS[output_format]
        self.records_per_file = records_per_file
        self.tmp_dir = os.path.join(self.out_dir, ".tmp")
        self._prefix = f"part-{shard_index:05d}-of-{num_shards:05d}-"
        self._lock_fd: Optional[int] = None
        self._pending: dict[str, list[tuple[Part, int]]] = {}
        self._next = 0
        self.opened = False

    def _dir(self, folder: str, pending: bool = False) -> str:
        return os.path.join(self.out_dir, PENDING, folder) if pending else os.path.join(self.out_dir, folder)

    # -- lifecycle

    def open(self) -> "ShardStore":
        """Take the shard's lock, clear what a killed run left half-done, find the next batch number."""
        os.makedirs(self.tmp_dir, exist_ok=True)
        for folder in FOLDERS.values():
            os.makedirs(self._dir(folder), exist_ok=True)
            os.makedirs(self._dir(folder, pending=True), exist_ok=True)
        self._lock()
        for name in os.listdir(self.tmp_dir):
            if name.startswith(self._prefix):
                os.remove(os.path.join(self.tmp_dir, name))
        last = -1
        for folder in FOLDERS.values():
            visible = self._own_parts(self._dir(folder))
            waiting = []
            for p in self._own_parts(self._dir(folder, pending=True)):
                if _covered(p, visible):  # gathered already; the run died before deleting it
                    os.remove(p.path)
                else:
                    waiting.append((p, self._count(p.path)))
            fsync_dir(self._dir(folder, pending=True))
            self._pending[folder] = waiting
            last = max([last] + [p.last for p in visible] + [p.last for p, _ in waiting])
        self._next = last + 1
        self.opened = True
        return self

    def close(self) -> None:
        """Gather the pending batches into visible parts and release the lock."""
        if self.opened:
            for folder in FOLDERS.values():
                self._gather(folder)
            self.opened = False
        self._unlock()

    def __enter__(self) -> "ShardStore":
        return self.open() if not self.opened else self

    def __exit__(self, exc_type, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # a crash or an interrupt: what is on disk is consistent; the next start gathers it
            self.opened = False
            self._unlock()

    # -- locking

    def _lock(self) -> None:
        locks = os.path.join(self.out_dir, ".locks")
        os.makedirs(locks, exist_ok=True)
        path = os.path.join(locks, f"shard-{self.shard_index:05d}-of-{self.num_shards:05d}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock, one process per shard by contract
            self._lock_fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ShardLockedError(
                f"shard {self.shard_index} of {self.num_shards} of {self.out_dir} is being written by another process"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock (the kernel does it on SIGKILL)
            self._lock_fd = None

    # -- parts

    def _own_parts(self, directory: str) -> list[Part]:
        parts = [Part.parse(os.path.join(directory, n)) for n in os.listdir(directory) if n.startswith(self._prefix)]
        return sorted(p for p in parts if p is not None)

    def _count(self, path: str) -> int:
        return _COUNTERS[self.format](path)

    def _atomic(self, directory: str, name: str, fill) -> str:
        tmp = os.path.join(self.tmp_dir, f"{name}.{os.getpid()}.tmp")
        target = os.path.join(directory, name)
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_dir(directory)
        return target

    def write(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Write one batch of records (each goes to ``data`` or ``failed`` by its ``parse_status``); durable on return."""
        if not self.opened:
            raise RuntimeError("open the store first (use it as a context manager)")
        by_folder: dict[str, list[Mapping[str, Any]]] = {}
        for r in records:
            by_folder.setdefault(FOLDERS[r["parse_status"]], []).append(r)
        if not by_folder:
            return []
        seq = self._next
        self._next += 1
        written = []
        for folder, rows in by_folder.items():
            name = part_name(self.shard_index, self.num_shards, seq, seq, self.suffix)
            path = self._atomic(self._dir(folder, pending=True), name,
                                lambda f, rows=rows: _WRITERS[self.format](rows, f))
            written.append(path)
            waiting = self._pending.setdefault(folder, [])
            waiting.append((Part.parse(path), len(rows)))
            if sum(n for _, n in waiting) >= self.records_per_file:
                self._gather(folder)
        return written

    def _gather(self, folder: str) -> Optional[str]:
        """Make the pending batches of ``folder`` one visible part; then delete them."""
        waiting = [p for p, _ in self._pending.get(folder) or []]
        if not waiting:
            return None
        name = part_name(self.shard_index, self.num_shards, waiting[0].first, waiting[-1].last, self.suffix)
        visible_dir = self._dir(folder)
        if len(waiting) == 1:
            target = os.path.join(visible_dir, name)
            os.replace(waiting[0].path, target)
            fsync_dir(visible_dir)
        else:
            target = self._atomic(visible_dir, name, lambda f: _MERGERS[self.format]([p.path for p in waiting], f))
            for p in waiting:
                os.remove(p.path)
        fsync_dir(self._dir(folder, pending=True))
        self._pending[folder] = []
        return target


def write_json_atomic(path: str, data: Any) -> None:
    """Write a JSON file through a temporary file and a rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
    """Write a text file through a temporary file and a rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def dataset_card(output_format: str, model: str) -> str:
    """A README whose YAML lets plain ``datasets.load_dataset(out)`` read ``data/`` (config ``failed``: the refusals)."""
    suffix = FORMATS[output_format]
    return (
        "---\nconfigs:\n"
        f"- config_name: default\n  data_files:\n  - split: train\n    path: {FOLDERS['ok']}/*{suffix}\n"
        f"- config_name: failed\n  data_files:\n  - split: train\n    path: {FOLDERS['failed']}/*{suffix}\n"
        "---\n\n"
        "# Regenerated samples\n\n"
        f"Made with `llava_zh.regenerate` and the model `{model}`. `{FOLDERS['ok']}/` holds the samples whose reply\n"
        f"parsed, `{FOLDERS['failed']}/` the refused replies with their reason; `regen_config.json` the settings.\n"
        "Each record has the sample's fields (id, task, language, source, image, conversations) plus raw_reply,\n"
        "parse_status, parse_reason, parse_message, model, backend, prompt_id, prompt, generation and timing\n"
        "(schema: `schemas/regen_record.schema.json` of llava-zh).\n"
    )
