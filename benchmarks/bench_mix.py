"""Streaming a 1:1 mix of two 100,000-sample sets against streaming the two inputs alone, in the same run.

Both sets are written as parquet (the features of ``llava_zh.schema.FEATURES``) and streamed with
``datasets.load_dataset("parquet", streaming=True)``. The baseline reads set A then set B; the mix reads
the same 200,000 samples through ``llava_zh.mix`` (1:1 by samples, ``all_exhausted``, so every sample
once; by tokens, ``total=200,000``). Prints samples/s of both and the cost of the mix per sample. Aim: under 10% extra.

    python benchmarks/bench_mix.py                 # text-only samples (the hardest case for the ratio)
    python benchmarks/bench_mix.py --images        # with a small JPEG per sample, decoded to PIL
    python benchmarks/bench_mix.py --by tokens     # token-weighted schedule (estimate)
    python benchmarks/bench_mix.py --epoch 1       # a later epoch: each stream through a shuffle buffer; the
                                                   # baseline is each input through IterableDataset.shuffle
                                                   # with the same buffer size, at the same epoch (compare
                                                   # CPU: datasets' shuffled parquet stream pauses ~5 s of wall
                                                   # time when its reader threads shut down)
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import datasets  # noqa: E402

from llava_zh.mixing import EPOCH_BUFFER_SIZE, mix  # noqa: E402
from llava_zh.schema import FEATURES, TASKS  # noqa: E402

ZH = "这张图片展示了一个繁忙的城市街道，行人和车辆来来往往。"
EN = "The picture shows a busy city street with people and cars passing by. "


def _jpeg(i: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), ((i * 37) % 256, (i * 91) % 256, 128)).save(buf, format="JPEG")
    return buf.getvalue()


def write_set(path: str, lang: str, n: int, images: bool) -> None:
    text = ZH if lang == "zh" else EN
    jpegs = [_jpeg(i) for i in range(16)] if images else None

    def gen():
        for i in range(n):
            rounds = 1 + i % 3
            conv = []
            for r in range(rounds):
                conv.append({"from": "human", "value": ("<image>\n" if r == 0 and images else "") + text[: 10 + i % 17]})
                conv.append({"from": "gpt", "value": text * (1 + (i + r) % 6)})
            yield {
                "id": f"{lang}-{i:06d}",
                "task": TASKS[i % 3],
                "language": lang,
                "source": f"synthetic-{lang}",
                "image": {"bytes": jpegs[i % 16], "path": f"{i}.jpg"} if images else None,
                "conversations": conv,
            }

    ds = datasets.Dataset.from_generator(gen, features=FEATURES, cache_dir=os.path.dirname(path))
    ds.to_parquet(path, batch_size=10_000)  # row groups of 10,000 rows, as Hub parquet of text-heavy data


def stream(path: str) -> datasets.IterableDataset:
    return datasets.load_dataset("parquet", data_files=path, split="train", streaming=True)


def shuffled(path: str, seed: int, epoch: int) -> datasets.IterableDataset:
    """The input as datasets shuffles it per epoch (shard order and a buffer of the mix's size)."""
    ds = stream(path).shuffle(seed=seed, buffer_size=EPOCH_BUFFER_SIZE)
    ds.set_epoch(epoch)
    return ds


def timed(iterable) -> tuple[int, float, float]:
    """Samples, wall seconds and CPU seconds (this process, all threads) to iterate."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for _ in iterable:
        n += 1
    return n, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="samples per set (default 100,000)")
    parser.add_argument("--images", action="store_true", help="a small JPEG per sample, decoded to PIL")
    parser.add_argument("--by", default="samples", choices=("samples", "tokens"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epoch", type=int, default=0, help="iterate this epoch (set_epoch) of the mix")
    args = parser.parse_args()
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as tmp:
        a, b = os.path.join(tmp, "zh.parquet"), os.path.join(tmp, "en.parquet")
        t = time.perf_counter()
        write_set(a, "zh", args.n, args.images)
        write_set(b, "en", args.n, args.images)
        print(f"wrote 2 x {args.n:,} samples in {time.perf_counter() - t:.1f}s (images: {args.images})")

        # Alternate baseline and mix so that both see the same machine load; report medians. CPU time is
        # the steadier figure on a shared machine; wall time is printed too.
        rates = {"alone": ([], []), "mix": ([], [])}
        for rep in range(args.repeats):
            alone = (lambda p: shuffled(p, rep, args.epoch)) if args.epoch else stream
            na, wa, ca = timed(alone(a))
            nb, wb, cb = timed(alone(b))
            # by samples, all_exhausted gives every sample once; by tokens, total= keeps the same sample count
            total = None if args.by == "samples" else na + nb
            mixed, _ = mix({"zh": stream(a), "en": stream(b)}, {"zh": 1, "en": 1}, by=args.by, seed=rep, total=total)
            mixed.set_epoch(args.epoch)
            nm, wm, cm = timed(mixed)
            assert nm == na + nb, (nm, na, nb)
            rates["alone"][0].append((na + nb) / (wa + wb))
            rates["alone"][1].append((na + nb) / (ca + cb))
            rates["mix"][0].append(nm / wm)
            rates["mix"][1].append(nm / cm)
            print(f"  run {rep + 1}: alone {rates['alone'][0][-1]:,.0f}/s wall {rates['alone'][1][-1]:,.0f}/s cpu | "
                  f"mix {rates['mix'][0][-1]:,.0f}/s wall {rates['mix'][1][-1]:,.0f}/s cpu")
        for i, clock in enumerate(("wall", "cpu")):
            for stat, pick in (("median", statistics.median), ("best", max)):
                base, mixed_rate = pick(rates["alone"][i]), pick(rates["mix"][i])
                print(f"{clock:>4} {stat:>6}: inputs alone {base:,.0f} samples/s | mix 1:1 by {args.by} "
                      f"{mixed_rate:,.0f} samples/s | ratio {mixed_rate / base:.3f} -> extra cost per sample "
                      f"{base / mixed_rate - 1:+.1%} (aim: < 10%)")


if __name__ == "__main__":
    main()
