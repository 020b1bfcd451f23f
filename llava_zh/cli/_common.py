"""Arguments shared by the verbs that read a source."""

from __future__ import annotations

import argparse

from llava_zh.schema import CONFIGS


def add_source_arguments(parser: argparse.ArgumentParser, *, policy: bool = True, num_proc: bool = True) -> None:
    """SOURCE plus the options of ``llava_zh.load_dataset`` that every reading verb takes (``num_proc=False``
    for a verb that never prepares the source, or that defines ``--num-proc`` itself)."""
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help='"sample" (embedded set), a local folder or file, a Hub dataset id, or modelscope://owner/name',
    )
    parser.add_argument("--config", default="all", choices=CONFIGS, help="task config (default: all)")
    parser.add_argument(
        "--images", action="append", default=[], metavar="PATH",
        help="extra image container (folder, .zip, .tar, .tar.gz); repeatable",
    )
    parser.add_argument("--cache-dir", default=None, help="datasets cache folder (default: the HF datasets cache)")
    if num_proc:
        parser.add_argument(
            "--num-proc", type=int, default=None, metavar="N",
            help="processes preparing the source, one or more annotation files each (default: one process)",
        )
    if policy:
        parser.add_argument(
            "--on-bad-sample", default="raise", choices=("raise", "skip", "quarantine"),
            help="what to do with a sample that breaks a rule (default: raise)",
        )


def load_kwargs(args: argparse.Namespace) -> dict:
    kwargs = {"config": args.config, "images": args.images or None, "cache_dir": args.cache_dir}
    if hasattr(args, "on_bad_sample"):
        kwargs["on_bad_sample"] = args.on_bad_sample
    if getattr(args, "num_proc", None) is not None:
        kwargs["num_proc"] = args.num_proc
    return kwargs
