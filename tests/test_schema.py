"""The JSON Schemas, the Python types and the datasets Features describe the same sample."""

import dataclasses
import json

import datasets
import jsonschema
import pytest

from llava_zh.schema import FEATURES, RULES, QuarantineRecord, Sample, Turn, json_schema_validator, load_json_schema


def test_json_schema_types_and_features_name_the_same_fields():
    schema = load_json_schema("llava_sample")
    schema_fields = set(schema["properties"])
    type_fields = {f.name for f in dataclasses.fields(Sample)}
    feature_fields = set(FEATURES)
    assert schema_fields == type_fields == feature_fields == {"id", "image", "conversations", "task", "language", "source"}
    turn_schema = set(schema["$defs"]["turn"]["properties"])
    turn_type = {"from" if f.name == "from_" else f.name for f in dataclasses.fields(Turn)}
    turn_feature = set(FEATURES["conversations"].feature)
    assert turn_schema == turn_type == turn_feature == {"from", "value"}
    assert set(schema["required"]) == {"id", "conversations"}


def test_feature_types_match_schema_types():
    schema = load_json_schema("llava_sample")
    for name in ("id", "task", "language", "source"):
        assert schema["properties"][name]["type"] == "string"
        assert FEATURES[name] == datasets.Value("string")
    assert isinstance(FEATURES["image"], datasets.Image)
    assert schema["properties"]["conversations"]["type"] == "array"


def test_quarantine_schema_matches_its_type_and_rules():
    schema = load_json_schema("quarantine_record")
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(QuarantineRecord)}
    assert tuple(schema["properties"]["rule"]["enum"]) == RULES


def test_sample_round_trips_and_validates():
    s = Sample(id="a", conversations=(Turn("human", "<image>\n你好"), Turn("gpt", "你好!")), image="a.jpg", task="conversation")
    assert Sample.from_dict(s.to_dict()) == s
    json_schema_validator("llava_sample").validate(s.to_dict())
    assert s.num_rounds == 1
    assert s.with_task("detail_description").task == "detail_description"


def test_schema_rejects_what_the_rules_refuse():
    v = json_schema_validator("llava_sample")
    with pytest.raises(jsonschema.ValidationError):
        v.validate({"id": "a", "conversations": []})
    with pytest.raises(jsonschema.ValidationError):
        v.validate({"id": "a", "conversations": [{"from": "human", "value": "   "}]})
    with pytest.raises(jsonschema.ValidationError):
        v.validate({"id": "a", "conversations": [{"from": "human", "value": "x"}], "task": "chitchat"})


def test_unknown_schema_name_is_a_clear_error():
    with pytest.raises(ValueError, match="llava_sample"):
        load_json_schema("nope")


def test_schemas_are_valid_draft_2020_12():
    for name in ("llava_sample", "quarantine_record"):
        schema = load_json_schema(name)
        assert schema["$schema"].endswith("2020-12/schema")
        jsonschema.Draft202012Validator.check_schema(schema)
        json.dumps(schema)
