"""What a regeneration run works on: the images of a folder, zip or tar, or the samples of a llava-zh dataset.

Each input becomes an ``Item``: the id of the sample to make, its task and language, where its image is,
and for a description the question of its human turn. New images get the id ``<task>/<path without
extension>``; a redone sample keeps its id, language, source and (for a description) its question.
``shard_of`` splits items between processes by a stable hash of the id: the same id always lands in the
same shard, on any machine and in any Python process.

Example:
    >>> items = image_items("photos/", ["conversation"])                 # doctest: +SKIP
    >>> items[0].id, items[0].image_path                                  # doctest: +SKIP
    ('conversation/beach/001', 'beach/001.jpg')
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable, Optional, Sequence

from ..schema import IMAGE_PLACEHOLDER, TASKS
from .prompts import description_question

#: File suffixes taken as images in a folder or archive.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DEFAULT_SOURCE = "llava-zh-regenerate"


@dataclass(frozen=True, slots=True)
class Item:
    """One sample to (re)generate. The image is ``member`` of ``container`` or row ``row`` of the input dataset."""

    id: str
    task: str
    language: str
    source: str
    image_path: Optional[str]
    container: Optional[str] = None
    member: Optional[str] = None
    row: Optional[int] = None
    question: Optional[str] = None


def shard_of(sample_id: str, num_shards: int) -> int:
    """The shard (``0 <= shard < num_shards``) an id belongs to: blake2b of the UTF-8 id, modulo the count.

    Example:
        >>> shard_of("conversation/cat", 1)
        0
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    digest = hashlib.blake2b(sample_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def check_shard(shard_index: int, num_shards: int) -> None:
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")


def select_shard(items: Iterable[Item], shard_index: int, num_shards: int) -> list[Item]:
    """The items of one shard; the shards of ``range(num_shards)`` partition the items."""
    check_shard(shard_index, num_shards)
    if num_shards == 1:
        return list(items)
    return [it for it in items if shard_of(it.id, num_shards) == shard_index]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not any(p.startswith(".") for p in name.split("/"))


def list_images(path: str | os.PathLike) -> list[str]:
    """Image members of a folder, zip or tar (``.tar``, ``.tar.gz``), sorted; hidden files are skipped."""
    from ..images import open_container

    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image input {path} does not exist; expected a folder, a .zip or a .tar")
    container = open_container(path, index_dir=tar_index_dir())
    try:
        return sorted(n for n in container.names() if _is_image(n))
    finally:
        container.close()


def tar_index_dir() -> str:
    """Where tar offset indexes (and decompressed copies of ``.tar.gz``) are kept between runs."""
    root = os.environ.get("LLAVA_ZH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llava_zh")
    return os.path.join(root, "tar_index")


def item_id(task: str, member: str) -> str:
    """The id of the sample made from image ``member`` for ``task``: ``<task>/<member without extension>``."""
    return f"{task}/{PurePosixPath(member).with_suffix('').as_posix()}"


def image_items(
    images: str | os.PathLike,
    tasks: Sequence[str],
    *,
    language: str = "zh",
    source: str = DEFAULT_SOURCE,
) -> list[Item]:
    """One item per image and task, in the order of the sorted image paths."""
    container = os.path.abspath(os.fspath(images))
    members = list_images(container)
    if not members:
        raise ValueError(f"{images}: no images found (expected files ending in {', '.join(IMAGE_SUFFIXES)})")
    items = []
    for member in members:
        for task in tasks:
            sid = item_id(task, member)
            question = description_question(sid, language) if task == "detail_description" else None
            items.append(Item(sid, task, language, source, member, container=container, member=member, question=question))
    return items


def _first_question(conversations: Sequence[dict[str, Any]]) -> Optional[str]:
    for turn in conversations or ():
        if turn.get("from") in ("human", "user"):
            text = turn.get("value", "").replace(IMAGE_PLACEHOLDER, "").strip()
            return text or None
    return None


def dataset_items(
    dataset: Any,
    *,
    tasks: Optional[Sequence[str]] = None,
    ids: Optional[Iterable[str]] = None,
    language: Optional[str] = None,
) -> list[Item]:
    """One item per sample of a llava-zh ``datasets.Dataset`` (optionally only some tasks or ids) to redo.

    A sample keeps its id, task, source and language (``language`` overrides it); a description keeps the
    question of its human turn.
    """
    columns = dataset.column_names
    missing = {"id", "task", "conversations"} - set(columns)
    if missing:
        raise ValueError(f"expected a llava-zh dataset with id, task and conversations columns, missing {sorted(missing)}")
    wanted = set(ids) if ids is not None else None
    meta = dataset.select_columns([c for c in ("id", "task", "language", "source", "conversations") if c in columns])
    items, seen = [], set()
    for row, sample in enumerate(meta):
        sid = sample["id"]
        if wanted is not None and sid not in wanted:
            continue
        task = sample["task"]
        if task not in TASKS:
            raise ValueError(f"sample {sid!r} (row {row}): unknown task {task!r}; expected one of {list(TASKS)}")
        if tasks is not None and task not in tasks:
            continue
        if sid in seen:
            raise ValueError(f"sample id {sid!r} appears twice in the input dataset (row {row}); ids must be unique")
        seen.add(sid)
        lang = language or sample.get("language") or "zh"
        question = None
        if task == "detail_description":
            question = _first_question(sample["conversations"]) or description_question(sid, lang)
        items.append(Item(sid, task, lang, sample.get("source") or DEFAULT_SOURCE, None, row=row, question=question))
    if wanted is not None:
        unknown = wanted - seen
        if unknown and tasks is None:
            raise ValueError(f"{len(unknown)} requested id(s) are not in the dataset, e.g. {sorted(unknown)[:5]}")
    return items


def load_input_dataset(dataset: Any, *, split: str = "train", **load_kwargs: Any):
    """A ``datasets.Dataset`` from what the user passed: a Dataset, a DatasetDict (``split`` taken), or a
    source understood by ``llava_zh.load_dataset``. The image column is left undecoded (bytes)."""
    import datasets

    if isinstance(dataset, (str, os.PathLike)):
        from ..loading import load_dataset

        dataset = load_dataset(str(dataset), split=split, **load_kwargs)
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"split {split!r} not in the dataset; it has {list(dataset)}")
        dataset = dataset[split]
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"expected a datasets.Dataset, a DatasetDict or a source path, got {type(dataset).__name__}")
    if "image" in dataset.column_names and isinstance(dataset.features.get("image"), datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return dataset


def dataset_image(dataset: Any, row: int) -> tuple[Optional[bytes], Optional[str]]:
    """The encoded image bytes and path of a dataset row (``(None, None)`` for a sample without image)."""
    if "image" not in dataset.column_names:
        return None, None
    image = dataset[row]["image"]
    if image is None:
        return None, None
    data = image.get("bytes")
    path = image.get("path")
    if data is None and path and os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
    return data, path
