"""From raw records to validated Arrow tables: the work the builder's ``_generate_tables`` delegates.

For every record of every annotation file: parse -> normalise the format -> validate -> find the image
bytes -> check the image header -> decide the task -> a row. A record that breaks a rule is handled by
the bad-sample policy (``raise`` / ``skip`` / ``quarantine``); each file leaves a summary of its counts
(and, under ``quarantine``, a JSONL part of its refused records) in the reports folder, written
atomically when the file is done, so ``read == loaded + refused + other_task`` can always be checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import pyarrow as pa

from .errors import BadSampleError
from .images import ImageBatch, ImageStore
from .readers import AnnotationFileError, RawRecord, RecordBlock, read_blocks
from .records import to_llava_record
from .report import LoadReport
from .roles import to_llava_role
from .schema import DATASET_NAME, DEFAULT_LANGUAGE, FEATURES, HUMAN, IMAGE_PLACEHOLDER, TASKS
from .tasks import infer_task, task_from_filename, task_from_shape
from .checks import (
    PY_WHITESPACE,
    ROLE_LLAVA,
    Problem,
    TurnLayout,
    check_image_bytes,
    check_record,
    flag_table,
    images_known_good,
)

logger = logging.getLogger(__name__)

POLICIES: tuple[str, ...] = ("raise", "skip", "quarantine")
#: image bytes read into one buffer, and so into one output table, at most (a piece may pass it by its
#: last image). Why this small: a buffer that fits the CPU's last-level cache is filled by the kernel
#: at the speed of a plain read, and is still in the cache when the table is written out; 46 MB buffers
#: (1,000 photos) were filled at less than half that speed (20,000 JPEGs from a zip: 104-135 ms against
#: 50 ms with 11 MB buffers). It also keeps an Arrow ``binary`` array far below its 2 GiB limit.
MAX_BATCH_BYTES = 8 << 20
ARROW_SCHEMA = FEATURES.arrow_schema


def read_pieces(sizes) -> list[int]:
    """Bounds of the pieces a batch of images with these byte sizes is read in: a new piece where an
    image starts past a multiple of ``MAX_BATCH_BYTES`` (so a piece holds at most that plus one image).

    Example:
        >>> read_pieces([5 << 20, 5 << 20, 5 << 20, 1])
        [0, 2, 4]
    """
    import numpy as np

    sizes = np.asarray(sizes, dtype=np.int64)
    starts = np.cumsum(sizes) - sizes
    return [0, *(np.flatnonzero(np.diff(starts // MAX_BATCH_BYTES)) + 1).tolist(), len(sizes)]


@dataclass(frozen=True)
class PrepareOptions:
    """What shapes the rows: the task kept (None for all), defaults for language/source, the policy."""

    task: Optional[str] = None
    language: str = DEFAULT_LANGUAGE
    source_name: str = DATASET_NAME
    text_only: bool = False
    on_bad_sample: str = "raise"
    batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.on_bad_sample not in POLICIES:
            raise ValueError(f"on_bad_sample must be one of {list(POLICIES)}, got {self.on_bad_sample!r}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)} or None, got {self.task!r}")


def _jsonable(value: Any) -> Any:
    """The raw record as JSON can hold it: image bytes become a short description."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def part_name(order: int, path: str) -> str:
    return f"{order:05d}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]}"


class FileOutcome:
    """Counts and refusals of one annotation file, written to the reports folder when the file is done."""

    def __init__(self, path: str, order: int, split: str, policy: str, reports_dir: Optional[str]) -> None:
        self.path, self.policy = path, policy
        self.report = LoadReport(files=[path])
        self._dir = os.path.join(reports_dir, split) if reports_dir else None
        self._stem = part_name(order, path)
        self._quarantine = None
        if self._dir:
            os.makedirs(self._dir, exist_ok=True)
            if policy == "quarantine":
                self._quarantine = open(self._tmp(".quarantine.jsonl"), "w", encoding="utf-8")

    def _tmp(self, suffix: str) -> str:
        return os.path.join(self._dir, f"{self._stem}{suffix}.tmp.{os.getpid()}")

    def refuse(self, raw: RawRecord, sample_id: Optional[str], problem: Problem) -> None:
        if self.policy == "raise":
            raise BadSampleError(self.path, raw.line, raw.index, sample_id, problem.rule, problem.message)
        self.report.add_refusal(problem.rule, sample_id)
        if self._quarantine is not None:
            line = {
                "file": self.path,
                "line": raw.line,
                "index": raw.index,
                "id": sample_id,
                "rule": problem.rule,
                "message": problem.message,
                "record": _jsonable(raw.value),
            }
            self._quarantine.write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if not self._dir:
            return
        if self._quarantine is not None:
            self._quarantine.flush()
            os.fsync(self._quarantine.fileno())
            self._quarantine.close()
            os.replace(self._tmp(".quarantine.jsonl"), os.path.join(self._dir, f"{self._stem}.quarantine.jsonl"))
        tmp = self._tmp(".summary.json")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.report.to_json())
        os.replace(tmp, os.path.join(self._dir, f"{self._stem}.summary.json"))


def _sample_id(value: Any) -> Optional[str]:
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _strip_placeholder(text: str) -> str:
    for form in (IMAGE_PLACEHOLDER + "\n", "\n" + IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER):
        text = text.replace(form, "")
    return text.strip()


def _split_embedded_image(record: dict[str, Any]) -> tuple[dict[str, Any], Optional[bytes]]:
    """Parquet rows carry ``image: {bytes, path}``; keep the path in the record and return the bytes."""
    image = record.get("image")
    if not isinstance(image, dict):
        return record, None
    record = dict(record)
    data, path = image.get("bytes"), image.get("path")
    if data is None and not path:
        record.pop("image")  # a null image: text-only sample
        return record, None
    record["image"] = path or f"{record.get('id', 'image')}"
    return record, data


class RowBuilder:
    """Turns the raw records of one file into validated rows, handing refusals to a ``FileOutcome``."""

    def __init__(self, options: PrepareOptions, images: ImageStore) -> None:
        self.options = options
        self.images = images

    def row(self, raw: RawRecord, file_task: Optional[str], outcome: FileOutcome) -> Optional[dict[str, Any]]:
        report = outcome.report
        report.read += 1
        sample_id = _sample_id(raw.value)
        if raw.error is not None:
            outcome.refuse(raw, sample_id, Problem("invalid_json", raw.error))
            return None
        try:
            record = to_llava_record(raw.value)
        except ValueError as e:
            outcome.refuse(raw, sample_id, Problem("schema", str(e)))
            return None
        is_dict = isinstance(record, dict)
        record, embedded = _split_embedded_image(record) if is_dict else (record, None)
        sample_id = _sample_id(record) or sample_id
        # a record whose task is known up front and is not this config's is passed over unchecked
        early_task = record.get("task") if is_dict else None
        early_task = early_task if early_task in TASKS else file_task
        if self.options.task and early_task and early_task != self.options.task:
            report.other_task += 1
            return None
        problem = check_record(record, text_only=self.options.text_only)
        if problem:
            outcome.refuse(raw, sample_id, problem)
            return None
        task = infer_task(record, file_task)
        if self.options.task and task != self.options.task:
            report.other_task += 1
            return None
        image = None
        if "image" in record and not self.options.text_only:
            path = record["image"]
            data = embedded if embedded is not None else self.images.get(path)
            if data is None:
                outcome.refuse(raw, sample_id, Problem(
                    "missing_image", f"image {path!r} not found in {self.images.describe()}"))
                return None
            problem = check_image_bytes(data, path)
            if problem:
                outcome.refuse(raw, sample_id, problem)
                return None
            image = {"bytes": data, "path": path}
        conversations = [
            {
                "from": to_llava_role(turn["from"]),
                "value": _strip_placeholder(turn["value"]) if self.options.text_only else turn["value"],
            }
            for turn in record["conversations"]
        ]
        report.loaded += 1
        return {
            "id": record["id"],
            "task": task,
            "language": record.get("language") or self.options.language,
            "source": record.get("source") or self.options.source_name,
            "image": image,
            "conversations": conversations,
        }


_IMAGE_TYPE = ARROW_SCHEMA.field("image").type


def _image_array(images: list[Optional[dict[str, Any]]]) -> pa.Array:
    """The image struct column built from its two children (much faster than from a list of dicts)."""
    if not any(images):
        return pa.nulls(len(images), type=_IMAGE_TYPE)
    present = [im is not None for im in images]
    data = pa.array([im["bytes"] if im is not None else None for im in images], type=pa.binary())
    paths = pa.array([im["path"] if im is not None else None for im in images], type=pa.string())
    mask = None if all(present) else pa.array([not p for p in present], type=pa.bool_())
    return pa.StructArray.from_arrays([data, paths], fields=list(_IMAGE_TYPE), mask=mask)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    # column by column: about 3x faster than pa.Table.from_pylist on these rows
    columns = [
        _image_array([row["image"] for row in rows])
        if name == "image"
        else pa.array([row[name] for row in rows], type=ARROW_SCHEMA.field(name).type)
        for name in ARROW_SCHEMA.names
    ]
    return pa.Table.from_arrays(columns, schema=ARROW_SCHEMA)


class BlockBuilder:
    """Turns a ``RecordBlock`` (many records parsed together by Arrow) into validated tables.

    The rules run over the whole block (``flag_table``); rows they may not accept go one by one through
    ``RowBuilder.row``, which names the rule, so the outcome (rows, counts, refusals, quarantine lines)
    is the one the per-record path gives. Unmarked rows become output columns without a Python object
    per turn; only their image bytes are fetched row by row.
    """

    def __init__(self, options: PrepareOptions, images: ImageStore, rows: RowBuilder) -> None:
        self.options = options
        self.images = images
        self.rows = rows
        self._plain_cache: dict[tuple, bool] = {}

    def _is_plain_llava(self, table: pa.Table) -> bool:
        """True when no column of the block makes its records another on-disk format than LLaVA (the
        block then needs no per-record conversion); otherwise the block goes the per-record way."""
        from .readers import input_schema
        from .records import RECORD_FORMATS, detect_format, llava_record

        core = set(input_schema().names)
        extra = tuple((f.name, str(f.type)) for f in table.schema if f.name not in core)
        known = self._plain_cache.get(extra)
        if known is not None:
            return known
        plain = RECORD_FORMATS.get("llava") is llava_record
        probe = {"id": "x", "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}
        for name, _ in extra if plain else ():
            column = table[name].drop_null()
            sample = column[0].as_py() if len(column) else None
            if detect_format({**probe, name: sample}) != "llava":
                plain = False
        self._plain_cache[extra] = plain
        return plain

    def tables(self, block: RecordBlock, file_task: Optional[str], outcome: "FileOutcome") -> Iterator[pa.Table]:
        import numpy as np
        import pyarrow.compute as pc

        options, report, table = self.options, outcome.report, block.table
        n = table.num_rows
        if not self._is_plain_llava(table):
            yield from self._slow_tables(range(n), block, file_task, outcome)
            return
        # a record whose task is known up front and is not this config's is passed over unchecked
        other = np.zeros(n, dtype=bool)
        if options.task:
            task_column = table["task"]
            named = _as_numpy(pc.is_in(task_column, value_set=pa.array(TASKS)))
            not_wanted = _as_numpy(pc.not_equal(task_column, options.task))
            if file_task is None:
                other = named & not_wanted
            else:
                other = np.where(named, not_wanted, file_task != options.task)
        layout = TurnLayout(table["conversations"])
        flagged = flag_table(table, text_only=options.text_only, mentions_null=block.mentions_null, layout=layout)
        slow = flagged & ~other
        fast = ~flagged & ~other
        tasks = self._tasks(table, fast, file_task, layout)
        if options.task:
            later_other = fast & (tasks != options.task)
            other |= later_other
            fast &= ~later_other
        report.read += int(other.sum()) + int(fast.sum())
        report.other_task += int(other.sum())

        fast_rows = np.flatnonzero(fast)
        columns = self._fast_columns(table, fast_rows, tasks, layout)
        paths = None if options.text_only else table["image"].take(pa.array(fast_rows)).to_pylist()
        step = options.batch_size
        for a in range(0, n, step):
            b = min(a + step, n)
            lo, hi = np.searchsorted(fast_rows, [a, b])
            redo = np.flatnonzero(slow[a:b]) + a
            if not len(redo) and (paths is None or not any(paths[lo:hi])):  # nothing to look at row by row
                report.loaded += int(hi - lo)
                if hi > lo:
                    yield _with_image_column(columns.slice(lo, hi - lo), pa.nulls(int(hi - lo), type=_IMAGE_TYPE))
                continue
            yield from self._slice(columns, fast_rows, paths, a, b, lo, hi, redo, block, file_task, outcome)

    def _slice(self, columns, fast_rows, paths, a, b, lo, hi, redo, block, file_task, outcome) -> Iterator[pa.Table]:
        """Rows ``a:b`` of a block: fast rows ``lo:hi`` (positions in ``columns``) get their images, rows
        ``redo`` go through the exact checks, all in file order so the first refusal is the first bad row.
        The images are read in pieces (``read_pieces``), each piece a table of its own; the rows ``redo``
        go with the piece they fall in."""
        if paths is None:
            yield from self._piece(columns, fast_rows, None, lo, hi, redo, block, file_task, outcome, None)
            return
        located = self.images.locate_many(paths[lo:hi])
        bounds = read_pieces(located.sizes)
        for p0, p1 in zip(bounds, bounds[1:]):
            row_a = a if p0 == 0 else int(fast_rows[lo + p0])
            row_b = b if p1 == hi - lo else int(fast_rows[lo + p1])
            part = redo[(redo >= row_a) & (redo < row_b)] if len(bounds) > 2 else redo
            located_part = located if len(bounds) == 2 else located.slice(p0, p1)
            yield from self._piece(columns, fast_rows, paths, lo + p0, lo + p1, part, block, file_task, outcome, located_part)

    def _piece(self, columns, fast_rows, paths, lo, hi, redo, block, file_task, outcome, located) -> Iterator[pa.Table]:
        """One table: fast rows ``lo:hi`` with their images read from ``located`` (None without images),
        and the rows ``redo`` checked one by one, in file order."""
        import numpy as np

        batch = known_good = None
        if paths is not None:
            listed = located.listed
            batch = ImageBatch.read(located, self.images.pool)
            known_good = images_known_good(batch.data, batch.offsets, batch.found)
            no_image = np.array([p is None for p in paths[lo:hi]], dtype=bool)
            known_good |= no_image
        rows, where = [], []
        if not len(redo) and (known_good is None or known_good.all()):  # every row stands: no row-by-row look
            kept, todo = list(range(lo, hi)), []
        else:
            kept = []
            todo = sorted([(int(fast_rows[k]), k) for k in range(lo, hi)] + [(int(i), -1) for i in redo])
        for i, k in todo:
            if k < 0:
                row = self.rows.row(block.raw(i), file_task, outcome)
                if row is not None:
                    rows.append(row)
                    where.append(i)
                continue
            path = paths[k] if paths is not None else None
            if path is not None and not known_good[k - lo]:
                data = batch.get(k - lo)
                if data is not None:
                    problem = check_image_bytes(data, path)
                elif listed[k - lo]:
                    problem = Problem("missing_image", f"image {path!r} is listed in {self.images.describe()} but its "
                                      "bytes could not be read (the archive is damaged or changed since it was indexed)")
                else:
                    problem = Problem("missing_image", f"image {path!r} not found in {self.images.describe()}")
                if problem:
                    raw = block.raw(i)  # already counted as read
                    outcome.refuse(raw, _sample_id(raw.value), problem)
                    continue
            kept.append(k)
        outcome.report.loaded += len(kept)
        out = None
        if kept:
            sub = columns.slice(lo, hi - lo) if len(kept) == hi - lo else columns.take(pa.array(kept))
            if batch is None:
                image = pa.nulls(len(kept), type=_IMAGE_TYPE)
            else:
                at = np.asarray(kept, dtype=np.int64) - lo
                kept_paths = [paths[k] for k in kept]
                present = np.array([p is not None for p in kept_paths], dtype=bool)
                image = pa.StructArray.from_arrays(
                    [batch.array(at), pa.array(kept_paths, type=pa.string())],
                    fields=list(_IMAGE_TYPE),
                    mask=None if present.all() else pa.array(~present),
                )
            out = _with_image_column(sub, image)
        if rows:  # rows the exact checks accepted go back to their place among the others
            slow_table = _table(rows)
            if out is None:
                out = slow_table
            else:
                places = np.concatenate([fast_rows[kept], np.asarray(where, dtype=np.int64)])
                out = pa.concat_tables([out, slow_table]).take(pa.array(np.argsort(places, kind="stable")))
        if out is not None:
            yield out

    def _slow_tables(self, indices, block, file_task, outcome) -> Iterator[pa.Table]:
        rows = []
        for i in indices:
            row = self.rows.row(block.raw(i), file_task, outcome)
            if row is not None:
                rows.append(row)
                if len(rows) >= self.options.batch_size:
                    yield _table(rows)
                    rows = []
        if rows:
            yield _table(rows)

    def _tasks(self, table: pa.Table, fast, file_task: Optional[str], layout: TurnLayout):
        """``infer_task`` for every row: its own field, else the file's name, else its shape."""
        import numpy as np

        tasks = table["task"].to_numpy(zero_copy_only=False).astype(object)
        missing = np.flatnonzero(fast & (tasks == None))  # noqa: E711 (elementwise)
        if len(missing) == 0:
            return tasks
        if file_task is not None:
            tasks[missing] = file_task
            return tasks
        humans = np.bincount(layout.parents[layout.role_class == 0], minlength=table.num_rows)[missing]
        first = layout.values.take(pa.array(layout.starts[missing] + layout.system_first[missing])).to_pylist()
        for k, i in enumerate(missing.tolist()):
            # the question of a single round is all ``task_from_shape`` looks at besides the count
            questions = [{"from": HUMAN, "value": first[k]}] * int(humans[k])
            tasks[i] = task_from_shape(questions)
        return tasks

    def _fast_columns(self, table: pa.Table, keep, tasks, layout: TurnLayout) -> pa.Table:
        """Every output column but the image of rows ``keep`` (all valid): roles in LLaVA's spelling,
        defaults filled in, placeholders dropped under ``text_only``."""
        import numpy as np
        import pyarrow.compute as pc

        options = self.options
        if len(keep) == table.num_rows:  # the usual case: no copy
            rows = table
        else:
            rows = table.take(pa.array(keep))
            layout = TurnLayout(rows["conversations"])
        roles = pc.take(pa.array(ROLE_LLAVA), layout.spelling)
        values = layout.values
        if options.text_only:
            for form in (IMAGE_PLACEHOLDER + "\n", "\n" + IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER):
                values = pc.replace_substring(values, form, "")
            values = pc.utf8_trim(values, characters=PY_WHITESPACE)
        offsets = np.zeros(len(keep) + 1, dtype=np.int32)
        np.cumsum(layout.lengths, out=offsets[1:])
        turns = pa.StructArray.from_arrays([roles, values], fields=list(_TURN_TYPE))
        conversations = pa.ListArray.from_arrays(pa.array(offsets), turns, type=_CONVERSATIONS_TYPE)
        return pa.table(
            {
                "id": rows["id"],
                "task": pa.array(tasks[keep].tolist(), type=pa.string()),
                "language": pc.fill_null(rows["language"], options.language),
                "source": pc.fill_null(rows["source"], options.source_name),
                "conversations": conversations,
            }
        )


def _with_image_column(columns: pa.Table, image: pa.Array) -> pa.Table:
    arrays = {name: columns[name] for name in columns.column_names}
    arrays["image"] = image
    return pa.Table.from_arrays([arrays[name] for name in ARROW_SCHEMA.names], schema=ARROW_SCHEMA)


def _as_numpy(mask):
    import pyarrow.compute as pc

    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


_CONVERSATIONS_TYPE = ARROW_SCHEMA.field("conversations").type
_TURN_TYPE = _CONVERSATIONS_TYPE.value_type


@contextlib.contextmanager
def arrow_threads(enabled: bool) -> Iterator[None]:
    """Inside, Arrow's own thread pool (JSON parsing) has one thread unless ``enabled``; put back after.

    Example:
        >>> with arrow_threads(False):
        ...     import pyarrow as pa; pa.cpu_count()
        1
    """
    if enabled:
        yield
        return
    before = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        yield
    finally:
        pa.set_cpu_count(before)


def _closing(items: Iterable[Any]) -> Iterator[Any]:
    """``items`` as a generator (which has the ``close`` that ``prefetch``'s answer has)."""
    yield from items


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """``items`` produced by a background thread, ``depth`` ahead of the consumer.

    Reading and parsing a chunk (file I/O, ``pyarrow.json``) release the GIL, so on two cores the next
    chunk is parsed while this one is validated and written. Errors are raised in the consumer, in order.
    """
    import queue
    import threading

    done = object()
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        box.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((done, None))
        except BaseException as e:  # handed to the consumer
            box.put((done, e))
        finally:
            close = getattr(source, "close", None)
            if close is not None:  # a generator stopped early runs its own clean-up here, in its thread
                close()

    worker = threading.Thread(target=produce, name="llava-zh-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = box.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                box.get_nowait()
            except queue.Empty:
                worker.join(0.05)


def generate_tables(
    files: Sequence[tuple[int, str]],
    split: str,
    options: PrepareOptions,
    image_paths: Sequence[str],
    index_dir: Optional[str],
    reports_dir: Optional[str],
    reader: Optional[Callable[[str], Iterator[Union[RawRecord, RecordBlock]]]] = None,
    threads: bool = True,
) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(key, table)`` for every batch of valid rows of ``files`` (pairs of order and path).

    ``reader`` (default ``read_blocks``) gives a file's records in order, as ``RawRecord``s or as
    ``RecordBlock``s; both ways give the same rows, counts and refusals. ``threads=False`` does all the
    work in the calling thread (for one of several processes sharing the cores: see the builder).
    """
    tables = _generate_tables(files, split, options, image_paths, index_dir, reports_dir, reader or read_blocks, threads)
    if not image_paths or not threads:
        yield from tables
        return
    # With images, reading them (os.preadv) and writing the previous table (datasets' ArrowWriter) both
    # release the GIL: a thread makes the tables while the consumer writes them.
    items = prefetch(tables, depth=1)
    try:
        yield from items
    finally:
        items.close()


def _generate_tables(files, split, options, image_paths, index_dir, reports_dir, read, threads=True) -> Iterator[tuple[str, pa.Table]]:
    with ImageStore(image_paths, index_dir=index_dir) as images:
        builder = RowBuilder(options, images)
        blocks = BlockBuilder(options, images, builder)
        for order, path in files:
            outcome = FileOutcome(path, order, split, options.on_bad_sample, reports_dir)
            file_task = task_from_filename(path)
            rows: list[dict[str, Any]] = []
            batch = 0
            items = None
            try:
                items = prefetch(read(path)) if threads else _closing(read(path))
                for item in items:
                    if isinstance(item, RecordBlock):
                        if rows:
                            yield f"{order}_{batch}", _table(rows)
                            rows, batch = [], batch + 1
                        for table in blocks.tables(item, file_task, outcome):
                            yield f"{order}_{batch}", table
                            batch += 1
                        continue
                    row = builder.row(item, file_task, outcome)
                    if row is not None:
                        rows.append(row)
                        if len(rows) >= options.batch_size:
                            yield f"{order}_{batch}", _table(rows)
                            rows, batch = [], batch + 1
            except AnnotationFileError as e:
                raise BadSampleError(path, None, outcome.report.read, None, "invalid_json", str(e)) from None
            finally:
                if items is not None:
                    items.close()  # stops the reading thread at once when a bad sample ends the preparation
            if rows:
                yield f"{order}_{batch}", _table(rows)
            outcome.close()
            if outcome.report.total_refused:
                logger.info(
                    "%s: refused %d of %d records (%s)",
                    path,
                    outcome.report.total_refused,
                    outcome.report.read,
                    ", ".join(f"{k}: {v}" for k, v in sorted(outcome.report.refused.items())),
                )


def collect_reports(reports_dir: str, split: str, quarantine_path: Optional[str] = None) -> LoadReport:
    """Add up the per-file summaries of a split and merge the quarantine parts into one JSONL file."""
    folder = os.path.join(reports_dir, split)
    if not os.path.isdir(folder):
        return LoadReport()
    names = sorted(os.listdir(folder))
    report = LoadReport.combine(
        LoadReport.from_dict(json.load(open(os.path.join(folder, n), encoding="utf-8")))
        for n in names
        if n.endswith(".summary.json")
    )
    parts = [os.path.join(folder, n) for n in names if n.endswith(".quarantine.jsonl")]
    if parts:
        target = quarantine_path or os.path.join(reports_dir, f"quarantine-{split}.jsonl")
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        tmp = f"{target}.tmp.{os.getpid()}"
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    out.write(f.read())
        os.replace(tmp, target)
        report.quarantine_path = os.path.abspath(target)
    return report
