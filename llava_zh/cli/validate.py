"""``llava-zh validate SOURCE``: a report per rule with example ids; exit 1 when anything is bad."""

from __future__ import annotations

import argparse
import json

from ._common import add_source_arguments, load_kwargs


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=help_ + " (exit status 1 when any sample is bad, 0 otherwise)")
    add_source_arguments(p, policy=False, num_proc=False)  # validation streams: nothing is prepared
    p.add_argument("--quarantine", metavar="PATH", default=None, help="write refused records to this JSONL file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import llava_zh

    kwargs = load_kwargs(args)
    report = llava_zh.validate(
        args.source, args.config, images=kwargs["images"], quarantine_path=args.quarantine, cache_dir=args.cache_dir
    )
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(f"{args.source}: {'OK' if report.ok else 'BAD SAMPLES FOUND'}")
        print(report)
    return 0 if report.ok else 1
