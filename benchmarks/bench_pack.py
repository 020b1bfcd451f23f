"""Packing against padding on 20,000 encoded samples of the dataset's task mix, in one run.

Run by hand (not part of the tests):

    python benchmarks/bench_pack.py [--samples 20000] [--max-length 4096] [--batch-size 8]

Samples are the synthetic Chinese conversations of ``bench_encode.py`` (conversation up to 5 rounds,
complex reasoning, detailed description, in the card's proportions; one image of 448x448, 640x480 or 384x288
pixels: 256, 391 or 140 image tokens), encoded by ``ChatTemplateEncoder`` with a tiny offline Qwen2.5-VL
processor without pixels (``process_images=False``; the tiny tokenizer's 4,000-token vocabulary gives more
tokens per character than Qwen's real one, so lengths run longer than the real set's), with ``image_grid_thw``
from the image sizes, as ``llava_zh.encode`` stores them.

Prints, measured in the same run on the same encoded rows:
  * the baseline: batches of ``--batch-size`` rows in dataset order, each padded to its longest row (what
    ``VLMCollator`` does): share of real tokens, padding tokens; and the same with length-grouped batches
    (``group_by_length``), for reference;
  * ``llava_zh.pack`` with ``greedy`` and ``first_fit``: packs, efficiency (real tokens / packs x
    max_length), padding tokens, and the share of the baseline's padding saved; samples/s of ``pack`` (bin
    assignment + writing the packed rows with their multimodal rope positions) and of the bin assignment alone;
  * samples/s through the collators: ``VLMCollator`` on padded batches against ``PackedCollator`` on one pack
    per step (``positions`` attention, and ``mask`` with its 4-D block-diagonal mask, float or boolean).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import datasets  # noqa: E402
import numpy as np  # noqa: E402

from bench_encode import synthetic_samples  # noqa: E402
from llava_zh.collate import VLMCollator  # noqa: E402
from llava_zh.convert.chat_template import ChatTemplateEncoder, _image_size  # noqa: E402
from llava_zh.encoding import image_grids  # noqa: E402
from llava_zh.packing import PackedCollator, assign_packs, pack, padded_tokens  # noqa: E402
from llava_zh.tiny_models import build_processor  # noqa: E402


def encode_rows(processor, samples, batch_size: int = 1000):
    """Encoded rows (ids, labels, mm_token_type_ids, length, image_grid_thw) as a Dataset, plus the tasks."""
    encoder = ChatTemplateEncoder(processor, process_images=False)
    columns = {"id": [], "input_ids": [], "labels": [], "mm_token_type_ids": [], "length": [], "image_grid_thw": []}
    for start in range(0, len(samples), batch_size):
        part = samples[start:start + batch_size]
        for s, row in zip(part, encoder.encode_batch(part)):
            columns["id"].append(s["id"])
            columns["input_ids"].append(row["input_ids"])
            columns["labels"].append(row["labels"])
            columns["mm_token_type_ids"].append(row["mm_token_type_ids"])
            columns["length"].append(len(row["input_ids"]))
            columns["image_grid_thw"].append(image_grids(processor, [_image_size(s["image"])]))
    features = datasets.Features({
        "id": datasets.Value("string"),
        "input_ids": datasets.List(datasets.Value("int32")),
        "labels": datasets.List(datasets.Value("int32")),
        "mm_token_type_ids": datasets.List(datasets.Value("int8")),
        "length": datasets.Value("int32"),
        "image_grid_thw": datasets.List(datasets.List(datasets.Value("int64"))),
    })
    return datasets.Dataset.from_dict(columns, features=features)


def best_of(repeat: int, fn):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def collate_rate(collator, batches, limit_seconds: float = 10.0) -> float:
    """Samples per second through ``collator`` (stops after ``limit_seconds``)."""
    done, start = 0, time.perf_counter()
    for rows, samples in batches:
        collator(rows)
        done += samples
        if time.perf_counter() - start > limit_seconds:
            break
    return done / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8, help="rows per padded batch (the baseline)")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs per timing")
    args = parser.parse_args(argv)

    processor = build_processor("qwen2_5_vl")
    start = time.perf_counter()
    samples = synthetic_samples(args.samples)
    encoded = encode_rows(processor, samples)
    tasks = Counter(s["task"] for s in samples)
    print(f"{len(encoded):,} encoded samples in {time.perf_counter() - start:.1f} s; tasks: "
          + ", ".join(f"{t} {n / len(samples):.1%}" for t, n in sorted(tasks.items())))
    lengths = np.asarray(encoded["length"], dtype=np.int64)
    for task in sorted(tasks):
        mask = np.asarray([s["task"] == task for s in samples])
        part = lengths[mask]
        print(f"  {task:20s} tokens: mean {part.mean():7.0f}  p50 {np.median(part):6.0f}  p95 "
              f"{np.percentile(part, 95):6.0f}  max {part.max():6d}")
    real = int(lengths.sum())
    too_long = int((lengths > args.max_length).sum())
    if too_long:
        print(f"  {too_long} samples longer than max_length={args.max_length}: left out of the packs (on_too_long='drop')")
    kept = lengths[lengths <= args.max_length]
    real_kept = int(kept.sum())

    print(f"\nbaseline: batches of {args.batch_size} padded to their longest row ({real:,} real tokens)")
    slots = padded_tokens(lengths, args.batch_size)
    base_pad = slots - real
    print(f"  dataset order:   {slots:,} token slots, {real / slots:.1%} real, {base_pad:,} padding tokens")
    grouped = padded_tokens(np.sort(lengths), args.batch_size)
    print(f"  length-grouped:  {grouped:,} token slots, {real / grouped:.1%} real, {grouped - real:,} padding tokens")

    print(f"\nllava_zh.pack, max_length={args.max_length} (packs counted at max_length tokens each)")
    results = {}
    for strategy in ("greedy", "first_fit"):
        t_assign, packs = best_of(args.repeat, lambda: assign_packs(kept, args.max_length, strategy))
        t_pack, (packed, report) = best_of(args.repeat, lambda: pack(encoded, args.max_length, strategy,
                                                                     on_too_long="drop", return_report=True))
        pad = report.packs * args.max_length - report.tokens
        tight = int(np.sum(packed["length"])) if len(packed) else 0
        results[strategy] = packed
        print(f"  {strategy:9s}: {report.packs:,} packs, {report.samples_per_pack:.2f} samples/pack, efficiency "
              f"{report.efficiency:.1%}, {pad:,} padding tokens -> {1 - pad / base_pad:.1%} of the baseline's padding "
              f"saved")
        print(f"             pack(): {len(kept) / t_pack:,.0f} samples/s ({t_pack:.2f} s, rows with mrope positions); "
              f"bin assignment alone: {len(kept) / t_assign:,.0f} samples/s; token slots "
              f"{report.packs * args.max_length / slots:.2f}x the baseline's")
        assert tight == real_kept and len(packs) == report.packs

    print("\ncollating (samples/s, best effort within 10 s each)")
    rows = list(encoded.select(range(min(len(encoded), 2000))))
    for r in rows:
        r.pop("length"), r.pop("id")
        r["image_grid_thw"] = np.asarray(r["image_grid_thw"])
    padded_batches = [(rows[i:i + args.batch_size], len(rows[i:i + args.batch_size])) for i in range(0, len(rows), args.batch_size)]
    rate_padded = collate_rate(VLMCollator(processor), padded_batches)
    packed = results["first_fit"]
    pack_rows = list(packed.select(range(min(len(packed), 400))))
    pack_batches = [([p], len(p["sample_index"])) for p in pack_rows]
    rate_positions = collate_rate(PackedCollator(processor, attention="positions"), pack_batches)
    rate_mask = collate_rate(PackedCollator(processor, attention="mask"), pack_batches[:60])
    import torch

    rate_bool = collate_rate(PackedCollator(processor, attention="mask", mask_dtype=torch.bool), pack_batches[:60])
    print(f"  VLMCollator, {args.batch_size} padded rows per batch: {rate_padded:,.0f} samples/s")
    print(f"  PackedCollator, 1 pack per batch, positions:      {rate_positions:,.0f} samples/s "
          f"({rate_positions / rate_padded:.2f}x)")
    print(f"  PackedCollator, 1 pack per batch, 4-D mask:       {rate_mask:,.0f} samples/s "
          f"({rate_mask / rate_padded:.2f}x; a {args.max_length}x{args.max_length} float mask per pack)")
    print(f"  PackedCollator, 1 pack per batch, boolean mask:   {rate_bool:,.0f} samples/s "
          f"({rate_bool / rate_padded:.2f}x; sdpa only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
