"""``llava-zh info SOURCE``: samples per task, the features, and where the prepared data is cached."""

from __future__ import annotations

import argparse
import json

from ._common import add_source_arguments, load_kwargs


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=help_)
    add_source_arguments(p, policy=False)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import llava_zh
    from llava_zh.cli.demo import task_table

    kwargs = load_kwargs(args)
    result = llava_zh.info(args.source, **{k: v for k, v in kwargs.items() if k != "config"}, config=args.config)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    print(f"source: {result['source']} (config {result['config']})")
    print("splits: " + ", ".join(f"{k}: {v}" for k, v in result["splits"].items()))
    print(task_table(result["tasks"]))
    print("features:")
    for name, feature in result["features"].items():
        print(f"  {name}: {feature.get('_type')}{'(' + feature['dtype'] + ')' if 'dtype' in feature else ''}")
    print(f"cache: {result['cache_dir']}")
    refused = result["report"]["refused"]
    if refused:
        print("skipped bad samples: " + ", ".join(f"{k}: {v}" for k, v in sorted(refused.items())))
    return 0
