"""The ``llava-zh`` command line: a thin layer whose verbs mirror the Python API.

Each verb lives in its own module of this package and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable taking the parsed arguments and returning the exit status.
Modules are imported only when their verb is used, so ``llava-zh --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# verb -> (module, one-line help). Add a verb here and in its module; nothing else to wire.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("llava_zh.cli.demo", "load the embedded sample through the builder and show it"),
    "info": ("llava_zh.cli.info", "samples per task, features and cache location of a source"),
    "validate": ("llava_zh.cli.validate", "check every sample of a source; exit 1 when any is bad"),
    "publish": ("llava_zh.cli.publish", "write parquet shards + dataset card for the Hub; --push uploads them"),
    "stats": ("llava_zh.cli.stats", "statistics of a source: stats.json, stats.md and PNG plots"),
    "preview": ("llava_zh.cli.preview", "one self-contained HTML page of random samples with their images"),
    "filter": ("llava_zh.cli.filter", "deduplicate and filter a source; print what each rule removed"),
    "export": ("llava_zh.cli.export", "write a source for a trainer: llava, sharegpt, llamafactory, swift, trl, internvl"),
    "regenerate": ("llava_zh.cli.regenerate", "make samples from images with a VLM (or redo a dataset's); resumable, shardable"),
    "encode": ("llava_zh.cli.encode", "tokenize a source once with a model's processor: parquet shards of ids, labels and image references"),
    "mix": ("llava_zh.cli.mix", "blend sources by ratio (samples or tokens); write parquet shards and the composition"),
}


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    from llava_zh import __version__

    parser = argparse.ArgumentParser(
        prog="llava-zh",
        description="Load, check, convert, mix, regenerate, publish and look at llava-instruct-zh-600k "
        "(or any LLaVA-style data). Every verb has a Python twin in llava_zh.",
    )
    parser.add_argument("--version", action="version", version=f"llava-zh {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for verb, (module, help_) in COMMANDS.items():
        if wanted is not None and wanted in COMMANDS and verb != wanted:
            sub.add_parser(verb, help=help_)  # listed in --help, its module not imported
            continue
        importlib.import_module(module).register(sub, verb, help_)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
