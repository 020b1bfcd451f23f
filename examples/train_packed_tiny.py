"""Encode, pack and train on the embedded sample, end to end on CPU in seconds.

Loads the embedded llava-instruct-zh-600k sample, encodes it once with a tiny random-weight Qwen2.5-VL built
offline (``llava_zh.encode``: token ids, labels on the assistant replies, image bytes; cached, so a second run
tokenizes nothing), packs the samples into sequences of at most ``--max-length`` tokens
(``llava_zh.pack``: whole samples, positions and multimodal rope positions restarting per sample) and trains
a few steps with a plain PyTorch loop on batches from ``PackedCollator`` (attention kept inside each sample
by a block-diagonal mask; the pixels are recomputed from the image bytes with the same budget).
Prints the packing efficiency against padding, and a falling loss.

    python examples/train_packed_tiny.py [--steps 12] [--max-length 2048] [--strategy first_fit]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch.utils.data import DataLoader

import llava_zh
from llava_zh.packing import PackedCollator, padded_tokens
from llava_zh.tiny_models import build_tiny_vlm

MAX_PIXELS = 224 * 224  # at most 64 image tokens per image: a CPU step takes a fraction of a second


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps")
    parser.add_argument("--max-length", type=int, default=2048, help="longest packed sequence, in tokens")
    parser.add_argument("--strategy", default="first_fit", choices=("greedy", "first_fit"))
    parser.add_argument("--packs-per-batch", type=int, default=1, help="packed sequences per step")
    parser.add_argument("--attention", default="mask", choices=("mask", "positions"),
                        help="a 4-D block-diagonal mask, or the restarting position ids alone")
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    processor, model = build_tiny_vlm("qwen2_5_vl", attn_implementation="eager")
    dataset = llava_zh.load_dataset("sample", split="train")

    encoded, report = llava_zh.encode(dataset, processor, max_length=args.max_length, max_pixels=MAX_PIXELS,
                                      return_report=True)
    print(f"encode: {report}")
    packed, pack_report = llava_zh.pack(encoded, args.max_length, args.strategy, return_report=True)
    print(f"pack:   {pack_report}")
    lengths = encoded["length"]
    padded = padded_tokens(lengths, 8)
    print(f"        padding to the longest of 8 instead: {padded:,} token slots for {sum(lengths):,} tokens "
          f"({sum(lengths) / padded:.1%} real); packing: {pack_report.efficiency:.1%} real")

    collator = PackedCollator(processor, attention=args.attention, max_pixels=MAX_PIXELS)
    loader = DataLoader(packed, batch_size=args.packs_per_batch, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model.train()
    print(f"training {type(model).__name__} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
          f"{len(packed)} packs, {args.packs_per_batch} per step, attention={args.attention!r}")
    losses, step, start = [], 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
            shape = tuple(batch["input_ids"].shape)
            images = int(batch["image_grid_thw"].shape[0]) if "image_grid_thw" in batch else 0
            print(f"  step {step:3d}  loss {loss.item():.4f}  (input_ids {shape}, "
                  f"{int(batch['labels'].ne(-100).sum())} learned tokens, {images} images)")
            if step >= args.steps:
                break
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s; loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    return 0 if last < first and all(math.isfinite(x) for x in losses) else 1


if __name__ == "__main__":
    raise SystemExit(main())
