"""PNG plots of a ``stats`` result (matplotlib, the ``plots`` extra), drawn off-screen.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas, no pyplot), so nothing
touches a display or the global pyplot state.

Example:
    >>> write_plots(llava_zh.stats(ds).to_dict(), "stats/plots")           # doctest: +SKIP
    [PosixPath('stats/plots/by_task.png'), ...]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

#: Fonts tried before matplotlib's default, so that Chinese task / source names show as characters.
CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "PingFang SC", "Microsoft YaHei", "SimHei")

# plot file stem -> (key in the stats dict, title, x label)
HISTOGRAMS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "rounds": (("rounds",), "Rounds per sample", "rounds (human turns)"),
    "question_chars": (("question_chars",), "Characters per question", "characters"),
    "answer_chars": (("answer_chars",), "Characters per answer", "characters"),
    "question_tokens": (("question_tokens",), "Tokens per question", "tokens"),
    "answer_tokens": (("answer_tokens",), "Tokens per answer", "tokens"),
    "sample_tokens": (("sample_tokens",), "Tokens per sample (text)", "tokens"),
    "image_width": (("images", "width"), "Image width", "pixels"),
    "image_height": (("images", "height"), "Image height", "pixels"),
    "cjk_share": (("cjk_share",), "CJK share per sample", "share of CJK characters"),
}
BARS: dict[str, tuple[tuple[str, ...], str]] = {
    "by_task": (("by_task",), "Samples per task"),
    "by_language": (("by_language",), "Samples per language"),
    "by_source": (("by_source",), "Samples per source"),
    "image_format": (("images", "format"), "Image format"),
    "image_mode": (("images", "mode"), "Image mode"),
}


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError('plots need matplotlib: pip install "llava-zh[plots]" (or pass plots=False)') from e
    return matplotlib, Figure


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _font_family(matplotlib) -> list[str]:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    # Latin from the first default sans-serif font installed, CJK glyphs from the first CJK font installed.
    latin = [f for f in matplotlib.rcParams["font.sans-serif"] if f in installed][:1] or ["sans-serif"]
    return latin + [f for f in CJK_FONTS if f in installed][:1]


def write_plots(data: dict[str, Any], out_dir: Union[str, os.PathLike]) -> list[Path]:
    """Draw one PNG per histogram and per count table of ``data`` (a ``stats`` dict) into ``out_dir``."""
    import logging

    matplotlib, Figure = _matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Some CJK font packages lack a "normal" weight entry and matplotlib logs that on every lookup.
    font_log = logging.getLogger("matplotlib.font_manager")
    level = font_log.level
    font_log.setLevel(logging.ERROR)
    try:
        # an explicit list of families: matplotlib then takes each glyph from the first font that has it
        with matplotlib.rc_context({"font.family": _font_family(matplotlib)}):
            return [_bars(data, out, Figure, stem) for stem in BARS if _get(data, BARS[stem][0])] + [
                _histogram(data, out, Figure, stem)
                for stem in HISTOGRAMS
                if (_get(data, HISTOGRAMS[stem][0] + ("histogram",)) or {}).get("counts")
            ]
    finally:
        font_log.setLevel(level)


def _bars(data: dict[str, Any], out: Path, Figure, stem: str) -> Path:
    path, title = BARS[stem]
    counts = _get(data, path)
    labels = list(counts)[:30]
    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(len(labels)), [counts[k] for k in labels], color="#4c72b0")
    tilted = len(labels) > 3
    ax.set_xticks(range(len(labels)), labels, rotation=20 if tilted else 0, ha="right" if tilted else "center")
    ax.set_title(title if len(counts) <= 30 else f"{title} (30 largest of {len(counts)})")
    ax.set_ylabel("samples" if stem.startswith("by_") else "images")
    ax.yaxis.get_major_locator().set_params(integer=True)
    target = out / f"{stem}.png"
    fig.savefig(target)
    return target


def _histogram(data: dict[str, Any], out: Path, Figure, stem: str) -> Path:
    path, title, xlabel = HISTOGRAMS[stem]
    hist = _get(data, path + ("histogram",))
    edges, counts = hist["edges"], hist["counts"]
    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    widths = [edges[i + 1] - edges[i] for i in range(len(counts))]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color="#55a868", edgecolor="white", linewidth=0.5)
    if hist.get("overflow"):
        title += f" ({hist['overflow']} above {edges[-1]} not shown)"
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.yaxis.get_major_locator().set_params(integer=True)
    target = out / f"{stem}.png"
    fig.savefig(target)
    return target
