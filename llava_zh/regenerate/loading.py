"""Read a regeneration run's records back with all their columns (raw reply, parse status, model, timing).

``llava_zh.load_dataset("<out>/data")`` gives the parsed samples as a llava-zh dataset (sample fields only);
``load_records`` gives the full records, and with ``keep_failures=True`` the refused replies too.

Example:
    >>> from llava_zh.regenerate import load_records
    >>> ds = load_records("regen/", keep_failures=True)                        # doctest: +SKIP
    >>> ds.filter(lambda r: r["parse_status"] == "failed")["parse_reason"][:3]  # doctest: +SKIP
    ['no_pair', 'no_pair', 'too_many_rounds']
"""

from __future__ import annotations

import os
from typing import Optional

from .record import REGEN_FEATURES
from .store import FOLDERS, part_files


def load_records(out: str | os.PathLike, *, keep_failures: bool = False, split: str = "train",
                 cache_dir: Optional[str] = None):
    """A ``datasets.Dataset`` of the records in ``out`` (``REGEN_FEATURES``): parsed ones, plus refused
    ones with ``keep_failures``. Parquet and JSON Lines outputs are both read (JSON Lines keep image paths)."""
    import datasets

    out = os.fspath(out)
    files = part_files(out, FOLDERS["ok"])
    if keep_failures:
        files += part_files(out, FOLDERS["failed"])
    if not files:
        raise FileNotFoundError(f"{out}: no regeneration records found in {sorted(FOLDERS.values())}")
    suffixes = {os.path.splitext(f)[1] for f in files}
    if suffixes == {".parquet"}:
        return datasets.load_dataset("parquet", data_files={split: files}, split=split, cache_dir=cache_dir,
                                     features=REGEN_FEATURES)
    if suffixes == {".jsonl"}:
        features = datasets.Features({**REGEN_FEATURES, "image": datasets.Value("string")})
        return datasets.load_dataset("json", data_files={split: files}, split=split, cache_dir=cache_dir,
                                     features=features)
    raise ValueError(f"{out}: mixed parquet and JSON Lines records; load each kind on its own")
