"""Generation backends behind one interface (``base.Backend``), found by name in ``BACKENDS``.

``BACKENDS`` maps a name to ``"module:Class"``; the module is imported only when the backend is used, so
asking for ``transformers`` never imports vLLM or Ray.

Example:
    >>> from llava_zh.regenerate.backends import BACKENDS, backend_class
    >>> sorted(BACKENDS)
    ['ray', 'transformers', 'vllm']
    >>> backend_class("transformers").__name__
    'TransformersBackend'
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, GenerationParams, GenerationRequest, GenerationResult

#: backend name -> "module:Class" implementing ``Backend``.
BACKENDS: dict[str, str] = {
    "transformers": "llava_zh.regenerate.backends.transformers:TransformersBackend",
    "vllm": "llava_zh.regenerate.backends.vllm:VLLMBackend",
    "ray": "llava_zh.regenerate.backends.ray:RayBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name`` (imports its module)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(BACKENDS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def create_backend(name: str, model: Any, **options: Any) -> Backend:
    """Instantiate the backend ``name`` for ``model``; ``options`` go to its constructor.

    Example:
        >>> create_backend("vllm", "Qwen/Qwen2.5-VL-7B-Instruct", tensor_parallel_size=2)   # doctest: +SKIP
    """
    return backend_class(name)(model, **options)


__all__ = [
    "BACKENDS",
    "Backend",
    "GenerationParams",
    "GenerationRequest",
    "GenerationResult",
    "backend_class",
    "create_backend",
]
