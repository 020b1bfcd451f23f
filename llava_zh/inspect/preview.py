"""A self-contained HTML page to look at samples: thumbnail beside the conversation, task badges, search.

One file, openable from disk with no server: thumbnails are inlined as ``data:`` URIs (downscaled JPEG),
the CSS and a few lines of JavaScript are inline, every text is HTML-escaped. The font stack falls back to
the usual Chinese fonts of each system so that the text reads well everywhere.

The page reports on itself for automated checks: once loaded, ``<body>`` carries
``data-status="ready"``, ``data-samples`` (cards on the page), ``data-images`` (cards with an image),
``data-images-loaded`` (images decoded by the browser) and ``data-visible`` (cards shown by the search).
A search can be preset from the address: ``preview.html#q=猫&task=conversation``.

Example:
    >>> import llava_zh
    >>> ds = llava_zh.load_dataset("sample")                                   # doctest: +SKIP
    >>> llava_zh.preview(ds, "preview.html", n=20, task="conversation", seed=1)  # doctest: +SKIP
    PosixPath('preview.html')
"""

from __future__ import annotations

import base64
import html
import io
import os
import random
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from llava_zh.inspect.fields import (
    IMAGE_COLUMN,
    column_names,
    image_bytes,
    iter_rows,
    single_split,
    undecoded,
)
from llava_zh.schema import IMAGE_PLACEHOLDER

#: Role label shown above each turn, by the ``from`` of the turn.
ROLE_LABELS: dict[str, str] = {"human": "用户 · human", "gpt": "助手 · gpt", "system": "系统 · system"}
#: Badge colour by task; other tasks get the grey one.
TASK_COLORS: dict[str, str] = {
    "conversation": "#2563eb",
    "complex_reasoning": "#7c3aed",
    "detail_description": "#059669",
}
FONT_STACK = (
    '-apple-system, "Segoe UI", "Helvetica Neue", Arial, "PingFang SC", "Hiragino Sans GB", '
    '"Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", '
    '"Microsoft YaHei", sans-serif'
)


# ------------------------------------------------------------------------------------------ choosing


def _choose_from_dataset(ds: Any, n: int, task: Optional[str], seed: Optional[int]) -> tuple[list[dict], int]:
    """Pick ``n`` rows of an in-memory/Arrow dataset uniformly at random (by index), images undecoded."""
    rng = random.Random(seed)
    if task is None:
        population: Sequence[int] = range(len(ds))
    else:
        population = []
        start = 0
        for batch in ds.select_columns(["task"]).iter(batch_size=10_000):
            population.extend(start + i for i, t in enumerate(batch["task"]) if t == task)
            start += len(batch["task"])
    chosen = sorted(rng.sample(population, min(n, len(population))))
    rows = list(iter_rows(undecoded(ds).select(chosen))) if chosen else []
    for index, row in zip(chosen, rows):
        row["_index"] = index
    return rows, len(population)


def _choose_from_stream(ds: Any, n: int, task: Optional[str], seed: Optional[int]) -> tuple[list[dict], int]:
    """Reservoir sampling (algorithm R) over a stream: uniform, one pass, ``n`` rows held at a time."""
    rng = random.Random(seed)
    reservoir: list[dict] = []
    seen = 0
    for index, row in enumerate(iter_rows(ds)):
        if task is not None and row.get("task") != task:
            continue
        row["_index"] = index
        if len(reservoir) < n:
            reservoir.append(row)
        else:
            j = rng.randrange(seen + 1)
            if j < n:
                reservoir[j] = row
        seen += 1
    reservoir.sort(key=lambda r: r["_index"])
    return reservoir, seen


# ---------------------------------------------------------------------------------------- thumbnails


def thumbnail_data_uri(data: bytes, size: int = 320, quality: int = 82) -> tuple[str, dict[str, Any]]:
    """A downscaled JPEG of image bytes as a ``data:`` URI, and the original's width/height/format/mode."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    with PILImage.open(io.BytesIO(data)) as im:
        meta = {"width": im.width, "height": im.height, "format": im.format, "mode": im.mode}
        im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale straight away
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = PILImage.new("RGB", rgba.size, "white")
            im.paste(rgba, mask=rgba.getchannel("A"))
        elif im.mode != "RGB":
            im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), meta


# ------------------------------------------------------------------------------------------ rendering


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _text_html(text: str) -> str:
    """Escaped text, with the ``<image>`` placeholder shown as a small chip."""
    escaped = _esc(text)
    placeholder = _esc(IMAGE_PLACEHOLDER)
    return escaped.replace(placeholder, f'<span class="ph">{placeholder}</span>')


def _badge(task: Optional[str]) -> str:
    color = TASK_COLORS.get(task or "", "#6b7280")
    return f'<span class="badge" style="background:{color}">{_esc(task or "no task")}</span>'


def _card(row: dict, position: int, thumb_size: int) -> str:
    image = row.get(IMAGE_COLUMN)
    media: str
    has_image = "0"
    try:
        data = image_bytes(image) if image is not None else None
    except OSError as e:
        data, media = None, f'<div class="noimg broken">image missing: {_esc(e)}</div>'
    else:
        media = '<div class="noimg">no image</div>'
    if data is not None:
        has_image = "1"
        try:
            uri, meta = thumbnail_data_uri(data, thumb_size)
        except Exception as e:  # noqa: BLE001 - any undecodable image is shown as such, not fatal
            media = f'<div class="noimg broken">image unreadable: {_esc(type(e).__name__)}: {_esc(e)}</div>'
        else:
            info = f'{meta["width"]}×{meta["height"]} {meta["format"] or "?"} {meta["mode"]}'
            media = (
                f'<img src="{uri}" alt="{_esc(row.get("id"))}" loading="eager" decoding="sync">'
                f'<div class="imgmeta">{_esc(info)}</div>'
            )
    turns = []
    for turn in row.get("conversations") or ():
        role = turn.get("from") or "?"
        cls = {"human": "user", "gpt": "assistant", "system": "system"}.get(role, "other")
        turns.append(
            f'<div class="turn {cls}"><div class="role">{_esc(ROLE_LABELS.get(role, role))}</div>'
            f'<div class="text">{_text_html(turn.get("value") or "")}</div></div>'
        )
    head = [_badge(row.get("task")), f'<code class="sid">{_esc(row.get("id"))}</code>']
    for key in ("language", "source"):
        if row.get(key):
            head.append(f'<span class="tag">{_esc(row[key])}</span>')
    if row.get("parse_status") not in (None, "", "ok"):
        head.append(f'<span class="tag warn">parse: {_esc(row["parse_status"])}</span>')
    head.append(f'<span class="idx">#{_esc(row.get("_index"))}</span>')
    return (
        f'<article class="sample" id="sample-{position}" data-task="{_esc(row.get("task") or "")}" '
        f'data-has-image="{has_image}">'
        f'<div class="media">{media}</div>'
        f'<div class="body"><div class="head">{"".join(head)}</div>{"".join(turns)}</div>'
        "</article>"
    )


_CSS = """
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f9fafb; }
* { box-sizing: border-box; }
body { margin:0; font-family: FONTS; color:var(--fg); background:var(--bg); line-height:1.6; }
header { position:sticky; top:0; z-index:1; background:#fff; border-bottom:1px solid var(--line); padding:12px 24px; }
h1 { font-size:20px; margin:0 0 4px; }
.meta { color:var(--muted); font-size:13px; margin:0 0 8px; }
.controls { display:flex; gap:12px; align-items:center; flex-wrap:wrap; }
#q { flex:1; min-width:220px; max-width:520px; font:inherit; padding:6px 10px; border:1px solid #d1d5db; border-radius:6px; }
#task { font:inherit; padding:6px; border:1px solid #d1d5db; border-radius:6px; }
#shown { color:var(--muted); font-size:13px; }
main { padding:16px 24px; display:grid; gap:16px; }
.sample { display:grid; grid-template-columns:minmax(160px, THUMBpx) 1fr; gap:16px; background:#fff;
          border:1px solid var(--line); border-radius:10px; padding:14px; }
.sample[hidden] { display:none; }
.media img { max-width:100%; height:auto; border-radius:6px; display:block; background:#eee; }
.imgmeta { color:var(--muted); font-size:12px; margin-top:4px; }
.noimg { height:120px; display:flex; align-items:center; justify-content:center; color:var(--muted);
         border:1px dashed #d1d5db; border-radius:6px; font-size:13px; padding:8px; text-align:center; }
.noimg.broken { color:#b91c1c; border-color:#fca5a5; }
.head { display:flex; gap:8px; align-items:center; flex-wrap:wrap; margin-bottom:8px; }
.badge { color:#fff; font-size:12px; padding:1px 8px; border-radius:999px; }
.tag { font-size:12px; color:#374151; background:#f3f4f6; padding:1px 6px; border-radius:4px; }
.tag.warn { background:#fef3c7; color:#92400e; }
.sid { font-size:12px; color:#374151; }
.idx { font-size:12px; color:var(--muted); margin-left:auto; }
.turn { border-radius:8px; padding:6px 10px; margin:6px 0; max-height:26em; overflow:auto; }
.turn.user { background:#eff6ff; border-left:3px solid #3b82f6; }
.turn.assistant { background:#f0fdf4; border-left:3px solid #22c55e; }
.turn.system, .turn.other { background:#f5f5f4; border-left:3px solid #a8a29e; }
.role { font-size:12px; font-weight:600; color:#4b5563; }
.text { white-space:pre-wrap; word-break:break-word; font-size:15px; }
.ph { font-family:monospace; font-size:12px; background:#e0e7ff; color:#3730a3; padding:0 4px; border-radius:4px; }
@media (max-width: 720px) { .sample { grid-template-columns:1fr; } }
"""

_JS = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll("article.sample"));
  var texts = cards.map(function (c) { return c.textContent.toLowerCase(); });
  var q = document.getElementById("q"), task = document.getElementById("task"), shown = document.getElementById("shown");
  var body = document.body;
  function apply() {
    var needle = q.value.trim().toLowerCase(), t = task.value, visible = 0;
    cards.forEach(function (card, i) {
      var ok = (!needle || texts[i].indexOf(needle) !== -1) && (!t || card.getAttribute("data-task") === t);
      card.hidden = !ok;
      if (ok) visible++;
    });
    shown.textContent = visible + " / " + cards.length;
    body.setAttribute("data-visible", String(visible));
    var params = new URLSearchParams();
    if (q.value) params.set("q", q.value);
    if (t) params.set("task", t);
    var hash = params.toString();
    if (("#" + hash) !== location.hash && !(hash === "" && location.hash === "")) {
      try { history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search); }
      catch (e) { /* some browsers refuse history changes on file:// pages; the filter still works */ }
    }
  }
  function report() {
    var imgs = Array.prototype.slice.call(document.querySelectorAll("article.sample .media img"));
    var loaded = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
    body.setAttribute("data-samples", String(cards.length));
    body.setAttribute("data-images", String(imgs.length));
    body.setAttribute("data-images-loaded", String(loaded));
    body.setAttribute("data-status", "ready");
  }
  var initial = new URLSearchParams(location.hash.slice(1));
  if (initial.get("q")) q.value = initial.get("q");
  if (initial.get("task")) task.value = initial.get("task");
  q.addEventListener("input", apply);
  task.addEventListener("change", apply);
  apply();
  if (document.readyState === "complete") report(); else window.addEventListener("load", report);
})();
"""


def render_html(rows: Sequence[dict], *, title: str = "llava-zh preview", subtitle: str = "", thumb_size: int = 320) -> str:
    """The page for ``rows`` (undecoded sample dicts), as one string of HTML."""
    from datasets.utils.tqdm import tqdm

    cards = [
        _card(row, i, thumb_size)
        for i, row in enumerate(tqdm(rows, desc="preview", unit=" samples", disable=len(rows) < 200))
    ]
    tasks = sorted({row.get("task") for row in rows if row.get("task")})
    options = '<option value="">所有任务 · all tasks</option>' + "".join(
        f'<option value="{_esc(t)}">{_esc(t)}</option>' for t in tasks
    )
    css = _CSS.replace("FONTS", FONT_STACK).replace("THUMB", str(thumb_size))
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{css}</style>\n</head>\n"
        f'<body data-status="loading" data-samples="{len(cards)}">\n'
        f'<header><h1>{_esc(title)}</h1><p class="meta">{_esc(subtitle)}</p>'
        '<div class="controls"><input id="q" type="search" placeholder="搜索文字 · search text" autocomplete="off">'
        f'<select id="task">{options}</select><span id="shown">{len(cards)} / {len(cards)}</span></div></header>\n'
        '<main id="samples">\n' + "\n".join(cards) + "\n</main>\n"
        f"<script>{_JS}</script>\n</body>\n</html>\n"
    )


def preview(
    dataset: Any,
    out: Union[str, os.PathLike] = "preview.html",
    n: int = 100,
    task: Optional[str] = None,
    seed: Optional[int] = 0,
    *,
    thumb_size: int = 320,
    title: str = "llava-zh preview",
) -> Path:
    """Write one self-contained HTML page showing ``n`` random samples (of ``task`` when given).

    Works on a ``Dataset`` (random indices) and an ``IterableDataset`` (one-pass reservoir sampling); the
    same ``seed`` gives the same samples. Returns the path written.

    Example:
        >>> preview(ds, "preview.html", n=50, task="detail_description", seed=0)   # doctest: +SKIP
        PosixPath('preview.html')
    """
    import datasets

    from llava_zh import __version__

    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    dataset = single_split(dataset, "preview")
    if task is not None and "task" not in column_names(dataset):
        raise ValueError(f"task={task!r} asked but the dataset has no 'task' column ({column_names(dataset)})")
    if isinstance(dataset, datasets.IterableDataset):
        rows, population = _choose_from_stream(dataset, n, task, seed)
    else:
        rows, population = _choose_from_dataset(dataset, n, task, seed)
    if not rows:
        raise ValueError(f"no sample to preview{f' with task {task!r}' if task else ''}: the dataset holds none")
    what = f"task {task}" if task else "all tasks"
    subtitle = f"{len(rows)} of {population:,} samples ({what}), seed {seed} · llava-zh {__version__}"
    page = render_html(rows, title=title, subtitle=subtitle, thumb_size=thumb_size)
    path = Path(out)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
