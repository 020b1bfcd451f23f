"""llava-instruct-zh-600k as a ``datasets.ArrowBasedBuilder``: a config, ``_info``, ``_split_generators``
and ``_generate_tables``.

Reads LLaVA-style annotations (JSON arrays, JSON Lines, parquet with embedded images) and the images they
name (from folders, zip or tar archives, as original bytes), validates every record, and writes the
features of ``llava_zh.schema.FEATURES``. One config per task plus ``all``.

``datasets`` 5 runs no loading scripts, so the class is instantiated directly (``llava_zh.load_dataset``
does it for you)::

    builder = LlavaInstructZh(config_name="conversation", annotation_files=["conversation.json"],
                              image_paths=["images/"], hash="...")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import datasets

from llava_zh.cache_writes import piecewise_local_writes
from llava_zh.errors import bad_sample_in
from llava_zh.prepare import PrepareOptions, arrow_threads, generate_tables
from llava_zh.schema import DATASET_NAME, DEFAULT_LANGUAGE, FEATURES, TASKS

_DESCRIPTION = (
    "llava-instruct-zh-600k: 641,868 Chinese visual instruction samples in the format of LLaVA-Instruct-150K, "
    "one distinct image each, crawled from Chinese websites and synthesized with Qwen2.5-VL-32B-Instruct in "
    "three tasks: conversation, complex reasoning and detailed description."
)
_HOMEPAGE = "https://huggingface.co/datasets/opencsg/llava-instruct-zh-600k"
_LICENSE = "apache-2.0"
_CITATION = """@misc{llava_instruct_zh_600k,
  title  = {llava-instruct-zh-600k: a Chinese visual instruction dataset in the LLaVA format},
  author = {OpenCSG},
  year   = {2025},
  howpublished = {\\url{https://huggingface.co/datasets/opencsg/llava-instruct-zh-600k}}
}"""

#: a file whose name is a split name (train.jsonl, validation-0001.json...) goes to that split
_SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                "dev": "validation", "test": "test"}
_SPLIT_IN_NAME = re.compile(r"(?:^|[-_.])(train|validation|valid|val|dev|test)(?=$|[-_.0-9])")


def split_of(path: str) -> str:
    """The split a file belongs to by its name; ``train`` when its name names none."""
    found = _SPLIT_IN_NAME.search(os.path.basename(path).lower())
    return _SPLIT_NAMES[found.group(1)] if found else "train"


@dataclass
class LlavaInstructZhConfig(datasets.BuilderConfig):
    """Where the files are and how to treat them; every field takes part in the cache key."""

    task: Optional[str] = None
    annotation_files: list[str] = field(default_factory=list)
    image_paths: list[str] = field(default_factory=list)
    language: str = DEFAULT_LANGUAGE
    source_name: str = DATASET_NAME
    text_only: bool = False
    on_bad_sample: str = "raise"
    batch_size: int = 1000

    def __post_init__(self):
        super().__post_init__()
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")


_VERSION = datasets.Version("0.1.0")


class LlavaInstructZh(datasets.ArrowBasedBuilder):
    """Builder for llava-instruct-zh-600k and any LLaVA-style data of the same shape."""

    VERSION = _VERSION
    BUILDER_CONFIG_CLASS = LlavaInstructZhConfig
    BUILDER_CONFIGS = [
        LlavaInstructZhConfig(name="all", version=_VERSION, description="All three tasks."),
        *[
            LlavaInstructZhConfig(name=task, version=_VERSION, task=task, description=f"Only the {task} task.")
            for task in TASKS
        ],
    ]
    DEFAULT_CONFIG_NAME = "all"
    #: rows per Arrow record batch, unless the caller gives ``writer_batch_size``: see ``_writer_rows``
    DEFAULT_WRITER_BATCH_SIZE = None
    TEXT_WRITER_BATCH_SIZE = 1000

    #: folder for per-file counts and quarantine parts; None means "inside the prepared dataset"
    reports_dir: Optional[str] = None
    #: folder for tar offset indexes and decompressed tar.gz archives; None means "beside the cache"
    index_dir: Optional[str] = None

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=FEATURES,
            homepage=_HOMEPAGE,
            license=_LICENSE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        if not self.config.annotation_files:
            raise ValueError(
                "no annotation files given: pass annotation_files=[...] (llava_zh.load_dataset resolves a source for you)"
            )
        if self._writer_batch_size is None:
            self._writer_batch_size = self._writer_rows()
        by_split: dict[str, list[tuple[int, str]]] = {}
        for order, path in enumerate(self.config.annotation_files):
            by_split.setdefault(split_of(path), []).append((order, path))
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"files": files, "split": split})
            for split, files in by_split.items()
        ]

    def _writer_rows(self) -> int:
        """Rows per record batch: datasets' own size for image data (100) when images come from archives,
        so a batch of 46 KB images is about 5 MB, not 46 MB, for whatever reads the prepared data one
        batch at a time (``to_iterable_dataset``, ``iter``); 1,000 for text, where fewer batches cost
        less. (Preparing 2.8 GB of images took the same time either way once the cache is written in
        pieces, see ``llava_zh.cache_writes``: medians 1.45 s and 1.48 s of six runs.)"""
        from llava_zh.images import is_archive

        if not self.config.text_only and any(is_archive(p) for p in self.config.image_paths):
            return datasets.config.ARROW_RECORD_BATCH_SIZE_FOR_IMAGE_DATASETS
        return self.TEXT_WRITER_BATCH_SIZE

    #: set by ``_prepare_split`` when the split is shared out among several processes
    _one_thread_per_process = False

    def _prepare_split(self, split_generator, *args, **kwargs):
        # Several processes share the cores: each then works in one thread (no reading or table thread,
        # no Arrow thread pool), as threads on top of busy cores only add switching. Set here, before
        # datasets hands this builder to its worker processes.
        # datasets runs one process when the split has a single file, whatever num_proc says: threads then.
        parent = super()._prepare_split
        num_proc = inspect.signature(parent).bind(split_generator, *args, **kwargs).arguments.get("num_proc")
        files = len(split_generator.gen_kwargs["files"])
        self._one_thread_per_process = bool(num_proc and num_proc > 1 and files > 1)
        return parent(split_generator, *args, **kwargs)

    def _prepare_split_single(self, *args, **kwargs):
        # the cache file is written in pieces of 1 MiB (see llava_zh.cache_writes for why and how)
        with piecewise_local_writes(), arrow_threads(not self._one_thread_per_process):
            try:
                yield from super()._prepare_split_single(*args, **kwargs)
            except datasets.exceptions.DatasetGenerationError as e:
                # datasets wraps a bad sample in an error whose cause does not survive the way back from
                # a worker process (num_proc): the bad sample itself does (its fields pickle), so it goes
                bad = bad_sample_in(e)
                if bad is None:
                    raise
                raise bad from None

    def _generate_tables(self, files, split):
        options = PrepareOptions(
            task=self.config.task,
            language=self.config.language,
            source_name=self.config.source_name,
            text_only=self.config.text_only,
            on_bad_sample=self.config.on_bad_sample,
            batch_size=self.config.batch_size,
        )
        reports_dir = self.reports_dir or os.path.join(self._output_dir, "llava_zh_reports")
        index_dir = self.index_dir or os.path.join(self._cache_dir_root, "llava_zh_archives")
        yield from generate_tables(files, split, options, self.config.image_paths, index_dir, reports_dir,
                                   threads=not self._one_thread_per_process)
