"""The transformers backend: ``AutoProcessor`` + ``AutoModelForImageTextToText``, batched with left padding.

Images are read and turned into model inputs on a background thread while the previous batch generates,
so the GPU does not wait for JPEG decoding or tokenisation. Sampling is seeded per batch from the run's
seed and the batch's ids, so a resumed run draws the same way.

Example:
    >>> from llava_zh.regenerate.backends.transformers import TransformersBackend
    >>> backend = TransformersBackend("Qwen/Qwen2.5-VL-7B-Instruct", dtype="bfloat16", device="cuda")  # doctest: +SKIP
    >>> backend.generate([GenerationRequest("cat", "详细描述这张照片。", image=jpeg_bytes)])[0].text   # doctest: +SKIP
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterable, Iterator, Optional, Sequence

from .base import (
    Backend,
    GenerationParams,
    GenerationRequest,
    GenerationResult,
    ImageLoadError,
    chat_messages,
    count_generated,
    failed_result,
    request_seed,
)

_EXTRA_HINT = 'the transformers backend needs torch and transformers: pip install "llava-zh[regen]"'


def _require():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{_EXTRA_HINT} ({e})") from None


def resolve_dtype(dtype: Any):
    """``"auto"``, ``None``, a ``torch.dtype`` or its name (``"bfloat16"``, ``"bf16"``, ``"float16"``...)."""
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(str(dtype), str(dtype))
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, bfloat16, float16 or float32")
    return value


class _Prepared:
    """One batch turned into model inputs, plus the requests that could not be prepared."""

    __slots__ = ("requests", "inputs", "failed", "error")

    def __init__(self, requests, inputs, failed, error=None):
        self.requests, self.inputs, self.failed, self.error = requests, inputs, failed, error


class TransformersBackend(Backend):
    """Generate with a transformers image-text-to-text model.

    Args:
        model: a Hub id or local folder, or an already loaded model (then pass ``processor`` too).
        processor: a processor object or path; defaults to the model's own (``AutoProcessor``).
        dtype: ``"auto"``, ``"bfloat16"``, ``"float16"``, ``"float32"`` or a ``torch.dtype``.
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; defaults to CUDA when available. Ignored with ``device_map``.
        device_map: passed to ``from_pretrained`` (``"auto"`` spreads a large model over the visible GPUs).
        attn_implementation: ``"sdpa"``, ``"flash_attention_2"``... passed to ``from_pretrained``.
        generation: sampling settings (``GenerationParams``); extra ``generate`` kwargs in ``generate_kwargs``.
        processor_kwargs: options for the processor call, e.g. ``{"max_pixels": 1280 * 28 * 28}``.
        prefetch: prepare the next batch on a background thread while the current one generates.
    """

    name = "transformers"
    default_batch_size = 8

    def __init__(
        self,
        model: Any,
        *,
        processor: Any = None,
        dtype: Any = "auto",
        device: Optional[str] = None,
        device_map: Any = None,
        attn_implementation: Optional[str] = None,
        generation: Optional[GenerationParams] = None,
        generate_kwargs: Optional[dict[str, Any]] = None,
        processor_kwargs: Optional[dict[str, Any]] = None,
        model_kwargs: Optional[dict[str, Any]] = None,
        trust_remote_code: bool = False,
        model_id: Optional[str] = None,
        prefetch: bool = True,
    ) -> None:
        _require()
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if isinstance(model, str):
            kwargs = dict(model_kwargs or {})
            kwargs.setdefault("dtype", resolve_dtype(dtype))
            if device_map is not None:
                kwargs["device_map"] = device_map
            if attn_implementation is not None:
                kwargs["attn_implementation"] = attn_implementation
            model_id = model_id or model
            model = AutoModelForImageTextToText.from_pretrained(model, trust_remote_code=trust_remote_code, **kwargs)
        else:
            model_id = model_id or getattr(model, "name_or_path", None) or type(model).__name__
        if processor is None or isinstance(processor, str):
            source = processor or getattr(model, "name_or_path", None)
            if not source:
                raise ValueError("a model object needs its processor: pass processor=... (an object or a path)")
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
        if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
            raise TypeError(
                f"expected a multimodal processor with an image processor and a tokenizer, got {type(processor).__name__}"
            )
        processor.tokenizer.padding_side = "left"  # decoder-only batched generation pads on the left
        if device_map is None and getattr(model, "hf_device_map", None) is None:
            target = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = model.to(target)
        model.eval()
        super().__init__(generation=generation, model_id=str(model_id))
        self.model = model
        self.processor = processor
        self.generate_kwargs = dict(generate_kwargs or {})
        self.processor_kwargs = dict(processor_kwargs or {})
        self.prefetch = prefetch
        self._stop_ids = self._find_stop_ids()
        # The prefetch thread encodes while the main thread decodes; a fast tokenizer must not be used by
        # both at once (setting padding mutates it: "Already borrowed"), so the two take turns.
        self._tokenizer_lock = threading.Lock()

    # -- pure-ish helpers ------------------------------------------------------------------------------------

    def _find_stop_ids(self) -> list[int]:
        config = getattr(self.model, "generation_config", None)
        eos = getattr(config, "eos_token_id", None)
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        pad = self.processor.tokenizer.pad_token_id
        if pad is not None:
            ids.append(pad)
        return ids

    def render_prompts(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """The chat-template text of each request (image placeholder, prompt, generation prompt)."""
        return [
            self.processor.apply_chat_template(chat_messages(r), tokenize=False, add_generation_prompt=True)
            for r in requests
        ]

    def prepare(self, requests: Sequence[GenerationRequest]) -> _Prepared:
        """Read the images and build padded model inputs; unreadable images become failed results."""
        good, images, failed = [], [], []
        for r in requests:
            try:
                images.append(r.load_image())
                good.append(r)
            except (ImageLoadError, FileNotFoundError, ValueError) as e:
                failed.append(failed_result(r, e, batch_size=len(requests)))
        inputs = None
        if good:
            texts = self.render_prompts(good)
            with self._tokenizer_lock:
                inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt",
                                        **self.processor_kwargs)
        return _Prepared(good, inputs, failed)

    def _run(self, prepared: _Prepared) -> list[GenerationResult]:
        import torch

        results = list(prepared.failed)
        if not prepared.requests:
            return results
        start = time.perf_counter()
        inputs = prepared.inputs.to(self.model.device)
        kwargs = self.generation.hf_generate_kwargs() | self.generate_kwargs
        if self.generation.do_sample:
            torch.manual_seed(request_seed(self.generation.seed, *(r.id for r in prepared.requests)))
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = output[:, prompt_len:].tolist()
        with self._tokenizer_lock:
            texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        seconds = time.perf_counter() - start
        mask = inputs.get("attention_mask")
        input_counts = mask.sum(dim=1).tolist() if mask is not None else [prompt_len] * len(new_tokens)
        for request, row, text, n_in in zip(prepared.requests, new_tokens, texts, input_counts):
            results.append(
                GenerationResult(
                    request.id,
                    text,
                    output_tokens=count_generated(row, self._stop_ids),
                    input_tokens=int(n_in),
                    seconds=seconds,
                    batch_size=len(prepared.requests) + len(prepared.failed),
                )
            )
        return results

    # -- Backend interface -----------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return self._run(self.prepare(requests))

    def generate_stream(self, batches: Iterable[Sequence[GenerationRequest]]) -> Iterator[list[GenerationResult]]:
        if not self.prefetch:
            yield from super().generate_stream(batches)
            return
        ready: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for batch in batches:
                    if stop.is_set():
                        return
                    try:
                        item = self.prepare(batch)
                    except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it
                        item = _Prepared(batch, None, [], error=e)
                    while not stop.is_set():
                        try:
                            ready.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except Exception as e:  # noqa: BLE001 - an error of the batch source itself
                ready.put(_Prepared([], None, [], error=e))
            finally:
                while not stop.is_set():
                    try:
                        ready.put(done, timeout=0.1)
                        return
                    except queue.Full:
                        continue

        worker = threading.Thread(target=produce, name="llava-zh-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if item.error is not None:
                    raise item.error
                yield self._run(item)
        finally:
            stop.set()
            worker.join(timeout=5)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "dtype": str(getattr(self.model, "dtype", "")),
            "device": str(getattr(self.model, "device", "")),
        }

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
