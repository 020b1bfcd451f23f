"""LLaVA conversations <-> chat messages: placeholder positions, roles, round trips, batched map, reader."""

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llava_zh
from factories import jpeg_bytes
from llava_zh.convert.messages import (
    ConversionError,
    content_to_text,
    from_messages,
    from_messages_batch,
    is_llava,
    is_messages,
    maybe_from_messages,
    maybe_to_messages,
    text_to_content,
    to_messages,
    to_messages_batch,
)
from llava_zh.records import detect_format, to_llava_record
from llava_zh.roles import UnknownRoleError
from llava_zh.schema import FEATURES

IMG = {"type": "image"}


def text(t):
    return {"type": "text", "text": t}


def sample(first, *rest, image="x.jpg", sample_id="s1", system=None):
    turns = [{"from": "system", "value": system}] if system else []
    turns.append({"from": "human", "value": first})
    for i, value in enumerate(rest):
        turns.append({"from": "gpt" if i % 2 == 0 else "human", "value": value})
    return {"id": sample_id, "task": "conversation", "language": "zh", "source": "test", "image": image,
            "conversations": turns}


@pytest.mark.parametrize(
    "value, content",
    [
        ("<image>\n这是哪里?", [IMG, text("这是哪里?")]),  # before the text (LLaVA's usual form)
        ("这是哪里?\n<image>", [text("这是哪里?"), IMG]),  # after it
        ("图中<image>是什么?", [text("图中"), {"type": "image", "newline": False}, text("是什么?")]),  # inside it
        ("图中\n<image>\n是什么?", [text("图中\n"), IMG, text("是什么?")]),
        ("<image>", [IMG]),
        ("<image>这是哪里?", [{"type": "image", "newline": False}, text("这是哪里?")]),
        ("<image>\n\n两个换行", [IMG, text("\n两个换行")]),
        ("<image>\n", [{"type": "image", "newline": False}, text("\n")]),
        ("没有图片", [text("没有图片")]),
    ],
)
def test_placeholder_becomes_an_image_item_where_it_stood(value, content):
    assert text_to_content(value) == content
    assert content_to_text(content) == value


def test_to_messages_is_the_trl_and_chat_template_format():
    s = sample("<image>\n这是哪里?", "北京。", "真的吗?", "是的。", system="你是助手。")
    out = to_messages(s)
    assert out["messages"] == [
        {"role": "system", "content": [text("你是助手。")]},
        {"role": "user", "content": [IMG, text("这是哪里?")]},
        {"role": "assistant", "content": [text("北京。")]},
        {"role": "user", "content": [text("真的吗?")]},
        {"role": "assistant", "content": [text("是的。")]},
    ]
    assert out["images"] == ["x.jpg"]
    assert {k: out[k] for k in ("id", "task", "language", "source")} == {
        "id": "s1", "task": "conversation", "language": "zh", "source": "test"}
    assert "conversations" not in out and "image" not in out
    assert from_messages(out) == s


def test_input_is_not_modified():
    s = sample("<image>\n问", "答")
    before = repr(s)
    from_messages(to_messages(s))
    assert repr(s) == before


@pytest.mark.parametrize("spelling, role", [("human", "user"), ("user", "user"), ("USER", "user"), ("用户", "user"),
                                            ("gpt", "assistant"), ("ASSISTANT", "assistant"), ("助手", "assistant"),
                                            ("system", "system")])
def test_roles_are_normalised(spelling, role):
    s = {"id": "r", "image": None, "conversations": [{"from": spelling, "value": "你好"}]}
    assert to_messages(s)["messages"][0]["role"] == role
    back = from_messages(to_messages(s))["conversations"][0]["from"]
    assert back == {"user": "human", "assistant": "gpt", "system": "system"}[role]


def test_unknown_role_names_the_sample():
    s = {"id": "bad-7", "image": None, "conversations": [{"from": "robot", "value": "hi"}]}
    with pytest.raises(UnknownRoleError, match="bad-7"):
        to_messages(s)
    with pytest.raises(UnknownRoleError, match="bad-8"):
        from_messages({"id": "bad-8", "images": [], "messages": [{"role": "narrator", "content": "x"}]})


def test_placeholder_and_image_counts_must_agree():
    with pytest.raises(ConversionError, match=r"sample 'n1'.*1 image.*got 0"):
        to_messages(sample("没有占位符", "答", sample_id="n1"))
    with pytest.raises(ConversionError, match=r"sample 'n2'.*0 image.*got 1"):
        to_messages(sample("<image>\n问", "答", image=None, sample_id="n2"))
    with pytest.raises(ConversionError, match="at most one image"):
        from_messages({"id": "n3", "images": ["a.jpg", "b.jpg"],
                       "messages": [{"role": "user", "content": [IMG, IMG, text("两张")]}]})


def test_string_content_and_arrow_nulls_are_read():
    # ms-swift / LLaMA-Factory write content as a string; Arrow adds null keys to content items
    swift = {"id": "w", "images": ["a.jpg"], "messages": [{"role": "user", "content": "<image>\n看图"},
                                                          {"role": "assistant", "content": "好"}]}
    assert from_messages(swift)["conversations"] == [{"from": "human", "value": "<image>\n看图"},
                                                     {"from": "gpt", "value": "好"}]
    arrow = {"id": "a", "images": ["a.jpg"], "messages": [
        {"role": "user", "content": [{"type": "image", "text": None, "newline": None},
                                     {"type": "text", "text": "看图", "newline": None}]}]}
    assert from_messages(arrow)["conversations"][0]["value"] == "<image>\n看图"


_PIECES = st.sampled_from(["<image>", "\n", "\n\n", "图", "片", "a", " ", "<", "image>", "\n<image>\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_PIECES, max_size=8).map("".join).filter(lambda v: v != ""), min_size=1, max_size=4))
def test_round_trip_for_any_placement(values):
    images = sum(v.count("<image>") for v in values)
    turns = [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]
    s = {"id": "h", "images": [f"{i}.jpg" for i in range(images)], "conversations": turns}
    m = to_messages(s)
    assert sum(1 for msg in m["messages"] for c in msg["content"] if c["type"] == "image") == images
    assert [content_to_text(msg["content"]) for msg in m["messages"]] == values


@pytest.fixture(scope="module")
def embedded_sample():
    return llava_zh.load_dataset("sample")


def test_round_trip_on_every_embedded_sample(embedded_sample):
    assert len(embedded_sample) > 0
    for raw in (embedded_sample, embedded_sample.cast_column("image", datasets.Image(decode=False))):
        for s in raw:
            m = to_messages(s)
            assert len(m["images"]) == 1 and m["messages"][0]["role"] == "user"
            assert from_messages(m) == s


def _fixture_rows():
    jpg = jpeg_bytes(20, 10)
    rows = [
        sample("<image>\n这是哪里?", "北京。", "真的吗?", "是的。", image={"bytes": jpg, "path": "a.jpg"}, sample_id="a"),
        sample("描述一下\n<image>", "一只猫。", image={"bytes": jpg, "path": "b.jpg"}, sample_id="b"),
        sample("图中<image>是什么?", "一只狗。", image={"bytes": jpg, "path": "c.jpg"}, sample_id="c"),
        sample("没有图片的问题", "回答。", image=None, sample_id="d", system="你是一个有用的助手。"),
    ]
    return rows


def test_batched_forms_inside_dataset_map():
    ds = datasets.Dataset.from_list(_fixture_rows(), features=FEATURES).cast_column("image", datasets.Image(decode=False))
    as_messages = ds.map(to_messages_batch, batched=True, batch_size=3, remove_columns=["image", "conversations"])
    assert set(as_messages.column_names) == {"id", "task", "language", "source", "messages", "images"}
    assert as_messages[3]["images"] == [] and as_messages[0]["messages"][1]["role"] == "assistant"
    back = as_messages.map(from_messages_batch, batched=True, batch_size=3, remove_columns=["messages", "images"])
    for original, restored in zip(ds, back):
        assert restored == original


def test_is_and_maybe_helpers():
    s = sample("<image>\n问", "答")
    m = to_messages(s)
    assert is_llava(s) and not is_messages(s)
    assert is_messages(m) and not is_llava(m)
    assert maybe_to_messages(m) is m and maybe_to_messages(s) == m
    assert maybe_from_messages(s) is s and maybe_from_messages(m) == s


def test_messages_records_are_read_by_the_builder_formats():
    swift = {"id": "w1", "task": "conversation", "images": ["images/w1.jpg"],
             "messages": [{"role": "user", "content": "<image>\n看图"}, {"role": "assistant", "content": "好"}]}
    assert detect_format(swift) == "messages"
    assert to_llava_record(swift) == {"id": "w1", "task": "conversation", "image": "images/w1.jpg",
                                      "conversations": [{"from": "human", "value": "<image>\n看图"},
                                                        {"from": "gpt", "value": "好"}]}
    text_only = {"id": "t1", "images": [], "messages": [{"role": "user", "content": [text("你好")]},
                                                         {"role": "assistant", "content": [text("好")]}]}
    assert "image" not in to_llava_record(text_only)
