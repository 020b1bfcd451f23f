"""``llava-zh publish SOURCE --repo-id ID``: write a Hub repo layout (parquet + card) and optionally upload it.

The token is checked before the source is read, so ``--push`` without one fails at once. The token comes
from ``HF_TOKEN`` or a saved ``hf auth login`` (``MODELSCOPE_API_TOKEN`` for ModelScope); there is no
command-line option for it, so it never lands in a shell history.
"""

from __future__ import annotations

import argparse
import sys

from ._common import add_source_arguments, load_kwargs


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=help_)
    add_source_arguments(p)
    p.add_argument("--repo-id", required=True, metavar="ID", help="owner/name of the dataset repo")
    p.add_argument(
        "--local-dir",
        default=None,
        metavar="DIR",
        help="where to write the repo layout (default: a folder under the datasets cache); re-running resumes",
    )
    p.add_argument("--push", action="store_true", help="upload after writing (needs a token with write access)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--to", default="hf", choices=("hf", "modelscope"), help="where to upload (default: hf)")
    p.add_argument("--max-shard-size", default="500MB", metavar="SIZE", help="largest parquet file (default: 500MB)")
    p.add_argument("--license", default=None, help="license id for the card (default: apache-2.0)")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.add_argument("--verify", action="store_true", help="re-check the checksum of every shard a re-run reuses")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import llava_zh
    from llava_zh.publishing import PublishError, resolve_push_token

    if args.push:
        try:
            resolve_push_token(args.to)
        except (PublishError, ImportError) as e:
            print(f"llava-zh publish: {e}", file=sys.stderr)
            return 2
    ds = llava_zh.load_dataset(args.source, split=None, **load_kwargs(args))
    result = llava_zh.publish(
        ds,
        args.repo_id,
        local_dir=args.local_dir,
        push=args.push,
        private=args.private,
        max_shard_size=args.max_shard_size,
        to=args.to,
        revision=args.revision,
        license=args.license,
        verify=args.verify,
    )
    print(f"local copy: {result.local_dir}")
    for config, splits in result.configs.items():
        print(f"  {config}: " + ", ".join(f"{split} {rows:,}" for split, rows in splits.items()))
    print(f"shards: {len(result.written)} written, {len(result.skipped)} reused, {len(result.removed)} stale removed")
    if args.push:
        print(f"uploaded {len(result.pushed)} files to {result.url or args.repo_id}")
    return 0
