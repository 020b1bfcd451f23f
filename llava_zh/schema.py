"""The shape of a sample: typed models, the ``datasets.Features`` of a loaded sample, and the JSON Schemas.

The JSON Schema files in ``schemas/`` define the on-disk records; this module mirrors them in Python
types and in Arrow features, and ``tests/test_schema.py`` proves the three name the same fields.

Example:
    >>> from llava_zh.schema import Sample, Turn
    >>> s = Sample(id="1", conversations=(Turn("human", "<image>\\n图里有什么?"), Turn("gpt", "一只猫。")), image="1.jpg")
    >>> Sample.from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping, Optional

import datasets

#: The three generation tasks of llava-instruct-zh-600k, in the order of the dataset card.
TASKS: tuple[str, ...] = ("conversation", "complex_reasoning", "detail_description")
#: Builder config names: one per task plus ``all``.
CONFIGS: tuple[str, ...] = ("all",) + TASKS
#: Counts published on the dataset card.
CARD_COUNTS: Mapping[str, int] = {"conversation": 247_431, "complex_reasoning": 194_646, "detail_description": 199_791}

DATASET_NAME = "llava-instruct-zh-600k"
HUB_ID = "opencsg/llava-instruct-zh-600k"
DEFAULT_LANGUAGE = "zh"
IMAGE_PLACEHOLDER = "<image>"
HUMAN, GPT, SYSTEM = "human", "gpt", "system"

#: Names of the validation rules, as used in errors, reports and quarantine records.
RULES: tuple[str, ...] = (
    "invalid_json",
    "schema",
    "empty_value",
    "role_order",
    "image_placeholder",
    "unsafe_image_path",
    "missing_image",
    "undecodable_image",
    "image_too_large",
)


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a conversation: who speaks (``human``/``gpt``/``system``) and what is said."""

    from_: str
    value: str

    def to_dict(self) -> dict[str, str]:
        return {"from": self.from_, "value": self.value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Turn":
        return cls(from_=d["from"], value=d["value"])


@dataclass(frozen=True, slots=True)
class Sample:
    """An annotation record (``schemas/llava_sample.schema.json``); ``image`` is a relative path or None."""

    id: str
    conversations: tuple[Turn, ...]
    image: Optional[str] = None
    task: Optional[str] = None
    language: Optional[str] = None
    source: Optional[str] = None

    @property
    def num_rounds(self) -> int:
        """Number of human turns (one question and its answer make a round)."""
        return sum(1 for t in self.conversations if t.from_ == HUMAN)

    def to_dict(self) -> dict[str, Any]:
        """The record as written in a LLaVA JSON file; absent optional fields are left out."""
        d: dict[str, Any] = {"id": self.id}
        if self.image is not None:
            d["image"] = self.image
        d["conversations"] = [t.to_dict() for t in self.conversations]
        for key in ("task", "language", "source"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Sample":
        return cls(
            id=d["id"],
            conversations=tuple(Turn.from_dict(t) for t in d["conversations"]),
            image=d.get("image"),
            task=d.get("task"),
            language=d.get("language"),
            source=d.get("source"),
        )

    def with_task(self, task: str) -> "Sample":
        return replace(self, task=task)


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """A refused sample with where it came from and why (``schemas/quarantine_record.schema.json``)."""

    file: str
    line: Optional[int]
    index: int
    id: Optional[str]
    rule: str
    message: str
    record: Any = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "index": self.index,
            "id": self.id,
            "rule": self.rule,
            "message": self.message,
            "record": self.record,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QuarantineRecord":
        return cls(**{k: d.get(k) for k in ("file", "line", "index", "id", "rule", "message", "record")})


#: Features of a loaded sample: the Arrow shape shared by every loader, converter and publisher here.
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "task": datasets.Value("string"),
        "language": datasets.Value("string"),
        "source": datasets.Value("string"),
        "image": datasets.Image(),
        "conversations": datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")}),
    }
)


@lru_cache(maxsize=None)
def load_json_schema(name: str) -> dict[str, Any]:
    """Load a shipped JSON Schema by name, e.g. ``load_json_schema("llava_sample")``."""
    path = resources.files("llava_zh").joinpath("schemas", f"{name}.schema.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.name.split(".")[0] for p in resources.files("llava_zh").joinpath("schemas").iterdir())
        raise ValueError(f"no JSON Schema named {name!r}; shipped schemas: {known}") from None


def json_schema_validator(name: str):
    """A compiled ``jsonschema`` Draft 2020-12 validator for a shipped schema (the slow, reference path)."""
    import jsonschema

    schema = load_json_schema(name)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
