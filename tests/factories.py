"""Factories for tiny LLaVA-style datasets written into a test's tmp_path, in every on-disk layout."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Optional

from PIL import Image

COLORS = [(200, 30, 30), (30, 160, 60), (40, 70, 200), (220, 180, 20), (120, 40, 160)]


def jpeg_bytes(width: int = 32, height: int = 24, color: tuple[int, int, int] = (200, 30, 30), fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format=fmt)
    return buf.getvalue()


def record(i: int, task: str = "conversation", rounds: Optional[int] = None, image: bool = True, **extra) -> dict[str, Any]:
    """A valid LLaVA record; conversations get ``rounds`` rounds (5 for conversation, else 1)."""
    rounds = rounds if rounds is not None else (5 if task == "conversation" else 1)
    turns = []
    for r in range(rounds):
        question = f"第{r + 1}个问题:图中第{i}号物体是什么颜色?"
        if r == 0 and image:
            question = "<image>\n" + question
        if task == "detail_description" and r == 0:
            question = ("<image>\n" if image else "") + "请详细描述这张图片。"
        turns.append({"from": "human", "value": question})
        turns.append({"from": "gpt", "value": f"第{i}号物体是{['红', '绿', '蓝'][i % 3]}色的,回答{r + 1}。"})
    rec: dict[str, Any] = {"id": f"{task}-{i:04d}"}
    if image:
        rec["image"] = f"{task}-{i:04d}.jpg"
    rec["conversations"] = turns
    rec.update(extra)
    return rec


def records(n_per_task: int = 2, tasks: Iterable[str] = ("conversation", "complex_reasoning", "detail_description")) -> dict[str, list[dict]]:
    """``{task: [records]}`` with distinct ids and images."""
    return {task: [record(i, task) for i in range(n_per_task)] for task in tasks}


def image_bytes_for(recs: Iterable[dict]) -> dict[str, bytes]:
    return {r["image"]: jpeg_bytes(16 + i, 12 + i, COLORS[i % len(COLORS)]) for i, r in enumerate(recs) if "image" in r}


def write_annotations(folder: Path, name: str, recs: list[dict], fmt: str, images: Optional[dict[str, bytes]] = None) -> Path:
    """Write records as a JSON array (``json``), JSON Lines (``jsonl``) or parquet with embedded images."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path = folder / f"{name}.json"
        path.write_text(json.dumps(recs, ensure_ascii=False, indent=2), encoding="utf-8")
    elif fmt == "jsonl":
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / f"{name}.parquet"
        rows = []
        for r in recs:
            row = {"id": r["id"], "conversations": r["conversations"]}
            row["image"] = {"bytes": (images or {}).get(r.get("image")), "path": r.get("image")} if "image" in r else None
            rows.append(row)
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        raise ValueError(fmt)
    return path


def write_images(folder: Path, images: dict[str, bytes], container: str, prefix: str = "") -> Path:
    """Put images in a ``folder``, a ``zip``, a ``tar`` or a ``tar.gz`` under ``folder``; returns the container."""
    folder.mkdir(parents=True, exist_ok=True)
    if container == "folder":
        root = folder / "images"
        for name, data in images.items():
            (root / prefix / name).parent.mkdir(parents=True, exist_ok=True)
            (root / prefix / name).write_bytes(data)
        return root
    if container == "zip":
        path = folder / "images.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
            for name, data in images.items():
                z.writestr(prefix + name, data)
        return path
    if container in ("tar", "tar.gz"):
        path = folder / f"images.{container}"
        with tarfile.open(path, "w:gz" if container == "tar.gz" else "w") as t:
            for name, data in images.items():
                info = tarfile.TarInfo(prefix + name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return path
    raise ValueError(container)


def make_dataset(tmp_path: Path, fmt: str = "json", container: str = "folder", n_per_task: int = 2, prefix: str = "") -> tuple[Path, dict[str, list[dict]], dict[str, bytes]]:
    """A folder with one annotation file per task and the images in one container."""
    by_task = records(n_per_task)
    images = image_bytes_for([r for recs in by_task.values() for r in recs])
    root = tmp_path / f"ds-{fmt}-{container}"
    for task, recs in by_task.items():
        write_annotations(root, task, recs, fmt, images)
    if fmt != "parquet":
        write_images(root, images, container, prefix)
    return root, by_task, images
