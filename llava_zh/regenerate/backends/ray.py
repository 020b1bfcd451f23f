"""The Ray backend: Ray Data ``map_batches`` with one generating backend per GPU actor, across many nodes.

The requests of a run become a Ray dataset of small rows (id, prompt, and either the image bytes or the
image's container path and member name, read by the worker: a shared filesystem is assumed for
containers). ``map_batches`` runs ``GenerateBatch`` in a pool of actors, each holding one inner backend
(``transformers`` or ``vllm``) on its own GPU(s); results stream back to the driver as they finish, where
the runner writes them, so a killed driver loses only what was in flight. Needs ``pip install "llava-zh[ray]"``.

Example:
    >>> backend = RayBackend("Qwen/Qwen2.5-VL-7B-Instruct", inner="vllm", num_actors=16)   # doctest: +SKIP
    >>> llava_zh.regenerate(images="imgs/", task="conversation", backend=backend, out="regen/")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterable, Iterator, Optional, Sequence

from .base import Backend, GenerationParams, GenerationRequest, GenerationResult, batched

_EXTRA_HINT = 'the ray backend needs Ray Data: pip install "llava-zh[ray]"'

#: Columns of the request rows and the result rows exchanged with the actors.
REQUEST_COLUMNS = ("id", "prompt", "image", "container", "member", "system")
RESULT_COLUMNS = ("id", "text", "output_tokens", "input_tokens", "seconds", "batch_size", "error")


def _require_ray():
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{_EXTRA_HINT} ({e})") from None
    import ray

    return ray


def request_table(requests: Sequence[GenerationRequest]):
    """A pyarrow table of request rows (what the Ray dataset is made of)."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("image", pa.binary()),
            ("container", pa.string()),
            ("member", pa.string()),
            ("system", pa.string()),
        ]
    )
    return pa.Table.from_pylist([r.to_row() for r in requests], schema=schema)


def result_table(results: Sequence[GenerationResult]):
    """A pyarrow table of result rows (what each actor returns)."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("output_tokens", pa.int64()),
            ("input_tokens", pa.int64()),
            ("seconds", pa.float64()),
            ("batch_size", pa.int64()),
            ("error", pa.string()),
        ]
    )
    return pa.Table.from_pylist([r.to_row() for r in results], schema=schema)


def results_from_table(table) -> list[GenerationResult]:
    """Result rows (a pyarrow table, pandas frame or dict of columns) back to ``GenerationResult`` s."""
    if hasattr(table, "to_pylist"):
        rows = table.to_pylist()
    elif hasattr(table, "to_dict"):
        rows = table.to_dict("records")
    else:
        columns = {k: list(v) for k, v in table.items()}
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    out = []
    for row in rows:
        error = row.get("error")
        out.append(
            GenerationResult(
                id=str(row["id"]),
                text=row.get("text") or "",
                output_tokens=int(row.get("output_tokens") or 0),
                input_tokens=int(row.get("input_tokens") or 0),
                seconds=float(row.get("seconds") or 0.0),
                batch_size=int(row.get("batch_size") or 1),
                error=None if error is None or error != error else str(error),  # NaN from pandas is no error
            )
        )
    return out


def plan_actors(cluster_gpus: float, gpus_per_actor: float, requested: Optional[int] = None) -> int:
    """How many actors to start: ``requested``, or as many as the cluster's GPUs hold (at least one)."""
    if gpus_per_actor < 0:
        raise ValueError(f"gpus_per_actor must be >= 0, got {gpus_per_actor}")
    if requested is not None:
        if requested < 1:
            raise ValueError(f"num_actors must be at least 1, got {requested}")
        return requested
    if gpus_per_actor == 0:
        return 1
    return max(1, int(cluster_gpus // gpus_per_actor))


class GenerateBatch:
    """The ``map_batches`` callable: builds one inner backend per actor and answers pyarrow batches of requests."""

    def __init__(self, backend: str, model: Any, options: Optional[dict[str, Any]] = None,
                 generation: Optional[dict[str, Any]] = None) -> None:
        from . import create_backend

        params = GenerationParams(**generation) if generation else None
        self.backend = create_backend(backend, model, generation=params, **(options or {}))

    def __call__(self, batch):
        requests = [GenerationRequest.from_row(row) for row in _rows(batch)]
        return result_table(self.backend.generate(requests))


def _rows(batch) -> list[dict[str, Any]]:
    if hasattr(batch, "to_pylist"):
        return batch.to_pylist()
    columns = {k: list(v) for k, v in batch.items()}
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


class RayBackend(Backend):
    """Spread generation over the GPUs of a Ray cluster.

    Args:
        model: what the inner backend loads (a Hub id or a path every node can read).
        inner: ``"transformers"`` or ``"vllm"``: the backend each actor runs.
        num_actors: actors in the pool; defaults to the cluster's GPUs divided by ``gpus_per_actor``.
        gpus_per_actor: GPUs reserved per actor (set it to vLLM's ``tensor_parallel_size``).
        actor_batch_size: requests per ``map_batches`` call on an actor.
        inner_options: keyword arguments of the inner backend (``dtype``, ``tensor_parallel_size``...).
        address: the Ray cluster to join (``"auto"``, ``"ray://host:10001"``); ``None`` starts or joins a local one.
    """

    name = "ray"
    default_batch_size = 1024  # requests handed to Ray at a time by the runner

    def __init__(
        self,
        model: Any,
        *,
        inner: str = "transformers",
        num_actors: Optional[int] = None,
        gpus_per_actor: float = 1,
        actor_batch_size: int = 8,
        inner_options: Optional[dict[str, Any]] = None,
        generation: Optional[GenerationParams] = None,
        address: Optional[str] = None,
        model_id: Optional[str] = None,
        ray_remote_args: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__(generation=generation, model_id=model_id or str(model))
        if inner == "ray":
            raise ValueError("the ray backend runs a transformers or vllm backend in each actor, not another ray one")
        self.model = model
        self.inner = inner
        self.requested_actors = num_actors
        self.gpus_per_actor = gpus_per_actor
        self.actor_batch_size = actor_batch_size
        self.inner_options = dict(inner_options or {})
        self.address = address
        self.ray_remote_args = dict(ray_remote_args or {})

    def _ray(self):
        ray = _require_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, ignore_reinit_error=True)
        return ray

    def map_batches_kwargs(self, num_actors: int) -> dict[str, Any]:
        """The arguments of ``Dataset.map_batches`` that make the actor pool."""
        return {
            "fn_constructor_kwargs": {
                "backend": self.inner,
                "model": self.model,
                "options": self.inner_options,
                "generation": asdict(self.generation),
            },
            "batch_size": self.actor_batch_size,
            "batch_format": "pyarrow",
            "num_gpus": self.gpus_per_actor,
            "concurrency": num_actors,
            **self.ray_remote_args,
        }

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [r for chunk in self.generate_stream([requests]) for r in chunk]

    def generate_stream(self, batches: Iterable[Sequence[GenerationRequest]]) -> Iterator[list[GenerationResult]]:
        """One Ray Data pipeline over all the requests (actors load the model once); results stream back."""
        ray = self._ray()
        requests = [r for batch in batches for r in batch]
        if not requests:
            return
        num_actors = plan_actors(ray.cluster_resources().get("GPU", 0), self.gpus_per_actor, self.requested_actors)
        kwargs = self.map_batches_kwargs(num_actors)
        blocks = [request_table(chunk) for chunk in batched(requests, self.actor_batch_size * 16)]
        dataset = ray.data.from_arrow(blocks).map_batches(GenerateBatch, **kwargs)
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield results_from_table(table)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"inner": self.inner, "gpus_per_actor": self.gpus_per_actor}
