"""Throughput of ``llava_zh.publish`` (local layout, no upload) against ``Dataset.to_parquet`` of the same data.

Both write the same in-memory dataset of real JPEG bytes and Chinese conversations in the same run;
MB/s counts the Arrow bytes of the dataset. ``publish`` does more (rows planned into shards under
``max_shard_size``, one folder per task, a card checked against the files, a resume manifest and a crc32
per shard); the aim is at least 0.8x of ``to_parquet``.

    python benchmarks/bench_publish.py --rows 6000 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def make_jpegs(n: int, size=(320, 240), seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs (smooth colour fields plus noise), about 35-40 KB each at 320x240."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize(size, Image.BILINEAR)).astype(np.int16)
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_dataset(rows: int, interleave: bool):
    import datasets

    from llava_zh.schema import FEATURES, TASKS

    jpegs = make_jpegs(300)
    records = []
    for i in range(rows):
        task = TASKS[i % 3] if interleave else TASKS[min(2, 3 * i // rows)]
        rounds = 5 if task == "conversation" else 1
        conv = []
        for r in range(rounds):
            conv.append({"from": "human", "value": ("<image>\n" if r == 0 else "") + f"图中第{r}个物体是什么?"})
            conv.append({"from": "gpt", "value": "这是一只在草地上奔跑的小狗,旁边有一块写着中文的招牌。" * 6})
        records.append(
            {
                "id": f"{task}-{i:07d}",
                "task": task,
                "language": "zh",
                "source": "bench",
                "image": {"bytes": jpegs[i % len(jpegs)], "path": f"{i}.jpg"},
                "conversations": conv,
            }
        )
    return datasets.Dataset.from_list(records, features=FEATURES)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-shard-size", default="100MB")
    parser.add_argument("--interleave", action="store_true", help="tasks interleaved (publish gathers rows per task)")
    parser.add_argument("--tmp", default=None, help="folder to write into (default: a temporary folder)")
    args = parser.parse_args()

    import datasets

    from llava_zh.publishing import publish

    datasets.disable_progress_bars()
    logging.getLogger("llava_zh").setLevel(logging.WARNING)
    ds = make_dataset(args.rows, args.interleave)
    mb = ds.data.nbytes / 1e6
    root = tempfile.mkdtemp(prefix="bench-publish-", dir=args.tmp)
    baseline, ours, resumed = [], [], []
    try:
        for _ in range(args.repeats):  # alternate, so both see the same machine load
            path = os.path.join(root, "baseline.parquet")
            baseline.append(mb / timed(lambda: ds.to_parquet(path)))
            os.remove(path)
            out = os.path.join(root, "hub_copy")
            ours.append(
                mb / timed(lambda: publish(ds, "bench/llava-zh", local_dir=out, max_shard_size=args.max_shard_size))
            )
            resumed.append(
                timed(lambda: publish(ds, "bench/llava-zh", local_dir=out, max_shard_size=args.max_shard_size))
            )
            shards = sum(1 for _, _, files in os.walk(out) for f in files if f.endswith(".parquet"))
            shutil.rmtree(out)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med_b, med_o = statistics.median(baseline), statistics.median(ours)
    print(
        f"data: {args.rows} rows, {mb:.0f} MB of Arrow ({'interleaved' if args.interleave else 'grouped'} tasks), "
        f"{shards} shards of <= {args.max_shard_size}"
    )
    print(
        f"Dataset.to_parquet: median {med_b:7.0f} MB/s  best {max(baseline):7.0f} MB/s  runs {[round(x) for x in baseline]}"
    )
    print(f"llava_zh.publish  : median {med_o:7.0f} MB/s  best {max(ours):7.0f} MB/s  runs {[round(x) for x in ours]}")
    print(f"ratio publish / to_parquet: median {med_o / med_b:.2f}x  best {max(ours) / max(baseline):.2f}x")
    print(f"re-run with every shard complete: median {statistics.median(resumed):.2f} s")


if __name__ == "__main__":
    main()
