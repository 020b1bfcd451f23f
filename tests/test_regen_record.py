"""The regeneration record: JSON Schema, datasets features and the record builder name the same fields."""

from __future__ import annotations

import jsonschema
import pytest

from llava_zh.regenerate.parsers import REASONS
from llava_zh.regenerate.record import (
    FAILURE_REASONS,
    GENERATION_FEATURES,
    REGEN_FEATURES,
    TIMING_FEATURES,
    build_record,
    is_regen_record,
    regen_to_llava,
    to_json_record,
    to_sample,
)
from llava_zh.schema import FEATURES, TASKS, json_schema_validator, load_json_schema


def make(reason=None, **overrides):
    kwargs = dict(
        sample_id="conversation/cat", task="conversation", language="zh", source="test", image_path="cat.jpg",
        image_bytes=b"\xff\xd8\xff", conversations=[{"from": "human", "value": "<image>\n这是什么?"},
                                                     {"from": "gpt", "value": "一只猫。"}],
        raw_reply="用户:这是什么?\n\n助手:一只猫。", reason=reason, message=None if reason is None else "why",
        model="Qwen/Qwen2.5-VL-7B-Instruct", backend="transformers", prompt_id="conversation-zh-v1",
        prompt="设计一个对话", generation={"max_new_tokens": 2048, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                                      "repetition_penalty": 1.05, "seed": 0, "do_sample": True},
        timing={"generated_at": "2025-06-01T12:00:00+00:00", "batch_seconds": 3.5, "batch_size": 8,
                "input_tokens": 420, "output_tokens": 300},
    )
    kwargs.update(overrides)
    return build_record(**kwargs)


def test_schema_features_and_builder_agree():
    schema = load_json_schema("regen_record")
    assert set(schema["required"]) == set(schema["properties"]) == set(REGEN_FEATURES) == set(make())
    assert set(schema["properties"]["generation"]["properties"]) == set(GENERATION_FEATURES)
    assert set(schema["properties"]["timing"]["properties"]) == set(TIMING_FEATURES)
    assert schema["properties"]["task"]["enum"] == list(TASKS)
    assert [r for r in schema["properties"]["parse_reason"]["enum"] if r] == list(FAILURE_REASONS)
    assert set(FAILURE_REASONS) == set(REASONS) | {"image_error"}
    assert list(REGEN_FEATURES)[: len(FEATURES)] == list(FEATURES)  # the sample's fields come first


def test_valid_records_pass_and_broken_ones_fail_the_schema():
    validator = json_schema_validator("regen_record")
    ok, failed = make(), make(reason="no_pair")
    validator.validate(to_json_record(ok))
    validator.validate(to_json_record(failed))
    validator.validate(to_json_record(ok, embed_image=False))
    assert failed["conversations"] == [] and failed["parse_status"] == "failed"
    bad = [
        dict(to_json_record(ok), parse_reason="no_pair"),  # ok with a reason
        dict(to_json_record(failed), parse_reason=None),  # failed without a reason
        dict(to_json_record(ok), conversations=[]),  # ok without turns
        dict(to_json_record(ok), task="caption"),
        dict(to_json_record(ok), extra=1),
        dict(to_json_record(ok), timing={**ok["timing"], "batch_size": 0}),
    ]
    for record in bad:
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(record)


def test_image_forms_and_sample_fields():
    r = make()
    assert to_json_record(r)["image"] == {"bytes": "/9j/", "path": "cat.jpg"}
    assert to_json_record(r, embed_image=False)["image"] == "cat.jpg"
    assert r["image"] == {"bytes": b"\xff\xd8\xff", "path": "cat.jpg"}  # the input is not changed
    assert make(image_path=None, image_bytes=None)["image"] is None
    assert list(to_sample(r)) == list(FEATURES) and to_sample(r)["conversations"] == r["conversations"]


def test_unknown_reason_is_refused():
    with pytest.raises(ValueError, match="unknown parse reason 'bad_vibes'"):
        make(reason="bad_vibes")


def test_regen_records_convert_to_llava_records_for_the_loader():
    from llava_zh.checks import check_record

    ok = make()
    assert is_regen_record(ok) and not is_regen_record({"id": "x", "conversations": []})
    llava = regen_to_llava(ok)
    assert set(llava) == {"id", "image", "conversations", "task", "language", "source"}
    assert llava["conversations"] == ok["conversations"]
    failed = make(reason="no_pair", raw_reply="一段没有标签的回复")
    assert regen_to_llava(failed) is None  # excluded by default
    kept = regen_to_llava(failed, keep_failures=True)
    assert kept["conversations"] == [{"from": "human", "value": "<image>\n设计一个对话"},
                                     {"from": "gpt", "value": "一段没有标签的回复"}]
    assert check_record({**kept, "image": "cat.jpg"}) is None
    assert regen_to_llava(make(reason="image_error", image_path=None, image_bytes=None), keep_failures=True) is None
    assert regen_to_llava(make(reason="empty_reply", raw_reply=" "), keep_failures=True) is None
