"""Quick start: the Python side of ``llava-zh demo``.

Loads the embedded sample through the builder (offline), counts samples per task, shows one decoded
sample, and checks every record against the validation rules.

    python examples/quickstart.py
"""

from collections import Counter

import llava_zh

ds = llava_zh.load_dataset("sample", config="all", split="train")
print(ds)
print("samples per task:", dict(Counter(ds["task"])))

sample = ds[0]
image = sample["image"]
print(f"\n{sample['id']} ({sample['task']}): image {image.size[0]}x{image.size[1]} {image.mode}")
for turn in sample["conversations"]:
    print(f"  {turn['from']:>5}: {turn['value'][:80]}")

# one task only, streamed: nothing is written to the cache
for row in llava_zh.load_dataset("sample", config="detail_description", streaming=True).take(2):
    print("\nstreamed:", row["id"], row["conversations"][1]["value"][:60], "...")

report = llava_zh.validate("sample")
print(f"\nvalidation: {report.read} records read, {report.total_refused} refused")
