"""The vLLM backend: ``vllm.LLM.chat`` over a batch of conversations, each with its image as a PIL part.

vLLM schedules the requests of a batch itself (continuous batching), so batches are large (256 by default)
and each request carries its own ``SamplingParams`` with a seed fixed by its id: the reply does not depend
on which batch the request landed in. ``tensor_parallel_size`` splits a large model over several GPUs.
Needs ``pip install "llava-zh[vllm]"``.

Example:
    >>> backend = VLLMBackend("Qwen/Qwen2.5-VL-32B-Instruct", tensor_parallel_size=4)      # doctest: +SKIP
    >>> backend.generate([GenerationRequest("cat", "详细描述这张照片。", image=jpeg_bytes)])  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

from .base import (
    Backend,
    GenerationParams,
    GenerationRequest,
    GenerationResult,
    ImageLoadError,
    chat_messages,
    failed_result,
)

_EXTRA_HINT = 'the vllm backend needs vLLM: pip install "llava-zh[vllm]"'


def llm_kwargs(
    model: str,
    *,
    tensor_parallel_size: int = 1,
    dtype: str = "auto",
    max_model_len: Optional[int] = None,
    gpu_memory_utilization: float = 0.9,
    seed: int = 0,
    max_images: int = 1,
    mm_processor_kwargs: Optional[dict[str, Any]] = None,
    trust_remote_code: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` (one image per prompt, the given parallelism and memory share)."""
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be at least 1, got {tensor_parallel_size}")
    kwargs: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": tensor_parallel_size,
        "dtype": dtype,
        "gpu_memory_utilization": gpu_memory_utilization,
        "seed": seed,
        "limit_mm_per_prompt": {"image": max_images},
        "trust_remote_code": trust_remote_code,
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if mm_processor_kwargs:
        kwargs["mm_processor_kwargs"] = dict(mm_processor_kwargs)
    return kwargs | extra


def build_conversations(requests: Sequence[GenerationRequest]) -> tuple[list[GenerationRequest], list[list[dict]], list[GenerationResult]]:
    """Conversations for ``LLM.chat`` (image as an ``image_pil`` part), the requests they belong to, and
    failed results for requests whose image cannot be read."""
    kept, conversations, failed = [], [], []
    for r in requests:
        try:
            image = r.load_image()
        except (ImageLoadError, FileNotFoundError, ValueError) as e:
            failed.append(failed_result(r, e, batch_size=len(requests)))
            continue
        kept.append(r)
        conversations.append(chat_messages(r, image, image_type="image_pil"))
    return kept, conversations, failed


def results_from_outputs(requests: Sequence[GenerationRequest], outputs: Sequence[Any], *, seconds: float,
                         batch_size: int) -> list[GenerationResult]:
    """Map vLLM ``RequestOutput`` s (same order as the conversations) back to the request ids."""
    if len(outputs) != len(requests):
        raise ValueError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
    results = []
    for request, out in zip(requests, outputs):
        completion = out.outputs[0]
        results.append(
            GenerationResult(
                request.id,
                completion.text,
                output_tokens=len(completion.token_ids),
                input_tokens=len(out.prompt_token_ids or ()),
                seconds=seconds,
                batch_size=batch_size,
            )
        )
    return results


class VLLMBackend(Backend):
    """Generate with vLLM. ``llm_options`` go to ``vllm.LLM`` (``enforce_eager``, ``max_num_seqs``...);
    ``sampling_kwargs`` are added to every ``SamplingParams`` (``min_tokens``, ``stop``...)."""

    name = "vllm"
    default_batch_size = 256

    def __init__(
        self,
        model: str,
        *,
        generation: Optional[GenerationParams] = None,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        max_model_len: Optional[int] = None,
        gpu_memory_utilization: float = 0.9,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        trust_remote_code: bool = False,
        model_id: Optional[str] = None,
        sampling_kwargs: Optional[dict[str, Any]] = None,
        llm: Any = None,
        **llm_options: Any,
    ) -> None:
        generation = generation or GenerationParams()
        super().__init__(generation=generation, model_id=model_id or str(model))
        self.tensor_parallel_size = tensor_parallel_size
        self.sampling_kwargs = dict(sampling_kwargs or {})
        if llm is None:
            try:
                from vllm import LLM
            except ImportError as e:
                raise ImportError(f"{_EXTRA_HINT} ({e})") from None
            llm = LLM(
                **llm_kwargs(
                    model,
                    tensor_parallel_size=tensor_parallel_size,
                    dtype=dtype,
                    max_model_len=max_model_len,
                    gpu_memory_utilization=gpu_memory_utilization,
                    seed=generation.seed,
                    mm_processor_kwargs=mm_processor_kwargs,
                    trust_remote_code=trust_remote_code,
                    **llm_options,
                )
            )
        self.llm = llm

    def sampling_params(self, requests: Sequence[GenerationRequest]) -> list[Any]:
        from vllm import SamplingParams

        return [SamplingParams(**(self.generation.vllm_sampling_kwargs(r.id) | self.sampling_kwargs)) for r in requests]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        kept, conversations, failed = build_conversations(requests)
        if not kept:
            return failed
        start = time.perf_counter()
        outputs = self.llm.chat(conversations, sampling_params=self.sampling_params(kept), use_tqdm=False)
        seconds = time.perf_counter() - start
        return failed + results_from_outputs(kept, outputs, seconds=seconds, batch_size=len(requests))

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"tensor_parallel_size": self.tensor_parallel_size}

    def close(self) -> None:
        self.llm = None
        import gc

        gc.collect()
