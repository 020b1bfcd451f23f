"""``llava-zh stats SOURCE --out DIR``: statistics of a source as stats.json, stats.md and PNG plots."""

from __future__ import annotations

import argparse
import sys

from ._common import add_source_arguments, load_kwargs


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=help_ + " (one streaming pass; images are not decoded)")
    add_source_arguments(p, policy=True)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for stats.json, stats.md and plots/")
    p.add_argument("--tokenizer", metavar="PATH", default=None,
                   help="tokenizer folder (transformers) or tokenizer.json, to count tokens too")
    p.add_argument("--top-k", type=int, default=20, help="how many repeated questions to list (default: 20)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument("--streaming", action="store_true", help="stream the source instead of preparing an Arrow cache")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import llava_zh

    ds = llava_zh.load_dataset(args.source, streaming=args.streaming, **load_kwargs(args))
    try:
        result = llava_zh.stats(ds, tokenizer=args.tokenizer, out_dir=args.out, plots=not args.no_plots, top_k=args.top_k)
    except ImportError as e:
        print(f"llava-zh stats: {e}", file=sys.stderr)
        return 2
    data = result.to_dict()
    print(f"{data['samples']:,} samples; " + ", ".join(f"{k}: {v:,}" for k, v in data["by_task"].items()))
    for key in ("rounds", "question_chars", "answer_chars", "question_tokens", "answer_tokens"):
        if key in data:
            d = data[key]
            print(f"  {key:<15} mean {d['mean']}  p50 {d['p50']}  p90 {d['p90']}  max {d['max']}")
    print(f"  cjk_share       mean {data['cjk_share']['mean']}")
    print(f"written to {args.out}: stats.json, stats.md" + ("" if args.no_plots else ", plots/*.png"))
    return 0
