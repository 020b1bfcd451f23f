"""Regenerate samples with a VLM: images (or a dataset's samples) -> prompt -> backend -> parser -> records.

``regenerate`` is resumable (the same call again skips the ids already written), survives ``SIGKILL``
(each batch is one atomically written part file; see ``store``), and splits its inputs between
processes or nodes with ``shard_index``/``num_shards`` (stable hash of the id, no overlap). A progress
bar shows samples/s and output tokens/s. The parsed records in ``out/data`` load with
``llava_zh.load_dataset``; refused replies are kept in ``out/failed`` with their reason.

Example:
    >>> import llava_zh
    >>> summary = llava_zh.regenerate(images="photos/", task="conversation",
    ...                               model="Qwen/Qwen2.5-VL-7B-Instruct", out="regen/")  # doctest: +SKIP
    >>> summary.ok, summary.failed                                                      # doctest: +SKIP
    (9873, 127)
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

from ..schema import TASKS
from .backends import Backend, GenerationParams, GenerationRequest, GenerationResult, create_backend
from .backends.base import match_results
from .inputs import (
    DEFAULT_SOURCE,
    Item,
    check_shard,
    dataset_image,
    dataset_items,
    image_items,
    load_input_dataset,
    select_shard,
)
from .parsers import TOO_MANY_ROUNDS, ParseResult, parse_reply
from .prompts import Prompt, get_prompt
from .record import build_record, utc_now
from .store import CONFIG_FILE, FOLDERS, ShardStore, dataset_card, read_ids, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)


@dataclass
class RegenSummary:
    """What a call of ``regenerate`` did: counts for this shard, refusal reasons, speed, where the output is."""

    out: str
    shard_index: int
    num_shards: int
    inputs: int = 0
    already_done: int = 0
    processed: int = 0
    ok: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    output_tokens: int = 0
    seconds: float = 0.0

    @property
    def remaining(self) -> int:
        """Inputs of this shard still not written (non-zero after a ``limit`` or an interrupted run)."""
        return self.inputs - self.already_done - self.processed

    @property
    def samples_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "remaining": self.remaining,
            "samples_per_second": self.samples_per_second,
            "tokens_per_second": self.tokens_per_second,
        }


def _tasks(task: Union[None, str, Sequence[str]]) -> Optional[list[str]]:
    if task is None:
        return None
    tasks = [task] if isinstance(task, str) else list(task)
    if tasks == ["all"]:
        tasks = list(TASKS)
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; expected one of {list(TASKS)} or 'all'")
    return tasks


class _Prompts:
    """Prompts by (task, language), built-in or the user's text (one text for every task, or one per task)."""

    def __init__(self, prompt: Union[None, str, dict[str, str]]) -> None:
        self.prompt = prompt
        self._cache: dict[tuple[str, str], Prompt] = {}

    def __call__(self, task: str, language: str) -> Prompt:
        key = (task, language)
        if key not in self._cache:
            text = self.prompt.get(task) if isinstance(self.prompt, dict) else self.prompt
            self._cache[key] = get_prompt(task, language, text=text)
        return self._cache[key]


def regenerate(
    images: Union[None, str, os.PathLike] = None,
    *,
    dataset: Any = None,
    task: Union[None, str, Sequence[str]] = None,
    model: Any = None,
    backend: Union[str, Backend] = "transformers",
    out: Union[str, os.PathLike] = "regen",
    language: Optional[str] = None,
    prompt: Union[None, str, dict[str, str]] = None,
    batch_size: Optional[int] = None,
    generation: Optional[GenerationParams] = None,
    max_new_tokens: int = 2048,
    temperature: float = 0.7,
    top_p: Optional[float] = 0.8,
    top_k: Optional[int] = 20,
    repetition_penalty: Optional[float] = 1.05,
    seed: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    output_format: str = "parquet",
    records_per_file: int = 1000,
    max_rounds: Optional[int] = None,
    on_too_many_rounds: str = "refuse",
    ids: Optional[Iterable[str]] = None,
    limit: Optional[int] = None,
    source_name: Optional[str] = None,
    split: str = "train",
    backend_options: Optional[dict[str, Any]] = None,
    progress: bool = True,
) -> RegenSummary:
    """Make samples from images with a VLM, or redo the samples of a llava-zh dataset, into ``out``.

    Args:
        images: a folder, ``.zip`` or ``.tar``/``.tar.gz`` of images (each image gets one sample per task).
        dataset: instead of ``images``: a ``datasets.Dataset``/``DatasetDict`` or any source of
            ``llava_zh.load_dataset``; its samples are redone with their own task, language and id.
        task: one task, several, or ``"all"``. Required with ``images``; with ``dataset`` it selects tasks.
        model: Hub id or folder (or a loaded model with ``backend_options={"processor": ...}``); ignored
            when ``backend`` is a ``Backend`` instance.
        backend: ``"transformers"``, ``"vllm"``, ``"ray"`` or a ready ``Backend`` (which keeps its own
            generation settings unless ``generation`` is given; it is not closed at the end).
        out: output folder: ``data/`` (parsed), ``failed/`` (refused), ``regen_config.json``.
        language: ``zh`` or ``en`` prompts (default ``zh``; a redone sample keeps its own unless given).
        prompt: custom prompt text (for every task) or ``{task: text}``; default: the published prompts.
        batch_size: requests per generate call (default: the backend's).
        generation: sampling settings; else built from ``max_new_tokens``, ``temperature``, ``top_p``,
            ``top_k``, ``repetition_penalty``, ``seed``.
        shard_index, num_shards: this process's share of the inputs (stable hash of the id).
        output_format: ``parquet`` (images embedded) or ``jsonl`` (image paths only).
        records_per_file: target records per merged part file.
        max_rounds, on_too_many_rounds: round limit (default 5 conversation, 1 complex reasoning) and
            ``refuse`` or ``keep_first`` for a longer reply.
        ids: only these sample ids (to redo some samples of a dataset).
        limit: stop after this many samples in this call (the next call goes on).
        source_name: ``source`` of new samples (default ``llava-zh-regenerate``).
        backend_options: keyword arguments of the backend (``dtype``, ``device``, ``tensor_parallel_size``...).
        progress: show a tqdm bar with samples/s and tokens/s.

    Returns:
        a ``RegenSummary`` (counts, refusal reasons, tokens/s).
    """
    if (images is None) == (dataset is None):
        raise ValueError("give exactly one input: images=<folder, .zip or .tar> or dataset=<dataset or source>")
    check_shard(shard_index, num_shards)
    if on_too_many_rounds not in TOO_MANY_ROUNDS:
        raise ValueError(f"on_too_many_rounds must be one of {TOO_MANY_ROUNDS}, got {on_too_many_rounds!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tasks = _tasks(task)
    if isinstance(backend, Backend):  # a ready backend keeps its own settings unless generation= is given
        if generation is not None:
            backend.generation = generation
        generation = backend.generation
    else:
        generation = generation or GenerationParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
            repetition_penalty=repetition_penalty, seed=seed,
        )
    if not isinstance(backend, Backend) and model is None:
        raise ValueError("model is required (a Hub id or a local folder), unless backend is a Backend instance")
    prompts = _Prompts(prompt)
    out = os.path.abspath(os.fspath(out))

    input_ds = None
    if images is not None:
        if tasks is None:
            raise ValueError(f"task is required with images: one of {list(TASKS)}, a list of them, or 'all'")
        items = image_items(images, tasks, language=language or "zh", source=source_name or DEFAULT_SOURCE)
        if ids is not None:
            wanted = set(ids)
            items = [it for it in items if it.id in wanted]
    else:
        input_ds = load_input_dataset(dataset, split=split)
        items = dataset_items(input_ds, tasks=tasks, ids=ids, language=language)
    items = select_shard(items, shard_index, num_shards)
    summary = RegenSummary(out=out, shard_index=shard_index, num_shards=num_shards, inputs=len(items))

    with ShardStore(out, shard_index, num_shards, output_format=output_format,
                    records_per_file=records_per_file) as store:
        done = set(read_ids(out))
        pending = [it for it in items if it.id not in done]
        summary.already_done = len(items) - len(pending)
        if limit is not None:
            pending = pending[:limit]
        if not pending:
            logger.info("%s: nothing to do (%d of %d inputs already written)", out, summary.already_done, len(items))
            return summary
        owned = not isinstance(backend, Backend)
        engine = create_backend(backend, model, generation=generation, **(backend_options or {})) if owned else backend
        try:
            _write_config(out, engine, generation, prompts, tasks, images, dataset, output_format)
            _run(
                engine, pending, store, summary, input_ds=input_ds, prompts=prompts,
                batch_size=batch_size or engine.default_batch_size, max_rounds=max_rounds,
                on_too_many_rounds=on_too_many_rounds, embed_images=output_format == "parquet", progress=progress,
            )
        finally:
            if owned:
                engine.close()
    return summary


def _write_config(out, engine, generation, prompts, tasks, images, dataset, output_format) -> None:
    path = os.path.join(out, CONFIG_FILE)
    config = {
        "llava_zh_regenerate": 1,
        **engine.describe(),
        "generation": generation.to_dict(),
        "tasks": tasks,
        "input": str(images) if images is not None else (dataset if isinstance(dataset, str) else type(dataset).__name__),
        "output_format": output_format,
        "folders": FOLDERS,
        "custom_prompt": prompts.prompt,
        "created_at": utc_now(),
    }
    if os.path.exists(path):
        try:
            import json

            with open(path, encoding="utf-8") as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = {}
        changed = [k for k in ("model", "backend", "generation", "custom_prompt") if previous.get(k) != config.get(k)]
        if changed:
            logger.warning("%s was started with different %s; new records say which settings made them",
                           out, ", ".join(changed))
        return
    write_json_atomic(path, config)
    card = os.path.join(out, "README.md")
    if not os.path.exists(card):
        write_text_atomic(card, dataset_card(output_format, engine.model_id))


def _requests(batch: Sequence[Item], prompts: _Prompts, input_ds: Any) -> list[GenerationRequest]:
    requests = []
    for it in batch:
        text = prompts(it.task, it.language).text
        if it.row is not None:
            data, _ = dataset_image(input_ds, it.row)
            requests.append(GenerationRequest(it.id, text, image=data if data is not None else b""))
        else:
            requests.append(GenerationRequest(it.id, text, container=it.container, member=it.member))
    return requests


def _image_of(item: Item, request: GenerationRequest, input_ds: Any, embed: bool) -> tuple[Optional[bytes], Optional[str]]:
    """Bytes (when embedding) and path recorded for the item's image."""
    if item.row is not None:
        data, path = dataset_image(input_ds, item.row)
        return (data if embed else None), (path or item.image_path or f"{item.id}.jpg")
    if not embed:
        return None, item.image_path
    try:
        return request.image_bytes(), item.image_path
    except (FileNotFoundError, ValueError):
        return None, item.image_path


def _parse(item: Item, result: GenerationResult, max_rounds, on_too_many_rounds) -> ParseResult:
    if result.error is not None:
        return ParseResult(reason="image_error", message=result.error)
    return parse_reply(result.text, item.task, max_rounds=max_rounds, on_too_many_rounds=on_too_many_rounds,
                       question=item.question)


def _run(engine: Backend, pending: list[Item], store: ShardStore, summary: RegenSummary, *, input_ds, prompts,
         batch_size, max_rounds, on_too_many_rounds, embed_images, progress) -> None:
    from tqdm.auto import tqdm

    by_id = {it.id: it for it in pending}
    in_flight: dict[str, GenerationRequest] = {}

    def batches() -> Iterator[list[GenerationRequest]]:
        for start in range(0, len(pending), batch_size):
            requests = _requests(pending[start:start + batch_size], prompts, input_ds)
            for r in requests:
                in_flight[r.id] = r
            yield requests

    generation = engine.generation.to_dict()
    reasons: Counter = Counter(summary.reasons)
    bar = tqdm(total=len(pending), unit="sample", desc=f"regenerate {summary.shard_index + 1}/{summary.num_shards}",
               disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for results in engine.generate_stream(batches()):
            unknown = [r.id for r in results if r.id not in in_flight]
            if unknown:
                raise RuntimeError(f"backend {engine.name} answered requests that are not in flight: {unknown[:5]}")
            requests = [in_flight[r.id] for r in results]
            results = match_results(requests, results)  # raises on an id answered twice
            finished = utc_now()
            records = []
            for request, result in zip(requests, results):
                item = by_id[result.id]
                parsed = _parse(item, result, max_rounds, on_too_many_rounds)
                if parsed.reason == "image_error":  # nothing decodable to keep: the record has no image
                    data, path = None, None
                else:
                    data, path = _image_of(item, request, input_ds, embed_images)
                p = prompts(item.task, item.language)
                records.append(build_record(
                    sample_id=item.id, task=item.task, language=item.language, source=item.source,
                    image_path=path, image_bytes=data, conversations=parsed.conversations, raw_reply=result.text,
                    reason=parsed.reason, message=parsed.message, model=engine.model_id, backend=engine.name,
                    prompt_id=p.id, prompt=p.text, generation=generation,
                    timing={"generated_at": finished, "batch_seconds": result.seconds,
                            "batch_size": max(1, result.batch_size), "input_tokens": result.input_tokens,
                            "output_tokens": result.output_tokens},
                ))
                if parsed.ok:
                    summary.ok += 1
                else:
                    summary.failed += 1
                    reasons[parsed.reason] += 1
                summary.output_tokens += result.output_tokens
            store.write(records)
            for request in requests:
                del in_flight[request.id]
            summary.processed += len(records)
            summary.seconds = time.perf_counter() - start
            summary.reasons = dict(reasons)
            bar.update(len(records))
            bar.set_postfix(tok_s=f"{summary.tokens_per_second:.0f}", ok=summary.ok, failed=summary.failed, refresh=False)
        if in_flight:
            missing = sorted(in_flight)
            raise RuntimeError(
                f"backend {engine.name} gave no answer for {len(missing)} request(s), e.g. {missing[:5]}; "
                "they are not written and the next run will redo them"
            )
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        summary.reasons = dict(reasons)
