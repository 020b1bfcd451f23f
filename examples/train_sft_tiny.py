"""Supervised fine-tuning on the embedded sample, end to end on CPU in seconds.

Loads the embedded llava-instruct-zh-600k sample, encodes it with a tiny random-weight Qwen2.5-VL built
offline (its processor's own chat template, labels on the assistant replies only), then trains a few
steps with a plain PyTorch loop and, when the ``trl`` extra is installed, with TRL's ``SFTTrainer``.
The loss printed falls from step to step.

    python examples/train_sft_tiny.py [--steps 12] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
from torch.utils.data import DataLoader

import llava_zh
from llava_zh.collate import VLMCollator
from llava_zh.convert.chat_template import ChatTemplateEncoder
from llava_zh.tiny_models import build_tiny_vlm


def encode_sample(processor, max_length: int):
    """The embedded sample as training rows: input_ids, labels, pixel_values, image_grid_thw..."""
    ds = llava_zh.load_dataset("sample", split="train")
    encoder = ChatTemplateEncoder(processor, max_length=max_length, on_too_long="truncate")
    encoded = encoder.map(ds, batch_size=8)  # ds.map(encoder, batched=True, remove_columns=..., features=...)
    print(f"{len(ds)} samples -> {len(encoded)} rows ({encoder.report()}); span method: {encoder.span_method}")
    return encoded.with_format("torch")


def train_plain(model, rows, collator, steps: int, batch_size: int, lr: float) -> list[float]:
    """A plain PyTorch loop over a fixed handful of rows (so the falling loss is visible in a few steps)."""
    loader = DataLoader(rows, batch_size=batch_size, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses, step = [], 0
    while step < steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
            print(f"  step {step:3d}  loss {loss.item():.4f}  ({int(batch['labels'].ne(-100).sum())} learned tokens)")
            if step >= steps:
                break
    return losses


def train_trl(model, processor, rows, collator, steps: int, batch_size: int, lr: float) -> list[float] | None:
    """The same rows through TRL's SFTTrainer (already tokenized: its own preparation is skipped)."""
    try:
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        print('TRL is not installed: pip install "llava-zh[trl]" to also train with SFTTrainer')
        return None
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            lr_scheduler_type="constant",
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            remove_unused_columns=False,  # keep pixel_values / image_grid_thw for the collator
            dataset_kwargs={"skip_prepare_dataset": True},
            max_length=None,
            seed=0,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=rows, data_collator=collator,
                             processing_class=processor)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    for i, loss in enumerate(losses, 1):
        print(f"  step {i:3d}  loss {loss:.4f}")
    return losses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps of the plain loop")
    parser.add_argument("--trl-steps", type=int, default=6, help="optimizer steps with TRL's SFTTrainer")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rows", type=int, default=8, help="how many encoded rows to train on")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    # 224x224 pixels at most per image: 64 image tokens, so a CPU step takes a fraction of a second
    processor, model = build_tiny_vlm("qwen2_5_vl", max_pixels=224 * 224)
    rows = encode_sample(processor, args.max_length)
    rows = rows.select(range(min(args.rows, len(rows))))
    collator = VLMCollator(processor, padding_side="right")

    print(f"plain PyTorch loop, {type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters")
    start = time.perf_counter()
    losses = train_plain(model, rows, collator, args.steps, args.batch_size, args.lr)
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    ok = losses[-1] < losses[0] and all(math.isfinite(x) for x in losses)

    _, fresh = build_tiny_vlm("qwen2_5_vl", max_pixels=224 * 224)
    print("TRL SFTTrainer")
    trl_losses = train_trl(fresh, processor, rows, collator, args.trl_steps, args.batch_size, args.lr)
    if trl_losses:
        print(f"loss {trl_losses[0]:.4f} -> {trl_losses[-1]:.4f}")
        ok = ok and trl_losses[-1] < trl_losses[0]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
