"""``llava-zh filter SOURCE --out DIR [rules]``: deduplicate and filter; kept.parquet + removed.jsonl."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_source_arguments, load_kwargs


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(
        verb, help=help_,
        description=help_ + ". Rules run in the order listed below; the first that refuses a sample removes it.",
    )
    add_source_arguments(p, policy=True)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for kept.parquet, removed.jsonl (rule and reason each) and filter_report.json")
    g = p.add_argument_group("rules")
    g.add_argument("--parse-status", nargs="?", const="ok", default=None, metavar="OK[,OK...]",
                   help="drop regenerated samples whose parse_status is not one of these (default: ok); "
                        "a local parquet source with a parse_status column (regeneration output) is then read "
                        "as is, every column kept")
    g.add_argument("--dedup-images", action="store_true", help="drop samples whose image bytes repeat an earlier one")
    g.add_argument("--dedup-answers", action="store_true", help="drop samples whose answers repeat an earlier one exactly")
    g.add_argument("--near-dup-answers", nargs="?", type=float, const=0.8, default=None, metavar="JACCARD",
                   help="drop near-duplicate answers (MinHash over character n-grams; default threshold 0.8)")
    g.add_argument("--ngram", type=int, default=5, help="shingle size in characters for --near-dup-answers (default: 5)")
    g.add_argument("--min-chars", type=int, default=None, help="drop samples with a text shorter than this")
    g.add_argument("--max-chars", type=int, default=None, help="drop samples with a text longer than this")
    g.add_argument("--min-tokens", type=int, default=None, help="like --min-chars in tokens (needs --tokenizer)")
    g.add_argument("--max-tokens", type=int, default=None, help="like --max-chars in tokens (needs --tokenizer)")
    g.add_argument("--length-scope", choices=("answer", "question", "sample"), default="answer",
                   help="what the length bounds measure: each answer (default), each question, or the whole sample")
    g.add_argument("--tokenizer", metavar="PATH", default=None, help="tokenizer folder or tokenizer.json")
    g.add_argument("--min-cjk", type=float, default=None, help="drop samples whose CJK share is below this (0-1)")
    g.add_argument("--max-cjk", type=float, default=None, help="drop samples whose CJK share is above this (0-1)")
    p.add_argument("--streaming", action="store_true", help="stream the source instead of preparing an Arrow cache")
    p.set_defaults(func=run)


def build_rules(args: argparse.Namespace) -> list:
    """The rules asked for on the command line, cheapest and surest first."""
    from llava_zh.inspect import filters as f

    rules: list = []
    if args.parse_status is not None:
        rules.append(f.ParseStatus([s.strip() for s in args.parse_status.split(",") if s.strip()]))
    if args.min_chars is not None or args.max_chars is not None:
        rules.append(f.LengthBounds(args.min_chars, args.max_chars, unit="chars", scope=args.length_scope))
    if args.min_tokens is not None or args.max_tokens is not None:
        if not args.tokenizer:
            raise ValueError("--min-tokens / --max-tokens need --tokenizer PATH")
        rules.append(f.LengthBounds(args.min_tokens, args.max_tokens, unit="tokens", scope=args.length_scope,
                                    tokenizer=args.tokenizer))
    if args.min_cjk is not None or args.max_cjk is not None:
        rules.append(f.CJKShareBounds(args.min_cjk, args.max_cjk))
    if args.dedup_images:
        rules.append(f.DuplicateImage())
    if args.dedup_answers:
        rules.append(f.DuplicateAnswer())
    if args.near_dup_answers is not None:
        rules.append(f.NearDuplicateAnswer(threshold=args.near_dup_answers, ngram=args.ngram))
    if not rules:
        raise ValueError("no rule chosen: give at least one of --parse-status, --dedup-images, --dedup-answers, "
                         "--near-dup-answers, --min/max-chars, --min/max-tokens, --min/max-cjk")
    return rules


def regeneration_parquet(source: str) -> list[str]:
    """The parquet files of ``source`` when it is local regeneration output (a ``parse_status`` column), else []."""
    import pyarrow.parquet as pq

    path = Path(source)
    if path.is_file() and path.suffix == ".parquet":
        files = [path]
    elif path.is_dir():
        files = sorted(path.rglob("*.parquet"))
    else:
        return []
    if files and all("parse_status" in pq.read_schema(f).names for f in files):
        return [str(f) for f in files]
    return []


def load(args: argparse.Namespace):
    """The source through ``llava_zh.load_dataset``; regeneration parquet as is, to keep ``parse_status``."""
    import llava_zh

    files = regeneration_parquet(args.source) if args.parse_status is not None else []
    if files:
        import datasets

        return datasets.load_dataset(
            "parquet", data_files=files, split="train", streaming=args.streaming, cache_dir=args.cache_dir
        )
    return llava_zh.load_dataset(args.source, streaming=args.streaming, **load_kwargs(args))


def run(args: argparse.Namespace) -> int:
    import llava_zh

    try:
        rules = build_rules(args)
    except ValueError as e:
        print(f"llava-zh filter: {e}", file=sys.stderr)
        return 2
    ds = load(args)
    result = llava_zh.filter_dataset(ds, rules)
    paths = result.save(args.out)
    report = result.report()
    width = max(len(r) for r in report["removed_per_rule"])
    print(f"input: {report['input']:,} samples")
    for rule, count in report["removed_per_rule"].items():
        print(f"  removed by {rule:<{width}}  {count:>8,}")
    print(f"kept: {report['kept']:,}   removed: {report['removed']:,}")
    print(f"written: {paths['kept']}, {paths['removed']}, {paths['report']}")
    return 0
