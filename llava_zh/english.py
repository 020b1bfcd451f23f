"""LLaVA-Instruct-150K, the English partner for mixing, in the features of the Chinese data.

The original release is JSON arrays of ``{id, image, conversations}`` naming COCO train2017 images
(``000000033471.jpg``): ``conversation_58k.json``, ``complex_reasoning_77k.json`` and ``detail_23k.json``
(one task each, taken from the file name), and ``llava_instruct_150k.json`` / ``llava_instruct_80k.json``
(tasks mixed). Images come from a folder or from COCO's ``train2017.zip`` (members ``train2017/<name>``,
found without extracting). Without images the samples are text-only: null image, no ``<image>``
placeholder, ready to mix with image-bearing Chinese data for a language-only share.

Tasks in the mixed files. Their records say nothing about their task, so the builder reads it from the
shape (``llava_zh.tasks``): more than one round is a ``conversation``; a single round asking one of the
fixed detailed-description questions LLaVA used (``DETAIL_QUESTIONS``) is a ``detail_description``; any
other single round is ``complex_reasoning``.

Example:
    >>> import llava_zh
    >>> en = llava_zh.load_llava_instruct_150k("llava_instruct_150k.json", images="coco/train2017.zip")  # doctest: +SKIP
    >>> en[0]["language"], en[0]["source"]                                                            # doctest: +SKIP
    ('en', 'llava-instruct-150k')
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Union

import datasets

from .schema import CONFIGS, FEATURES
from .tasks import DETAIL_QUESTIONS, task_from_filename, task_from_shape  # noqa: F401 (re-exported)

PathLike = Union[str, os.PathLike]

SOURCE_NAME = "llava-instruct-150k"
LANGUAGE = "en"
#: The files of the release; None: tasks mixed, decided per record (see the module docstring).
ENGLISH_FILES: Mapping[str, Optional[str]] = {
    "conversation_58k.json": "conversation",
    "complex_reasoning_77k.json": "complex_reasoning",
    "detail_23k.json": "detail_description",
    "llava_instruct_150k.json": None,
    "llava_instruct_80k.json": None,
}
#: Preferred when a folder holds several files: the three task files cover the 150K set exactly once.
_FOLDER_CHOICES: tuple[tuple[str, ...], ...] = (
    ("conversation_58k.json", "complex_reasoning_77k.json", "detail_23k.json"),
    ("llava_instruct_150k.json",),
    ("llava_instruct_80k.json",),
)

def english_task(conversations: Sequence[Mapping[str, Any]]) -> str:
    """The task of a record of a mixed-task LLaVA-Instruct file: the builder's shape rule
    (``llava_zh.tasks.task_from_shape``), which knows LLaVA's detailed-description questions.

    Example:
        >>> english_task([{"from": "human", "value": "What do you see happening in this image?\\n<image>"},
        ...               {"from": "gpt", "value": "A man rides a horse."}])
        'detail_description'
    """
    return task_from_shape(conversations)


def with_english_tasks(example: Mapping[str, Any]) -> dict[str, Any]:
    """``example`` with its ``task`` decided by ``english_task`` (for ``Dataset.map``; input untouched)."""
    return {**example, "task": english_task(example["conversations"])}


def _annotation_files(annotations: Union[PathLike, Sequence[PathLike]]) -> list[str]:
    """The annotation files to read: the given file(s), or the release's files found in a folder."""
    if isinstance(annotations, (str, os.PathLike)):
        path = os.fspath(annotations)
        if not os.path.isdir(path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: no such annotation file")
            return [path]
        present = {name for name in os.listdir(path)}
        for choice in _FOLDER_CHOICES:
            found = [name for name in choice if name in present]
            if found:
                return [os.path.join(path, name) for name in found]
        raise FileNotFoundError(
            f"{path}: none of the LLaVA-Instruct-150K files ({', '.join(ENGLISH_FILES)}) is in this folder"
        )
    files = [os.fspath(p) for p in annotations]
    if not files:
        raise ValueError("annotations: give at least one file")
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"{f}: no such annotation file")
    return files


def _file_task(path: str) -> Optional[str]:
    name = os.path.basename(path).lower()
    if name in ENGLISH_FILES:
        return ENGLISH_FILES[name]
    return task_from_filename(path)


def load_llava_instruct_150k(
    annotations: Union[PathLike, Sequence[PathLike]],
    images: Optional[Union[PathLike, Sequence[PathLike]]] = None,
    config: str = "all",
    streaming: bool = False,
    on_bad_sample: str = "raise",
    cache_dir: Optional[str] = None,
    num_proc: Optional[int] = None,
) -> Union[datasets.Dataset, datasets.IterableDataset]:
    """Load LLaVA-Instruct-150K into the features of the Chinese data (``language="en"``).

    Args:
        annotations: a release file (``llava_instruct_150k.json``, ``conversation_58k.json``...), a list
            of them, or a folder holding them (the three task files are preferred over the 150K file).
        images: COCO train2017 images: a folder, ``train2017.zip`` (members ``train2017/<name>``), a tar,
            or a list of those. None: text-only samples (null image, no ``<image>`` placeholder).
        config: ``all`` or one task.
        streaming, on_bad_sample, cache_dir, num_proc: as in ``llava_zh.load_dataset``; a missing image
            file is a bad sample (``missing_image``) handled by ``on_bad_sample``.

    Example:
        >>> en = load_llava_instruct_150k("detail_23k.json")          # doctest: +SKIP
        >>> set(en["task"]), en[0]["image"]                           # doctest: +SKIP
        ({'detail_description'}, None)
    """
    from .loading import load_dataset

    if config not in CONFIGS:
        raise ValueError(f"config must be one of {list(CONFIGS)}, got {config!r}")
    files = _annotation_files(annotations)
    parts = []
    for path in files:
        file_task = _file_task(path)
        if file_task is not None and config not in ("all", file_task):
            continue  # a task file of another task: nothing to read
        ds = load_dataset(
            path,
            config=config,
            split="train",
            streaming=streaming,
            cache_dir=cache_dir,
            num_proc=num_proc,
            on_bad_sample=on_bad_sample,
            images=images,
            language=LANGUAGE,
            source_name=SOURCE_NAME,
            text_only=images is None,
        )
        parts.append(ds)
    if not parts:
        raise ValueError(f"config {config!r}: none of {[os.path.basename(f) for f in files]} holds that task")
    out = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if not streaming and out.features != FEATURES:  # the builder writes FEATURES; keep that promise visible
        out = out.cast(FEATURES)
    return out
