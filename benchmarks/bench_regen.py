"""Benchmark: output tokens/s of regeneration through the runner vs a bare ``model.generate`` loop.

A random-weight model with the real configuration of Qwen2.5-VL-7B-Instruct (nothing is downloaded) is
built on the GPU; the same images, prompt, batch size and number of new tokens (EOS suppressed until the
last token, so every row generates exactly ``--max-new-tokens``) go through

1. a bare loop: chat template + processor + ``model.generate`` + decode, images already decoded in memory;
2. ``llava_zh.regenerate`` with the transformers backend: reading and decoding the JPEGs, parsing the
   replies, writing fsynced parquet parts with the images embedded, progress accounting;
3. ``llava_zh.regenerate`` with the vLLM backend, when vLLM is installed (the model is saved to disk first).

The aim is the runner within 10% of the bare loop. ``--tiny`` runs the same code with a tiny model on CPU
(a smoke test of the script; its figures mean nothing).

Usage::

    python benchmarks/bench_regen.py                      # GPU: 7B config, bf16, batch 8, 64 images
    python benchmarks/bench_regen.py --batch-size 16 --num-images 128 --max-new-tokens 512
    python benchmarks/bench_regen.py --tiny               # CPU smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# config.json of Qwen/Qwen2.5-VL-7B-Instruct (the fields that shape the network)
QWEN2_5_VL_7B = {
    "text": dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        tie_word_embeddings=False,
        use_sliding_window=False,
        sliding_window=32768,
        max_window_layers=28,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        bos_token_id=151643,
        eos_token_id=151645,
    ),
    "vision": dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        in_channels=3,
        out_hidden_size=3584,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
        hidden_act="silu",
    ),
}
SPECIAL = ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def build_processor(tiny: bool, image_size: int):
    """The real Qwen2.5 tokenizer when its BPE ranks are on disk (see tiny_models), else the tiny one."""
    from llava_zh import tiny_models as tm

    if tiny or tm.find_qwen_tiktoken() is None:
        return tm.build_processor("qwen2_5_vl", image_size=image_size), "tiny tokenizer"
    tokenizer = tm.build_qwen2_tokenizer_from_ranks()
    processor = tm.Qwen2VLImageOnlyProcessor(
        image_processor=tm.build_image_processor("qwen2_5_vl", image_size=image_size),
        tokenizer=tokenizer,
        chat_template=tm.chat_template("qwen2_5_vl"),
    )
    return processor, "Qwen2.5 tokenizer rebuilt from qwen.tiktoken"


def build_model(processor, *, tiny: bool, dtype, device: str, attn: str):
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig, Qwen2_5_VLConfig

    from llava_zh import tiny_models as tm

    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    if tiny:
        config = tm.tiny_config("qwen2_5_vl", processor)
    else:
        text = dict(QWEN2_5_VL_7B["text"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                    pad_token_id=ids["<|endoftext|>"])
        config = Qwen2_5_VLConfig(
            text_config=text,
            vision_config=QWEN2_5_VL_7B["vision"],
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=False,
        )
    if not tiny and max(ids.values()) >= config.text_config.vocab_size:
        raise ValueError("tokenizer ids exceed the 7B vocabulary")
    config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=tok.pad_token_id, do_sample=False
    )
    return model.eval()


def make_images(folder: Path, n: int, size: int) -> list[bytes]:
    from llava_zh.tiny_models import make_image

    folder.mkdir(parents=True, exist_ok=True)
    data = []
    for i in range(n):
        buf = io.BytesIO()
        make_image(size, size, seed=i).save(buf, "JPEG", quality=90)
        (folder / f"img{i:05d}.jpg").write_bytes(buf.getvalue())
        data.append(buf.getvalue())
    return data


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_loop(model, processor, images, prompt: str, *, batch_size: int, max_new_tokens: int, device: str) -> dict:
    """chat template + processor + generate + decode per batch, images decoded beforehand."""
    import torch
    from PIL import Image

    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    processor.tokenizer.padding_side = "left"
    kwargs = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False)
    tokens = 0
    synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(pil), batch_size):
        batch = pil[i:i + batch_size]
        inputs = processor(text=[text] * len(batch), images=batch, padding=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model.generate(**inputs, **kwargs)
        new = out[:, inputs["input_ids"].shape[1]:]
        processor.batch_decode(new, skip_special_tokens=True)
        tokens += new.numel()
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"path": "bare generate loop", "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def runner(model, processor, folder: Path, out: Path, task: str, *, backend: str = "transformers",
           batch_size: int, max_new_tokens: int, device: str, options=None) -> dict:
    import llava_zh

    shutil.rmtree(out, ignore_errors=True)
    if backend == "transformers":
        options = {"processor": processor, "device": device,
                   "generate_kwargs": {"min_new_tokens": max_new_tokens}, **(options or {})}
    synchronize(device)
    start = time.perf_counter()
    summary = llava_zh.regenerate(images=str(folder), task=task, model=model, out=str(out), backend=backend,
                                  batch_size=batch_size, max_new_tokens=max_new_tokens, temperature=0.0,
                                  backend_options=options, progress=False)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "path": f"llava_zh.regenerate ({backend})",
        "tokens": summary.output_tokens,
        "seconds": seconds,
        "tokens_per_s": summary.output_tokens / seconds,
        "loop_tokens_per_s": summary.tokens_per_second,
        "records": summary.processed,
        "parsed": summary.ok,
    }


def run_vllm(model, processor, folder: Path, work: Path, task: str, *, batch_size: int, max_new_tokens: int,
             dtype_name: str) -> dict:
    """Save the random model with a full Qwen2.5-VL processor and run the vLLM backend through the runner."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    saved = work / "model"
    model.save_pretrained(saved)
    full = Qwen2_5_VLProcessor(image_processor=processor.image_processor, tokenizer=processor.tokenizer,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=processor.chat_template)
    full.save_pretrained(saved)
    options = {"dtype": dtype_name, "max_model_len": 4096, "gpu_memory_utilization": 0.85,
               "sampling_kwargs": {"min_tokens": max_new_tokens, "ignore_eos": True}}
    import llava_zh

    out = work / "out-vllm"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = llava_zh.regenerate(images=str(folder), task=task, model=str(saved), out=str(out), backend="vllm",
                                  batch_size=batch_size, max_new_tokens=max_new_tokens, temperature=0.0,
                                  backend_options=options, progress=False)
    seconds = time.perf_counter() - start
    return {"path": "llava_zh.regenerate (vllm, incl. engine start)", "tokens": summary.output_tokens,
            "seconds": seconds, "tokens_per_s": summary.output_tokens / seconds,
            "loop_tokens_per_s": summary.tokens_per_second, "records": summary.processed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: check the script runs end to end")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=448, help="square images; 448 -> 256 image tokens")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--task", default="conversation", help="prompt used (conversation has the longest)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--attn", default="sdpa", help="attention implementation")
    parser.add_argument("--vllm", choices=("auto", "yes", "no"), default="auto", help="also run the vLLM backend")
    parser.add_argument("--vllm-batch-size", type=int, default=256)
    parser.add_argument("--json", metavar="PATH", help="write the results here")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from llava_zh.regenerate.backends.transformers import resolve_dtype
    from llava_zh.regenerate.prompts import get_prompt

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        args.image_size = min(args.image_size, 112)
        args.num_images = min(args.num_images, 12)
        args.max_new_tokens = min(args.max_new_tokens, 16)
        args.batch_size = min(args.batch_size, 4)
        args.dtype = "float32"
    elif device == "cpu":
        print("warning: the 7B configuration on CPU is very slow; use --tiny for a smoke run", file=sys.stderr)
    dtype = resolve_dtype(args.dtype)

    work = Path(tempfile.mkdtemp(prefix="bench-regen-"))
    try:
        t0 = time.perf_counter()
        processor, tokenizer_kind = build_processor(args.tiny, args.image_size)
        model = build_model(processor, tiny=args.tiny, dtype=dtype, device=device, attn=args.attn)
        build_s = time.perf_counter() - t0
        images = make_images(work / "images", args.num_images, args.image_size)
        prompt = get_prompt(args.task, "zh").text
        params = sum(p.numel() for p in model.parameters())
        print(f"model: {'tiny' if args.tiny else 'Qwen2.5-VL-7B-Instruct config'}, random weights, "
              f"{params / 1e9:.2f} B parameters, {args.dtype}, {device}, attn={args.attn}; {tokenizer_kind}; "
              f"built in {build_s:.1f} s")
        print(f"{args.num_images} images of {args.image_size}x{args.image_size}, batch {args.batch_size}, "
              f"{args.max_new_tokens} new tokens per sample, prompt '{args.task}'")

        # warm-up (kernels, allocator) outside the timings
        bare_loop(model, processor, images[:args.batch_size], prompt, batch_size=args.batch_size,
                  max_new_tokens=min(8, args.max_new_tokens), device=device)
        results = []
        # alternate the two paths so drifts (clocks, other load) hit both alike
        bare = bare_loop(model, processor, images, prompt, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, device=device)
        run = runner(model, processor, work / "images", work / "out", args.task, batch_size=args.batch_size,
                     max_new_tokens=args.max_new_tokens, device=device)
        results += [bare, run]
        try:
            import vllm  # noqa: F401

            have_vllm = True
        except ImportError:
            have_vllm = False
        if args.vllm == "yes" or (args.vllm == "auto" and have_vllm and device.startswith("cuda") and not args.tiny):
            if not have_vllm:
                print("vLLM is not installed: skipped", file=sys.stderr)
            else:
                del model
                torch.cuda.empty_cache()
                model = build_model(processor, tiny=False, dtype=dtype, device="cpu", attn=args.attn)
                try:
                    results.append(run_vllm(model, processor, work / "images", work, args.task,
                                            batch_size=args.vllm_batch_size, max_new_tokens=args.max_new_tokens,
                                            dtype_name=args.dtype))
                except Exception as e:  # noqa: BLE001 - report and keep the transformers figures
                    print(f"vLLM run failed: {type(e).__name__}: {e}", file=sys.stderr)
        else:
            print(f"vLLM: {'not installed' if not have_vllm else 'not run'}")

        base = bare["tokens_per_s"]
        print(f"\n{'path':48} {'tokens':>8} {'seconds':>8} {'tokens/s':>10} {'vs bare':>8}")
        for r in results:
            print(f"{r['path']:48} {r['tokens']:>8} {r['seconds']:>8.2f} {r['tokens_per_s']:>10.1f} "
                  f"{r['tokens_per_s'] / base:>8.3f}")
        ratio = run["tokens_per_s"] / base
        print(f"\nrunner / bare loop = {ratio:.3f} (aim: >= 0.90){'  [tiny: not meaningful]' if args.tiny else ''}")
        if args.json:
            meta = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor(),
                    "torch": torch.__version__, "transformers": transformers.__version__, "args": vars(args)}
            Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
