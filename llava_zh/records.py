"""On-disk record formats, each turned into the one LLaVA record shape the builder validates.

LLaVA files hold ``{id, image, conversations}``; exports for other trainers hold ShareGPT
(``conversations`` + ``images``) or chat messages (``messages`` + ``images``). The builder reads any of
them: ``to_llava_record`` looks at a record's keys, picks the format from ``RECORD_FORMATS`` and returns
``{id, image?, conversations, task?, language?, source?}``. A new on-disk format is one more entry.

Example:
    >>> to_llava_record({"id": "1", "image": "1.jpg", "conversations": [{"from": "human", "value": "<image>\\n?"}]})["image"]
    '1.jpg'
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

RecordFormat = Callable[[Mapping[str, Any]], dict[str, Any]]


class RecordFormatError(ValueError):
    """A record that no known format describes, or that its format cannot express as a LLaVA sample."""


def llava_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """LLaVA records are already in shape: returned as they are (the validator judges them)."""
    return dict(record)


def internvl_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """InternVL JSONL records are LLaVA turns plus ``width``/``height``; ids may be numbers and ``image`` a list."""
    out = {k: v for k, v in record.items() if k not in ("width", "height")}
    if isinstance(out.get("id"), int) and not isinstance(out.get("id"), bool):
        out["id"] = str(out["id"])
    image = out.get("image")
    if isinstance(image, list):
        if len(image) != 1:
            raise RecordFormatError(f"sample {out.get('id')!r}: expected one image (a LLaVA sample holds one), "
                                    f"got {len(image)}")
        out["image"] = image[0]
    return out


#: format name -> converter of one raw record to a LLaVA record. Formats added by converter modules
#: register here (see ``llava_zh.convert``); the order of ``_DETECTORS`` decides which applies.
RECORD_FORMATS: dict[str, RecordFormat] = {"llava": llava_record, "internvl": internvl_record}


def _is_sharegpt(record: Mapping[str, Any]) -> bool:
    return "conversations" in record and "images" in record


def _is_messages(record: Mapping[str, Any]) -> bool:
    return "messages" in record and "conversations" not in record


def _is_internvl(record: Mapping[str, Any]) -> bool:
    if "conversations" not in record or "images" in record:
        return False
    sample_id = record.get("id")
    return ("width" in record or "height" in record or isinstance(record.get("image"), list)
            or (isinstance(sample_id, int) and not isinstance(sample_id, bool)))


_DETECTORS: tuple[tuple[str, Callable[[Mapping[str, Any]], bool]], ...] = (
    ("sharegpt", _is_sharegpt),
    ("messages", _is_messages),
    ("internvl", _is_internvl),
)


def detect_format(record: Mapping[str, Any]) -> str:
    """Name of the format a raw record is in (``llava`` unless its keys say otherwise)."""
    for name, test in _DETECTORS:
        if test(record):
            return name
    return "llava"


def _load_converter_formats() -> None:
    # The ShareGPT and messages readers live with their converters; importing them registers them.
    import importlib

    for module in ("llava_zh.convert.sharegpt", "llava_zh.convert.messages"):
        try:
            importlib.import_module(module)
        except ImportError:  # converters not installed in this build: only LLaVA records are read
            pass


def to_llava_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Turn one raw record of any known format into a LLaVA record dict."""
    if not isinstance(record, Mapping):
        return record  # the validator reports the wrong type with the file and line
    name = detect_format(record)
    convert = RECORD_FORMATS.get(name)
    if convert is None:
        _load_converter_formats()
        convert = RECORD_FORMATS.get(name)
    if convert is None:
        raise RecordFormatError(f"records in the {name!r} format cannot be read: no reader is registered for it")
    return convert(record)
