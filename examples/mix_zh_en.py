"""Mix llava-instruct-zh-600k with the English LLaVA-Instruct-150K, by ratio, and look at the result.

Point it at the real files:

    python examples/mix_zh_en.py \\
        --zh opencsg/llava-instruct-zh-600k            # or a local folder / file, or "sample" \\
        --en /data/llava/llava_instruct_150k.json      # or conversation_58k.json ..., or their folder \\
        --coco /data/coco/train2017.zip                # or the train2017/ folder; leave out for text-only English \\
        --weights zh=0.6,en=0.4 --by tokens --total 200000 --streaming --out mixed/

With no arguments it runs offline on the embedded Chinese sample and a few generated English records,
so you can see what it does before downloading anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import llava_zh  # noqa: E402
from llava_zh.mixing import write_mix  # noqa: E402


def tiny_english(folder: str) -> str:
    """A few records in the shape of llava_instruct_150k.json (text-only: no COCO images needed)."""
    records = []
    for i in range(40):
        if i % 3 == 0:
            conv = [{"from": "human", "value": "What is the dog doing?\n<image>"}, {"from": "gpt", "value": "It is catching a frisbee."},
                    {"from": "human", "value": "Where is it?"}, {"from": "gpt", "value": "In a park, on green grass."}]
        elif i % 3 == 1:
            conv = [{"from": "human", "value": "<image>\nWhat do you see happening in this image?"},
                    {"from": "gpt", "value": "A dog leaps to catch a red frisbee while its owner watches from the bench."}]
        else:
            conv = [{"from": "human", "value": "Why might the owner have brought the dog here?\n<image>"},
                    {"from": "gpt", "value": "The open lawn gives the dog room to run, which it needs to stay healthy."}]
        records.append({"id": f"{i:012d}", "image": f"{i:012d}.jpg", "conversations": conv})
    path = os.path.join(folder, "llava_instruct_150k.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zh", default="sample", help='Chinese source: "sample", a folder/file, or a Hub id')
    parser.add_argument("--en", default=None, help="LLaVA-Instruct-150K file or folder (default: a tiny generated one)")
    parser.add_argument("--coco", default=None, help="COCO train2017 folder or train2017.zip (default: text-only English)")
    parser.add_argument("--weights", default="zh=0.6,en=0.4")
    parser.add_argument("--by", default="tokens", choices=("samples", "tokens"))
    parser.add_argument("--total", type=int, default=None)
    parser.add_argument("--task-aligned", action="store_true", help="give English the Chinese task proportions")
    parser.add_argument("--streaming", action="store_true", help="stream instead of preparing Arrow files first")
    parser.add_argument("--out", default=None, help="write the mix as parquet shards here")
    args = parser.parse_args()

    weights = {k: float(v) for k, v in (p.split("=") for p in args.weights.split(","))}
    tmp = tempfile.mkdtemp(prefix="mix_zh_en_")
    en_path = args.en or tiny_english(tmp)

    zh = llava_zh.load_dataset(args.zh, streaming=args.streaming)
    en = llava_zh.load_llava_instruct_150k(en_path, images=args.coco, streaming=args.streaming)
    mixed, report = llava_zh.mix({"zh": zh, "en": en}, weights, by=args.by, total=args.total,
                                 task_aligned=args.task_aligned)

    print("first samples of the mix:")
    for i, row in enumerate(mixed):
        question = next(t["value"] for t in row["conversations"] if t["from"] == "human")
        image = f"{row['image'].size[0]}x{row['image'].size[1]} image" if row["image"] is not None else "no image"
        print(f"  {i:>2} {row['language']} {row['task']:<18} {image:<16} {question[:40]!r}")
        if i == 9:
            break

    # The same mix, split across 2 ranks of a distributed job: disjoint parts that together are the mix.
    from datasets.distributed import split_dataset_by_node

    rank0 = split_dataset_by_node(mixed, rank=0, world_size=2)
    print(f"rank 0 of 2 starts with: {[r['id'] for _, r in zip(range(3), rank0)]}")

    if args.out:
        files = write_mix(mixed, args.out, report, overwrite=True)
        print(f"wrote {len(files)} parquet file(s) under {args.out}")
    print()
    print(report)


if __name__ == "__main__":
    main()
