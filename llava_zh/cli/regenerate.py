"""``llava-zh regenerate``: make samples from images with a VLM, or redo a dataset's samples; resumable.

Examples::

    llava-zh regenerate --images photos/ --task conversation --model Qwen/Qwen2.5-VL-7B-Instruct --out regen/
    llava-zh regenerate --dataset opencsg/llava-instruct-zh-600k --ids-file bad_ids.txt --backend vllm \\
        --tensor-parallel-size 4 --model Qwen/Qwen2.5-VL-32B-Instruct --out redo/
    # one process per GPU or node (e.g. under SLURM):
    llava-zh regenerate ... --shard-index $SLURM_PROCID --num-shards $SLURM_NTASKS

Running the same command again skips the samples already written.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

TASK_CHOICES = ("conversation", "complex_reasoning", "detail_description", "all")


def register(sub, verb: str, help_: str) -> None:
    p = sub.add_parser(verb, help=help_, description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="PATH", help="folder, .zip or .tar of images")
    src.add_argument("--dataset", metavar="SOURCE", help="a llava-zh dataset to redo (path, Hub id, 'sample')")
    p.add_argument("--task", action="append", choices=TASK_CHOICES,
                   help="task to generate (repeat for several; 'all'); with --dataset, selects samples by task")
    p.add_argument("--model", required=True, help="Hub id or local folder of the VLM")
    p.add_argument("--out", required=True, help="output folder (data/, failed/, regen_config.json)")
    p.add_argument("--backend", default="transformers", choices=("transformers", "vllm", "ray"))
    p.add_argument("--language", choices=("zh", "en"), default=None, help="prompt language (default zh)")
    p.add_argument("--prompt-file", metavar="FILE", help="use the text of FILE as the prompt instead of the built-in one")
    p.add_argument("--split", default="train", help="split of --dataset (default train)")
    p.add_argument("--ids-file", metavar="FILE", help="only the sample ids listed in FILE, one per line")
    p.add_argument("--limit", type=int, default=None, help="stop after this many samples (the next run goes on)")
    p.add_argument("--source-name", default=None, help="'source' field of new samples")

    g = p.add_argument_group("generation")
    g.add_argument("--batch-size", type=int, default=None, help="requests per generate call (default: backend's)")
    g.add_argument("--max-new-tokens", type=int, default=2048)
    g.add_argument("--temperature", type=float, default=0.7, help="0 for greedy decoding")
    g.add_argument("--top-p", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=20)
    g.add_argument("--repetition-penalty", type=float, default=1.05)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-rounds", type=int, default=None, help="round limit (default 5 conversation, 1 reasoning)")
    g.add_argument("--keep-first-rounds", action="store_true",
                   help="keep the first --max-rounds rounds of a longer reply instead of refusing it")

    o = p.add_argument_group("output and sharding")
    o.add_argument("--format", dest="output_format", choices=("parquet", "jsonl"), default="parquet")
    o.add_argument("--records-per-file", type=int, default=1000)
    o.add_argument("--shard-index", type=int, default=0, help="this process's shard (0-based)")
    o.add_argument("--num-shards", type=int, default=1, help="number of processes sharing the inputs")

    b = p.add_argument_group("backend")
    b.add_argument("--dtype", default="auto", help="auto, bfloat16, float16, float32")
    b.add_argument("--device", default=None, help="transformers: cuda, cuda:1, cpu (default: cuda if available)")
    b.add_argument("--device-map", default=None, help="transformers: e.g. auto (spread over the visible GPUs)")
    b.add_argument("--attn-implementation", default=None, help="transformers: sdpa, flash_attention_2, eager")
    b.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model")
    b.add_argument("--max-model-len", type=int, default=None, help="vllm: context length")
    b.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm: share of GPU memory")
    b.add_argument("--inner-backend", default="transformers", choices=("transformers", "vllm"),
                   help="ray: backend run by each actor")
    b.add_argument("--num-actors", type=int, default=None, help="ray: actors (default: cluster GPUs / GPUs per actor)")
    b.add_argument("--ray-address", default=None, help="ray: cluster address (auto, ray://host:10001)")
    b.add_argument("--actor-batch-size", type=int, default=8, help="ray: requests per actor call")

    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of the chosen backend, from the command line."""
    transformers_opts = {k: v for k, v in {
        "dtype": args.dtype,
        "device": args.device,
        "device_map": args.device_map,
        "attn_implementation": args.attn_implementation,
    }.items() if v is not None}
    vllm_opts = {k: v for k, v in {
        "dtype": args.dtype,
        "tensor_parallel_size": args.tensor_parallel_size,
        "max_model_len": args.max_model_len,
        "gpu_memory_utilization": args.gpu_memory_utilization,
    }.items() if v is not None}
    if args.backend == "transformers":
        return transformers_opts
    if args.backend == "vllm":
        return vllm_opts
    inner = transformers_opts if args.inner_backend == "transformers" else vllm_opts
    return {
        "inner": args.inner_backend,
        "num_actors": args.num_actors,
        "gpus_per_actor": args.tensor_parallel_size if args.inner_backend == "vllm" else 1,
        "actor_batch_size": args.actor_batch_size,
        "inner_options": inner,
        "address": args.ray_address,
    }


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def run(args: argparse.Namespace) -> int:
    import llava_zh

    prompt = None
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            prompt = f.read().strip()
    tasks = args.task
    if tasks and "all" in tasks:
        tasks = "all"
    summary = llava_zh.regenerate(
        images=args.images,
        dataset=args.dataset,
        task=tasks,
        model=args.model,
        backend=args.backend,
        out=args.out,
        language=args.language,
        prompt=prompt,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        shard_index=args.shard_index,
        num_shards=args.num_shards,
        output_format=args.output_format,
        records_per_file=args.records_per_file,
        max_rounds=args.max_rounds,
        on_too_many_rounds="keep_first" if args.keep_first_rounds else "refuse",
        ids=_read_lines(args.ids_file) if args.ids_file else None,
        limit=args.limit,
        source_name=args.source_name,
        split=args.split,
        backend_options=backend_options(args),
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))
    else:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.reasons.items())) or "none"
        print(
            f"shard {summary.shard_index + 1}/{summary.num_shards}: {summary.inputs} inputs, "
            f"{summary.already_done} already done, {summary.processed} generated "
            f"({summary.ok} parsed, {summary.failed} refused: {reasons}), {summary.remaining} remaining; "
            f"{summary.samples_per_second:.2f} samples/s, {summary.tokens_per_second:.0f} tokens/s -> {summary.out}"
        )
    return 0
