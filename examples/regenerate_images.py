"""Regenerate samples from images with a VLM, then load the result as a dataset.

With a real model (a GPU and the model's weights, downloaded or local)::

    python examples/regenerate_images.py --images my_photos/ --model Qwen/Qwen2.5-VL-7B-Instruct --out regen/

Offline, with a tiny random-weight model on CPU (its replies are noise: conversation replies are refused
with a reason, descriptions are kept; this shows the flow, not the quality)::

    python examples/regenerate_images.py --tiny --out /tmp/regen-demo

Without ``--images`` the images of the embedded sample set are used. Running the command again skips what
is already done; ``--redo`` also redoes two samples of the embedded dataset with their own tasks and ids.
"""

from __future__ import annotations

import argparse
from collections import Counter

import llava_zh
from llava_zh.regenerate import load_records
from llava_zh.sources import sample_dir

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--images", default=str(sample_dir() / "images"), help="folder, .zip or .tar of images")
parser.add_argument("--model", default="Qwen/Qwen2.5-VL-7B-Instruct")
parser.add_argument("--out", default="regen")
parser.add_argument("--task", action="append", default=None, help="task(s) to generate (default: all three)")
parser.add_argument("--tiny", action="store_true", help="use a tiny random-weight model on CPU (offline demo)")
parser.add_argument("--redo", action="store_true", help="also redo two samples of the embedded dataset")
args = parser.parse_args()

options: dict = {}
model = args.model
max_new_tokens = 1024
if args.tiny:
    from llava_zh.tiny_models import build_tiny_vlm

    processor, model = build_tiny_vlm("qwen2_5_vl", image_size=224)
    options = {"processor": processor, "device": "cpu"}
    max_new_tokens = 24

# 1. one sample per image and task, written as parquet parts under out/data (parsed) and out/failed (refused)
summary = llava_zh.regenerate(
    images=args.images,
    task=args.task or "all",
    model=model,
    out=args.out,
    batch_size=4,
    max_new_tokens=max_new_tokens,
    backend_options=options,
)
print(f"{summary.processed} generated ({summary.already_done} were already done): "
      f"{summary.ok} parsed, {summary.failed} refused {summary.reasons}; {summary.tokens_per_second:.0f} tokens/s")

# 2. redo some samples of an existing llava-zh dataset: same ids, tasks and questions, new answers
if args.redo:
    sample = llava_zh.load_dataset("sample")
    ids = [sample[0]["id"], sample[-1]["id"]]
    llava_zh.regenerate(dataset=sample, ids=ids, model=model, out=args.out + "-redo",
                        max_new_tokens=max_new_tokens, backend_options=options)
    print("redone:", ids)

# 3. the parsed samples load like any llava-zh source (images are embedded in the parquet parts)
try:
    ds = llava_zh.load_dataset(f"{args.out}/data")
    print(ds)
    first = ds[0]
    print(first["id"], first["image"].size, first["conversations"][1]["value"][:80])
except Exception as e:  # noqa: BLE001 - e.g. every reply was refused
    print("no parsed samples to load:", e)

# 4. all records with their provenance, refused ones included
records = load_records(args.out, keep_failures=True)
print("records:", records.num_rows, dict(Counter(records["parse_status"])))
for r in records.filter(lambda r: r["parse_status"] == "failed").select(range(min(2, summary.failed))):
    print(f"  refused {r['id']}: {r['parse_reason']} - raw reply {r['raw_reply'][:40]!r}")
