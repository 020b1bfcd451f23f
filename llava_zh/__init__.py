"""llava-zh: the Chinese vision-language instruction dataset llava-instruct-zh-600k, first-class in the
Hugging Face ecosystem.

Example:
    >>> import llava_zh
    >>> ds = llava_zh.load_dataset("sample", config="all", split="train")   # the embedded sample, offline
    >>> llava_zh.to_messages(ds[0])["messages"][0]["role"]
    'user'

The public names are imported lazily so that ``import llava_zh`` stays cheap (no torch, no transformers).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. One table instead of eager imports: heavy optional
# dependencies (torch, transformers, matplotlib) load only when the feature that needs them is used.
_LAZY: dict[str, str] = {
    # foundation
    "load_dataset": "llava_zh.loading",
    "validate": "llava_zh.loading",
    "info": "llava_zh.loading",
    "LoadReport": "llava_zh.report",
    "BadSampleError": "llava_zh.errors",
    "Sample": "llava_zh.schema",
    "Turn": "llava_zh.schema",
    "FEATURES": "llava_zh.schema",
    "TASKS": "llava_zh.schema",
    "CONFIGS": "llava_zh.schema",
    # converters
    "normalize_role": "llava_zh.roles",
    "to_messages": "llava_zh.convert.messages",
    "from_messages": "llava_zh.convert.messages",
    "to_sharegpt": "llava_zh.convert.sharegpt",
    "from_sharegpt": "llava_zh.convert.sharegpt",
    "ChatTemplateEncoder": "llava_zh.convert.chat_template",
    "export": "llava_zh.convert.export",
    "VLMCollator": "llava_zh.collate",
    # training-ready: tokenized cache, packing
    "encode": "llava_zh.encoding",
    "load_encoded": "llava_zh.encoding",
    "pack": "llava_zh.packing",
    "PackedCollator": "llava_zh.packing",
    # mixing
    "load_llava_instruct_150k": "llava_zh.english",
    "mix": "llava_zh.mixing",  # not llava_zh.mix: importing that submodule would shadow the function
    "MixReport": "llava_zh.mixing",
    # regeneration
    "regenerate": "llava_zh.regenerate",  # a callable package: llava_zh.regenerate(...) and its submodules
    # publishing
    "publish": "llava_zh.publishing",  # not llava_zh.publish: importing that submodule would shadow the function
    # looking at the data
    "stats": "llava_zh.inspect.stats",
    "preview": "llava_zh.inspect.preview",
    "filter_dataset": "llava_zh.inspect.filters",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llava_zh' has no attribute {name!r}")
    imported = importlib.import_module(module)
    # a name mapped to its own subpackage (``regenerate``) is that module, not an attribute of it
    value = imported if module == f"{__name__}.{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
