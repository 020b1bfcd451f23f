"""``llava-zh preview SOURCE --out preview.html``: one self-contained HTML page of random samples."""

from __future__ import annotations

import argparse
import sys

from ._common import add_source_arguments, load_kwargs


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=help_ + " (opens from disk, no server)")
    add_source_arguments(p, policy=True)
    p.add_argument("--out", default="preview.html", metavar="FILE", help="HTML file to write (default: preview.html)")
    p.add_argument("--n", type=int, default=100, help="how many samples (default: 100)")
    p.add_argument("--task", default=None, help="only samples of this task")
    p.add_argument("--seed", type=int, default=0, help="random seed for the choice of samples (default: 0)")
    p.add_argument("--thumb-size", type=int, default=320, help="thumbnail size in pixels (default: 320)")
    p.add_argument("--streaming", action="store_true", help="stream the source (reservoir sampling, one pass)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import llava_zh

    ds = llava_zh.load_dataset(args.source, streaming=args.streaming, **load_kwargs(args))
    try:
        path = llava_zh.preview(ds, args.out, n=args.n, task=args.task, seed=args.seed, thumb_size=args.thumb_size)
    except ValueError as e:
        print(f"llava-zh preview: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return 0
