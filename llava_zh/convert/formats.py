"""The on-disk shape each trainer reads: one record per sample, plus the side files a trainer needs.

A format is an ``ExportFormat``: how a sample becomes a record (given where its image was written), the
file suffix, and an optional function writing side files (LLaMA-Factory's ``dataset_info.json``,
InternVL's meta JSON). ``FORMATS`` maps the names accepted by ``llava_zh.export`` to them.

Every record also keeps ``id``, ``task``, ``language`` and ``source`` (trainers ignore extra keys), so the
export reads back into the same samples through ``llava_zh.load_dataset``.

Example:
    >>> sorted(FORMATS)
    ['internvl', 'llamafactory', 'llava', 'sharegpt', 'swift', 'trl']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from .messages import to_messages
from .sharegpt import to_sharegpt

#: Sample fields carried into every record besides the conversation and the image.
META_KEYS = ("id", "task", "language", "source")
IMAGES_DIR = "images"


@dataclass(frozen=True)
class WrittenImage:
    """Where an image went: path relative to the export folder, the bytes as written, its size."""

    relpath: str
    data: bytes
    width: Optional[int] = None
    height: Optional[int] = None


@dataclass(frozen=True)
class WrittenFile:
    """One annotation file of an export: its name in the export folder, its split and record count."""

    name: str
    split: str
    count: int


@dataclass(frozen=True)
class ExportFormat:
    """How one trainer's files look."""

    name: str
    suffix: str  # ".json" (array), ".jsonl" or ".parquet"
    to_record: Callable[[Mapping[str, Any], Optional[WrittenImage]], dict[str, Any]]
    description: str
    write_side_files: Optional[Callable[[str, Sequence[WrittenFile], str], list[str]]] = None
    embeds_images: bool = False  # images stored in the file itself (no images/ folder)


def _meta(sample: Mapping[str, Any]) -> dict[str, Any]:
    return {k: sample[k] for k in META_KEYS if sample.get(k) is not None}


def _with_image_ref(sample: Mapping[str, Any], ref: Any) -> dict[str, Any]:
    out = dict(sample)
    out["image"] = ref
    return out


def llava_record(sample: Mapping[str, Any], image: Optional[WrittenImage]) -> dict[str, Any]:
    record = {"id": sample["id"]}
    if image is not None:
        record["image"] = image.relpath
    record["conversations"] = [{"from": t["from"], "value": t["value"]} for t in sample["conversations"]]
    record.update({k: v for k, v in _meta(sample).items() if k != "id"})
    return record


def sharegpt_record(sample: Mapping[str, Any], image: Optional[WrittenImage]) -> dict[str, Any]:
    converted = to_sharegpt(_with_image_ref(sample, image.relpath if image else None))
    return {**_meta(sample), "conversations": converted["conversations"], "images": converted["images"]}


def _string_messages(sample: Mapping[str, Any], images: list[Any]) -> dict[str, Any]:
    # ms-swift and LLaMA-Factory take content as a string holding the <image> tag where the image goes
    from ..roles import normalize_role

    messages = [{"role": normalize_role(t["from"], sample.get("id")), "content": t["value"]}
                for t in sample["conversations"]]
    return {**_meta(sample), "messages": messages, "images": images}


def llamafactory_record(sample: Mapping[str, Any], image: Optional[WrittenImage]) -> dict[str, Any]:
    return _string_messages(sample, [image.relpath] if image else [])


def swift_record(sample: Mapping[str, Any], image: Optional[WrittenImage]) -> dict[str, Any]:
    return _string_messages(sample, [image.relpath] if image else [])


def trl_record(sample: Mapping[str, Any], image: Optional[WrittenImage]) -> dict[str, Any]:
    ref = {"bytes": image.data, "path": os.path.basename(image.relpath)} if image else None
    converted = to_messages(_with_image_ref(sample, ref))
    meta = {k: sample.get(k) for k in META_KEYS}
    return {**meta, "messages": converted["messages"], "images": converted["images"]}


def internvl_record(sample: Mapping[str, Any], image: Optional[WrittenImage]) -> dict[str, Any]:
    record: dict[str, Any] = {"id": sample["id"]}
    if image is not None:
        record["image"] = os.path.basename(image.relpath)  # relative to the meta file's "root"
        record["width"], record["height"] = image.width, image.height
    record["conversations"] = [{"from": t["from"], "value": t["value"]} for t in sample["conversations"]]
    record.update({k: v for k, v in _meta(sample).items() if k != "id"})
    return record


def trl_features():
    """``datasets.Features`` of the TRL parquet: messages with typed content items and an image list."""
    import datasets

    item = {"type": datasets.Value("string"), "text": datasets.Value("string"), "newline": datasets.Value("bool")}
    return datasets.Features(
        {
            **{k: datasets.Value("string") for k in META_KEYS},
            "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.List(item)}),
            "images": datasets.List(datasets.Image()),
        }
    )


def _update_json(path: str, entries: Mapping[str, Any]) -> None:
    existing: dict[str, Any] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            existing = json.load(f)
        if not isinstance(existing, dict):
            raise ValueError(f"{path}: expected a JSON object to add entries to, got {type(existing).__name__}")
    existing.update(entries)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(existing, f, ensure_ascii=False, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _entry_name(file: WrittenFile) -> str:
    return os.path.splitext(file.name)[0]


SideFiles = Callable[[str, Sequence[WrittenFile], str], list[str]]


def _dataset_info(columns: dict[str, str], tags: dict[str, str]) -> SideFiles:
    def write(out_dir: str, files: Sequence[WrittenFile], name: str) -> list[str]:
        entries = {
            _entry_name(f): {"file_name": f.name, "formatting": "sharegpt", "columns": dict(columns),
                             "tags": dict(tags)}
            for f in files
        }
        path = os.path.join(out_dir, "dataset_info.json")
        _update_json(path, entries)
        return [path]

    return write


def _internvl_meta(out_dir: str, files: Sequence[WrittenFile], name: str) -> list[str]:
    root = os.path.abspath(out_dir)
    entries = {
        _entry_name(f): {
            "root": os.path.join(root, IMAGES_DIR) + os.sep,
            "annotation": os.path.join(root, f.name),
            "data_augment": False,
            "repeat_time": 1,
            "length": f.count,
        }
        for f in files
    }
    path = os.path.join(out_dir, f"{name}_internvl_meta.json")
    _update_json(path, entries)
    return [path]


FORMATS: dict[str, ExportFormat] = {
    "llava": ExportFormat("llava", ".json", llava_record,
                          "LLaVA JSON array + images/ (image paths relative to the folder)"),
    "sharegpt": ExportFormat(
        "sharegpt", ".json", sharegpt_record,
        "ShareGPT JSON (conversations from/value + images) + images/ + dataset_info.json",
        _dataset_info({"messages": "conversations", "images": "images"},
                      {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                       "system_tag": "system"}),
    ),
    "llamafactory": ExportFormat(
        "llamafactory", ".json", llamafactory_record,
        "LLaMA-Factory JSON (messages role/content + images) + images/ + dataset_info.json",
        _dataset_info({"messages": "messages", "images": "images"},
                      {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                       "system_tag": "system"}),
    ),
    "swift": ExportFormat("swift", ".jsonl", swift_record, "ms-swift JSONL (messages + images) + images/"),
    "trl": ExportFormat("trl", ".parquet", trl_record, "TRL parquet (messages with content items + embedded images)",
                        embeds_images=True),
    "internvl": ExportFormat("internvl", ".jsonl", internvl_record,
                             "InternVL JSONL (LLaVA turns + width/height) + images/ + meta JSON", _internvl_meta),
}
