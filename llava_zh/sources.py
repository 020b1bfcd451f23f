"""Where the data is: turn a source string into local annotation files and image containers.

A source is one of:

* ``"sample"``: the small set embedded in the package (works offline on a fresh install);
* a local folder or file: annotation files (``*.json`` arrays or JSON Lines, ``*.jsonl``, ``*.parquet``)
  and image containers (the folder itself, an ``images/`` folder beside the annotations, ``*.zip``,
  ``*.tar``, ``*.tar.gz``/``*.tgz`` archives in the folder), plus any containers given with ``images=``;
* a Hub dataset id such as ``opencsg/llava-instruct-zh-600k``, fetched with
  ``huggingface_hub.snapshot_download`` (honours ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the hub cache);
* ``modelscope://owner/name``, fetched with the ``modelscope`` package (``pip install "llava-zh[modelscope]"``).

Example:
    >>> resolve("sample").files[0].endswith(".json")
    True
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from .errors import SourceError
from .images import ARCHIVE_SUFFIXES, is_archive
from .readers import ANNOTATION_SUFFIXES, json_kind

PathLike = Union[str, os.PathLike]

#: Files that sit beside annotations in datasets and exports but hold no records.
NOT_ANNOTATIONS = {"dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MODELSCOPE_PREFIX = "modelscope://"
#: What a Hub or ModelScope snapshot fetches: annotations, archives and loose images, the card.
ALLOW_PATTERNS: tuple[str, ...] = tuple(
    f"*{s}" for s in ANNOTATION_SUFFIXES + ARCHIVE_SUFFIXES + (".jpg", ".jpeg", ".png", ".webp")
) + ("README.md",)


@dataclass(frozen=True)
class ResolvedSource:
    """Local annotation files (in a stable order) and image containers to search, in order."""

    origin: str
    root: str
    files: tuple[str, ...]
    image_paths: tuple[str, ...] = ()
    ignored: tuple[str, ...] = field(default=())


def sample_dir() -> Path:
    """The folder of the embedded sample inside the installed package."""
    return Path(str(resources.files("llava_zh").joinpath("data", "sample")))


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_annotation_file(path: Path) -> bool:
    name = path.name.lower()
    if name in NOT_ANNOTATIONS or name.endswith(".schema.json") or name.startswith("quarantine"):
        return False
    return name.endswith(ANNOTATION_SUFFIXES)


#: marker file of a ``llava_zh.regenerate`` output folder, whose ``failed/`` holds refused replies
REGEN_MARKER = "regen_config.json"


def _scan_folder(root: Path) -> tuple[list[str], list[str], list[str]]:
    files, archives, ignored = [], [], []
    # a regeneration run's refused replies are not samples: load them with
    # llava_zh.regenerate.load_records(out, keep_failures=True)
    failed = root / "failed" if (root / REGEN_MARKER).is_file() else None
    for path in sorted(root.rglob("*")):
        if not path.is_file() or _is_hidden(path, root):
            continue
        if failed is not None and failed in path.parents:
            ignored.append(str(path))
            continue
        if is_archive(path):
            archives.append(str(path))
        elif _is_annotation_file(path):
            if path.suffix.lower() == ".json" and json_kind(str(path)) == "object":
                ignored.append(str(path))  # a meta/info file, not a list of records
            else:
                files.append(str(path))
    return files, archives, ignored


def _default_containers(folder: Path) -> list[str]:
    containers = [str(folder)]
    if (folder / "images").is_dir():
        containers.append(str(folder / "images"))
    return containers


def resolve_local(path: PathLike, images: Sequence[PathLike] = ()) -> ResolvedSource:
    """Annotation files and image containers of a local folder or file."""
    p = Path(path).expanduser().resolve()
    extra = [str(Path(i).expanduser().resolve()) for i in images]
    for i in extra:
        if not os.path.exists(i):
            raise SourceError(f"image container {i} does not exist; expected a folder or one of {', '.join(ARCHIVE_SUFFIXES)}")
    if p.is_file():
        if not _is_annotation_file(p):
            raise SourceError(f"{p}: expected an annotation file ({', '.join(ANNOTATION_SUFFIXES)}) or a folder")
        return ResolvedSource(str(p), str(p.parent), (str(p),), tuple(extra + _default_containers(p.parent)))
    if not p.is_dir():
        raise SourceError(f"{path}: no such file or folder")
    files, archives, ignored = _scan_folder(p)
    if not files:
        raise SourceError(
            f"{p}: no annotation files found; expected *.json (array or JSON Lines), *.jsonl or *.parquet files"
        )
    # archives before folders: a lookup that misses a folder costs a failed open() per image
    return ResolvedSource(str(p), str(p), tuple(files), tuple(extra + archives + _default_containers(p)), tuple(ignored))


def fetch_hub(repo_id: str, *, revision: Optional[str] = None, token: Optional[str] = None,
              cache_dir: Optional[str] = None) -> str:
    """Download (or find in the hub cache) a Hub dataset repo's data files; returns the local folder.

    Goes through ``huggingface_hub.snapshot_download`` so ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the
    shared hub cache behave as everywhere else in the ecosystem.
    """
    from huggingface_hub import snapshot_download

    return snapshot_download(
        repo_id,
        repo_type="dataset",
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        allow_patterns=list(ALLOW_PATTERNS),
    )


def fetch_modelscope(dataset_id: str, *, revision: Optional[str] = None, cache_dir: Optional[str] = None) -> str:
    """Download a ModelScope dataset repo's files through the ``modelscope`` package."""
    try:
        from modelscope import dataset_snapshot_download
    except ImportError:
        raise SourceError(
            f"loading {MODELSCOPE_PREFIX}{dataset_id} needs the modelscope package: pip install \"llava-zh[modelscope]\""
        ) from None
    kwargs = {"cache_dir": cache_dir, "allow_patterns": list(ALLOW_PATTERNS)}
    if revision:
        kwargs["revision"] = revision
    return dataset_snapshot_download(dataset_id, **kwargs)


#: remote scheme -> fetcher returning a local folder
FETCHERS: dict[str, Callable[..., str]] = {"hub": fetch_hub, "modelscope": fetch_modelscope}


def kind_of(source: str) -> str:
    """``sample``, ``local``, ``modelscope`` or ``hub``; a string that is none of them is an error."""
    if source == "sample":
        return "sample"
    if source.startswith(MODELSCOPE_PREFIX):
        return "modelscope"
    if os.path.exists(os.path.expanduser(source)):
        return "local"
    if _HUB_ID.match(source):
        return "hub"
    raise SourceError(
        f"{source!r}: no such file or folder, and not a Hub dataset id (owner/name) nor modelscope://owner/name"
    )


def resolve(
    source: PathLike,
    images: Sequence[PathLike] = (),
    *,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    hub_cache_dir: Optional[str] = None,
) -> ResolvedSource:
    """Resolve any source to local files (fetching remote ones first)."""
    source = str(source)
    kind = kind_of(source)
    if kind == "sample":
        resolved = resolve_local(sample_dir(), images)
        return ResolvedSource("sample", resolved.root, resolved.files, resolved.image_paths, resolved.ignored)
    if kind == "local":
        return resolve_local(source, images)
    remote_id = source[len(MODELSCOPE_PREFIX):] if kind == "modelscope" else source
    fetch = FETCHERS[kind]
    kwargs = {"revision": revision, "cache_dir": hub_cache_dir}
    if kind == "hub":
        kwargs["token"] = token
    folder = fetch(remote_id, **kwargs)
    resolved = resolve_local(folder, images)
    return ResolvedSource(source, resolved.root, resolved.files, resolved.image_paths, resolved.ignored)
