"""Regeneration: re-synthesize samples with a VLM from the dataset's prompts, resumable, one GPU to a cluster.

This package is also callable: ``llava_zh.regenerate(...)`` is ``llava_zh.regenerate.runner.regenerate(...)``,
so the function and the package (``from llava_zh.regenerate import prompts``) share one name.

Modules: ``prompts`` (the published prompts and English ones), ``parsers`` (reply -> conversation),
``backends`` (transformers, vllm, ray behind one interface), ``inputs`` (images or a dataset -> items),
``record`` (the output record), ``store`` (atomic part files), ``runner`` (the loop).

Example:
    >>> import llava_zh
    >>> llava_zh.regenerate(images="photos/", task="complex_reasoning",
    ...                     model="Qwen/Qwen2.5-VL-7B-Instruct", out="regen/")      # doctest: +SKIP
    >>> ds = llava_zh.load_dataset("regen/data")                                     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# Public name -> submodule (relative to this package) that defines it; imported on first use.
_LAZY: dict[str, str] = {
    "regenerate": "runner",
    "RegenSummary": "runner",
    "load_records": "loading",
    "get_prompt": "prompts",
    "PROMPTS": "prompts",
    "Prompt": "prompts",
    "parse_reply": "parsers",
    "ParseResult": "parsers",
    "REASONS": "parsers",
    "PARSERS": "parsers",
    "BACKENDS": "backends",
    "Backend": "backends",
    "create_backend": "backends",
    "GenerationParams": "backends",
    "GenerationRequest": "backends",
    "GenerationResult": "backends",
    "REGEN_FEATURES": "record",
    "shard_of": "inputs",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {"backends", "inputs", "parsers", "prompts", "record", "runner", "store"})


class _CallableModule(types.ModuleType):
    """The package, callable as the ``regenerate`` function."""

    def __call__(self, *args: Any, **kwargs: Any):
        """Same as ``llava_zh.regenerate.runner.regenerate`` (see its docstring)."""
        from .runner import regenerate

        return regenerate(*args, **kwargs)

    @property
    def __signature__(self):  # inspect.signature / IDEs show the function's parameters
        import inspect

        from .runner import regenerate

        return inspect.signature(regenerate)


sys.modules[__name__].__class__ = _CallableModule
