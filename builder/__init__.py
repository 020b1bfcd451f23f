"""The ``datasets`` builder of llava-instruct-zh-600k (one file, the datasets builder convention).

Installed as ``llava_zh.builder``; ``llava_zh.load_dataset`` instantiates it for you.
"""

from .llava_instruct_zh import LlavaInstructZh, LlavaInstructZhConfig

__all__ = ["LlavaInstructZh", "LlavaInstructZhConfig"]
