"""``llava-zh encode``: tokenize a source once with a model's processor and write it for trainers.

    llava-zh encode data/llava-zh --processor Qwen/Qwen2.5-VL-7B-Instruct --out encoded/ \\
        --max-length 4096 --max-pixels 200704

Writes ``OUT/data/train-*.parquet`` (``id``, ``input_ids``, ``attention_mask``, ``labels``, ``length``,
``images`` as original bytes, ``image_grid_thw`` and ``mm_token_type_ids`` for the Qwen2-VL family),
``OUT/encoding.json`` (options, processor, counts) and a ``README.md`` so that
``datasets.load_dataset(OUT)`` reads it. The encoding is cached by fingerprint in the datasets cache:
running the same command again tokenizes nothing. Python: ``llava_zh.encode(...)``.
"""

from __future__ import annotations

import argparse

from ._common import add_source_arguments, load_kwargs

FAMILY_NAMES = ("qwen2_5_vl", "qwen2_vl", "llava")  # llava_zh.tiny_models.FAMILIES


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    add_source_arguments(p, num_proc=False)  # its own --num-proc serves both
    p.add_argument("--processor", required=True, metavar="PATH_OR_ID",
                   help="the model's processor: a folder saved with save_pretrained or a Hub id")
    p.add_argument("--family", default=None, choices=FAMILY_NAMES,
                   help="processor family when the folder does not name its processor class")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (data/train-*.parquet, encoding.json)")
    p.add_argument("--split", default="train", help="split of the source to encode (default: train)")
    p.add_argument("--max-length", type=int, default=None, metavar="N", help="longest sample in tokens")
    p.add_argument("--on-too-long", default="truncate", choices=("truncate", "drop", "raise"),
                   help="a sample longer than --max-length: keep its whole turns that fit (default), drop it, or fail")
    p.add_argument("--min-pixels", type=int, default=None, metavar="N", help="smallest image, in pixels (processor's own resize)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N", help="largest image, in pixels (processor's own resize)")
    p.add_argument("--all-tokens", action="store_true", help="learn every token, not only the assistant replies")
    p.add_argument("--pixels", action="store_true", help="also store pixel_values (large; default: image bytes only)")
    p.add_argument("--num-proc", type=int, default=None, help="processes preparing the source and encoding it")
    p.add_argument("--batch-size", type=int, default=64, help="samples per encoder call (default 64)")
    p.add_argument("--max-shard-size", default="500MB", help="largest parquet file (default 500MB)")
    p.add_argument("--overwrite", action="store_true", help="replace parquet files already in OUT/data")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import llava_zh
    from llava_zh.encoding import load_processor

    kwargs = load_kwargs(args)
    dataset = llava_zh.load_dataset(args.source, kwargs.pop("config"), split=args.split, **kwargs)
    processor = load_processor(args.processor, family=args.family)
    _, report = llava_zh.encode(
        dataset, processor, args.out, max_length=args.max_length, on_too_long=args.on_too_long,
        min_pixels=args.min_pixels, max_pixels=args.max_pixels, assistant_only_loss=not args.all_tokens,
        pixels=args.pixels, num_proc=args.num_proc, batch_size=args.batch_size, cache_dir=args.cache_dir,
        max_shard_size=args.max_shard_size, overwrite=args.overwrite, return_report=True,
    )
    print(report)
    for path in report.files:
        print(f"wrote {path}")
    print(f"fingerprint {report.fingerprint}; options in {args.out}/encoding.json")
    return 0
