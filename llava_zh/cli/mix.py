"""``llava-zh mix``: blend sources by ratio and write the mix as parquet shards with the images inside.

    llava-zh mix --source zh=data/zh --source en=llava_instruct_150k.json --images en=coco/train2017.zip \\
        --weights zh=0.6,en=0.4 --by tokens --total 100000 --out mixed/

A source whose path is a LLaVA-Instruct-150K file (or a folder holding them) is read with
``load_llava_instruct_150k`` (text-only unless ``--images NAME=PATH`` gives its COCO images); any other
with ``llava_zh.load_dataset``. Prints the composition report and writes it to ``OUT/mix_report.json``.
"""

from __future__ import annotations

import argparse
import os
import sys


def _pairs(values: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"llava-zh mix: {what} must look like NAME=VALUE, got {value!r}")
        out.append((name, rest))
    return out


def parse_weights(text: str) -> dict[str, float]:
    """``"zh=0.6,en=0.4"`` -> ``{"zh": 0.6, "en": 0.4}``."""
    weights = {}
    for name, value in _pairs([p for p in text.split(",") if p.strip()], "--weights"):
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"llava-zh mix: weight of {name!r} is not a number: {value!r}") from None
    return weights


def is_english_release(path: str) -> bool:
    from llava_zh.english import ENGLISH_FILES

    if os.path.isdir(path):
        return any(os.path.exists(os.path.join(path, name)) for name in ENGLISH_FILES)
    return os.path.basename(path).lower() in ENGLISH_FILES


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--source", action="append", required=True, metavar="NAME=PATH",
                   help="a source to mix (repeatable): a folder or file, 'sample', a Hub id, or a LLaVA-Instruct-150K file")
    p.add_argument("--weights", required=True, metavar="NAME=W,...", help="weights per source, e.g. zh=0.6,en=0.4")
    p.add_argument("--images", action="append", default=[], metavar="NAME=PATH",
                   help="image container (folder, .zip, .tar) for a source; repeatable")
    p.add_argument("--english", action="append", default=[], metavar="NAME",
                   help="read this source as LLaVA-Instruct-150K even if its file name does not say so")
    p.add_argument("--by", default="samples", choices=("samples", "tokens"), help="what the weights are shares of")
    p.add_argument("--stopping-strategy", default="all_exhausted", choices=("all_exhausted", "first_exhausted"))
    p.add_argument("--total", type=int, default=None, help="exactly this many samples (sources repeat as needed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epoch", type=int, default=0,
                   help="write this epoch's order (mixed.set_epoch(N)); 0 is the mix's first order")
    p.add_argument("--task-aligned", nargs="?", const=True, default=False, metavar="NAME",
                   help="every source gets the task proportions of NAME (default: the Chinese source)")
    p.add_argument("--tokenizer", default=None, metavar="PATH_OR_ID",
                   help="count tokens with this tokenizer (transformers) instead of the character estimate")
    p.add_argument("--streaming", action="store_true", help="stream the sources instead of preparing them first")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (data/train-*.parquet, mix_report.json)")
    p.add_argument("--max-shard-size", default="500MB", help="largest parquet file (default 500MB)")
    p.add_argument("--overwrite", action="store_true", help="replace parquet files already in DIR/data")
    p.add_argument("--on-bad-sample", default="raise", choices=("raise", "skip", "quarantine"))
    p.add_argument("--cache-dir", default=None, help="datasets cache folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import llava_zh
    from llava_zh.mixing import write_mix

    sources = _pairs(args.source, "--source")
    names = [n for n, _ in sources]
    if len(set(names)) != len(names):
        raise SystemExit(f"llava-zh mix: source names must differ, got {names}")
    images: dict[str, list[str]] = {}
    for name, path in _pairs(args.images, "--images"):
        if name not in names:
            raise SystemExit(f"llava-zh mix: --images names {name!r}, which is not a --source")
        images.setdefault(name, []).append(path)
    weights = parse_weights(args.weights)
    loaded = {}
    for name, path in sources:
        if name in args.english or is_english_release(path):
            loaded[name] = llava_zh.load_llava_instruct_150k(
                path, images=images.get(name), streaming=args.streaming, on_bad_sample=args.on_bad_sample,
                cache_dir=args.cache_dir,
            )
        else:
            loaded[name] = llava_zh.load_dataset(
                path, streaming=args.streaming, on_bad_sample=args.on_bad_sample, cache_dir=args.cache_dir,
                images=images.get(name),
            )
    tokenizer = None
    if args.tokenizer:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise SystemExit('llava-zh mix: --tokenizer needs transformers: pip install "llava-zh[regen]"') from None
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    try:
        mixed, report = llava_zh.mix(
            loaded, weights, by=args.by, stopping_strategy=args.stopping_strategy, seed=args.seed,
            task_aligned=args.task_aligned, total=args.total, tokenizer=tokenizer,
        )
        if args.epoch:
            mixed.set_epoch(args.epoch)
        files = write_mix(mixed, args.out, report, max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"llava-zh mix: {e}", file=sys.stderr)
        return 2
    print(report)
    print(f"wrote {len(files)} parquet file(s) to {os.path.join(args.out, 'data')} and mix_report.json")
    return 0
