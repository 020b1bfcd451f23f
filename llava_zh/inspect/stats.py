"""Dataset statistics in one streaming pass: counts, lengths, images, CJK share and repeated questions.

Memory stays flat however many samples go by: images are never decoded (only their headers are read),
integer quantities go into value->count tables (one entry per distinct value, e.g. per distinct length),
the CJK share into 20 fixed bins, and repeated questions into a bounded Misra-Gries summary.

Example:
    >>> import llava_zh
    >>> ds = llava_zh.load_dataset("sample")                                  # doctest: +SKIP
    >>> s = llava_zh.stats(ds, out_dir="stats/")                              # doctest: +SKIP
    >>> s["samples"], s["by_task"]                                            # doctest: +SKIP
    (30, {'conversation': 10, 'complex_reasoning': 10, 'detail_description': 10})

Files written by ``save``: ``stats.json`` (everything), ``stats.md`` (tables for people) and PNG plots
under ``plots/`` (matplotlib, ``pip install "llava-zh[plots]"``).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Hashable, Iterable, Optional, Union

from llava_zh.inspect.fields import (
    IMAGE_COLUMN,
    cjk_share,
    dataset_length,
    image_header,
    questions_answers,
    sample_text,
    single_split,
    token_counter,
    undecoded,
)

MISSING = "(missing)"  # key for a sample whose task / language / source is empty


class IntHistogram:
    """Counts of non-negative integers: exact up to ``exact_limit``, power-of-two buckets above it.

    Memory is one dict entry per distinct value seen (bounded by ``exact_limit`` plus 64 buckets), so
    lengths of 600k samples take a few thousand entries. Quantiles use the nearest-rank rule (the smallest
    value with at least ``ceil(q * n)`` values at or below it) and are exact below ``exact_limit``.
    """

    def __init__(self, exact_limit: int = 1 << 20) -> None:
        self.exact_limit = exact_limit
        self.counts: Counter[int] = Counter()  # exact values
        self.large: Counter[int] = Counter()  # bit_length of values >= exact_limit
        self.n = 0
        self.total = 0
        self.min: Optional[int] = None
        self.max: Optional[int] = None

    def add(self, value: int, times: int = 1) -> None:
        value = int(value)
        if value < 0:
            raise ValueError(f"IntHistogram counts non-negative integers; got {value}")
        if value < self.exact_limit:
            self.counts[value] += times
        else:
            self.large[value.bit_length()] += times
        self.n += times
        self.total += value * times
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    def update(self, values: Iterable[int]) -> None:
        for v in values:
            self.add(v)

    @property
    def exact(self) -> bool:
        return not self.large

    def _sorted_items(self) -> list[tuple[int, int]]:
        items = sorted(self.counts.items())
        # a large bucket stands for its lowest value 2**(b-1) (clamped to what was seen)
        items += [(max(1 << (b - 1), self.exact_limit), c) for b, c in sorted(self.large.items())]
        return items

    def quantile(self, q: float) -> Optional[int]:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile q must be within [0, 1]; got {q}")
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for value, count in self._sorted_items():
            seen += count
            if seen >= rank:
                return value
        return self.max  # pragma: no cover - unreachable, ranks are within n

    def bins(self, max_bins: int = 40) -> dict[str, Any]:
        """A histogram for plots: ``edges`` (len k+1, bins ``[edges[i], edges[i+1])``) and ``counts``.

        One bin per value when the range is small, else ``max_bins`` equal-width bins. When the maximum is
        far out (more than twice the 99th percentile) the range stops at the 99th percentile and the rest is
        counted in ``overflow`` so that one outlier does not squash the plot.
        """
        if self.n == 0:
            return {"edges": [], "counts": [], "overflow": 0}
        lo = self.min
        p99 = self.quantile(0.99)
        hi = self.max if self.max <= 2 * max(p99, 1) else p99
        span = hi - lo + 1
        width = max(1, math.ceil(span / max_bins))
        nbins = math.ceil(span / width)
        counts = [0] * nbins
        overflow = 0
        for value, count in self._sorted_items():
            if value > hi:
                overflow += count
            else:
                counts[(value - lo) // width] += count
        edges = [lo + i * width for i in range(nbins + 1)]
        return {"edges": edges, "counts": counts, "overflow": overflow}

    def summary(self) -> dict[str, Any]:
        if self.n == 0:
            return {"count": 0, "sum": 0, "min": None, "max": None, "mean": None, "p50": None, "p90": None, "p99": None, "exact": True}
        return {
            "count": self.n,
            "sum": self.total,
            "min": self.min,
            "max": self.max,
            "mean": round(self.total / self.n, 4),
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "exact": self.exact,
        }

    def to_dict(self, max_bins: int = 40) -> dict[str, Any]:
        return {**self.summary(), "histogram": self.bins(max_bins)}


class ShareHistogram:
    """Shares in [0, 1] in ``num_bins`` fixed bins (the last bin includes 1.0), with an exact mean."""

    def __init__(self, num_bins: int = 20) -> None:
        self.num_bins = num_bins
        self.counts = [0] * num_bins
        self.n = 0
        self.total = 0.0
        self.min: Optional[float] = None
        self.max: Optional[float] = None
        self.missing = 0

    def add(self, share: Optional[float]) -> None:
        if share is None:
            self.missing += 1
            return
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"a share must be within [0, 1]; got {share}")
        self.counts[min(int(share * self.num_bins), self.num_bins - 1)] += 1
        self.n += 1
        self.total += share
        self.min = share if self.min is None else min(self.min, share)
        self.max = share if self.max is None else max(self.max, share)

    def to_dict(self) -> dict[str, Any]:
        edges = [round(i / self.num_bins, 6) for i in range(self.num_bins + 1)]
        return {
            "count": self.n,
            "without_text": self.missing,
            "min": None if self.min is None else round(self.min, 6),
            "max": None if self.max is None else round(self.max, 6),
            "mean": None if self.n == 0 else round(self.total / self.n, 6),
            "histogram": {"edges": edges, "counts": list(self.counts), "overflow": 0},
        }


class HeavyHitters:
    """The most frequent keys of a stream in bounded memory (Misra-Gries summary with ``capacity`` counters).

    While at most ``capacity`` distinct keys have been seen the counts are exact. After that, each time a new
    key finds the table full every counter is decreased by one (``decrements`` counts those rounds): a
    reported count is then a lower bound, short of the true count by at most ``decrements``, and any key
    occurring more than ``n / (capacity + 1)`` times is guaranteed to be in the table.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1; got {capacity}")
        self.capacity = capacity
        self.counts: dict[Hashable, int] = {}
        self.n = 0
        self.decrements = 0

    def add(self, key: Hashable) -> None:
        self.n += 1
        counts = self.counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < self.capacity:
            counts[key] = 1
        else:
            self.decrements += 1
            for k in list(counts):
                c = counts[k] - 1
                if c:
                    counts[k] = c
                else:
                    del counts[k]

    @property
    def exact(self) -> bool:
        return self.decrements == 0

    def top(self, k: int, min_count: int = 1) -> list[tuple[Hashable, int]]:
        """The ``k`` largest counts (ties by key), leaving out counts below ``min_count``."""
        items = [(key, c) for key, c in self.counts.items() if c >= min_count]
        items.sort(key=lambda kv: (-kv[1], str(kv[0])))
        return items[:k]


class DatasetStats:
    """The result of ``stats``: a JSON-ready dict with ``to_markdown`` and ``save`` (json, md, plots)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, ensure_ascii=False, indent=2)

    def __repr__(self) -> str:
        return f"DatasetStats(samples={self.data.get('samples')}, by_task={self.data.get('by_task')})"

    def to_markdown(self, plots: Optional[list[str]] = None) -> str:
        """Tables for people; ``plots`` are relative paths of PNGs to link at the end."""
        return _markdown(self.data, plots or [])

    def save(self, out_dir: Union[str, os.PathLike], plots: bool = True) -> list[Path]:
        """Write ``stats.json``, ``stats.md`` and (``plots=True``) PNGs under ``out_dir/plots``; returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        plot_paths: list[Path] = []
        if plots:
            from llava_zh.inspect.plots import write_plots

            plot_paths = write_plots(self.data, out / "plots")
        (out / "stats.json").write_text(self.to_json() + "\n", encoding="utf-8")
        written.append(out / "stats.json")
        rel = [p.relative_to(out).as_posix() for p in plot_paths]
        (out / "stats.md").write_text(self.to_markdown(rel), encoding="utf-8")
        written.append(out / "stats.md")
        return written + plot_paths


class _Accumulator:
    """Everything ``stats`` counts, updated one Arrow batch at a time."""

    def __init__(self, count_tokens, top_k: int, question_capacity: int) -> None:
        self.count_tokens = count_tokens
        self.top_k = top_k
        self.samples = 0
        self.by = {"task": Counter(), "language": Counter(), "source": Counter()}
        self.rounds = IntHistogram()
        self.turns = IntHistogram()
        self.question_chars = IntHistogram()
        self.answer_chars = IntHistogram()
        self.question_tokens = IntHistogram()
        self.answer_tokens = IntHistogram()
        self.sample_tokens = IntHistogram()
        self.cjk = ShareHistogram()
        self.questions = HeavyHitters(question_capacity)
        self.with_image = 0
        self.without_image = 0
        self.unreadable = 0
        self.unreadable_ids: list[str] = []
        self.width = IntHistogram()
        self.height = IntHistogram()
        self.formats: Counter[str] = Counter()
        self.modes: Counter[str] = Counter()

    def add_batch(self, batch: dict[str, list]) -> int:
        convs = batch.get("conversations")
        if convs is None:
            raise ValueError(f"stats needs a 'conversations' column; the dataset has {sorted(batch)}")
        n = len(convs)
        self.samples += n
        for key, counter in self.by.items():
            values = batch.get(key)
            if values is None:
                counter[MISSING] += n
            else:
                counter.update(v if v else MISSING for v in values)
        ids = batch.get("id") or [None] * n
        all_q: list[str] = []
        all_a: list[str] = []
        per_sample: list[tuple[int, int]] = []  # number of questions, answers of each sample
        for conv in convs:
            qs, ans = questions_answers(conv)
            self.rounds.add(len(qs))
            self.turns.add(len(conv or ()))
            for q in qs:
                self.question_chars.add(len(q))
                self.questions.add(q.strip())
            for a in ans:
                self.answer_chars.add(len(a))
            self.cjk.add(cjk_share(sample_text(conv or ())))
            if self.count_tokens is not None:
                all_q.extend(qs)
                all_a.extend(ans)
                per_sample.append((len(qs), len(ans)))
        if self.count_tokens is not None:
            q_tokens = self.count_tokens(all_q)
            a_tokens = self.count_tokens(all_a)
            self.question_tokens.update(q_tokens)
            self.answer_tokens.update(a_tokens)
            qi = ai = 0
            for nq, na in per_sample:
                self.sample_tokens.add(sum(q_tokens[qi : qi + nq]) + sum(a_tokens[ai : ai + na]))
                qi += nq
                ai += na
        images = batch.get(IMAGE_COLUMN)
        if images is None:
            self.without_image += n
        else:
            for sample_id, image in zip(ids, images):
                self._add_image(sample_id, image)
        return n

    def _add_image(self, sample_id: Optional[str], image: Any) -> None:
        if image is None or (isinstance(image, dict) and not image.get("bytes") and not image.get("path")):
            self.without_image += 1
            return
        self.with_image += 1
        try:
            header = image_header(image)
        except (OSError, ValueError, SyntaxError):  # PIL raises these for broken headers
            header = None
        if header is None:
            self.unreadable += 1
            if len(self.unreadable_ids) < 20:
                self.unreadable_ids.append(str(sample_id))
            return
        self.width.add(header.width)
        self.height.add(header.height)
        self.formats[header.format or MISSING] += 1
        self.modes[header.mode] += 1

    def result(self) -> DatasetStats:
        def ordered(counter: Counter) -> dict[str, int]:
            return {str(k): v for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))}

        data: dict[str, Any] = {
            "samples": self.samples,
            "by_task": ordered(self.by["task"]),
            "by_language": ordered(self.by["language"]),
            "by_source": ordered(self.by["source"]),
            "rounds": self.rounds.to_dict(),
            "turns": self.turns.to_dict(),
            "question_chars": self.question_chars.to_dict(),
            "answer_chars": self.answer_chars.to_dict(),
        }
        if self.count_tokens is not None:
            data["question_tokens"] = self.question_tokens.to_dict()
            data["answer_tokens"] = self.answer_tokens.to_dict()
            data["sample_tokens"] = self.sample_tokens.to_dict()
        data["cjk_share"] = self.cjk.to_dict()
        data["images"] = {
            "with_image": self.with_image,
            "without_image": self.without_image,
            "unreadable": self.unreadable,
            "unreadable_ids": self.unreadable_ids,
            "width": self.width.to_dict(),
            "height": self.height.to_dict(),
            "format": ordered(self.formats),
            "mode": ordered(self.modes),
        }
        data["top_questions"] = {
            "questions": self.questions.n,
            "exact": self.questions.exact,
            "capacity": self.questions.capacity,
            "max_undercount": self.questions.decrements,
            "top": [{"question": q, "count": c} for q, c in self.questions.top(self.top_k, min_count=2)],
        }
        return DatasetStats(data)


def stats(
    dataset: Any,
    tokenizer: Any = None,
    *,
    out_dir: Union[str, os.PathLike, None] = None,
    plots: bool = True,
    top_k: int = 20,
    question_capacity: int = 10_000,
    batch_size: int = 1000,
    progress: bool = True,
) -> DatasetStats:
    """Statistics of a ``Dataset`` or ``IterableDataset`` in one streaming pass; optionally written to ``out_dir``.

    ``tokenizer`` (a ``tokenizers.Tokenizer``, a transformers tokenizer/processor or a path) adds token counts
    per question, answer and sample. ``top_k`` questions repeated at least twice are listed; the question
    summary keeps ``question_capacity`` counters (exact below that many distinct questions, see
    ``HeavyHitters``). Images are never decoded: width, height, format and mode come from the header.

    Example:
        >>> s = stats(ds, out_dir="stats/")                                   # doctest: +SKIP
        >>> s["answer_chars"]["p50"]                                          # doctest: +SKIP
        212
    """
    from datasets.utils.tqdm import tqdm

    dataset = single_split(dataset, "stats")
    count_tokens = token_counter(tokenizer) if tokenizer is not None else None
    acc = _Accumulator(count_tokens, top_k=top_k, question_capacity=question_capacity)
    ds = undecoded(dataset)
    with tqdm(total=dataset_length(ds), desc="stats", unit=" samples", disable=not progress) as bar:
        for batch in ds.iter(batch_size=batch_size):
            bar.update(acc.add_batch(batch))
    result = acc.result()
    if out_dir is not None:
        result.save(out_dir, plots=plots)
    return result


# -------------------------------------------------------------------------------------------- markdown


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ⏎ ")


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


def _markdown(data: dict[str, Any], plots: list[str]) -> str:
    n = data["samples"]
    lines = ["# Dataset statistics", "", f"**{n:,} samples**", ""]
    for key, title in (("by_task", "task"), ("by_language", "language"), ("by_source", "source")):
        lines += [f"## Samples per {title}", ""]
        lines += _md_table([title, "samples", "share"], [[k, v, _share(v, n)] for k, v in data[key].items()])
    length_keys = [
        ("rounds", "rounds per sample"),
        ("turns", "turns per sample"),
        ("question_chars", "characters per question"),
        ("answer_chars", "characters per answer"),
        ("question_tokens", "tokens per question"),
        ("answer_tokens", "tokens per answer"),
        ("sample_tokens", "tokens per sample (text only)"),
    ]
    lines += ["## Lengths", ""]
    cols = ["count", "min", "mean", "p50", "p90", "p99", "max"]
    lines += _md_table(
        ["quantity"] + cols, [[title] + [data[k][c] for c in cols] for k, title in length_keys if k in data]
    )
    cjk = data["cjk_share"]
    lines += ["## CJK share per sample", ""]
    lines += [
        f"Share of CJK characters (Han ideographs, CJK punctuation, full-width forms) among non-space "
        f"characters: mean {cjk['mean']}, min {cjk['min']}, max {cjk['max']}; "
        f"{cjk['without_text']} samples without text.",
        "",
    ]
    edges, counts = cjk["histogram"]["edges"], cjk["histogram"]["counts"]
    lines += _md_table(
        ["share", "samples"],
        [
            [f"[{edges[i]:.2f}, {edges[i + 1]:.2f}{']' if i == len(counts) - 1 else ')'}", c]
            for i, c in enumerate(counts)
            if c
        ],
    )
    img = data["images"]
    lines += ["## Images", ""]
    lines += [
        f"{img['with_image']:,} with an image, {img['without_image']:,} without, {img['unreadable']:,} unreadable.",
        "",
    ]
    lines += _md_table(["quantity"] + cols, [[k] + [img[k][c] for c in cols] for k in ("width", "height")])
    lines += _md_table(["format", "images"], [[k, v] for k, v in img["format"].items()])
    lines += _md_table(["mode", "images"], [[k, v] for k, v in img["mode"].items()])
    top = data["top_questions"]
    lines += ["## Most repeated questions", ""]
    note = (
        "exact counts"
        if top["exact"]
        else f"approximate: counts are lower bounds, short by at most {top['max_undercount']} "
        f"(bounded summary of {top['capacity']} counters)"
    )
    lines += [f"{top['questions']:,} questions in all; {note}.", ""]
    lines += _md_table(["count", "question"], [[q["count"], q["question"]] for q in top["top"]])
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)
