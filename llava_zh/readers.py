"""Read raw records out of annotation files: JSON arrays, JSON Lines and parquet.

Each reader yields ``RawRecord(index, line, value, error)``: the position of the record in its file (0-based
index, 1-based line where known), the parsed value, or, for text that is not valid JSON, ``error`` with
the parser's message and ``value`` holding the raw text. A malformed record in the middle of a JSON array
is reported and the reader goes on with the next one; nothing is dropped silently.

Example:
    >>> [r.value["id"] for r in read_records("a.jsonl")]           # doctest: +SKIP
    ['1', '2']
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

ANNOTATION_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".parquet")

_BOM = "\ufeff"
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_NEXT_RECORD = re.compile(r"\}\s*,\s*(?=\{)")


@dataclass(frozen=True, slots=True)
class RawRecord:
    index: int
    line: Optional[int]
    value: Any
    error: Optional[str] = None


class AnnotationFileError(ValueError):
    """A file that is not an annotation file at all (for example a JSON object instead of an array)."""


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AnnotationFileError(f"{path}: expected UTF-8 text, got undecodable bytes at offset {e.start}") from None
    return text[1:] if text.startswith(_BOM) else text


def read_jsonl(path: str) -> Iterator[RawRecord]:
    """One record per non-blank line; LF or CRLF; a BOM on the first line is ignored."""
    index = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RawRecord(index, lineno, raw.decode("utf-8", "replace"), f"not UTF-8 at byte {e.start}")
                index += 1
                continue
            if lineno == 1 and text.startswith(_BOM):
                text = text[1:]
            if not text.strip():
                continue
            try:
                yield RawRecord(index, lineno, json.loads(text))
            except json.JSONDecodeError as e:
                yield RawRecord(index, lineno, text.rstrip("\r\n"), f"{e.msg} at column {e.colno}")
            index += 1


def read_json_array(path: str) -> Iterator[RawRecord]:
    """The elements of a top-level JSON array, one by one, with the line where each starts.

    Elements are decoded one at a time so that a malformed one is reported with its line and the next
    one is still read (the reader resynchronises on the next ``}, {``); a truncated file ends with one
    ``invalid_json`` record for the unfinished element.
    """
    text = _read_text(path)
    pos = _WS.match(text, 0).end()
    if pos >= len(text):
        return
    if text[pos] != "[":
        kind = "a JSON object" if text[pos] == "{" else f"{text[pos]!r}"
        raise AnnotationFileError(f"{path}: expected a JSON array of records (or JSON Lines), got {kind} at the start")
    pos += 1
    line = 1 + text.count("\n", 0, pos)
    counted_to = pos
    index = 0
    while True:
        pos = _WS.match(text, pos).end()
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        if pos >= len(text):
            yield RawRecord(index, line, "", "the array is truncated: expected ']' at the end of the file")
            return
        if text[pos] == "]":
            return
        start = pos
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            resync = _NEXT_RECORD.search(text, start)
            end = resync.end() if resync else len(text)
            snippet = text[start:end].rstrip().rstrip(",")
            yield RawRecord(index, line, snippet[:2000], f"{e.msg} (line {e.lineno}, column {e.colno})")
            index += 1
            if resync is None:
                return
            line += text.count("\n", counted_to, end)
            counted_to = pos = end
            continue
        yield RawRecord(index, line, value)
        index += 1
        pos = _WS.match(text, pos).end()
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            return
        elif pos >= len(text):
            line += text.count("\n", counted_to, pos)
            yield RawRecord(index, line, "", "the array is truncated: expected ',' or ']' at the end of the file")
            return
        else:
            line += text.count("\n", counted_to, pos)
            counted_to = pos
            resync = _NEXT_RECORD.search(text, pos)
            end = resync.end() if resync else len(text)
            yield RawRecord(index, line, text[pos:end][:2000], f"expected ',' or ']' between records, got {text[pos]!r}")
            index += 1
            if resync is None:
                return
            line += text.count("\n", counted_to, end)
            counted_to = pos = end


def read_parquet(path: str, batch_size: int = 1000) -> Iterator[RawRecord]:
    """Rows of a parquet file as dicts (an image column keeps its ``{bytes, path}`` struct)."""
    import pyarrow.parquet as pq

    index = 0
    with pq.ParquetFile(path) as pf:
        for batch in pf.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield RawRecord(index, None, row)
                index += 1


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
