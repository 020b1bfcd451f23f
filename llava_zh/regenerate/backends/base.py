"""The one interface every generation backend implements, and the pure parts they share.

A backend turns ``GenerationRequest`` s (an id, a prompt, one image) into ``GenerationResult`` s (the id,
the reply text, token counts). The runner never looks inside a backend: it hands over batches through
``generate_stream`` and matches what comes back to its samples by id (``match_results``), so a backend may
answer in any order and in its own batches (Ray does).

Example:
    >>> from llava_zh.regenerate.backends.base import GenerationParams
    >>> GenerationParams(temperature=0.0).hf_generate_kwargs()
    {'max_new_tokens': 2048, 'do_sample': False, 'repetition_penalty': 1.05}
"""

from __future__ import annotations

import hashlib
import io
import itertools
import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Iterable, Iterator, Optional, Sequence


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings, recorded with every sample. ``temperature=0`` means greedy decoding.

    The defaults are the chat settings Qwen recommends for Qwen2.5-VL (varied wording, few repetitions).
    """

    max_new_tokens: int = 2048
    temperature: float = 0.7
    top_p: Optional[float] = 0.8
    top_k: Optional[int] = 20
    repetition_penalty: Optional[float] = 1.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded in ``generation`` of a regeneration record."""
        return asdict(self) | {"do_sample": self.do_sample}

    def hf_generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` (sampling knobs only when sampling)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs["temperature"] = self.temperature
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
            if self.top_k is not None:
                kwargs["top_k"] = self.top_k
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs

    def vllm_sampling_kwargs(self, request_id: str) -> dict[str, Any]:
        """Keyword arguments for ``vllm.SamplingParams``; the seed is per request so batching does not change it."""
        kwargs: dict[str, Any] = {
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "seed": request_seed(self.seed, request_id),
        }
        if self.do_sample:
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
            if self.top_k is not None:
                kwargs["top_k"] = self.top_k
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


def request_seed(seed: int, *ids: str) -> int:
    """A 31-bit seed fixed by the run's seed and the ids, so a resumed run samples the same way."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(seed).encode())
    for i in ids:
        h.update(b"\0" + i.encode("utf-8"))
    return int.from_bytes(h.digest(), "big") & 0x7FFFFFFF


# One open container per path and process: reading many members of a zip or tar must not reopen it.
_CONTAINERS: dict[str, Any] = {}
_CONTAINERS_LOCK = threading.Lock()


def _container(path: str) -> Any:
    with _CONTAINERS_LOCK:
        found = _CONTAINERS.get(path)
        if found is None:
            from ...images import open_container
            from ..inputs import tar_index_dir

            found = _CONTAINERS[path] = open_container(path, index_dir=tar_index_dir())
        return found


@dataclass(frozen=True)
class GenerationRequest:
    """One image and its instruction. The image is given as encoded bytes, or as ``member`` of ``container``
    (a folder, zip or tar path) so that a request stays small until a worker reads it."""

    id: str
    prompt: str
    image: Optional[bytes] = None
    container: Optional[str] = None
    member: Optional[str] = None
    system: Optional[str] = None

    def image_bytes(self) -> bytes:
        """The encoded image, read from its container when not given inline."""
        if self.image is not None:
            return self.image
        if self.container is None or self.member is None:
            raise ValueError(f"request {self.id!r}: expected image bytes or a container and member, got neither")
        data = _container(self.container).get(self.member)
        if data is None:
            raise FileNotFoundError(f"request {self.id!r}: {self.member!r} not found in {self.container}")
        return data

    def load_image(self):
        """The image as an RGB ``PIL.Image`` (raises ``ImageLoadError`` naming the request when unreadable)."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(self.image_bytes())) as img:
                return img.convert("RGB")
        except Exception as e:  # noqa: BLE001 - any decoder error is reported with the id
            raise ImageLoadError(self.id, f"{type(e).__name__}: {e}") from e

    def to_row(self) -> dict[str, Any]:
        """A plain dict (for Ray Data and other process boundaries)."""
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "GenerationRequest":
        return cls(**{k: row.get(k) for k in ("id", "prompt", "image", "container", "member", "system")})


class ImageLoadError(ValueError):
    """An input image that cannot be read or decoded; recorded as a failed sample, not a crash."""

    def __init__(self, request_id: str, message: str) -> None:
        self.request_id = request_id
        super().__init__(f"image of {request_id!r} cannot be read: {message}")


@dataclass
class GenerationResult:
    """The reply to one request. ``error`` is set (and ``text`` empty) when the request itself failed,
    for example an unreadable image; ``seconds`` and ``batch_size`` describe the batch that produced it."""

    id: str
    text: str
    output_tokens: int = 0
    input_tokens: int = 0
    seconds: float = 0.0
    batch_size: int = 1
    error: Optional[str] = None

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "GenerationResult":
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


def user_message(prompt: str, image: Any, *, image_type: str = "image") -> dict[str, Any]:
    """A chat message holding the image then the prompt. ``image_type`` names the image part the way
    the consumer expects it: ``image`` (transformers templates) or ``image_pil`` (vLLM ``LLM.chat``)."""
    image_part: dict[str, Any] = {"type": image_type}
    if image is not None:
        image_part[image_type] = image
    return {"role": "user", "content": [image_part, {"type": "text", "text": prompt}]}


def chat_messages(request: GenerationRequest, image: Any = None, *, image_type: str = "image") -> list[dict[str, Any]]:
    """The conversation sent to the model for ``request``: an optional system turn, then the user turn."""
    messages = []
    if request.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    messages.append(user_message(request.prompt, image, image_type=image_type))
    return messages


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def match_results(requests: Sequence[GenerationRequest], results: Sequence[GenerationResult]) -> list[GenerationResult]:
    """``results`` in the order of ``requests``; raises when an id is missing, unknown or answered twice."""
    by_id: dict[str, GenerationResult] = {}
    for r in results:
        if r.id in by_id:
            raise ValueError(f"backend answered request {r.id!r} twice")
        by_id[r.id] = r
    wanted = [q.id for q in requests]
    unknown = set(by_id) - set(wanted)
    if unknown:
        raise ValueError(f"backend answered requests that were not asked: {sorted(unknown)[:5]}")
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise ValueError(f"backend gave no answer for {len(missing)} request(s), e.g. {missing[:5]}")
    return [by_id[i] for i in wanted]


def count_generated(row: Sequence[int], stop_ids: Iterable[int]) -> int:
    """Tokens a row really generated: up to and including the first stop token, padding after it not counted."""
    stops = set(stop_ids)
    for i, tok in enumerate(row):
        if tok in stops:
            return i + 1
    return len(row)


class Backend(ABC):
    """A model that answers batches of requests. Subclasses set ``name`` and implement ``generate``.

    ``generate_stream`` is what the runner calls; its default answers batch after batch, a backend
    that can overlap work (prefetching, a cluster) overrides it. Use as a context manager to free the model.
    """

    name: ClassVar[str] = "base"
    #: Batch size used when the caller gives none.
    default_batch_size: ClassVar[int] = 8

    def __init__(self, *, generation: Optional[GenerationParams] = None, model_id: Optional[str] = None) -> None:
        self.generation = generation or GenerationParams()
        self.model_id = model_id or "unknown"

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Answer one batch; results in any order, one per request."""

    def generate_stream(self, batches: Iterable[Sequence[GenerationRequest]]) -> Iterator[list[GenerationResult]]:
        """Answer batches as they come; each yielded list may mix batches but holds every id exactly once overall."""
        for batch in batches:
            yield self.generate(batch)

    def describe(self) -> dict[str, Any]:
        """What is recorded about the backend in the run's ``regen_config.json``."""
        return {"backend": self.name, "model": self.model_id}

    def close(self) -> None:
        """Free the model (GPU memory); the backend cannot be used afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def failed_result(request: GenerationRequest, error: BaseException | str, *, seconds: float = 0.0,
                  batch_size: int = 1) -> GenerationResult:
    """The result of a request that could not be run (its image is unreadable, ...)."""
    return GenerationResult(request.id, "", seconds=seconds, batch_size=batch_size, error=str(error))


__all__ = [
    "Backend",
    "GenerationParams",
    "GenerationRequest",
    "GenerationResult",
    "ImageLoadError",
    "batched",
    "chat_messages",
    "count_generated",
    "failed_result",
    "match_results",
    "request_seed",
    "user_message",
]
