"""Read raw records out of annotation files: JSON arrays, JSON Lines and parquet, in bounded memory.

Each reader yields ``RawRecord(index, line, value, error)``: the position of the record in its file (0-based
index, 1-based line where known), the parsed value, or, for text that is not valid JSON, ``error`` with
the parser's message and ``value`` holding the raw text. A malformed record in the middle of a JSON array
is reported and the reader goes on with the next one; nothing is dropped silently.

Files are read in chunks: a JSON array is decoded element by element from a sliding window, so memory
stays flat whatever the file's size. ``read_blocks`` is the fast way in used by the builder: it yields
``RecordBlock``s, many records parsed at once by ``pyarrow.json`` into an Arrow table, and falls back to
plain ``RawRecord``s (the exact per-record reading above) for any chunk Arrow cannot read the same way.

Example:
    >>> [r.value["id"] for r in read_records("a.jsonl")]           # doctest: +SKIP
    ['1', '2']
"""

from __future__ import annotations

import codecs
import functools
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Union

ANNOTATION_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".parquet")

#: bytes read at a time; a chunk of JSON Lines becomes one ``RecordBlock``
CHUNK_BYTES = 4 << 20

_BOM = "\ufeff"
_BOM_BYTES = codecs.BOM_UTF8
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_NEXT_RECORD = re.compile(r"\}\s*,\s*(?=\{)")
# the end of a window that may be the start of a ``_NEXT_RECORD`` match completed by the next chunk
_PARTIAL_NEXT = re.compile(r"\}\s*(?:,\s*)?\Z")
# a decoding error this close to the end of the window may only mean that the element goes on
_TAIL_MARGIN = 64


@dataclass(frozen=True, slots=True)
class RawRecord:
    index: int
    line: Optional[int]
    value: Any
    error: Optional[str] = None


class AnnotationFileError(ValueError):
    """A file that is not an annotation file at all (for example a JSON object instead of an array)."""


def _undecodable(path: str, offset: int) -> AnnotationFileError:
    return AnnotationFileError(f"{path}: expected UTF-8 text, got undecodable bytes at offset {offset}")


# --- JSON Lines -----------------------------------------------------------------------------------

def _jsonl_record(raw: bytes, lineno: int, index: int) -> Optional[RawRecord]:
    """One line (with its ``\\n``) as the reader reports it; None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RawRecord(index, lineno, raw.decode("utf-8", "replace"), f"not UTF-8 at byte {e.start}")
    if lineno == 1 and text.startswith(_BOM):
        text = text[1:]
    if not text.strip():
        return None
    text = text.rstrip("\r\n")  # so that an error at the end of the line gets that line's column
    try:
        return RawRecord(index, lineno, json.loads(text))
    except json.JSONDecodeError as e:
        return RawRecord(index, lineno, text, f"{e.msg} at column {e.colno}")


def _jsonl_chunks(path: str, chunk_bytes: int) -> Iterator[bytes]:
    """The file in pieces of about ``chunk_bytes`` that end at a line end (the last one may not)."""
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk_bytes)
            if not data:
                return
            if not data.endswith(b"\n"):
                data += f.readline()
            yield data


def _chunk_lines(chunk: bytes) -> list[bytes]:
    lines = chunk.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _jsonl_chunk_records(lines: list[bytes], ends_with_newline: bool, first_line: int, first_index: int) -> list[RawRecord]:
    out = []
    index = first_index
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        rec = _jsonl_record(raw + b"\n" if (i < last or ends_with_newline) else raw, first_line + i, index)
        if rec is not None:
            out.append(rec)
            index += 1
    return out


def read_jsonl(path: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[RawRecord]:
    """One record per non-blank line; LF or CRLF; a BOM on the first line is ignored."""
    line, index = 1, 0
    for data in _jsonl_chunks(path, chunk_bytes):
        lines = _chunk_lines(data)
        records = _jsonl_chunk_records(lines, data.endswith(b"\n"), line, index)
        yield from records
        line += len(lines)
        index += len(records)


# --- JSON arrays, streamed ------------------------------------------------------------------------

class _Window:
    """Decoded text of a file read chunk by chunk. ``text[0]`` sits on file line ``line0``, ``col0``
    characters after the start of that line, so errors keep the file's own line and column."""

    def __init__(self, f, path: str, chunk_bytes: int) -> None:
        self.f, self.path, self.chunk_bytes = f, path, chunk_bytes
        self.text = ""
        self.eof = False
        self.line0, self.col0 = 1, 0
        self._pending = b""
        self._offset = 0  # file offset of the first byte of ``_pending``
        self._started = False

    def fill(self) -> None:
        """Append the next chunk (at least as much as the window holds, so big elements cost O(n))."""
        if self.eof:
            return
        data = self.f.read(max(self.chunk_bytes, len(self.text)))
        final = not data
        raw = self._pending + data if self._pending else data
        try:
            text, used = codecs.utf_8_decode(raw, "strict", final)
        except UnicodeDecodeError as e:
            raise _undecodable(self.path, self._offset + e.start) from None
        self._offset += used
        self._pending = raw[used:]
        if text and not self._started:
            self._started = True
            if text.startswith(_BOM):
                text = text[1:]
        self.text = self.text + text if self.text else text
        self.eof = final

    def drop(self, n: int) -> None:
        """Forget ``text[:n]`` (already read), keeping line and column bookkeeping."""
        newlines = self.text.count("\n", 0, n)
        if newlines:
            self.line0 += newlines
            self.col0 = n - (self.text.rfind("\n", 0, n) + 1)
        else:
            self.col0 += n
        self.text = self.text[n:]

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _WS.match(self.text, pos).end()
            if pos < len(self.text) or self.eof:
                return pos
            self.fill()

    def decode(self, pos: int) -> tuple[Any, int]:
        """``raw_decode`` at ``pos``, reading on while the element may only be cut by the window's end."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, pos)
            except json.JSONDecodeError as e:
                if not self.eof and (e.msg.startswith("Unterminated string") or e.pos >= len(self.text) - _TAIL_MARGIN):
                    self.fill()
                    continue
                raise
            if end >= len(self.text) and not self.eof:  # a number may go on in the next chunk
                self.fill()
                continue
            return value, end

    def resync(self, pos: int) -> Optional[int]:
        """End of the next ``}, {`` at or after ``pos`` (where the next record starts), None if none."""
        start = pos
        while True:
            found = _NEXT_RECORD.search(self.text, pos)
            if found:
                return found.end()
            if self.eof:
                return None
            tail = self.text.rfind("}", pos)
            pos = tail if tail >= 0 and _PARTIAL_NEXT.match(self.text, tail) else len(self.text)
            pos = max(pos, start)
            self.fill()

    def where(self, e: json.JSONDecodeError) -> str:
        newlines = self.text.count("\n", 0, e.pos)
        line = self.line0 + newlines
        column = e.colno if newlines else self.col0 + e.colno
        return f"{e.msg} (line {line}, column {column})"


@dataclass(frozen=True)
class _ArrayPosition:
    """A place between two elements of a file's top-level array: byte offset, line, column (characters
    after the line's start) and the index of the next element."""

    offset: int
    line: int
    column: int
    index: int


def _json_array_items(path: str, chunk_bytes: int, keep_text: bool,
                      start: Optional[_ArrayPosition] = None) -> Iterator[tuple[RawRecord, Optional[str]]]:
    """The elements of a JSON array with, when ``keep_text``, the exact text of each good element;
    from ``start`` (inside the array, between elements) when given, else from the file's beginning."""
    with open(path, "rb") as f:
        w = _Window(f, path, chunk_bytes)
        if start is None:
            pos = w.skip_ws(0)
            if pos >= len(w.text):
                return
            first = w.text[pos]
            if first != "[":
                kind = "a JSON object" if first == "{" else f"{first!r}"
                raise AnnotationFileError(f"{path}: expected a JSON array of records (or JSON Lines), got {kind} at the start")
            pos += 1
            line = w.line0 + w.text.count("\n", 0, pos)
            index = 0
        else:
            f.seek(start.offset)
            w._offset, w._started = start.offset, True
            w.line0, w.col0 = start.line, start.column
            w.fill()
            pos, line, index = 0, start.line, start.index
        counted_to = pos
        while True:
            pos = w.skip_ws(pos)
            line += w.text.count("\n", counted_to, pos)
            counted_to = pos
            if pos > w.chunk_bytes:  # keep the window small: what is behind ``pos`` is done
                w.drop(pos)
                pos = counted_to = 0
            if pos >= len(w.text):
                yield RawRecord(index, line, "", "the array is truncated: expected ']' at the end of the file"), None
                return
            if w.text[pos] == "]":
                return
            start = pos
            try:
                value, pos = w.decode(pos)
            except json.JSONDecodeError as e:
                end = w.resync(start)
                stop = end if end is not None else len(w.text)
                snippet = w.text[start:stop].rstrip().rstrip(",")
                yield RawRecord(index, line, snippet[:2000], w.where(e)), None
                index += 1
                if end is None:
                    return
                line += w.text.count("\n", counted_to, end)
                counted_to = pos = end
                continue
            yield RawRecord(index, line, value), (w.text[start:pos] if keep_text else None)
            index += 1
            pos = w.skip_ws(pos)
            if pos < len(w.text) and w.text[pos] == ",":
                pos += 1
            elif pos < len(w.text) and w.text[pos] == "]":
                return
            elif pos >= len(w.text):
                line += w.text.count("\n", counted_to, pos)
                yield RawRecord(index, line, "", "the array is truncated: expected ',' or ']' at the end of the file"), None
                return
            else:
                line += w.text.count("\n", counted_to, pos)
                counted_to = pos
                end = w.resync(pos)
                stop = end if end is not None else len(w.text)
                got = w.text[pos]
                yield RawRecord(index, line, w.text[pos:stop][:2000], f"expected ',' or ']' between records, got {got!r}"), None
                index += 1
                if end is None:
                    return
                line += w.text.count("\n", counted_to, end)
                counted_to = pos = end


def read_json_array(path: str, chunk_bytes: int = 1 << 20) -> Iterator[RawRecord]:
    """The elements of a top-level JSON array, one by one, with the line where each starts.

    The file is read ``chunk_bytes`` at a time and elements are decoded from a sliding window, so memory
    does not grow with the file. A malformed element is reported with its line and the next one is still
    read (the reader resynchronises on the next ``}, {``); a truncated file ends with one ``invalid_json``
    record for the unfinished element.
    """
    for record, _ in _json_array_items(path, chunk_bytes, keep_text=False):
        yield record


# --- parquet --------------------------------------------------------------------------------------

def read_parquet(path: str, batch_size: int = 1000) -> Iterator[RawRecord]:
    """Rows of a parquet file as dicts (an image column keeps its ``{bytes, path}`` struct)."""
    import pyarrow.parquet as pq

    index = 0
    with pq.ParquetFile(path) as pf:
        for batch in pf.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield RawRecord(index, None, row)
                index += 1


# --- Arrow blocks: many records parsed at once ----------------------------------------------------

@functools.lru_cache(maxsize=None)
def input_schema():
    """The columns a block always has, with the types a LLaVA record gives them; a record with a value of
    another type there (a number for ``id``, a string for ``conversations``...) sends its whole chunk
    down the per-record path, where the rules name what is wrong. Other fields are read as Arrow infers
    them."""
    import pyarrow as pa

    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    return pa.schema(
        [("id", pa.string()), ("image", pa.string()), ("task", pa.string()), ("language", pa.string()),
         ("source", pa.string()), ("conversations", pa.list_(turn))]
    )


@dataclass
class RecordBlock:
    """Consecutive records of one file parsed together into an Arrow table (one row per record).

    ``raw(i)`` gives row ``i`` as the per-record reader would (index, line, value), for the few rows the
    fast checks hand to the exact ones; ``mentions_null`` marks rows whose text holds a JSON ``null``
    (Arrow cannot tell an absent field from a null one), None when no row does.
    """

    table: Any
    raw: Callable[[int], RawRecord]
    mentions_null: Optional[list[bool]] = None

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def records(self) -> Iterator[RawRecord]:
        for i in range(self.table.num_rows):
            yield self.raw(i)


def _has_floating(type_) -> bool:
    import pyarrow.types as t

    if t.is_floating(type_):
        return True
    return any(_has_floating(type_.field(i).type) for i in range(type_.num_fields))


def _arrow_parse(payload: bytes, rows: int, newlines_in_values: bool):
    """``payload`` as a table of exactly ``rows`` records, or None when Arrow and Python's ``json`` might
    not read it the same way (a parse error, several objects on one line, bytes that are not UTF-8, or
    Inf/-NaN, which only Arrow accepts)."""
    import pyarrow as pa
    import pyarrow.json as paj

    parse = paj.ParseOptions(
        explicit_schema=input_schema(), unexpected_field_behavior="infer", newlines_in_values=newlines_in_values
    )
    block_size = max(len(payload) // 4, 1 << 20)
    while True:
        try:
            table = paj.read_json(io.BytesIO(payload), read_options=paj.ReadOptions(block_size=block_size), parse_options=parse)
            break
        except pa.ArrowInvalid as e:
            if "straddl" in str(e) and block_size < len(payload):
                block_size = len(payload) + 1
                continue
            return None
    if table.num_rows != rows:
        return None
    try:
        # Arrow does not check that strings are UTF-8; full validation does (and field names must decode)
        table.validate(full=True)
        floating = any(_has_floating(f.type) for f in table.schema)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if floating and (b"Inf" in payload or b"-NaN" in payload):
        return None
    return table


_ASCII_SPACE = b" \t\r\x0b\x0c"
_SPACE_CODES = list(_ASCII_SPACE)


def _null_positions(b):
    """Where the bytes ``null`` start in ``b`` (a ``uint8`` array)."""
    import numpy as np

    at = np.flatnonzero(b[:-3] == ord("n"))
    return at[(b[at + 1] == ord("u")) & (b[at + 2] == ord("l")) & (b[at + 3] == ord("l"))]


class _JsonlChunk:
    """The lines of a chunk, located with numpy in one pass (no Python object per line).

    ``starts``/``ends`` bound every line (without its ``\n``); ``rows`` are the lines that hold
    something, the records of the chunk in order.
    """

    def __init__(self, chunk: bytes, first_line: int, first_index: int) -> None:
        import numpy as np

        self.chunk, self.first_line, self.first_index = chunk, first_line, first_index
        self.newline_end = chunk.endswith(b"\n")
        self._bytes = np.frombuffer(chunk, dtype=np.uint8)
        newlines = np.flatnonzero(self._bytes == 10)
        self.ends = newlines if self.newline_end else np.append(newlines, len(chunk))
        self.starts = np.empty_like(self.ends)
        self.starts[:1] = 0
        self.starts[1:] = self.ends[:-1] + 1
        self.num_lines = len(self.ends)
        # a blank line is empty or opens with a space; only those few lines are looked at one by one
        first = self._bytes[np.minimum(self.starts, max(len(chunk) - 1, 0))] if len(chunk) else self.starts
        maybe = np.flatnonzero((self.ends == self.starts) | np.isin(first, _SPACE_CODES))
        blank = [int(i) for i in maybe if not chunk[self.starts[i]:self.ends[i]].strip(_ASCII_SPACE)]
        self.rows = np.delete(np.arange(self.num_lines), blank) if blank else np.arange(self.num_lines)
        self.num_rows = len(self.rows)

    def _line(self, n: int) -> bytes:
        end = self.ends[n] + 1 if (n < self.num_lines - 1 or self.newline_end) else self.ends[n]
        return self.chunk[self.starts[n]:end]

    def raw(self, row: int) -> RawRecord:
        n = int(self.rows[row])
        return _jsonl_record(self._line(n), self.first_line + n, self.first_index + row) or RawRecord(
            self.first_index + row, self.first_line + n, "", "blank line")  # pragma: no cover - rows are non-blank

    def mentions_null(self) -> Optional[list[bool]]:
        """Per row, whether its line holds ``null`` (None when no line does)."""
        import numpy as np

        at = _null_positions(self._bytes)
        if not len(at):
            return None
        lines = np.searchsorted(self.ends, at)  # the line each ``null`` sits on
        marks = np.zeros(self.num_lines, dtype=bool)
        marks[lines] = True
        return marks[self.rows].tolist()

    def records(self) -> list[RawRecord]:
        return _jsonl_chunk_records(_chunk_lines(self.chunk), self.newline_end, self.first_line, self.first_index)


def _jsonl_blocks(path: str, chunk_bytes: int) -> Iterator[Union[RecordBlock, RawRecord]]:
    line, index, first = 1, 0, True
    for data in _jsonl_chunks(path, chunk_bytes):
        chunk = _JsonlChunk(data, line, index)
        # Arrow skips a BOM at the start of its input; Python's json only at the start of the file
        mid_file_bom = not first and data.startswith(_BOM_BYTES)
        first = False
        table = None
        if chunk.num_rows and not mid_file_bom:
            table = _arrow_parse(data, chunk.num_rows, newlines_in_values=False)
        if table is None:
            records = chunk.records()
            yield from records
            index += len(records)
        else:
            yield RecordBlock(table, chunk.raw, chunk.mentions_null())
            index += chunk.num_rows
        line += chunk.num_lines


def _array_blocks(path: str, chunk_bytes: int, rows_per_block: int,
                  start: Optional[_ArrayPosition] = None) -> Iterator[Union[RecordBlock, RawRecord]]:
    """Blocks of a JSON array's records from its decoded elements (one ``raw_decode`` each): the exact
    path, which ``_fast_array_blocks`` hands over to at the first thing it does not read itself."""
    pending: list[tuple[RawRecord, str]] = []

    def flush() -> Iterator[Union[RecordBlock, RawRecord]]:
        records = [r for r, _ in pending]
        table = None
        try:
            payload = "\n".join(t for _, t in pending).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: Python reads them, Arrow cannot
            payload = None
        if payload is not None:
            table = _arrow_parse(payload, len(pending), newlines_in_values=True)
        if table is None:
            yield from records
        else:
            marks = [("null" in t) for _, t in pending]
            yield RecordBlock(table, records.__getitem__, marks if any(marks) else None)
        pending.clear()

    for record, text in _json_array_items(path, chunk_bytes, keep_text=True, start=start):
        if text is None or not text.startswith("{"):
            if pending:
                yield from flush()
            yield record
            continue
        pending.append((record, text))
        if len(pending) >= rows_per_block:
            yield from flush()
    if pending:
        yield from flush()


def _table(values: bytes):
    import numpy as np

    table = np.zeros(256, dtype=bool)
    table[list(values)] = True
    return table


_STRUCTURAL = _table(b"{}[],")
_JSON_SPACE = _table(b" \t\n\r")


def _array_separators(b) -> tuple[Any, int, Any, Any]:
    """In bytes that start between two elements of the top-level array (outside any string, one level
    deep): the positions of the commas that separate elements, of the ``]`` that closes the array (-1
    when not in ``b``, -2 when a ``}`` closes it), and of every bracket and comma outside strings before
    that, with its byte. Found for all bytes at once: quotes not escaped by an odd run of backslashes
    bound the strings, the brackets outside them give the depth."""
    import numpy as np

    quotes = np.flatnonzero(b == 0x22)
    escaped = quotes[(quotes > 0) & (b[np.maximum(quotes - 1, 0)] == 0x5C)]
    if len(escaped):  # rare: count each one's run of backslashes
        drop = []
        for q in escaped.tolist():
            k = q - 1
            while k >= 0 and b[k] == 0x5C:
                k -= 1
            if (q - 1 - k) % 2:
                drop.append(q)
        quotes = np.setdiff1d(quotes, np.asarray(drop, dtype=quotes.dtype), assume_unique=True)
    marks = np.flatnonzero(_STRUCTURAL[b])
    if len(quotes):
        marks = marks[np.searchsorted(quotes, marks, side="right") % 2 == 0]  # outside strings
    chars = b[marks]
    step = (chars == 0x7B).astype(np.int64) + (chars == 0x5B) - (chars == 0x7D) - (chars == 0x5D)
    depth = 1 + np.cumsum(step)  # after each mark
    closed = np.flatnonzero(depth <= 0)
    close = -1
    if len(closed):
        k = int(closed[0])
        close = int(marks[k]) if chars[k] == 0x5D else -2  # -2: a '}' closing the array: not ours to read
        marks, chars, depth = marks[:k], chars[:k], depth[:k]
    return marks[(chars == 0x2C) & (depth == 1)], close, marks, chars


def _advance(position: _ArrayPosition, passed: bytes, elements: int) -> _ArrayPosition:
    """``position`` moved over the bytes ``passed`` (which end between elements) and ``elements``."""
    newline = passed.rfind(b"\n")
    if newline < 0:
        column = position.column + len(passed.decode("utf-8", "replace"))
    else:
        column = len(passed[newline + 1:].decode("utf-8", "replace"))
    return _ArrayPosition(position.offset + len(passed), position.line + passed.count(b"\n"), column,
                          position.index + elements)


def _fast_array_blocks(path: str, chunk_bytes: int, rows_per_block: int) -> Iterator[Union[RecordBlock, RawRecord]]:
    """A JSON array's records in blocks, element boundaries found with numpy and each block parsed by
    Arrow: no Python object per element (``RecordBlock.raw`` decodes one when asked). At the first
    thing it does not read itself (an element that is not an object, a malformed or truncated one, text
    Arrow and Python's json would read differently) it hands the rest of the file to ``_array_blocks``,
    so records, lines and errors are always the exact path's."""
    import numpy as np

    with open(path, "rb") as f:
        data = f.read(chunk_bytes)
        at = len(_BOM_BYTES) if data.startswith(_BOM_BYTES) else 0
        while at < len(data) and data[at] in b" \t\r\n":
            at += 1
        if at >= len(data) or data[at] != 0x5B:  # empty, not an array, or only spaces in the first chunk
            yield from _array_blocks(path, chunk_bytes, rows_per_block)
            return
        at += 1
        head = data[:at].decode("utf-8", "replace").lstrip(_BOM)
        position = _ArrayPosition(at, 1 + head.count("\n"), len(head) - (head.rfind("\n") + 1), 0)
        buf, eof = data[at:], False
        while True:
            b = np.frombuffer(buf, dtype=np.uint8)
            seps, close, marks, chars = _array_separators(b)
            if close == -2 or (close == -1 and eof):  # not closed by ']' / truncated: the exact path says what
                yield from _array_blocks(path, chunk_bytes, rows_per_block, position)
                return
            ends = seps if close == -1 else np.append(seps, close)
            starts = np.concatenate([[0], seps + 1])[: len(ends)]
            if len(ends):
                if close >= 0 and _blank(b, int(starts[-1]), int(ends[-1])):  # "[ ]" or a trailing comma
                    ends, starts = ends[:-1], starts[:-1]
                first_at, last_at, good = _object_bounds(b, starts, ends, marks, chars)
                n = len(good) if good.all() else int(np.argmin(good))
                newlines = np.flatnonzero(b == 0x0A)
                nulls = _null_positions(b)
                for k in range(0, n, rows_per_block):
                    j = min(k + rows_per_block, n)
                    block = _fast_block(buf, first_at[k:j], last_at[k:j], seps, newlines, nulls,
                                        position.line, position.index + k)
                    if block is None:  # Arrow or UTF-8 would not read it as Python does: the exact path
                        yield from _array_blocks(path, chunk_bytes, rows_per_block,
                                                 _advance(position, buf[: int(starts[k])], k))
                        return
                    yield block
                if n < len(ends):
                    yield from _array_blocks(path, chunk_bytes, rows_per_block,
                                             _advance(position, buf[: int(starts[n])], n))
                    return
                if close >= 0:
                    return  # what follows the array is not read (as on the exact path)
                cut = int(seps[-1]) + 1
                position = _advance(position, buf[:cut], len(ends))
                buf = buf[cut:]
            more = f.read(max(chunk_bytes, len(buf)))
            eof = not more
            buf += more


def _blank(b, start: int, end: int) -> bool:
    return bool(_JSON_SPACE[b[start:end]].all())


def _object_bounds(b, starts, ends, marks, chars):
    """For each element region ``[starts[k], ends[k])``: where its ``{`` and its last ``}`` are, and
    whether it is one object with nothing but spaces around it (its first bracket is a ``{``, its last a
    ``}``, and the bytes outside them are spaces)."""
    import numpy as np

    if not len(starts):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    lo = np.searchsorted(marks, starts)
    hi = np.searchsorted(marks, ends) - 1
    inside = lo <= hi
    lo_c, hi_c = np.minimum(lo, max(len(marks) - 1, 0)), np.maximum(hi, 0)
    if not len(marks):
        return starts, ends, np.zeros(len(starts), dtype=bool)
    first_at, last_at = marks[lo_c], marks[hi_c]
    good = inside & (chars[lo_c] == 0x7B) & (chars[hi_c] == 0x7D)
    # the bytes before the '{' and after the '}' of each element: spaces only (a few bytes each)
    gaps_from = np.concatenate([starts, last_at + 1])
    gaps_len = np.maximum(np.concatenate([first_at - starts, ends - last_at - 1]), 0)
    gaps_len[np.concatenate([~good, ~good])] = 0
    if gaps_len.sum():
        owner = np.repeat(np.arange(len(gaps_len)), gaps_len)
        offsets = np.arange(int(gaps_len.sum())) - np.repeat(np.cumsum(gaps_len) - gaps_len, gaps_len)
        spaces = _JSON_SPACE[b[np.repeat(gaps_from, gaps_len) + offsets]]
        bad = np.zeros(len(gaps_len), dtype=bool)
        bad[owner[~spaces]] = True
        good &= ~(bad[: len(starts)] | bad[len(starts):])
    return first_at, last_at, good


def _fast_block(buf: bytes, first_at, last_at, seps, newlines, nulls, line0: int, index0: int) -> Optional[RecordBlock]:
    """Elements ``buf[first_at[i]:last_at[i] + 1]`` as one ``RecordBlock`` (``buf`` starts on line
    ``line0``; the first element is record ``index0``), or None when Arrow would not read them exactly
    as Python's json does (see ``_arrow_parse``) or they are not UTF-8."""
    import numpy as np

    lo, hi = int(first_at[0]), int(last_at[-1]) + 1
    payload = bytearray(buf[lo:hi])
    inner = seps[(seps > lo) & (seps < hi)] - lo
    np.frombuffer(payload, dtype=np.uint8)[inner] = 0x0A  # the commas between elements become line ends
    # (bytes that are not UTF-8 fail Arrow's full validation in _arrow_parse: the exact path then names them)
    lines = np.searchsorted(newlines, first_at)
    multiline = bool((np.searchsorted(newlines, last_at) > lines).any())  # pretty-printed elements
    table = _arrow_parse(bytes(payload), len(first_at), newlines_in_values=multiline)
    if table is None:
        return None
    lines = (line0 + lines).tolist()
    starts, stops = first_at.tolist(), (last_at + 1).tolist()

    def raw(i: int) -> RawRecord:
        return RawRecord(index0 + i, lines[i], json.loads(buf[starts[i]:stops[i]].decode("utf-8")))

    marks = None
    near = nulls[(nulls >= lo) & (nulls < hi)]
    if len(near):  # which elements hold a ``null`` (Arrow cannot tell it from an absent field)
        owner = np.searchsorted(first_at, near, side="right") - 1
        inside = near < last_at[owner]
        if inside.any():
            flags = np.zeros(len(first_at), dtype=bool)
            flags[owner[inside]] = True
            marks = flags.tolist()
    return RecordBlock(table, raw, marks)


def json_kind(path: str) -> str:
    """What a ``.json`` file holds: ``"array"`` of records, JSON ``"lines"``, or a single ``"object"``.

    A ``.json`` file may hold JSON Lines (decided by its first line parsing as a whole object); a file
    that is one JSON object spread over several lines (a dataset_info or meta file) is no annotation file.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 20).decode("utf-8", "ignore")
    head = head.lstrip(_BOM + " \t\r\n")
    if not head.startswith("{"):
        return "array"
    first_line = head.split("\n", 1)[0]
    try:
        json.loads(first_line)
    except json.JSONDecodeError:
        return "object"
    return "lines"


def _read_json(path: str) -> Iterator[RawRecord]:
    kind = json_kind(path)
    if kind == "object":
        raise AnnotationFileError(f"{path}: expected a JSON array of records or JSON Lines, got a single JSON object")
    return read_jsonl(path) if kind == "lines" else read_json_array(path)


#: file suffix -> reader
READERS: dict[str, Callable[[str], Iterator[RawRecord]]] = {
    ".jsonl": read_jsonl,
    ".json": _read_json,
    ".parquet": read_parquet,
}


def reader_for(path: str) -> Callable[[str], Iterator[RawRecord]]:
    suffix = os.path.splitext(path)[1].lower()
    try:
        return READERS[suffix]
    except KeyError:
        raise AnnotationFileError(f"{path}: unsupported annotation file; expected one of {sorted(READERS)}") from None


def read_records(path: str) -> Iterator[RawRecord]:
    """Raw records of any supported annotation file."""
    return reader_for(path)(path)


def read_blocks(path: str, chunk_bytes: int = CHUNK_BYTES, rows_per_block: int = 2000) -> Iterator[Union[RecordBlock, RawRecord]]:
    """The records of a file in order, as ``RecordBlock``s where Arrow reads a chunk exactly as Python's
    ``json`` would, else as ``RawRecord``s. Parquet and unknown kinds come as ``RawRecord``s.

    Example:
        >>> for item in read_blocks("train.jsonl"):                      # doctest: +SKIP
        ...     print(item.num_rows if isinstance(item, RecordBlock) else item.index)
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".jsonl":
        return _jsonl_blocks(path, chunk_bytes)
    if suffix == ".json":
        kind = json_kind(path)
        if kind == "object":
            raise AnnotationFileError(f"{path}: expected a JSON array of records or JSON Lines, got a single JSON object")
        if kind == "lines":
            return _jsonl_blocks(path, chunk_bytes)
        return _fast_array_blocks(path, max(chunk_bytes // 4, 1 << 16), rows_per_block)
    return read_records(path)
