"""Small datasets with known contents for the stats, preview and filter tests (real images drawn with PIL)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Optional

import datasets
from PIL import Image, ImageDraw

from llava_zh.schema import FEATURES


def draw_image(width: int, height: int, seed: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A small picture (background, a disc, a bar) whose colours depend on ``seed``; encoded as ``fmt``."""
    base = ((seed * 67) % 256, (seed * 131 + 60) % 256, (seed * 29 + 120) % 256)
    im = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(im)
    draw.ellipse((width // 8, height // 8, width // 2, height // 2 + height // 4), fill=(250, 220, 40))
    draw.rectangle((width // 2, height // 2, width - 3, height - 3), fill=(30, 30, 30))
    if mode == "RGBA":
        im = im.convert("RGBA")
        im.putpixel((0, 0), (0, 0, 0, 0))
    elif mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def turns(*pairs: str) -> list[dict[str, str]]:
    """``turns(q1, a1, q2, a2, ...)`` -> a conversation in LLaVA form."""
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(pairs)]


def row(
    sample_id: str,
    task: str,
    conversations: list[dict[str, str]],
    image: Optional[bytes] = None,
    ext: str = "jpg",
    language: str = "zh",
    source: str = "llava-instruct-zh-600k",
    **extra: Any,
) -> dict[str, Any]:
    r = {
        "id": sample_id,
        "task": task,
        "language": language,
        "source": source,
        "image": None if image is None else {"bytes": image, "path": f"{sample_id}.{ext}"},
        "conversations": conversations,
    }
    r.update(extra)
    return r


CAT_Q = "<image>\n图中有几只猫?"
DESCRIBE_Q = "<image>\n详细描述这张图片。"


def known_rows() -> list[dict[str, Any]]:
    """Six samples whose every statistic is worked out by hand in ``tests/test_stats.py``."""
    c1_image = draw_image(64, 48, seed=1)
    return [
        row("c1", "conversation", turns(CAT_Q, "两只猫。", "它们在做什么?", "它们在睡觉。"), c1_image),
        row("c2", "conversation", turns(CAT_Q, "三只猫。"), draw_image(32, 32, seed=2, mode="L")),
        row("r1", "complex_reasoning", turns("图中有几只猫?\n<image>", "A cat."), draw_image(100, 50, 3, "PNG", "RGBA"), "png"),
        row("d1", "detail_description", turns(DESCRIBE_Q, "一只橘猫趴在窗台上。"), c1_image),  # same bytes as c1
        row("e1", "conversation", turns("What is this?", "It is a dog."), None, language="en", source="llava-instruct-150k"),
        row("d2", "detail_description", turns(DESCRIBE_Q, "图中有一只狗和 2 个球"), draw_image(128, 96, seed=4)),
    ]


def make(rows: list[dict[str, Any]], features: datasets.Features = FEATURES) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows, features=features)


def known_dataset() -> datasets.Dataset:
    return make(known_rows())


def write_source(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """The rows as a local source: ``annotations.json`` (LLaVA records) and ``images/`` beside it."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for r in rows:
        rec = {k: r[k] for k in ("id", "task", "language", "source", "conversations")}
        if r["image"] is not None:
            (folder / "images" / r["image"]["path"]).write_bytes(r["image"]["bytes"])
            rec["image"] = r["image"]["path"]
        records.append(rec)
    (folder / "annotations.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return folder


def byte_tokenizer():
    """A real ``tokenizers`` byte-level BPE with no merges: one token per UTF-8 byte (exact, offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok
