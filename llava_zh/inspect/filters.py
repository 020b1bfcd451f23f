"""Filters and deduplication for Dataset and IterableDataset: kept samples plus a record of each removal.

A rule looks at one sample (image undecoded) and either keeps it or says why not. Rules run in the order
given; the first that refuses a sample removes it, and stateful rules (the duplicate finders) remember only
samples that are finally kept, so "duplicate of" always points at a kept sample.

=========================  ================================================================================
rule name                  removes
=========================  ================================================================================
``duplicate_image``        a sample whose image bytes equal an earlier sample's (BLAKE2b of the bytes)
``duplicate_answer``       a sample whose answers (all assistant turns) equal an earlier sample's
``near_duplicate_answer``  answers at estimated Jaccard >= threshold over character n-grams (MinHash, LSH)
``length_chars``           a question / answer / whole sample outside [min, max] characters
``length_tokens``          the same in tokens of a given tokenizer
``cjk_share``              a sample whose share of CJK characters is outside [min, max]
``parse_status``           a regenerated sample whose ``parse_status`` is not ``ok`` (no column: all kept)
=========================  ================================================================================

On a ``Dataset`` the pass runs at once and ``kept`` is ``dataset.select(kept_indices)`` (no copy). On an
``IterableDataset`` ``kept`` is a lazy stream and ``removed`` fills while it is iterated (it starts over
on each new pass); the duplicate rules then see the stream in one process (each DataLoader worker would
deduplicate its own shards only).

Memory: the duplicate rules remember every kept sample, about 0.25 KB each for the two exact rules and
1.2 KB for the near-duplicate one (measured: 1.8 KB per kept sample with all three, so some 1.1 GB for
600k samples); the other rules keep nothing.

Example:
    >>> result = filter_dataset(ds, [DuplicateImage(), NearDuplicateAnswer(threshold=0.8),
    ...                              LengthBounds(min=10, unit="chars", scope="answer")])  # doctest: +SKIP
    >>> result.counts                                                                      # doctest: +SKIP
    {'duplicate_image': 12, 'near_duplicate_answer': 40, 'length_chars': 3}
    >>> result.save("filtered/")     # kept.parquet, removed.jsonl, filter_report.json     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from llava_zh.inspect.dedup import MinHashIndex, digest, minhash, normalize_text
from llava_zh.inspect.fields import (
    IMAGE_COLUMN,
    column_names,
    conversation_cjk_share,
    dataset_length,
    image_bytes,
    iter_rows,
    questions_answers,
    single_split,
    token_counter,
    undecoded,
)

PARSE_STATUS_COLUMN = "parse_status"


@dataclass(slots=True)
class Removal:
    """Why one sample was removed: its position in the filtered input, its id, the rule and the reason."""

    index: int
    id: Optional[str]
    rule: str
    reason: str
    duplicate_of: Optional[str] = None  # id of the kept sample it duplicates
    duplicate_of_index: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Verdict:
    reason: str
    duplicate_of_index: Optional[int] = None
    duplicate_of: Optional[str] = None


class Rule:
    """A filter rule: ``check`` a sample (without changing state), ``keep`` it once every rule agreed."""

    name: str = "rule"
    columns: tuple[str, ...] = ("conversations",)

    def reset(self) -> None:
        """Forget every sample seen (a new pass over the data)."""

    def check(self, row: dict, index: int) -> Optional[Verdict]:
        raise NotImplementedError

    def keep(self, row: dict, index: int) -> None:
        """Remember a kept sample (for duplicate finders)."""

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name}


def _answers_text(conversations: Sequence[dict]) -> str:
    return "\n".join(questions_answers(conversations)[1])


class ExactDuplicate(Rule):
    """Base of the exact-duplicate rules: remember a key per kept sample and refuse a later repeat.

    A subclass says what to compare by ``key(row)``: a ``(key, what)`` pair, or None when the sample has
    nothing to compare (it passes). Only kept samples are remembered, so a duplicate always names a kept one.
    """

    def key(self, row: dict) -> Optional[tuple[bytes, str]]:
        """``(key, what)``: the hashed value compared, and how a refusal names it (before "sample <id>")."""
        raise NotImplementedError

    def __init__(self) -> None:
        self._seen: dict[bytes, tuple[int, Optional[str]]] = {}
        self._pending: Optional[tuple[int, bytes]] = None

    def reset(self) -> None:
        self._seen.clear()
        self._pending = None

    def check(self, row: dict, index: int) -> Optional[Verdict]:
        self._pending = None
        found = self.key(row)
        if found is None:
            return None
        key, what = found
        first = self._seen.get(key)
        if first is not None:
            return Verdict(f"{what} sample {first[1]!r}", first[0], first[1])
        self._pending = (index, key)
        return None

    def keep(self, row: dict, index: int) -> None:
        if self._pending is not None and self._pending[0] == index:
            self._seen[self._pending[1]] = (index, row.get("id"))


class DuplicateImage(ExactDuplicate):
    """Remove samples whose image bytes are identical to an earlier kept sample's. Samples without an image pass.

    Identical bytes only: a re-encoded or resized copy of a picture is not caught.
    """

    name = "duplicate_image"
    columns = ("id", IMAGE_COLUMN)

    def key(self, row: dict) -> Optional[tuple[bytes, str]]:
        data = image_bytes(row.get(IMAGE_COLUMN))
        return None if data is None else (digest(data), f"same image bytes ({len(data)} B) as")


class DuplicateAnswer(ExactDuplicate):
    """Remove samples whose answers (assistant turns joined, ends stripped) equal an earlier kept sample's.

    Samples with no answer text pass (refused regenerations are the ``parse_status`` rule's business).
    """

    name = "duplicate_answer"
    columns = ("id", "conversations")

    def key(self, row: dict) -> Optional[tuple[bytes, str]]:
        text = _answers_text(row.get("conversations") or ()).strip()
        return (digest(text), "answers identical to") if text else None


class NearDuplicateAnswer(Rule):
    """Remove samples whose answers are near-duplicates of an earlier kept sample's (MinHash + LSH).

    Similarity is the Jaccard index of the sets of ``ngram``-character shingles of the answers (assistant
    turns joined, NFKC, case-folded, spaces removed), estimated with ``num_perm`` permutations. Answers
    shorter than ``min_chars`` (after that normalisation) are left to ``duplicate_answer``: a few
    characters say too little to call two texts near-duplicates.
    """

    name = "near_duplicate_answer"
    columns = ("id", "conversations")

    def __init__(
        self,
        threshold: float = 0.8,
        ngram: int = 5,
        num_perm: int = 128,
        min_chars: int = 20,
        bands: Optional[int] = None,
        rows: Optional[int] = None,
        max_bands: int = 8,
    ) -> None:
        self.threshold = threshold
        self.ngram = ngram
        self.num_perm = num_perm
        self.min_chars = min_chars
        self._index = MinHashIndex(threshold, num_perm, bands, rows, max_bands)  # checks the settings early
        self.bands, self.rows = self._index.bands, self._index.rows
        self._pending = None

    def reset(self) -> None:
        self._index = MinHashIndex(self.threshold, self.num_perm, self.bands, self.rows)
        self._pending = None

    def describe(self) -> dict[str, Any]:
        return {
            "rule": self.name,
            "threshold": self.threshold,
            "ngram": self.ngram,
            "num_perm": self.num_perm,
            "bands": self.bands,
            "rows": self.rows,
            "min_chars": self.min_chars,
        }

    def check(self, row: dict, index: int) -> Optional[Verdict]:
        self._pending = None
        text = normalize_text(_answers_text(row.get("conversations") or ()))
        if len(text) < self.min_chars:
            return None
        signature = minhash(text, ngram=self.ngram, num_perm=self.num_perm, normalize=False)
        if signature is None:
            return None
        hit = self._index.query(signature)
        if hit is not None:
            (first_index, first_id), similarity = hit
            return Verdict(
                f"answers near-duplicate of sample {first_id!r} (estimated Jaccard {similarity:.2f} >= "
                f"{self.threshold} over {self.ngram}-character shingles)",
                first_index,
                first_id,
            )
        self._pending = (index, signature)
        return None

    def keep(self, row: dict, index: int) -> None:
        if self._pending is not None and self._pending[0] == index:
            self._index.add(self._pending[1], (index, row.get("id")))


SCOPES = ("question", "answer", "sample")
UNITS = ("chars", "tokens")


class LengthBounds(Rule):
    """Remove samples with a text length outside ``[min, max]`` (either bound optional).

    ``unit``: ``chars`` (characters, ``<image>`` placeholder not counted) or ``tokens`` (needs
    ``tokenizer``; special tokens not counted). ``scope``: ``answer`` checks every assistant turn, ``question``
    every human turn, ``sample`` the total of all turns.
    """

    columns = ("conversations",)

    def __init__(
        self,
        min: Optional[int] = None,
        max: Optional[int] = None,
        unit: str = "chars",
        scope: str = "answer",
        tokenizer: Any = None,
    ) -> None:
        if min is None and max is None:
            raise ValueError("LengthBounds needs min or max (or both)")
        if min is not None and max is not None and min > max:
            raise ValueError(f"LengthBounds min ({min}) is above max ({max})")
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}; got {unit!r}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}; got {scope!r}")
        if unit == "tokens" and tokenizer is None:
            raise ValueError("LengthBounds(unit='tokens') needs a tokenizer")
        self.min, self.max, self.unit, self.scope = min, max, unit, scope
        self.name = f"length_{unit}"
        self._count = token_counter(tokenizer) if unit == "tokens" else (lambda texts: [len(t) for t in texts])

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name, "min": self.min, "max": self.max, "unit": self.unit, "scope": self.scope}

    def check(self, row: dict, index: int) -> Optional[Verdict]:
        questions, answers = questions_answers(row.get("conversations") or ())
        if self.scope == "sample":
            texts, label = questions + answers, "sample"
            lengths = [sum(self._count(texts))] if texts else [0]
        else:
            texts = answers if self.scope == "answer" else questions
            label = self.scope
            lengths = self._count(texts)
        for i, n in enumerate(lengths):
            what = label if self.scope == "sample" else f"{label} {i + 1}"
            if self.min is not None and n < self.min:
                return Verdict(f"{what} has {n} {self.unit}, below the minimum {self.min}")
            if self.max is not None and n > self.max:
                return Verdict(f"{what} has {n} {self.unit}, above the maximum {self.max}")
        return None


class CJKShareBounds(Rule):
    """Remove samples whose share of CJK characters (questions and answers) is outside ``[min, max]``.

    A sample with no text at all has no share and is removed when ``min`` is set.
    """

    name = "cjk_share"
    columns = ("conversations",)

    def __init__(self, min: Optional[float] = None, max: Optional[float] = None) -> None:
        if min is None and max is None:
            raise ValueError("CJKShareBounds needs min or max (or both)")
        for bound in (min, max):
            if bound is not None and not 0.0 <= bound <= 1.0:
                raise ValueError(f"CJK share bounds are within [0, 1]; got {bound}")
        self.min, self.max = min, max

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name, "min": self.min, "max": self.max}

    def check(self, row: dict, index: int) -> Optional[Verdict]:
        share = conversation_cjk_share(row.get("conversations") or ())
        if share is None:
            return Verdict("no text to measure a CJK share") if self.min is not None else None
        if self.min is not None and share < self.min:
            return Verdict(f"CJK share {share:.3f} below the minimum {self.min}")
        if self.max is not None and share > self.max:
            return Verdict(f"CJK share {share:.3f} above the maximum {self.max}")
        return None


class ParseStatus(Rule):
    """Remove regenerated samples whose ``parse_status`` is not in ``allowed``.

    Rows without the column (original data) or with an empty status pass: only regeneration records
    carry it.
    """

    name = "parse_status"
    columns = (PARSE_STATUS_COLUMN, "parse_reason", "parse_message")

    def __init__(self, allowed: Iterable[str] = ("ok",)) -> None:
        self.allowed = tuple(allowed)
        if not self.allowed:
            raise ValueError("ParseStatus needs at least one allowed status")

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name, "allowed": list(self.allowed)}

    def check(self, row: dict, index: int) -> Optional[Verdict]:
        status = row.get(PARSE_STATUS_COLUMN)
        if not status or status in self.allowed:
            return None
        details = [x for x in (row.get("parse_reason"), row.get("parse_message")) if x]
        why = f": {' - '.join(details)}" if details else ""
        return Verdict(f"parse_status {status!r} not in {list(self.allowed)}{why}")


#: Rule name -> class, for rules given by name (CLI, config files). ``length_*`` take their unit from the name.
RULES: dict[str, Callable[..., Rule]] = {
    "duplicate_image": DuplicateImage,
    "duplicate_answer": DuplicateAnswer,
    "near_duplicate_answer": NearDuplicateAnswer,
    "length_chars": lambda **kw: LengthBounds(unit="chars", **kw),
    "length_tokens": lambda **kw: LengthBounds(unit="tokens", **kw),
    "cjk_share": CJKShareBounds,
    "parse_status": ParseStatus,
}


def make_rule(spec: Union[Rule, str, tuple[str, dict]]) -> Rule:
    """A rule from an instance, a name (default settings) or ``(name, kwargs)``."""
    if isinstance(spec, Rule):
        return spec
    name, kwargs = (spec, {}) if isinstance(spec, str) else spec
    if name not in RULES:
        raise ValueError(f"unknown filter rule {name!r}; known rules: {sorted(RULES)}")
    return RULES[name](**kwargs)


class _Judge:
    """Runs the rules over samples in order and logs removals."""

    def __init__(self, rules: list[Rule], on_removed: Optional[Callable[[Removal, dict], None]]) -> None:
        self.rules = rules
        self.removed: list[Removal] = []
        self.sinks: list[Callable[[Removal, dict], None]] = [on_removed] if on_removed else []

    def reset(self) -> None:
        for rule in self.rules:
            rule.reset()
        self.removed.clear()

    def __call__(self, row: dict, index: int) -> bool:
        for rule in self.rules:
            verdict = rule.check(row, index)
            if verdict is not None:
                removal = Removal(
                    index, row.get("id"), rule.name, verdict.reason, verdict.duplicate_of, verdict.duplicate_of_index
                )
                self.removed.append(removal)
                for sink in self.sinks:
                    sink(removal, row)
                return False
        for rule in self.rules:
            rule.keep(row, index)
        return True


@dataclass
class FilterResult:
    """What ``filter_dataset`` returns: ``kept`` (same type as the input), ``removed`` (one ``Removal`` each)."""

    kept: Any
    removed: list[Removal]
    rules: list[dict[str, Any]]
    input_count: Optional[int]
    source: Any = field(repr=False, default=None)  # the filtered input, to fetch removed samples
    _judge: Any = field(repr=False, default=None)
    _kept_undecoded: Any = field(repr=False, default=None)

    @property
    def counts(self) -> dict[str, int]:
        """Samples removed per rule, every rule listed (0 when it removed nothing)."""
        counts = {r["rule"]: 0 for r in self.rules}
        for removal in self.removed:
            counts[removal.rule] = counts.get(removal.rule, 0) + 1
        return counts

    @property
    def kept_count(self) -> Optional[int]:
        return dataset_length(self.kept)

    def report(self) -> dict[str, Any]:
        kept = self.kept_count
        if kept is None and self.input_count is not None:
            kept = self.input_count - len(self.removed)
        return {
            "input": self.input_count,
            "kept": kept,
            "removed": len(self.removed),
            "removed_per_rule": self.counts,
            "rules": self.rules,
        }

    def removed_samples(self) -> Any:
        """The removed samples themselves (a ``Dataset`` in removal order); only for a ``Dataset`` input."""
        import datasets

        if not isinstance(self.source, datasets.Dataset):
            raise TypeError("removed_samples() needs a Dataset input; for a stream use filter_dataset(on_removed=...)")
        return self.source.select([r.index for r in self.removed])

    def save(self, out_dir: Union[str, os.PathLike], batch_size: int = 1000) -> dict[str, Path]:
        """Write ``kept.parquet`` (image bytes embedded), ``removed.jsonl`` and ``filter_report.json``.

        Each line of ``removed.jsonl`` is a ``Removal`` plus ``sample``: the removed sample's text fields
        and its image path (no image bytes). For a stream this is the pass that runs the filters.
        """
        import datasets

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"kept": out / "kept.parquet", "removed": out / "removed.jsonl", "report": out / "filter_report.json"}
        with open(paths["removed"], "w", encoding="utf-8") as log:

            def write(removal: Removal, row: dict) -> None:
                log.write(json.dumps({**removal.to_dict(), "sample": _text_fields(row)}, ensure_ascii=False) + "\n")

            if isinstance(self.kept, datasets.IterableDataset):
                self._judge.sinks.append(write)
                try:
                    written = _write_parquet_stream(
                        self._kept_undecoded, self.source.features, paths["kept"], batch_size
                    )
                finally:
                    self._judge.sinks.remove(write)
                self.input_count = written + len(self.removed)  # the pass just made counted everything
            else:
                _write_parquet_dataset(self.kept, paths["kept"], batch_size)
                if self.removed:
                    for removal, row in zip(self.removed, iter_rows(self.removed_samples())):
                        write(removal, row)
        paths["report"].write_text(json.dumps(self.report(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return paths


def _text_fields(row: dict) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != IMAGE_COLUMN and isinstance(v, (str, int, float, bool, list, dict, type(None)))}
    image = row.get(IMAGE_COLUMN)
    if IMAGE_COLUMN in row:
        out["image"] = image.get("path") if isinstance(image, dict) else None
    return out


def _write_parquet_dataset(ds: Any, path: Path, batch_size: int) -> None:
    import pyarrow.parquet as pq
    from datasets.table import embed_table_storage

    schema = ds.features.arrow_schema
    with pq.ParquetWriter(path, schema) as writer:
        for table in ds.with_format("arrow").iter(batch_size=batch_size):
            writer.write_table(embed_table_storage(table).cast(schema))


def _write_parquet_stream(ds: Any, features: Any, path: Path, batch_size: int) -> int:
    """Write an undecoded stream; ``features`` (the input's, images decoded) go into the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.table import embed_table_storage

    schema = features.arrow_schema
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in ds.iter(batch_size=batch_size):
            table = pa.Table.from_pydict(features.encode_batch(batch), schema=schema)
            writer.write_table(embed_table_storage(table).cast(schema))
            rows += table.num_rows
    return rows


def _rule_columns(rules: list[Rule], dataset: Any) -> list[str]:
    have = column_names(dataset)
    wanted = {"id"}
    for rule in rules:
        wanted.update(rule.columns)
    return [c for c in have if c in wanted]


def filter_dataset(
    dataset: Any,
    rules: Sequence[Union[Rule, str, tuple[str, dict]]],
    *,
    batch_size: int = 1000,
    progress: bool = True,
    on_removed: Optional[Callable[[Removal, dict], None]] = None,
) -> FilterResult:
    """Apply ``rules`` (in order, first refusal wins) to a ``Dataset`` or ``IterableDataset``.

    Returns a ``FilterResult``: ``kept`` (same type as the input; for a Dataset a ``select`` view),
    ``removed`` (a ``Removal`` per removed sample, with the rule and the reason) and ``counts`` per rule.
    ``on_removed(removal, row)`` is called for each removal with the undecoded row.

    Example:
        >>> r = filter_dataset(ds, ["duplicate_image", ("cjk_share", {"min": 0.3})])   # doctest: +SKIP
        >>> len(r.kept) + len(r.removed) == len(ds)                                     # doctest: +SKIP
        True
    """
    import datasets
    from datasets.utils.tqdm import tqdm

    dataset = single_split(dataset, "filter_dataset")
    built = [make_rule(r) for r in rules]
    if not built:
        raise ValueError(f"filter_dataset needs at least one rule; known rules: {sorted(RULES)}")
    names = [r.name for r in built]
    if len(set(names)) != len(names):
        raise ValueError(f"each rule may be given once; got {names}")
    judge = _Judge(built, on_removed)
    described = [r.describe() for r in built]
    for rule in built:
        rule.reset()

    if isinstance(dataset, datasets.IterableDataset):
        return _filter_stream(dataset, judge, described, batch_size)

    kept_indices: list[int] = []
    columns = _rule_columns(built, dataset)
    with tqdm(total=len(dataset), desc="filter", unit=" samples", disable=not progress) as bar:
        for index, row in enumerate(iter_rows(dataset, columns, batch_size=batch_size)):
            if judge(row, index):
                kept_indices.append(index)
            if index % batch_size == batch_size - 1:
                bar.update(batch_size)
        bar.update(len(dataset) - bar.n)
    kept = dataset if len(kept_indices) == len(dataset) else dataset.select(kept_indices)
    return FilterResult(kept, judge.removed, described, len(dataset), source=dataset, _judge=judge)


def _filter_stream(dataset: Any, judge: _Judge, described: list[dict], batch_size: int) -> FilterResult:
    """Lazy filtering of a stream: the rules run (and ``removed`` fills) as ``kept`` is iterated."""
    import datasets

    def predicate(batch: dict, indices: list[int]) -> list[bool]:
        if indices and indices[0] == 0:
            judge.reset()  # a new pass over the stream
        keys = list(batch)
        return [judge(dict(zip(keys, values)), i) for values, i in zip(zip(*(batch[k] for k in keys)), indices)]

    raw = undecoded(dataset)
    kept_raw = raw.filter(predicate, with_indices=True, batched=True, batch_size=batch_size)
    kept = kept_raw
    feature = (dataset.features or {}).get(IMAGE_COLUMN)
    if raw is not dataset and isinstance(feature, datasets.Image):

        def decode(batch: dict) -> dict:
            return {IMAGE_COLUMN: [None if v is None else feature.decode_example(v) for v in batch[IMAGE_COLUMN]]}

        kept = kept_raw.map(decode, batched=True, batch_size=batch_size, features=dataset.features)
    return FilterResult(kept, judge.removed, described, None, source=dataset, _judge=judge, _kept_undecoded=kept_raw)


# ------------------------------------------------------------------- one rule at a time, composable


def remove_duplicate_images(dataset: Any, **kwargs: Any) -> FilterResult:
    """``filter_dataset`` with ``DuplicateImage`` alone; chain results through ``.kept``."""
    return filter_dataset(dataset, [DuplicateImage()], **kwargs)


def remove_duplicate_answers(dataset: Any, **kwargs: Any) -> FilterResult:
    """``filter_dataset`` with ``DuplicateAnswer`` alone."""
    return filter_dataset(dataset, [DuplicateAnswer()], **kwargs)


def remove_near_duplicate_answers(dataset: Any, threshold: float = 0.8, ngram: int = 5, **kwargs: Any) -> FilterResult:
    """``filter_dataset`` with ``NearDuplicateAnswer(threshold, ngram)`` alone."""
    return filter_dataset(dataset, [NearDuplicateAnswer(threshold=threshold, ngram=ngram)], **kwargs)


def filter_length(
    dataset: Any,
    min: Optional[int] = None,
    max: Optional[int] = None,
    unit: str = "chars",
    scope: str = "answer",
    tokenizer: Any = None,
    **kwargs: Any,
) -> FilterResult:
    """``filter_dataset`` with ``LengthBounds`` alone."""
    return filter_dataset(dataset, [LengthBounds(min, max, unit=unit, scope=scope, tokenizer=tokenizer)], **kwargs)


def filter_cjk_share(dataset: Any, min: Optional[float] = None, max: Optional[float] = None, **kwargs: Any) -> FilterResult:
    """``filter_dataset`` with ``CJKShareBounds`` alone."""
    return filter_dataset(dataset, [CJKShareBounds(min, max)], **kwargs)


def filter_parse_status(dataset: Any, allowed: Iterable[str] = ("ok",), **kwargs: Any) -> FilterResult:
    """``filter_dataset`` with ``ParseStatus`` alone."""
    return filter_dataset(dataset, [ParseStatus(allowed)], **kwargs)
