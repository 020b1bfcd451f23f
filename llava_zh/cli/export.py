"""``llava-zh export SOURCE --format FMT --out DIR``: write a source in a trainer's files (``llava_zh.export``)."""

from __future__ import annotations

import argparse

from ._common import add_source_arguments, load_kwargs

FORMAT_NAMES = ("llava", "sharegpt", "llamafactory", "swift", "trl", "internvl")  # llava_zh.convert.formats.FORMATS


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=help_)
    add_source_arguments(p)
    p.add_argument("--format", "-f", required=True, choices=FORMAT_NAMES, dest="fmt", help="target format")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--split", default=None, help="export only this split (default: every split)")
    p.add_argument("--name", default="llava_zh", help="stem of the annotation files and dataset entries")
    p.add_argument("--overwrite", action="store_true", help="replace annotation files that already exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import llava_zh

    kwargs = load_kwargs(args)
    dataset = llava_zh.load_dataset(args.source, kwargs.pop("config"), split=args.split, **kwargs)
    result = llava_zh.export(dataset, args.fmt, args.out, name=args.name, overwrite=args.overwrite)
    print(f"{result.samples} samples -> {args.out} ({args.fmt}): {', '.join(result.files)}")
    print(f"images: {result.images_written} written, {result.images_shared} shared with an earlier sample")
    for side in result.side_files:
        print(f"also wrote {side}")
    return 0
