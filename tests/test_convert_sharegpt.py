"""LLaVA <-> ShareGPT both ways: images list, roles, system column, batched map, the builder's reader."""

import datasets
import pytest

import llava_zh
from factories import jpeg_bytes
from llava_zh.convert.messages import ConversionError
from llava_zh.convert.sharegpt import (
    from_sharegpt,
    from_sharegpt_batch,
    is_sharegpt,
    to_sharegpt,
    to_sharegpt_batch,
)
from llava_zh.records import detect_format, to_llava_record
from llava_zh.roles import UnknownRoleError
from llava_zh.schema import FEATURES


def llava(sample_id="s", image="s.jpg", first="<image>\n图里有什么?", system=None):
    turns = ([{"from": "system", "value": system}] if system else []) + [
        {"from": "human", "value": first}, {"from": "gpt", "value": "一只猫。"}]
    return {"id": sample_id, "task": "conversation", "language": "zh", "source": "t", "image": image,
            "conversations": turns}


def test_to_sharegpt_shape_and_round_trip():
    s = llava(system="你是助手。")
    out = to_sharegpt(s)
    assert out == {"id": "s", "task": "conversation", "language": "zh", "source": "t", "images": ["s.jpg"],
                   "conversations": [{"from": "system", "value": "你是助手。"},
                                     {"from": "human", "value": "<image>\n图里有什么?"},
                                     {"from": "gpt", "value": "一只猫。"}]}
    assert is_sharegpt(out)
    assert from_sharegpt(out) == s
    text_only = llava(image=None, first="你好")
    assert to_sharegpt(text_only)["images"] == [] and from_sharegpt(to_sharegpt(text_only)) == text_only


def test_from_sharegpt_variants():
    # user/assistant spellings, a system column, role/content tags
    ex = {"conversations": [{"from": "user", "value": "<image>问"}, {"from": "assistant", "value": "答"}],
          "images": ["a.png"], "system": "简短回答。"}
    out = from_sharegpt(ex)
    assert out["image"] == "a.png"
    assert [t["from"] for t in out["conversations"]] == ["system", "human", "gpt"]
    tagged = {"conversations": [{"role": "用户", "content": "问"}, {"role": "助手", "content": "答"}], "images": []}
    assert from_sharegpt(tagged, role_tag="role", content_tag="content")["conversations"] == [
        {"from": "human", "value": "问"}, {"from": "gpt", "value": "答"}]


def test_errors_name_the_sample():
    with pytest.raises(UnknownRoleError, match="x1"):
        to_sharegpt({"id": "x1", "image": None, "conversations": [{"from": "bot", "value": "?"}]})
    with pytest.raises(ConversionError, match=r"sample 'x2'.*at most one image"):
        from_sharegpt({"id": "x2", "conversations": [{"from": "human", "value": "<image><image>"}],
                       "images": ["a.jpg", "b.jpg"]})
    with pytest.raises(ConversionError, match=r"sample 'x3'.*placeholder"):
        from_sharegpt({"id": "x3", "conversations": [{"from": "human", "value": "no tag"}], "images": ["a.jpg"]})


def test_round_trip_on_every_embedded_sample():
    ds = llava_zh.load_dataset("sample").cast_column("image", datasets.Image(decode=False))
    for s in ds:
        assert from_sharegpt(to_sharegpt(s)) == s


def test_batched_forms_inside_dataset_map():
    jpg = jpeg_bytes()
    rows = [llava("a", {"bytes": jpg, "path": "a.jpg"}), llava("b", None, first="你好", system="系统提示")]
    ds = datasets.Dataset.from_list(rows, features=FEATURES).cast_column("image", datasets.Image(decode=False))
    shared = ds.map(to_sharegpt_batch, batched=True, remove_columns=["image"])
    assert shared[1]["images"] == [] and shared[0]["images"][0]["bytes"] == jpg
    back = shared.map(from_sharegpt_batch, batched=True, remove_columns=["images"])
    assert [dict(r) for r in back] == [dict(r) for r in ds]


def test_sharegpt_records_are_read_by_the_builder_formats():
    rec = {"id": "g1", "conversations": [{"from": "human", "value": "<image>\n看"}, {"from": "gpt", "value": "好"}],
           "images": ["images/g1.jpg"], "task": "conversation"}
    assert detect_format(rec) == "sharegpt"
    assert to_llava_record(rec) == {"id": "g1", "task": "conversation", "image": "images/g1.jpg",
                                    "conversations": rec["conversations"]}
    text_only = {"id": "g2", "conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "好"}],
                 "images": []}
    assert "image" not in to_llava_record(text_only)
