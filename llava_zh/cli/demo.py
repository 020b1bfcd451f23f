"""``llava-zh demo``: load the embedded sample through the builder and show what it holds."""

from __future__ import annotations

import argparse
import textwrap


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=help_)
    p.add_argument("--index", type=int, default=0, help="which sample to show decoded (default: 0)")
    p.add_argument("--width", type=int, default=100, help="wrap conversation text at this width")
    p.set_defaults(func=run)


def task_table(tasks: dict[str, int]) -> str:
    """A plain-text table of samples per task with a total line."""
    width = max([len("task"), len("total")] + [len(t) for t in tasks])
    lines = [f"{'task':<{width}}  {'samples':>7}", f"{'-' * width}  {'-' * 7}"]
    lines += [f"{t:<{width}}  {n:>7}" for t, n in tasks.items()]
    lines += [f"{'-' * width}  {'-' * 7}", f"{'total':<{width}}  {sum(tasks.values()):>7}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import llava_zh
    from llava_zh.schema import TASKS

    ds = llava_zh.load_dataset("sample", config="all", split="train")
    counts = dict.fromkeys(TASKS, 0)
    for task in ds["task"]:
        counts[task] += 1
    print(f"llava-zh {llava_zh.__version__}: the embedded sample of llava-instruct-zh-600k, loaded through the builder")
    print(f"cached at {ds.cache_files[0]['filename'] if ds.cache_files else '(in memory)'}\n")
    print(task_table(counts))
    sample = ds[args.index]
    image = sample["image"]
    print(f"\nsample {sample['id']} ({sample['task']}, {sample['language']}, source {sample['source']})")
    if image is not None:
        print(f"image: {image.width}x{image.height}, mode {image.mode}, format {image.format}")
    for turn in sample["conversations"]:
        speaker = "用户" if turn["from"] == "human" else "助手"
        body = "\n".join(
            textwrap.fill(line, width=args.width, subsequent_indent="      ") if line else ""
            for line in turn["value"].splitlines()
        )
        print(f"[{speaker}] {body}")
    return 0
