"""Generated records: the fast checks agree with ``jsonschema``, the Arrow fast path with the exact one.

Three properties, each over valid and broken records that hypothesis builds:

1. ``check_record`` (plain Python) and the JSON Schema give the same verdict on every record, and name
   the same rule when the rule is a schema rule (``minLength``/``pattern`` -> ``empty_value``, any other
   schema error -> ``schema``);
2. ``flag_table`` (the same rules over an Arrow table) never leaves a row unmarked that ``check_record``
   refuses;
3. preparing a file through Arrow blocks gives the rows, counts, refusals and quarantine lines the
   per-record path gives.
"""

from __future__ import annotations

import json
import os
import re

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llava_zh.checks import PY_WHITESPACE, check_record, check_schema, flag_table  # noqa: E402
from llava_zh.schema import TASKS, json_schema_validator  # noqa: E402

SCHEMA_RULES = {"schema", "empty_value"}
VALIDATOR = json_schema_validator("llava_sample")

# --- strategies -----------------------------------------------------------------------------------

BLANKS = st.sampled_from(["", " ", "\n", "\t \r", "\u3000", "\x1c", "\x0b", "\x85", "\u2028", " \u00a0 "])
WORDS = st.sampled_from(["图中是什么?", "describe it", "请详细描述这张图片。", "答", "x", "第1个问题", "a\\b", "null"])
TEXT = st.one_of(
    WORDS,
    BLANKS,
    st.builds(lambda b, w: b + w, BLANKS, WORDS),  # leading whitespace, then text
    st.builds(lambda w, b: w + b, WORDS, BLANKS),
    st.text(alphabet=st.sampled_from(list(" \n\u3000ab中<>image")), max_size=12),
)
PLACEHOLDERS = st.sampled_from(["<image>\n", "\n<image>", "<image>", "", "", "<image><image>"])
ROLES = st.sampled_from(["human", "gpt", "system", "user", "assistant", "用户", "助手", "系统", "USER", " gpt", "narrator", ""])
NOT_STRING = st.one_of(st.integers(-3, 3), st.booleans(), st.none(), st.just([]), st.just({}), st.just(1.5))


def wrong(typed: bool):
    """A value of the wrong type; with ``typed``, only ``null`` (which Arrow can still put in a column)."""
    return st.none() if typed else NOT_STRING
IMAGE_PATHS = st.sampled_from(["a.jpg", "sub/b.jpg", "../x.jpg", "/abs.jpg", "C:/a.jpg", "http://x.org/a.jpg",
                               "a\\..\\b.jpg", "..", "a/..", " ", "", "\u3000"])


@st.composite
def valid_record(draw):
    """A record every rule accepts: rounds of human/gpt in any known spelling, maybe a system turn first,
    maybe an image with its one placeholder in the first question, maybe task/language/source."""
    turns = [{"from": draw(st.sampled_from(["system", "系统"])), "value": draw(WORDS)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        turns.append({"from": draw(st.sampled_from(["human", "user", "用户"])), "value": draw(WORDS)})
        turns.append({"from": draw(st.sampled_from(["gpt", "assistant", "助手"])), "value": draw(WORDS)})
    rec = {"id": f"s-{draw(st.integers(0, 99))}", "conversations": turns}
    if draw(st.booleans()):
        rec["image"] = draw(st.sampled_from(["a.jpg", "sub/b.jpg", "c.jpg", "d..e.jpg"]))
        first = turns[1] if turns[0]["from"] in ("system", "系统") else turns[0]
        form = draw(st.sampled_from(["<image>\n{}", "{}\n<image>", "{}<image>"]))
        first["value"] = form.format(first["value"])
    if draw(st.booleans()):
        rec["task"] = draw(st.sampled_from(TASKS))
    for key in ("language", "source"):
        if draw(st.booleans()):
            rec[key] = draw(st.sampled_from(["zh", "en", " en", "\u3000"]))
    return rec


def _turn_index(draw, rec):
    turns = rec.get("conversations")
    if not isinstance(turns, list) or not turns:
        return None
    return draw(st.integers(0, len(turns) - 1))


def _defect(draw, rec, typed: bool) -> None:
    """Break ``rec`` in one way (in place)."""
    kind = draw(st.sampled_from(DEFECTS))
    turns = rec.get("conversations")
    i = _turn_index(draw, rec)
    if kind == "id":
        rec["id"] = draw(st.one_of(BLANKS, wrong(typed)))
    elif kind == "no id":
        rec.pop("id", None)
    elif kind == "conversations":
        rec["conversations"] = draw(st.one_of(st.just([]), wrong(typed) if typed else st.one_of(NOT_STRING, st.just("hi"))))
    elif kind == "no conversations":
        rec.pop("conversations", None)
    elif kind == "role" and i is not None and isinstance(turns[i], dict):
        turns[i]["from"] = draw(ROLES)
    elif kind == "turn field" and i is not None and isinstance(turns[i], dict):
        key = draw(st.sampled_from(["from", "value"]))
        if draw(st.booleans()):
            turns[i].pop(key, None)
        else:
            turns[i][key] = draw(st.one_of(BLANKS, wrong(typed)))
    elif kind == "turn" and i is not None:
        turns[i] = None if typed else draw(st.one_of(st.none(), st.just("turn"), st.just([])))
    elif kind == "extra turn" and isinstance(turns, list):
        turns.insert(draw(st.integers(0, len(turns))), {"from": draw(ROLES), "value": draw(st.one_of(WORDS, TEXT))})
    elif kind == "system turn" and isinstance(turns, list):
        turns.insert(draw(st.integers(0, len(turns))), {"from": "system", "value": draw(WORDS)})
    elif kind == "drop turn" and i is not None:
        del turns[i]
    elif kind == "swap" and i is not None and i + 1 < len(turns):
        turns[i], turns[i + 1] = turns[i + 1], turns[i]
    elif kind == "placeholder" and i is not None and isinstance(turns[i], dict) and isinstance(turns[i].get("value"), str):
        value = turns[i]["value"]
        turns[i]["value"] = draw(st.sampled_from([value.replace("<image>", ""), value + "<image>", "<image>" + value]))
    elif kind == "no placeholder" and isinstance(turns, list):
        for t in turns:
            if isinstance(t, dict) and isinstance(t.get("value"), str):
                t["value"] = t["value"].replace("<image>", "")
    elif kind == "image":
        if "image" in rec and draw(st.booleans()):
            del rec["image"]
        else:
            rec["image"] = draw(st.one_of(IMAGE_PATHS, wrong(typed)))
    elif kind == "image path" and "image" in rec:
        rec["image"] = draw(IMAGE_PATHS)
    elif kind == "task":
        rec["task"] = draw(st.sampled_from(["chitchat", "", " conversation", None] + ([] if typed else [3])))
    elif kind == "language":
        rec[draw(st.sampled_from(["language", "source"]))] = draw(st.one_of(BLANKS, wrong(typed)))
    elif kind == "extra":
        rec["extra"] = draw(WORDS if typed else st.one_of(NOT_STRING, WORDS))


# the rules that only the exact check knew before it had an Arrow twin come up more often
DEFECTS = ("no id", "conversations", "no conversations", "turn", "extra",
           *["id", "turn field", "task", "language"] * 2,
           *["role", "extra turn", "system turn", "drop turn", "swap", "placeholder", "no placeholder", "image", "image path"] * 3)


@st.composite
def llava_record(draw, typed=False):
    """A valid record with zero, one or two defects; with ``typed``, every value has a type Arrow can
    put in its column (a wrong type is only ever ``null``)."""
    rec = draw(valid_record())
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
        _defect(draw, rec, typed)
    return rec


RECORDS = st.one_of(llava_record(), llava_record(), llava_record(), NOT_STRING, st.just("text"))


def _jsonschema_rules(rec) -> set[str]:
    return {"empty_value" if e.validator in ("minLength", "pattern") else "schema" for e in VALIDATOR.iter_errors(rec)}


# --- 1. plain checks vs jsonschema ----------------------------------------------------------------

@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RECORDS)
def test_fast_checks_and_jsonschema_agree(rec):
    schema_rules = _jsonschema_rules(rec)
    problem = check_schema(rec)
    assert (problem is None) == (not schema_rules), (problem, schema_rules)
    if problem is not None:
        assert problem.rule in schema_rules, (problem, schema_rules)
    full = check_record(rec)
    if schema_rules:
        assert full is not None and full.rule in schema_rules
    else:
        assert full is None or full.rule not in SCHEMA_RULES


def test_whitespace_set_is_pythons():
    """``PY_WHITESPACE`` is exactly what ``str.isspace``, ``str.strip`` and ``re``'s ``\\s`` treat as space."""
    every = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert "".join(every) == PY_WHITESPACE
    assert all(re.fullmatch(r"\s", c) for c in every)


# --- 2. the Arrow flags are sound -----------------------------------------------------------------

def _block(records):
    """Records as one JSONL chunk through the reader's own Arrow parse (None when it declines)."""
    from llava_zh.readers import _arrow_parse

    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    return _arrow_parse(payload, len(records), newlines_in_values=False), payload


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(llava_record(typed=True), min_size=1, max_size=12), st.booleans())
def test_unflagged_rows_pass_the_exact_checks(records, text_only):
    table, _ = _block(records)
    assert table is not None
    mentions_null = [("null" in json.dumps(r, ensure_ascii=False)) for r in records]
    flagged = flag_table(table, text_only=text_only, mentions_null=mentions_null)
    for rec, mark in zip(records, flagged):
        if not mark:
            assert check_record(rec, text_only=text_only) is None, rec


def test_flags_catch_every_rule_on_known_bad_records():
    from factories import record as good_record

    good = good_record(0, "conversation")
    bad = [
        {**good, "id": " "},
        {**good, "image": "../a.jpg"},
        {**good, "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
        {**good, "conversations": [{"from": "human", "value": "<image>x<image>"}, {"from": "gpt", "value": "y"}]},
        {**good, "task": "chitchat"},
        {**good, "language": None},
        {**good, "conversations": []},
    ]
    table, _ = _block([good, *bad])
    flagged = flag_table(table, mentions_null=[False] * 6 + [True, False])
    assert flagged.tolist() == [False] + [True] * len(bad)


# --- 3. the whole preparation: Arrow blocks vs record by record -----------------------------------

def _prepare(path, images, options, reader, reports):
    from llava_zh.prepare import generate_tables

    tables, error = [], None
    try:
        tables = [t for _, t in generate_tables([(0, str(path))], "train", options, [str(images)], None, str(reports), reader=reader)]
    except Exception as e:  # the same error must come out of both paths
        error = (type(e).__name__, re.sub(r"0x[0-9a-f]+", "0x", str(e)))
    if error and options.on_bad_sample == "raise":
        return error
    rows = [row for t in tables for row in t.to_pylist()]
    parts = {}
    folder = reports / "train"
    for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
        parts[name.split(".", 1)[1]] = re.sub(r"0x[0-9a-f]+", "0x", (folder / name).read_text(encoding="utf-8"))
    return rows, error, parts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    records=st.one_of(st.lists(llava_record(typed=True), min_size=1, max_size=25),
                      st.lists(llava_record(), min_size=1, max_size=25)),
    as_array=st.booleans(),
    file_name=st.sampled_from(["train", "conversation", "detail_23k"]),
    task=st.sampled_from([None, *TASKS]),
    text_only=st.booleans(),
    policy=st.sampled_from(["skip", "quarantine", "raise"]),
    batch_size=st.sampled_from([2, 5, 1000]),
    cut=st.integers(0, 30),
    tiny_batches=st.booleans(),
)
def test_arrow_blocks_and_record_path_prepare_the_same(tmp_path_factory, records, as_array, file_name, task, text_only,
                                                       policy, batch_size, cut, tiny_batches):
    from factories import jpeg_bytes
    from llava_zh import prepare
    from llava_zh.prepare import PrepareOptions
    from llava_zh.readers import read_records

    root = tmp_path_factory.mktemp("prep")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    for name, size in (("a.jpg", 8), ("c.jpg", 9), ("d..e.jpg", 10)):
        (images / name).write_bytes(jpeg_bytes(size, size))
    (images / "sub" / "b.jpg").write_bytes(b"not a jpeg")
    if as_array:
        path = root / f"{file_name}.json"
        text = json.dumps(records, ensure_ascii=False, indent=2 if cut % 2 else None)
        if cut == 1:
            text = text[: len(text) * 2 // 3]  # truncated
        elif cut == 2:
            text = text.replace('"}, {"', '"}, {oops "', 1)  # a malformed element in the middle
    else:
        path = root / f"{file_name}.jsonl"
        lines = [json.dumps(r, ensure_ascii=cut % 3 == 0) for r in records]
        if cut == 1:
            lines[len(lines) // 2] = lines[len(lines) // 2][:-3]
        elif cut == 2:
            lines.insert(1, "   ")
        text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    options = PrepareOptions(task=task, text_only=text_only, on_bad_sample=policy, batch_size=batch_size)
    exact = _prepare(path, images, options, read_records, root / "exact")
    limit = prepare.MAX_BATCH_BYTES
    prepare.MAX_BATCH_BYTES = 700 if tiny_batches else limit  # a batch of images split down to single rows
    try:
        fast = _prepare(path, images, options, None, root / "fast")
    finally:
        prepare.MAX_BATCH_BYTES = limit
    assert fast == exact


@pytest.mark.parametrize("limit", [700, 5_000, 1 << 29])
def test_image_batches_split_by_size_give_the_same_rows(tmp_path, monkeypatch, limit):
    """Images adding up to more than ``MAX_BATCH_BYTES`` in one batch are read in smaller ones, down to
    one row; rows, their order and the refusals stay those of the per-record path."""
    from factories import jpeg_bytes, record
    from llava_zh import prepare
    from llava_zh.prepare import PrepareOptions
    from llava_zh.readers import read_records

    images = tmp_path / "images"
    images.mkdir()
    recs = [record(i, "conversation") for i in range(23)]
    for i, rec in enumerate(recs):
        if i not in (5, 17):  # two missing images
            (images / rec["image"]).write_bytes(jpeg_bytes(8 + i % 7, 8))
    for i in (0, 11, 16):  # role_order refusals: between them, and first in a batch of rows (batch_size=8)
        recs[i]["conversations"][0]["from"] = "gpt"
    path = tmp_path / "conversation.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    options = PrepareOptions(on_bad_sample="quarantine", batch_size=8)
    exact = _prepare(path, images, options, read_records, tmp_path / "exact")
    monkeypatch.setattr(prepare, "MAX_BATCH_BYTES", limit)
    fast = _prepare(path, images, options, None, tmp_path / "fast")
    assert fast == exact and len(exact[0]) == 18


def test_read_pieces_cut_where_an_image_starts_past_each_multiple(monkeypatch):
    from llava_zh import prepare

    monkeypatch.setattr(prepare, "MAX_BATCH_BYTES", 100)
    assert prepare.read_pieces([]) == [0, 0]
    assert prepare.read_pieces([40, 40, 40, 0, 30, 500, 1, 99]) == [0, 3, 6, 8]  # starts 0 40 80 | 120 120 150 | 650 651
    assert prepare.read_pieces([1000]) == [0, 1]  # an image bigger than a piece stands alone
    import numpy as np

    sizes = np.random.default_rng(0).integers(0, 250, size=400)
    bounds = prepare.read_pieces(sizes)
    assert bounds[0] == 0 and bounds[-1] == len(sizes) and all(a < b for a, b in zip(bounds, bounds[1:]))
    starts = np.cumsum(sizes) - sizes
    for a, b in zip(bounds, bounds[1:]):
        assert sizes[a:b - 1].sum() < 100  # every image but the last starts within the piece's 100 bytes
        assert len({int(x) // 100 for x in starts[a:b]}) == 1  # and all start past the same multiple


def test_tables_with_images_stay_within_a_piece(tmp_path, monkeypatch):
    """With images, each table the builder yields holds about ``MAX_BATCH_BYTES`` of them (the read
    buffer fits the CPU's cache), and the rows are those of one big read."""
    from factories import jpeg_bytes, record
    from llava_zh import prepare
    from llava_zh.prepare import PrepareOptions

    images = tmp_path / "images"
    images.mkdir()
    recs = [record(i, "conversation") for i in range(40)]
    for i, rec in enumerate(recs):
        (images / rec["image"]).write_bytes(jpeg_bytes(8 + i % 5, 8 + i % 3))
    path = tmp_path / "conversation.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    options = PrepareOptions(batch_size=1000)
    whole = _prepare(path, images, options, None, tmp_path / "whole")
    biggest = max(len(jpeg_bytes(8 + i % 5, 8 + i % 3)) for i in range(40))
    limit = 3 * biggest
    monkeypatch.setattr(prepare, "MAX_BATCH_BYTES", limit)
    tables = [t for _, t in prepare.generate_tables([(0, str(path))], "train", options, [str(images)], None,
                                                     str(tmp_path / "reports"))]
    sizes = [sum(len(r["bytes"]) for r in t.column("image").to_pylist()) for t in tables]
    assert len(tables) > 5 and max(sizes) <= limit + biggest
    assert [row for t in tables for row in t.to_pylist()] == whole[0]
