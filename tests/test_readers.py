"""Raw records out of JSON arrays, JSON Lines and parquet, with lines, BOMs, CRLF and broken records."""

import json

import pytest

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
