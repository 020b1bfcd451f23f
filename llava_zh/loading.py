"""The public entry points: ``load_dataset``, ``validate`` and ``info`` over any source.

``load_dataset`` resolves the source to local files, instantiates the builder (``datasets`` 5 runs no
loading scripts) and returns what ``datasets.load_dataset`` would: a ``Dataset``, an ``IterableDataset``
when streaming, a ``DatasetDict`` when ``split=None``. The prepared Arrow data is cached under the usual
``datasets`` cache; the cache key covers the files' paths, sizes and modification times, so a second call
reuses it and a changed input file invalidates it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import Counter
from typing import Any, Optional, Sequence, Union

import datasets

from . import __version__
from .errors import SourceError, bad_sample_in
from .prepare import POLICIES, collect_reports
from .report import LoadReport
from .schema import CONFIGS, DATASET_NAME, DEFAULT_LANGUAGE
from .sources import PathLike, ResolvedSource, resolve

logger = logging.getLogger(__name__)

DatasetLike = Union[datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset, datasets.IterableDatasetDict]


def _stat_key(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def input_fingerprint(resolved: ResolvedSource) -> str:
    """A hash of what the prepared data depends on: the library version and every input's stat."""
    h = hashlib.sha256(__version__.encode())
    for path in (*resolved.files, *resolved.image_paths):
        h.update(_stat_key(path).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def make_builder(
    source: PathLike,
    config: str = "all",
    *,
    cache_dir: Optional[str] = None,
    on_bad_sample: str = "raise",
    images: Optional[Union[PathLike, Sequence[PathLike]]] = None,
    language: Optional[str] = None,
    source_name: Optional[str] = None,
    text_only: bool = False,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    batch_size: int = 1000,
):
    """Resolve ``source`` and return ``(builder, resolved)`` ready to prepare or stream."""
    from .builder import LlavaInstructZh

    if config not in CONFIGS:
        raise ValueError(f"config must be one of {list(CONFIGS)}, got {config!r}")
    if on_bad_sample not in POLICIES:
        raise ValueError(f"on_bad_sample must be one of {list(POLICIES)}, got {on_bad_sample!r}")
    if images is None:
        image_args: list = []
    elif isinstance(images, (str, os.PathLike)):
        image_args = [images]
    else:
        image_args = list(images)
    resolved = resolve(source, image_args, revision=revision, token=token)
    builder = LlavaInstructZh(
        cache_dir=cache_dir,
        dataset_name="llava_instruct_zh",
        config_name=config,
        hash=input_fingerprint(resolved),
        annotation_files=list(resolved.files),
        image_paths=list(resolved.image_paths),
        language=language or DEFAULT_LANGUAGE,
        source_name=source_name or DATASET_NAME,
        text_only=text_only,
        on_bad_sample=on_bad_sample,
        batch_size=batch_size,
    )
    return builder, resolved


def _announce(report: LoadReport, policy: str, where: str) -> None:
    if report.total_refused == 0:
        return
    counts = ", ".join(f"{rule}: {n}" for rule, n in sorted(report.refused.items()))
    if policy == "quarantine" and report.quarantine_path:
        logger.warning("%s: %d bad samples quarantined to %s (%s)", where, report.total_refused, report.quarantine_path, counts)
    else:
        logger.warning("%s: %d bad samples skipped (%s)", where, report.total_refused, counts)


def load_dataset(
    source: PathLike,
    config: str = "all",
    split: Optional[str] = "train",
    streaming: bool = False,
    cache_dir: Optional[str] = None,
    num_proc: Optional[int] = None,
    on_bad_sample: str = "raise",
    *,
    images: Optional[Union[PathLike, Sequence[PathLike]]] = None,
    language: Optional[str] = None,
    source_name: Optional[str] = None,
    text_only: bool = False,
    quarantine_path: Optional[PathLike] = None,
    return_report: bool = False,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    batch_size: int = 1000,
) -> Union[DatasetLike, tuple[DatasetLike, LoadReport]]:
    """Load llava-instruct-zh-600k (or any LLaVA-style data) as a validated ``datasets`` dataset.

    Args:
        source: ``"sample"``, a local folder or file, a Hub dataset id, or ``modelscope://owner/name``.
        config: ``all`` or one task: ``conversation``, ``complex_reasoning``, ``detail_description``.
        split: a split name, or None for a ``DatasetDict`` of every split.
        num_proc: processes preparing the cache (annotation files are shared out among them; each works in
            one thread); not with ``streaming``.
        on_bad_sample: ``raise`` (name file, line, id and rule), ``skip`` (count per rule) or
            ``quarantine`` (write refused records to a JSONL file and load the rest).
        images: extra image containers (folders, zip or tar archives) to find ``image`` paths in.
        language, source_name: defaults for records that do not say (``zh``, ``llava-instruct-zh-600k``).
        text_only: drop images and the ``<image>`` placeholder (for text-only mixing).
        quarantine_path: where to write the quarantine JSONL (default: beside the prepared data).
        return_report: also return the ``LoadReport`` (counts per rule, quarantine path).

    Example:
        >>> ds = load_dataset("sample", config="conversation")
        >>> ds.features["image"]
        Image(mode=None, decode=True)
    """
    if streaming and num_proc is not None and num_proc > 1:
        raise ValueError(
            f"num_proc={num_proc} prepares the Arrow cache in parallel, and a streaming dataset prepares nothing: "
            "drop num_proc, or split the stream with IterableDataset.shard()"
        )
    builder, resolved = make_builder(
        source,
        config,
        cache_dir=cache_dir,
        on_bad_sample=on_bad_sample,
        images=images,
        language=language,
        source_name=source_name,
        text_only=text_only,
        revision=revision,
        token=token,
        batch_size=batch_size,
    )
    splits = [split] if split is not None else None
    if streaming:
        if quarantine_path is not None:
            reports_dir = os.path.dirname(os.path.abspath(quarantine_path))
        else:
            reports_dir = os.path.join(builder._cache_dir_root, "llava_zh_streaming", builder.config_id, builder.hash)
        builder.reports_dir = reports_dir
        ds = builder.as_streaming_dataset(split=split)
        # Streaming writes counts per file as it goes; the report's quarantine path is the parts folder.
        report = LoadReport(files=list(resolved.files), ignored_files=list(resolved.ignored))
        if on_bad_sample == "quarantine":
            report.quarantine_path = reports_dir
        return (ds, report) if return_report else ds

    try:
        builder.download_and_prepare(num_proc=num_proc)
    except datasets.exceptions.DatasetGenerationError as e:
        # datasets wraps what the generator raised; a bad sample is the user's error, shown as such
        cause = bad_sample_in(e)
        if cause is not None:
            raise cause from None
        raise
    ds = builder.as_dataset(split=split)
    reports_dir = os.path.join(builder.cache_dir, "llava_zh_reports")
    splits = splits or list(builder.info.splits)
    target = str(quarantine_path) if quarantine_path is not None else None
    reports = []
    for s in splits:
        per_split_target = target if (target is None or len(splits) == 1) else f"{target}.{s}"
        reports.append(collect_reports(reports_dir, s, per_split_target))
    report = LoadReport.combine(reports)
    report.ignored_files = list(resolved.ignored)
    _announce(report, on_bad_sample, str(source))
    return (ds, report) if return_report else ds


def validate(
    source: PathLike,
    config: str = "all",
    *,
    images: Optional[Union[PathLike, Sequence[PathLike]]] = None,
    quarantine_path: Optional[PathLike] = None,
    text_only: bool = False,
    cache_dir: Optional[str] = None,
) -> LoadReport:
    """Check every record of a source against every rule without keeping a prepared copy.

    Returns a ``LoadReport`` with counts and example ids per rule; refused records are written to
    ``quarantine_path`` (JSONL) when given.

    Example:
        >>> validate("sample").ok
        True
    """
    from tqdm.auto import tqdm

    with tempfile.TemporaryDirectory(prefix="llava-zh-validate-") as tmp:
        builder, resolved = make_builder(
            source, config, cache_dir=cache_dir or tmp, on_bad_sample="quarantine", images=images, text_only=text_only
        )
        builder.reports_dir = os.path.join(tmp, "reports")
        streams = builder.as_streaming_dataset(split=None)
        for split, stream in streams.items():
            ids = stream.select_columns(["id"])
            for _ in tqdm(ids.iter(batch_size=1000), desc=f"validating {split}", unit=" batches", leave=False):
                pass
        reports = []
        for split in streams:
            target = None
            if quarantine_path is not None:
                target = str(quarantine_path) if len(streams) == 1 else f"{quarantine_path}.{split}"
            reports.append(collect_reports(builder.reports_dir, split, target))
        report = LoadReport.combine(reports)
        if quarantine_path is None:
            report.quarantine_path = None  # the temporary file is gone with the folder
        report.ignored_files = list(resolved.ignored)
        report.files = list(resolved.files)
        return report


def info(source: PathLike, config: str = "all", **kwargs: Any) -> dict[str, Any]:
    """Samples per split and task, the features, and where the prepared data is cached.

    Example:
        >>> info("sample")["tasks"]["conversation"]
        10
    """
    kwargs.setdefault("on_bad_sample", "skip")
    dd, report = load_dataset(source, config, split=None, return_report=True, **kwargs)
    tasks: Counter = Counter()
    splits = {}
    for name, ds in dd.items():
        splits[name] = ds.num_rows
        tasks.update(ds.select_columns(["task"]).to_dict()["task"])
    first = next(iter(dd.values()))
    cache_files = sorted({f["filename"] for ds in dd.values() for f in ds.cache_files})
    return {
        "source": str(source),
        "config": config,
        "splits": splits,
        "tasks": dict(sorted(tasks.items())),
        "features": first.features.to_dict(),
        "cache_dir": os.path.dirname(cache_files[0]) if cache_files else None,
        "report": report.to_dict(),
    }


__all__ = ["load_dataset", "validate", "info", "make_builder", "input_fingerprint", "SourceError"]
