"""Throughput and memory of ``stats`` and ``filter_dataset`` on a synthetic stream, against a plain read.

The stream is an ``IterableDataset`` made by a generator (nothing on disk, so that the reader itself uses
the same memory at every size): N samples of Chinese-like text (words drawn from 6,000 random two-character
words, 1 to 3 rounds), one small JPEG each; every 50th sample repeats the previous image and every 100th
repeats the previous answer with one word changed (a near-duplicate). Each mode runs in a fresh process:

* baseline: iterate every sample (images undecoded) and do nothing else;
* stats: ``llava_zh.stats`` (no plots) over the same stream;
* filter: ``filter_dataset`` with exact image and answer dedup and MinHash near-duplicate answers.

Prints samples/s, the time ratio to the baseline and the peak RSS of each process. Run it at two sizes: the
memory of ``stats`` stays flat, the dedup index grows with the kept samples (about 1 KB each), by design.

    python benchmarks/bench_inspect.py --n 50000
    python benchmarks/bench_inspect.py --n 200000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

QUESTIONS = ["图中有什么?", "请详细描述这张图片。", "图片里的人在做什么?", "这张照片是在哪里拍的?", "图中有几只动物?"]


def _jpegs() -> list[bytes]:
    from PIL import Image, ImageDraw

    out = []
    for i in range(32):
        im = Image.new("RGB", (64 + 8 * i, 48 + 4 * i), ((i * 37) % 256, (i * 91) % 256, 128))
        ImageDraw.Draw(im).ellipse((4, 4, 40, 40), fill=(250, 220, 40))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def generate(n: int):
    rng = random.Random(0)
    words = ["".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(2)) for _ in range(6000)]
    jpegs = _jpegs()
    from llava_zh.schema import TASKS

    previous = None
    for i in range(n):
        conv = []
        for r in range(1 + i % 3):
            answer = "，".join("".join(rng.choices(words, k=3)) for _ in range(2 + rng.randrange(25))) + "。"
            conv.append({"from": "human", "value": ("<image>\n" if r == 0 else "") + rng.choice(QUESTIONS)})
            conv.append({"from": "gpt", "value": answer})
        if i % 100 == 99 and previous is not None:  # near-duplicate of the previous sample's answers
            conv = [dict(t) for t in previous]
            conv[-1]["value"] = conv[-1]["value"][:-4] + rng.choice(words) + "。"
        previous = conv
        k = i - 1 if i % 50 == 0 and i > 0 else i  # every 50th sample repeats the previous image
        yield {
            "id": f"s{i:07d}",
            "task": TASKS[i % 3],
            "language": "zh",
            "source": "synthetic",
            "image": {"bytes": jpegs[k % 32] + k.to_bytes(4, "big"), "path": f"{i}.jpg"},  # bytes after EOI
            "conversations": conv,
        }


def child(mode: str, n: int) -> None:
    import datasets

    from llava_zh.schema import FEATURES

    datasets.disable_progress_bars()
    ds = datasets.IterableDataset.from_generator(generate, features=FEATURES, gen_kwargs={"n": n})
    ds = ds.cast_column("image", datasets.Image(decode=False))
    start = time.perf_counter()
    if mode == "baseline":
        seen = sum(len(batch["id"]) for batch in ds.iter(batch_size=1000))
    elif mode == "stats":
        import llava_zh

        seen = llava_zh.stats(ds, progress=False)["samples"]
    else:
        from llava_zh.inspect.filters import DuplicateAnswer, DuplicateImage, NearDuplicateAnswer, filter_dataset

        result = filter_dataset(ds, [DuplicateImage(), DuplicateAnswer(), NearDuplicateAnswer()], progress=False)
        kept = sum(len(batch["id"]) for batch in result.kept.iter(batch_size=1000))  # the pass runs the rules
        seen = kept + len(result.removed)
        print(json.dumps({"kept": kept, "removed": result.counts}), file=sys.stderr)
    seconds = time.perf_counter() - start
    assert seen == n, (seen, n)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--child", metavar="MODE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n)
        return
    results = {}
    for mode in ("baseline", "stats", "filter"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--n", str(args.n)], capture_output=True, text=True
        )
        if out.returncode != 0:
            sys.exit(f"{mode} failed:\n{out.stderr[-3000:]}")
        results[mode] = r = json.loads(out.stdout.strip().splitlines()[-1])
        extra = out.stderr.strip().splitlines()[-1] if mode == "filter" else ""
        ratio = r["seconds"] / results["baseline"]["seconds"]
        print(
            f"n={args.n:,} {mode:<9} {args.n / r['seconds']:>9,.0f} samples/s  {ratio:5.1f}x baseline time  "
            f"peak RSS {r['peak_rss_mb']:,.0f} MB  {extra}",
            flush=True,
        )


if __name__ == "__main__":
    main()
