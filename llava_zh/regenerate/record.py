"""The regeneration record: a sample in the dataset's fields plus how it was made.

A record holds ``id, task, language, source, image, conversations`` (the fields of a loaded sample, so
the parquet shards load as a dataset) and ``raw_reply``, ``parse_status`` (``ok``/``failed``),
``parse_reason`` and ``parse_message``, ``model``, ``backend``, ``prompt_id``, ``prompt``, ``generation``
(sampling settings) and ``timing``. ``schemas/regen_record.schema.json`` is its definition;
``REGEN_FEATURES`` is the same shape as ``datasets.Features`` (the parquet schema).

Example:
    >>> sorted(REGEN_FEATURES)[:4]
    ['backend', 'conversations', 'generation', 'id']
"""

from __future__ import annotations

import base64
import datetime as _dt
from typing import Any, Mapping, Optional

import datasets

from ..schema import FEATURES, GPT, HUMAN, IMAGE_PLACEHOLDER
from .parsers import REASONS

#: ``parse_reason`` values: the parser's refusals plus an input image that cannot be read.
FAILURE_REASONS: tuple[str, ...] = tuple(REASONS) + ("image_error",)
STATUSES: tuple[str, ...] = ("ok", "failed")

GENERATION_FEATURES = {
    "max_new_tokens": datasets.Value("int32"),
    "temperature": datasets.Value("float64"),
    "top_p": datasets.Value("float64"),
    "top_k": datasets.Value("int32"),
    "repetition_penalty": datasets.Value("float64"),
    "seed": datasets.Value("int64"),
    "do_sample": datasets.Value("bool"),
}
TIMING_FEATURES = {
    "generated_at": datasets.Value("string"),
    "batch_seconds": datasets.Value("float64"),
    "batch_size": datasets.Value("int32"),
    "input_tokens": datasets.Value("int32"),
    "output_tokens": datasets.Value("int32"),
}

#: The columns of a regeneration parquet shard, in order: the sample's features, then the provenance.
REGEN_FEATURES = datasets.Features(
    {
        **FEATURES,
        "raw_reply": datasets.Value("string"),
        "parse_status": datasets.Value("string"),
        "parse_reason": datasets.Value("string"),
        "parse_message": datasets.Value("string"),
        "model": datasets.Value("string"),
        "backend": datasets.Value("string"),
        "prompt_id": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "generation": GENERATION_FEATURES,
        "timing": TIMING_FEATURES,
    }
)

#: Provenance columns (everything that is not a field of a loaded sample).
EXTRA_COLUMNS: tuple[str, ...] = tuple(k for k in REGEN_FEATURES if k not in FEATURES)


def utc_now() -> str:
    """The current time as ISO 8601 UTC with seconds, as recorded in ``timing.generated_at``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def build_record(
    *,
    sample_id: str,
    task: str,
    language: str,
    source: str,
    image_path: Optional[str],
    image_bytes: Optional[bytes],
    conversations: list[dict[str, str]],
    raw_reply: str,
    reason: Optional[str],
    message: Optional[str],
    model: str,
    backend: str,
    prompt_id: str,
    prompt: str,
    generation: Mapping[str, Any],
    timing: Mapping[str, Any],
) -> dict[str, Any]:
    """One regeneration record as a dict (``image`` as ``{bytes, path}``); refused replies keep no turns."""
    if reason is not None and reason not in FAILURE_REASONS:
        raise ValueError(f"unknown parse reason {reason!r}; expected one of {list(FAILURE_REASONS)}")
    status = "ok" if reason is None else "failed"
    image = None if image_path is None and image_bytes is None else {"bytes": image_bytes, "path": image_path}
    return {
        "id": sample_id,
        "task": task,
        "language": language,
        "source": source,
        "image": image,
        "conversations": list(conversations) if status == "ok" else [],
        "raw_reply": raw_reply,
        "parse_status": status,
        "parse_reason": reason,
        "parse_message": message,
        "model": model,
        "backend": backend,
        "prompt_id": prompt_id,
        "prompt": prompt,
        "generation": {k: generation.get(k) for k in GENERATION_FEATURES},
        "timing": {k: timing.get(k) for k in TIMING_FEATURES},
    }


def to_json_record(record: Mapping[str, Any], *, embed_image: bool = True) -> dict[str, Any]:
    """The record as JSON can hold it (what the JSON Schema describes).

    With ``embed_image`` the image stays ``{bytes: <base64>, path}``; without, it becomes its path (the form
    written in JSON Lines shards, found again through the original image container).
    """
    out = dict(record)
    image = out.get("image")
    if isinstance(image, Mapping):
        if embed_image:
            data = image.get("bytes")
            out["image"] = {
                "bytes": base64.b64encode(data).decode("ascii") if isinstance(data, (bytes, bytearray)) else data,
                "path": image.get("path"),
            }
        else:
            out["image"] = image.get("path")
    return out


def to_sample(record: Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields of a loaded sample (``llava_zh.schema.FEATURES``), for mixing with the dataset."""
    return {k: record.get(k) for k in FEATURES}


def is_regen_record(record: Mapping[str, Any]) -> bool:
    """Whether a raw record (a parquet row or JSON line) is a regeneration record."""
    return "parse_status" in record and "raw_reply" in record


def regen_to_llava(record: Mapping[str, Any], *, keep_failures: bool = False) -> Optional[dict[str, Any]]:
    """A regeneration record as a LLaVA record (``id, image, conversations, task, language, source``).

    A refused reply gives ``None`` (leave it out), or with ``keep_failures`` the exchange as it happened:
    the prompt (with ``<image>``) as the human turn and the raw reply as the answer; ``None`` still when
    there is nothing to keep (no reply, unreadable image). For a record-format registry.

    Example:
        >>> regen_to_llava({"id": "a", "parse_status": "failed", "raw_reply": "?", "prompt": "p",
        ...                 "image": None, "conversations": []}) is None
        True
    """
    keys = ("id", "image", "conversations", "task", "language", "source")
    if record.get("parse_status") == "ok":
        return {k: record[k] for k in keys if record.get(k) is not None}
    if not keep_failures or not (record.get("raw_reply") or "").strip() or record.get("image") is None:
        return None
    out = {k: record[k] for k in keys if record.get(k) is not None}
    out["conversations"] = [
        {"from": HUMAN, "value": f"{IMAGE_PLACEHOLDER}\n{record['prompt']}"},
        {"from": GPT, "value": record["raw_reply"].strip()},
    ]
    return out
