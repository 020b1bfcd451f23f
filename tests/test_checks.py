"""Every validation rule, and the fast checks agreeing with the JSON Schema on schema rules."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from factories import jpeg_bytes, record
from llava_zh.checks import check_image_bytes, check_image_path, check_record
from llava_zh.schema import json_schema_validator


def _turns(*pairs):
    return [{"from": f, "value": v} for f, v in pairs]


BAD = {
    "schema": [
        ["not", "an", "object"],
        {"conversations": _turns(("human", "x"), ("gpt", "y"))},
        {"id": "a"},
        {"id": 7, "conversations": _turns(("human", "x"), ("gpt", "y"))},
        {"id": "a", "conversations": []},
        {"id": "a", "conversations": "hello"},
        {"id": "a", "conversations": [{"from": "human"}]},
        {"id": "a", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "y"}]},
        {"id": "a", "conversations": _turns(("human", "x"), ("gpt", "y")), "task": "chitchat"},
        {"id": "a", "conversations": _turns(("human", "x"), ("gpt", "y")), "image": 5},
    ],
    "empty_value": [
        {"id": "", "conversations": _turns(("human", "x"), ("gpt", "y"))},
        {"id": "a", "conversations": _turns(("human", "x"), ("gpt", "  \n"))},
        {"id": "a", "conversations": _turns(("human", "<image>\nx"), ("gpt", "y")), "image": " "},
    ],
    "role_order": [
        {"id": "a", "conversations": _turns(("gpt", "x"), ("human", "y"))},
        {"id": "a", "conversations": _turns(("human", "x"), ("human", "y"))},
        {"id": "a", "conversations": _turns(("human", "x"), ("gpt", "y"), ("human", "z"))},
        {"id": "a", "conversations": _turns(("narrator", "x"), ("gpt", "y"))},
        {"id": "a", "conversations": _turns(("human", "x"), ("system", "s"), ("gpt", "y"))},
    ],
    "image_placeholder": [
        {"id": "a", "image": "a.jpg", "conversations": _turns(("human", "x"), ("gpt", "y"))},
        {"id": "a", "image": "a.jpg", "conversations": _turns(("human", "<image><image>x"), ("gpt", "y"))},
        {"id": "a", "image": "a.jpg", "conversations": _turns(("human", "x"), ("gpt", "y"), ("human", "<image>"), ("gpt", "z"))},
        {"id": "a", "conversations": _turns(("human", "<image>\nx"), ("gpt", "y"))},
    ],
    "unsafe_image_path": [
        {"id": "a", "image": "../etc/passwd", "conversations": _turns(("human", "<image>x"), ("gpt", "y"))},
        {"id": "a", "image": "/abs/a.jpg", "conversations": _turns(("human", "<image>x"), ("gpt", "y"))},
        {"id": "a", "image": "imgs\\..\\..\\a.jpg", "conversations": _turns(("human", "<image>x"), ("gpt", "y"))},
        {"id": "a", "image": "C:/a.jpg", "conversations": _turns(("human", "<image>x"), ("gpt", "y"))},
        {"id": "a", "image": "http://x.org/a.jpg", "conversations": _turns(("human", "<image>x"), ("gpt", "y"))},
    ],
}
SCHEMA_RULES = {"schema", "empty_value"}


@pytest.mark.parametrize("rule,rec", [(rule, rec) for rule, recs in BAD.items() for rec in recs])
def test_each_rule_is_named(rule, rec):
    problem = check_record(rec)
    assert problem is not None and problem.rule == rule, problem
    assert problem.message


@pytest.mark.parametrize("rule,rec", [(rule, rec) for rule, recs in BAD.items() for rec in recs])
def test_fast_checks_agree_with_jsonschema(rule, rec):
    errors = list(json_schema_validator("llava_sample").iter_errors(rec))
    if rule in SCHEMA_RULES:
        assert errors, "jsonschema accepted a record the fast path refused"
        kinds = {"empty_value" if e.validator in ("minLength", "pattern") else "schema" for e in errors}
        assert rule in kinds
    else:
        assert not errors, "a non-schema rule must be one the schema cannot express"


@pytest.mark.parametrize(
    "rec",
    [
        record(0, "conversation"),
        record(1, "detail_description"),
        record(2, "complex_reasoning", image=False),
        {"id": "s", "conversations": _turns(("system", "你是助手"), ("human", "x"), ("gpt", "y"))},
        {"id": "u", "image": "a/b.jpg", "conversations": _turns(("USER", "问题?\n<image>"), ("助手", "答"))},
        {"id": "x", "conversations": _turns(("human", "x"), ("gpt", "y")), "extra": {"kept": True}},
    ],
)
def test_valid_records_pass_both(rec):
    assert check_record(rec) is None
    assert not list(json_schema_validator("llava_sample").iter_errors(rec))


def test_text_only_mode_ignores_image_and_placeholder():
    rec = record(0, "conversation")
    assert check_record(rec, text_only=True) is None


def test_image_path_rules():
    assert check_image_path("train2017/000000033471.jpg") is None
    assert check_image_path("a/../b.jpg").rule == "unsafe_image_path"


def test_image_bytes_rules(monkeypatch):
    assert check_image_bytes(jpeg_bytes(), "a.jpg") is None
    assert check_image_bytes(b"not an image", "a.jpg").rule == "undecodable_image"
    assert check_image_bytes(jpeg_bytes()[:40], "a.jpg").rule in ("undecodable_image", None)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    problem = check_image_bytes(jpeg_bytes(20, 10), "big.jpg")  # 200 pixels, over the limit of 100
    assert problem.rule == "image_too_large" and "big.jpg" in problem.message
    problem = check_image_bytes(jpeg_bytes(40, 20), "huge.jpg")  # 800 > 2x limit: Pillow raises itself
    assert problem.rule == "image_too_large"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
@pytest.mark.parametrize("size", [(1, 1), (37, 19), (640, 480)])
def test_header_sizes_agree_with_pillow(fmt, size, monkeypatch):
    """The fast JPEG/PNG header reader and Pillow see the same size (checked through the bomb limit)."""
    from llava_zh.checks import _sniff_size

    data = jpeg_bytes(*size, fmt=fmt)
    sniffed = _sniff_size(data)
    if fmt in ("JPEG", "PNG"):
        assert sniffed == size
    import io as _io

    assert Image.open(_io.BytesIO(data)).size == size
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", size[0] * size[1])
    assert check_image_bytes(data, "x") is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", size[0] * size[1] - 1 or None)
    if size != (1, 1):
        assert check_image_bytes(data, "x").rule == "image_too_large"


def test_progressive_jpeg_and_exif_are_read():
    import io as _io

    from llava_zh.checks import _sniff_size

    buf = _io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "camera"
    Image.new("RGB", (50, 30), (9, 9, 9)).save(buf, format="JPEG", progressive=True, exif=exif.tobytes())
    assert _sniff_size(buf.getvalue()) == (50, 30)
    assert check_image_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF", "cut.jpg").rule == "undecodable_image"


def _batch(images: list[bytes]):
    import numpy as np

    offsets = np.zeros(len(images) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in images], out=offsets[1:])
    data = np.frombuffer(b"".join(images) + b"\0", dtype=np.uint8)[:-1] if images else np.zeros(0, np.uint8)
    return data, offsets, np.ones(len(images), dtype=bool)


def _jpeg_variants() -> list[bytes]:
    import io as _io

    plain = jpeg_bytes(37, 19)
    buf = _io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "camera"
    Image.new("RGB", (50, 30), (9, 9, 9)).save(buf, format="JPEG", progressive=True, exif=exif.tobytes())
    progressive = buf.getvalue()
    filled = plain[:2] + b"\xff" + plain[2:]  # a fill byte before a marker
    return [plain, progressive, filled, jpeg_bytes(1, 1), jpeg_bytes(640, 480), jpeg_bytes(8, 8, fmt="PNG")]


def _odd_jpegs() -> list[bytes]:
    """Walks that end early or take the rare turns: the one-image reader finds no size in the first three."""
    plain = jpeg_bytes(37, 19)
    return [
        plain[:2] + b"\xff\xda\x00\x04\x00\x00" + plain[2:],  # a scan before any frame header
        plain[:2] + b"\xff\xd9" + plain[2:],  # the end of the image before it
        plain[:2] + b"\xff\xe0\xff\xff" + plain[2:],  # a segment longer than the file
        plain[:2] + b"\xff\xd0\xff\x01" + plain[2:],  # markers without a length
        plain[:2] + b"\xff\xff\xff" + plain[2:],  # three fill bytes
    ]


def test_known_good_images_are_the_ones_the_exact_check_accepts(monkeypatch):
    """The batch check proves plain JPEGs good at once, and proves nothing the exact check would refuse."""
    from llava_zh.checks import _jpeg_size, _sniff_size, images_known_good, jpeg_sizes

    variants = _jpeg_variants()
    good = images_known_good(*_batch(variants))
    assert good.tolist() == [True, True, True, True, True, False]  # PNG: left to the exact check
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 37 * 19)
    good = images_known_good(*_batch(variants))
    assert good.tolist() == [True, False, True, True, False, False]
    assert all(_sniff_size(v) is not None for v in variants)
    odd = _odd_jpegs()
    width, height = jpeg_sizes(*_batch(odd))
    assert [(w, h) if w else None for w, h in zip(width.tolist(), height.tolist())] == [_jpeg_size(o) for o in odd]
    assert [_jpeg_size(o) for o in odd] == [None, None, None, (37, 19), (37, 19)]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_known_good_never_disagrees_with_the_exact_check(data):
    """Damaged and cut JPEGs: the batch walk finds the size the one-image reader finds, and whatever the
    batch check proves good, check_image_bytes accepts."""
    from llava_zh.checks import _jpeg_size, images_known_good, jpeg_sizes

    base = data.draw(st.sampled_from(_jpeg_variants()[:5] + _odd_jpegs()))
    image = bytearray(base)
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, min(len(image) - 1, 700)))
        image[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(image)))
    image = bytes(image[:cut]) if data.draw(st.booleans()) else bytes(image)
    images = [image, base, b"", image[:3]]
    limit = data.draw(st.sampled_from([None, 1, 37 * 19, 50 * 30 - 1, 10**6]))
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
    try:
        width, height = jpeg_sizes(*_batch(images))
        for one, w, h in zip(images, width.tolist(), height.tolist()):  # one walk, two ways
            assert (_jpeg_size(one) if one[:3] == b"\xff\xd8\xff" else None) == ((w, h) if w else None)
        good = images_known_good(*_batch(images))
        for one, ok in zip(images, good.tolist()):
            if ok:
                size = _jpeg_size(one)
                assert size is not None and (limit is None or size[0] * size[1] <= limit)
                assert check_image_bytes(one, "x") is None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
