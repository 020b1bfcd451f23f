"""Raw records out of JSON arrays, JSON Lines and parquet, with lines, BOMs, CRLF and broken records."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llava_zh.readers import AnnotationFileError, json_kind, read_records


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return str(path)


def test_jsonl_with_bom_crlf_and_blank_lines(tmp_path):
    lines = ['{"id": "a"}', "", '{"id": "b"}', "   ", '{"id": "c"}']
    path = _write(tmp_path / "x.jsonl", "\ufeff" + "\r\n".join(lines) + "\r\n")
    got = list(read_records(path))
    assert [(r.index, r.line, r.value["id"]) for r in got] == [(0, 1, "a"), (1, 3, "b"), (2, 5, "c")]


def test_jsonl_bad_line_is_reported_with_its_line(tmp_path):
    path = _write(tmp_path / "x.jsonl", '{"id": "a"}\n{"id": \n{"id": "c"}\n')
    got = list(read_records(path))
    assert [r.error is None for r in got] == [True, False, True]
    assert got[1].line == 2 and got[1].value == '{"id": '


def test_json_array_lines_and_bom(tmp_path):
    recs = [{"id": str(i), "v": "中文"} for i in range(3)]
    path = _write(tmp_path / "x.json", "\ufeff" + json.dumps(recs, ensure_ascii=False, indent=2).replace("\n", "\r\n"))
    got = list(read_records(path))
    assert [r.value for r in got] == recs
    assert [r.line for r in got] == [2, 6, 10]


def test_json_array_malformed_record_in_the_middle(tmp_path):
    text = '[\n  {"id": "a"},\n  {"id": "b", oops},\n  {"id": "c"}\n]\n'
    got = list(read_records(_write(tmp_path / "x.json", text)))
    assert [r.error is None for r in got] == [True, False, True]
    assert got[1].line == 3 and "oops" in got[1].value
    assert got[2].value == {"id": "c"} and got[2].index == 2 and got[2].line == 4


def test_json_array_truncated(tmp_path):
    text = '[\n  {"id": "a"},\n  {"id": "b", "conv'
    got = list(read_records(_write(tmp_path / "x.json", text)))
    assert got[0].value == {"id": "a"}
    assert got[-1].error is not None and got[-1].line == 3
    assert len(got) == 2


def test_json_array_missing_closing_bracket(tmp_path):
    got = list(read_records(_write(tmp_path / "x.json", '[{"id": "a"}')))
    assert got[0].value == {"id": "a"} and "truncated" in got[1].error


def test_empty_array_and_empty_file(tmp_path):
    assert list(read_records(_write(tmp_path / "a.json", "[]"))) == []
    assert list(read_records(_write(tmp_path / "b.json", ""))) == []


def test_json_file_holding_json_lines(tmp_path):
    path = _write(tmp_path / "x.json", '{"id": "a"}\n{"id": "b"}\n')
    assert json_kind(path) == "lines"
    assert [r.value["id"] for r in read_records(path)] == ["a", "b"]


def test_json_object_file_is_not_annotations(tmp_path):
    path = _write(tmp_path / "meta.json", '{\n  "name": "x"\n}\n')
    assert json_kind(path) == "object"
    with pytest.raises(AnnotationFileError, match="meta.json"):
        list(read_records(path))


def test_not_utf8_is_named(tmp_path):
    path = _write(tmp_path / "x.json", '[{"id": "中"}]', encoding="gbk")
    with pytest.raises(AnnotationFileError, match="UTF-8"):
        list(read_records(path))


def test_unsupported_suffix(tmp_path):
    with pytest.raises(AnnotationFileError, match="unsupported"):
        read_records(_write(tmp_path / "x.csv", "id\n1\n"))


# --- streamed JSON arrays and Arrow blocks --------------------------------------------------------

from llava_zh import readers  # noqa: E402
from llava_zh.readers import RecordBlock, read_blocks, read_json_array, read_jsonl  # noqa: E402

CHUNKS = [1, 2, 3, 7, 64, 1 << 20]


def _as_tuples(records):
    return [(r.index, r.line, r.value, r.error) for r in records]


def _whole_file(path):
    """The reference: the same reader with the whole file in one window."""
    return _as_tuples(read_json_array(path, chunk_bytes=1 << 30))


ARRAYS = {
    "pretty": json.dumps([{"id": str(i), "v": "中文" * i, "n": [i, {"k": "}, {"}]} for i in range(6)], ensure_ascii=False, indent=2),
    "compact": json.dumps([{"id": "a", "v": "é😀"}, {"id": "b"}, 12, "x", None, {"id": "c"}], ensure_ascii=False),
    "escapes": '[{"id": "\\ud83d\\ude00 \\u00e9 \\" \\\\ \\n"}, {"id": "\\u4e2d"}]',
    "crlf+bom": "\ufeff[\r\n  {\"id\": \"a\"},\r\n  {\"id\": \"b\"}\r\n]\r\n",
    "malformed middle": '[\n  {"id": "a"},\n  {"id": "b", oops},\n  {"id": "c"},\n  {"id": "d"}\n]',
    "malformed then nothing": '[{"id": "a"}, {"id": "b" "x": 1}]',
    "missing comma": '[{"id": "a"}\n {"id": "b"}, {"id": "c"}]',
    "truncated in string": '[\n  {"id": "a"},\n  {"id": "b", "conv',
    "truncated after comma": '[{"id": "a"},\n',
    "truncated in number": '[{"id": "a"}, 12',
    "unclosed": '[{"id": "a"}',
    "empty": "  [ ]  ",
    "long string": json.dumps([{"id": "x" * 5000}, {"id": "y"}]),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
@pytest.mark.parametrize("chunk", CHUNKS)
def test_streamed_array_is_chunk_size_independent(tmp_path, name, chunk):
    """Records, lines, malformed and truncated reports are the same whatever the chunk size: elements
    and multibyte characters split across chunks are put back together."""
    path = _write(tmp_path / "x.json", ARRAYS[name])
    assert _as_tuples(read_json_array(path, chunk_bytes=chunk)) == _whole_file(path)


def test_streamed_array_reports_and_resynchronises(tmp_path):
    path = _write(tmp_path / "x.json", ARRAYS["malformed middle"])
    got = list(read_json_array(path, chunk_bytes=3))
    assert [(r.index, r.line, r.error is None) for r in got] == [(0, 2, True), (1, 3, False), (2, 4, True), (3, 5, True)]
    assert got[1].value == '{"id": "b", oops}' and "line 3, column 15" in got[1].error
    truncated = list(read_json_array(_write(tmp_path / "t.json", ARRAYS["truncated in string"]), chunk_bytes=5))
    assert [r.value for r in truncated[:1]] == [{"id": "a"}]
    assert truncated[-1].line == 3 and "Unterminated string" in truncated[-1].error and len(truncated) == 2
    number = list(read_json_array(_write(tmp_path / "n.json", ARRAYS["truncated in number"]), chunk_bytes=1))
    assert number[1].value == 12 and "truncated" in number[-1].error


def test_streamed_array_memory_stays_bounded(tmp_path, monkeypatch):
    """A 3 MB array read 16 KB at a time never holds more than a few chunks of text."""
    recs = [{"id": str(i), "conversations": [{"from": "human", "value": "问" * 200}]} for i in range(2500)]
    path = _write(tmp_path / "big.json", json.dumps(recs, ensure_ascii=False, indent=1))
    biggest = []
    fill = readers._Window.fill

    def watched(self):
        fill(self)
        biggest.append(len(self.text))

    monkeypatch.setattr(readers._Window, "fill", watched)
    n = sum(1 for _ in read_json_array(path, chunk_bytes=16 << 10))
    assert n == len(recs)
    assert max(biggest) < 64 << 10, max(biggest)


def test_undecodable_byte_is_named_with_its_offset(tmp_path):
    data = '[{"id": "a"}, {"id": "中"}]'.encode("utf-8")
    bad = data.replace("中".encode(), b"\xff\xfe")
    path = tmp_path / "x.json"
    path.write_bytes(bad)
    offset = bad.index(b"\xff")
    for chunk in (1, 4, 1 << 20):
        with pytest.raises(AnnotationFileError, match=f"offset {offset}"):
            list(read_json_array(str(path), chunk_bytes=chunk))


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_jsonl_chunks_keep_lines(tmp_path, chunk):
    text = '\ufeff{"id": "a"}\r\n\r\n{"id": "中文"}\n{"id": \n   \n{"id": "d"}'
    path = _write(tmp_path / "x.jsonl", text)
    got = _as_tuples(read_jsonl(path, chunk_bytes=chunk))
    assert [(i, line) for i, line, _, _ in got] == [(0, 1), (1, 3), (2, 4), (3, 6)]
    assert got[2][3] == "Expecting value at column 8" and got[3][2] == {"id": "d"}


def test_json_lines_read_as_pythons_json_reads_them(tmp_path):
    """Values exactly as ``json.loads`` gives them: big integers stay integers, NaN and lone surrogates
    are read, the last of two equal keys wins."""
    lines = ['{"id": "a", "x": [1, 2.5, null, true]}', '{"big": 123456789012345678901234567890}',
             '{"s": "\\ud800"}', '{"id": "a", "id": "b"}', '{"id": ', '{"id": "中"}']
    path = _write(tmp_path / "x.jsonl", "\n".join(lines) + "\n")
    got = _as_tuples(read_jsonl(path))
    assert [v for _, _, v, _ in got] == [json.loads(line) if i != 4 else '{"id": ' for i, line in enumerate(lines)]
    assert got[1][2]["big"] == 123456789012345678901234567890 and got[4][3] == "Expecting value at column 8"


def _expand(items):
    out = []
    for item in items:
        if isinstance(item, RecordBlock):
            assert item.num_rows == len(list(item.records()))
            out.extend(item.records())
        else:
            out.append(item)
    return out


BLOCK_CASES = {
    "plain": ['{"id": "a", "conversations": [{"from": "human", "value": "x"}]}', '{"id": "b", "extra": {"k": 1}}'],
    "blank lines": ['{"id": "a"}', "", "   ", '{"id": "b"}'],
    "two objects on a line": ['{"id": "a"} {"id": "b"}', '{"id": "c"}'],
    "Inf only Arrow reads": ['{"id": "a", "score": Inf}', '{"id": "b", "score": 1.5}'],
    "NaN both read": ['{"id": "a", "score": NaN}'],
    "number id": ['{"id": 3}', '{"id": "b"}'],
    "duplicate key": ['{"id": "a", "id": "b"}'],
    "lone surrogate": ['{"id": "\\ud800"}'],
    "bad line": ['{"id": "a"}', '{"id": ', '{"id": "c"}'],
    "not utf-8": ['{"id": "a"}', '{"id": "\udcff"}'],
}


@pytest.mark.parametrize("name", sorted(BLOCK_CASES))
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
@pytest.mark.parametrize("chunk", [8, 1 << 20])
def test_blocks_give_the_records_the_reader_gives(tmp_path, name, suffix, chunk):
    """Whatever Arrow makes of a chunk, ``read_blocks`` yields the very records of ``read_records``; and
    the rows of a block hold the values Python's json reads."""
    lines = BLOCK_CASES[name]
    if suffix == ".jsonl":
        data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    else:
        data = ("[\n" + ",\n".join(line for line in lines if line.strip()) + "\n]").encode("utf-8", "surrogateescape")
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    try:
        expected = _as_tuples(read_records(str(path)))
    except AnnotationFileError:
        with pytest.raises(AnnotationFileError):
            list(read_blocks(str(path), chunk_bytes=chunk))
        return
    items = list(read_blocks(str(path), chunk_bytes=chunk))
    assert json.dumps(_as_tuples(_expand(items))) == json.dumps(expected)
    for block in (i for i in items if isinstance(i, RecordBlock)):
        for i, row in enumerate(block.table.select(["id"]).to_pylist()):
            assert row["id"] == block.raw(i).value.get("id")


def test_blocks_are_used_for_plain_files(tmp_path):
    path = _write(tmp_path / "x.jsonl", "".join(json.dumps({"id": str(i)}) + "\n" for i in range(100)))
    items = list(read_blocks(path, chunk_bytes=512))
    assert all(isinstance(i, RecordBlock) for i in items) and sum(i.num_rows for i in items) == 100
    assert items[1].raw(0).line == items[0].num_rows + 1
    arr = _write(tmp_path / "x.json", json.dumps([{"id": str(i)} for i in range(100)], indent=2))
    items = list(read_blocks(arr, rows_per_block=30))
    assert [i.num_rows for i in items] == [30, 30, 30, 10]


def test_long_blank_line_and_two_objects_on_a_line_do_not_cancel_out(tmp_path):
    """A line of many spaces (no record) and a line with two objects (one error) give as many Arrow
    rows as lines with records; the reader must still see the error, on its line."""
    path = _write(tmp_path / "x.jsonl", '{"id": "a"} {"id": "b"}\n' + " " * 40 + "\n" + '{"id": "c"}\n')
    got = _as_tuples(_expand(read_blocks(path)))
    assert got == _as_tuples(read_records(path))
    assert got[0][3].startswith("Extra data") and got[1][:3] == (1, 3, {"id": "c"})


# --- the fast JSON array path -----------------------------------------------------------------------

FAST_CHUNKS = [1, 5, 17, 64, 1 << 20]


@pytest.mark.parametrize("name", sorted(ARRAYS))
@pytest.mark.parametrize("chunk", FAST_CHUNKS)
@pytest.mark.parametrize("rows", [1, 2, 1000])
def test_fast_array_blocks_give_the_exact_readers_records(tmp_path, name, chunk, rows):
    """Element boundaries found with numpy, blocks parsed by Arrow, and the hand-over to the exact path
    at the first element it does not read: the records, lines and errors are always the exact path's."""
    path = _write(tmp_path / "x.json", ARRAYS[name])
    got = _as_tuples(_expand(readers._fast_array_blocks(path, chunk, rows)))
    assert json.dumps(got) == json.dumps(_whole_file(path))


def test_fast_array_blocks_read_plain_arrays_without_handing_over(tmp_path, monkeypatch):
    tricky = ['a "q" [x], {y}', "}", "]", "},{", '\\', '\\"', 'x\\\\', '"]}', "[{", "中,"]
    text = json.dumps([{"id": str(i), "s": tricky[i % len(tricky)], "z": None if i % 2 else 1} for i in range(50)],
                      ensure_ascii=False, indent=1)
    path = _write(tmp_path / "x.json", text)

    def no_exact_path(*args, **kwargs):
        raise AssertionError("handed over")

    monkeypatch.setattr(readers, "_array_blocks", no_exact_path)
    items = list(readers._fast_array_blocks(path, 100, 7))
    assert all(isinstance(i, RecordBlock) for i in items) and sum(i.num_rows for i in items) == 50
    assert [r.value for r in _expand(items)] == json.loads(text)
    marks = [m for i in items for m in (i.mentions_null or [False] * i.num_rows)]
    assert marks == [i % 2 == 1 for i in range(50)]


_TEXT = st.text(alphabet=st.sampled_from(list("ab中 \"\\[]{},:\n\t\u00e9\U0001f600")), max_size=12)
_RECORD = st.fixed_dictionaries({"id": _TEXT}, optional={"v": st.one_of(_TEXT, st.integers(), st.none(),
                                                                         st.lists(_TEXT, max_size=2))})


@settings(max_examples=150, deadline=None)
@given(records=st.lists(st.one_of(_RECORD, _RECORD, _RECORD, st.integers(), _TEXT), max_size=8),
       indent=st.sampled_from([None, 0, 2]), ascii_only=st.booleans(), data=st.data())
def test_fast_array_blocks_agree_with_the_exact_reader_on_generated_files(tmp_path_factory, records, indent, ascii_only, data):
    text = json.dumps(records, indent=indent, ensure_ascii=ascii_only)
    cut = data.draw(st.sampled_from(["whole", "truncate", "delete", "insert"]))
    if cut != "whole" and len(text) > 2:
        at = data.draw(st.integers(1, len(text) - 1))
        text = {"truncate": text[:at], "delete": text[:at] + text[at + 1:],
                "insert": text[:at] + data.draw(st.sampled_from(['"', "\\\\", ",", "}", "{", "]", "x"])) + text[at:]}[cut]
    path = _write(tmp_path_factory.mktemp("fast") / "x.json", text)
    try:
        expected = _whole_file(path)
    except AnnotationFileError:
        with pytest.raises(AnnotationFileError):
            list(readers._fast_array_blocks(path, 16, 3))
        return
    chunk = data.draw(st.sampled_from([1, 7, 16, 1 << 20]))
    assert json.dumps(_as_tuples(_expand(readers._fast_array_blocks(path, chunk, 3)))) == json.dumps(expected)
