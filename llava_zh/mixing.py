"""Blend datasets by ratio (by samples or by text tokens), map-style or streaming, in the same order.

``mix({"zh": zh, "en": en}, {"zh": 0.6, "en": 0.4})`` returns the mixed dataset and a ``MixReport``.

How the order is made. Every input is a *stream* (one per source, or one per source x task with
``task_aligned``), read in its own order and restarted from its beginning when it runs out. The k-th
sample of stream ``j`` has a cost ``c_k`` (1 by samples, its text tokens by tokens) and the cost ``C_k`` of
the stream's samples before it (over all passes); it gets the key::

    key = (C_k + u_k * c_k) / w_j

where ``w_j`` is the stream's share and ``u_k`` a number in [0, 1) hashed from (seed, stream, k). The
mix is every sample in increasing key (ties: the stream listed first). This is stratified sampling: at
any point of the mix each stream's cost is within one sample of its share (exact shares, instead of the
+-1/sqrt(n) of independent draws), while the seed decides the order inside each stratum.

A key depends on the seed, the stream and the costs of that stream's samples so far: nothing else.
So the map-style mix (keys computed for whole columns with numpy, realised with ``select``) and the
streaming mix (keys computed batch by batch, merged block by block) give the same sequence, and so do
the arrow and the Python paths of the streaming mix.

Stopping (as in ``datasets.interleave_datasets``): ``first_exhausted`` ends with the sample that finishes
the first stream; ``all_exhausted`` ends with the sample that finishes the last stream's first pass (the
others are cycled meanwhile). ``total=N`` ends after exactly N samples, cycling every stream as needed
(it takes precedence over ``stopping_strategy``).

Epochs. ``set_epoch(n)`` gives every epoch its own deterministic order: on the map-style mix (a
``MixedDataset``, still a ``datasets.Dataset``) it swaps the indices mapping in place; on the streaming mix it
is ``IterableDataset.set_epoch``, which reaches the mix as ``shuffle_data_sources(default_rng(n))`` through
any wrapper (map, formatting, split by node, DataLoader workers). Epoch 0 is the order described above. For
an epoch n > 0, each stream gets (1) a salted seed (salt drawn from ``default_rng(n)``, the same in both
kinds of mix), hence new uniforms and a new interleave, and (2) its rows reordered, by ``epoch_shuffle``:

- ``"auto"`` (default): map-style, an exact permutation of the stream's rows, seeded by (seed, stream,
  epoch). Streaming, what datasets does to a shuffled input per epoch: the input's shards in a new order and
  its own shuffle buffers reseeded, then a shuffle buffer of ``EPOCH_BUFFER_SIZE`` rows per stream (a
  map-style input of a streaming mix is streamed as ``MAP_STYLE_SHARDS`` contiguous shards, so that its
  shard order can change).
- an integer B: a shuffle buffer of B rows over the input order, for both (no shard reordering): the
  map-style mix computes on row positions the order the buffer gives the rows (``_buffer_order``).
- ``None``: the rows keep the input order; only the interleave changes.

Within an epoch, every pass of a cycled stream has that epoch's order. The keys are those above, computed
on the reordered rows, so every epoch keeps the shares (each stream within one sample of its share at any
point), the stopping rules and ``total``; it is the same composition in a new order (for streams read in
part, e.g. the longer input under ``first_exhausted``, a different part each epoch). Without ``total`` the
length can differ by a sample or two between epochs (where the last stream ends depends on its uniforms).

Map-style against streaming at the same seed and epoch: with ``epoch_shuffle`` None or an integer, the same
sequence (inputs streamed in the map-style order); with ``"auto"`` (a full permutation against shards and a
buffer), by samples the same length and the same source (and task, with ``task_aligned``) at every position,
the rows inside each source differing; by tokens the interleave follows the rows' costs, so only the shares
and the stopping rules hold in both.

Split by node, every epoch: the streaming mix gives each rank every world_size-th sample of the epoch's
sequence; a split of the map-style mix (``split_dataset_by_node``, ``shard``) is recomputed from the epoch's
mix by its own ``set_epoch`` (or made after ``set_epoch`` on the mix). Either way the parts are disjoint,
make the mix together and differ in size by at most one. In a torch ``DataLoader`` the streaming mix is read
by one worker and follows ``set_epoch`` (persistent workers too: datasets shares the epoch); a map-style mix
is copied into workers when they start, so call ``set_epoch`` before iterating (not with persistent workers).
As in datasets, an ``IterableDataset`` derived from the mix (``select_columns``, ``map``, ``with_format``...)
starts at epoch 0: call ``set_epoch`` on the dataset that is iterated.

Why not ``datasets.interleave_datasets`` itself: it draws a source independently for every sample
(shares off by sampling noise, about 0.5% at 10,000 samples for 50/50), knows neither token weights nor
totals nor task alignment, and for streaming inputs it cannot take the map-style schedule. The map-style
mix is realised the same way ``interleave_datasets`` realises its own (``concatenate_datasets`` then
``select``), and the streaming mix is an examples iterable over the inputs' own examples iterables,
like ``interleave_datasets`` builds, so formatting, ``shuffle``, ``split_dataset_by_node`` and ``state_dict``
resumption work as for any ``IterableDataset``. The streaming mix is one shard: split by node, each rank
keeps every world_size-th sample (disjoint, together the mix); in a DataLoader one worker reads it.
Cycled inputs: after an input's first pass its length and costs are known, so its next passes get their
keys without reading and their rows are read only for the samples the mix emits (a pass is assumed to
repeat the first, as it does for a fixed input).

Token counts. With ``tokenizer`` the text of every turn (the ``<image>`` placeholder removed, no chat
template) is tokenized without special tokens. Without it, an estimate: CJK characters (U+3000-U+9FFF:
CJK punctuation, kana, ideographs; compatibility ideographs; full-width forms) count 1 token per
``CJK_CHARS_PER_TOKEN`` = 1.4 characters (Qwen2's tokenizer
gives 1.34 on Chinese paragraphs), any other character 1 per ``OTHER_CHARS_PER_TOKEN`` = 4 (the usual
figure for English with BPE vocabularies); a sample's estimate is ``ceil(cjk / 1.4 + other / 4)``.

Example:
    >>> import datasets, llava_zh
    >>> from llava_zh.schema import FEATURES
    >>> def rows(lang, n):
    ...     return [{"id": f"{lang}{i}", "task": "conversation", "language": lang, "source": None, "image": None,
    ...              "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]} for i in range(n)]
    >>> zh = datasets.Dataset.from_list(rows("zh", 60), features=FEATURES)
    >>> en = datasets.Dataset.from_list(rows("en", 100), features=FEATURES)
    >>> mixed, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 0.6, "en": 0.4}, total=50)
    >>> len(mixed), report.achieved()
    (50, {'zh': 0.6, 'en': 0.4})
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from copy import copy, deepcopy
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import datasets as hfds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.iterable_dataset import _BaseExamplesIterable
from datasets.table import table_cast

from .schema import FEATURES, IMAGE_PLACEHOLDER, TASKS

BY: tuple[str, ...] = ("samples", "tokens")
STOPPING_STRATEGIES: tuple[str, ...] = ("all_exhausted", "first_exhausted")
CJK_CHARS_PER_TOKEN = 1.4
OTHER_CHARS_PER_TOKEN = 4.0
#: What counts as a CJK character: U+3000-U+9FFF (CJK punctuation, kana, Extension A, unified ideographs),
#: compatibility ideographs, half- and full-width forms. (Documentation: counted from UTF-8 bytes, see _char_counts.)
CJK_PATTERN = r"[\x{3000}-\x{9fff}\x{f900}-\x{faff}\x{ff00}-\x{ffff}]"
#: Rows per batch read from a streaming input (memory: one batch per stream is held).
BATCH_SIZE = 512
#: Rows of the shuffle buffer each stream of a streaming mix gets per epoch (``epoch_shuffle="auto"``), as
#: ``IterableDataset.shuffle``'s default; memory: this many undecoded rows per stream.
EPOCH_BUFFER_SIZE = 1000
#: Shards a map-style input gets when a streaming mix streams it (contiguous, so epoch 0 reads it in order).
MAP_STYLE_SHARDS = 64
SOURCE_COLUMN = "source"
_CONVERSATIONS_TYPE = FEATURES["conversations"]

AnyDataset = Union[hfds.Dataset, hfds.IterableDataset]


# --------------------------------------------------------------------------------------------------------------
# Token counts


def estimate_tokens(text: str) -> int:
    """The character-based token estimate of one text (see the module docstring).

    Example:
        >>> estimate_tokens("这是一只猫。"), estimate_tokens("This is a cat.")
        (5, 4)
    """
    return int(count_tokens(pa.array([[{"from": "gpt", "value": text}]], type=_CONVERSATIONS_TYPE.pa_type))[0])


def _turn_values(conversations: pa.Array) -> tuple[pa.Array, np.ndarray, int]:
    """The turns' texts without the image placeholder, the row each belongs to, and the number of rows."""
    if isinstance(conversations, pa.ChunkedArray):
        conversations = conversations.combine_chunks()
    if not isinstance(conversations, pa.Array):
        conversations = pa.array(list(conversations), type=_CONVERSATIONS_TYPE.pa_type)
    n = len(conversations)
    parents = pc.list_parent_indices(conversations).to_numpy(zero_copy_only=False)
    values = pc.struct_field(pc.list_flatten(conversations), "value")
    values = pc.replace_substring(values, IMAGE_PLACEHOLDER, "")
    return values, parents, n


def _char_counts(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Characters and CJK characters (``CJK_PATTERN``) of each string; the CJK count read from UTF-8 bytes.

    U+3000-U+9FFF are the 3-byte characters led by 0xE3-0xE9; U+F900-U+FAFF and U+FF00-U+FFFF those led by
    0xEF then 0xA4-0xAB or 0xBC-0xBF. Equal to ``pc.count_substring_regex(values, CJK_PATTERN)`` (a test
    checks it), many times faster.
    """
    values = values.cast(pa.string()) if not pa.types.is_string(values.type) else values
    n = len(values)
    chars = pc.fill_null(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    if n == 0:
        return chars, np.zeros(0, np.int64)
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=values.offset * 4).astype(np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])
    if hi == lo:
        return chars, np.zeros(n, np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8, count=hi - lo, offset=lo)
    bounds = offsets - lo
    lead = np.flatnonzero((data >= 0xE3) & (data <= 0xE9))
    ef = np.flatnonzero(data[:-1] == 0xEF)
    second = data[ef + 1]
    ef = ef[((second >= 0xA4) & (second <= 0xAB)) | ((second >= 0xBC) & (second <= 0xBF))]
    cjk = np.diff(np.searchsorted(lead, bounds)) + np.diff(np.searchsorted(ef, bounds))
    return chars, cjk.astype(np.int64)


def _token_lengths(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Tokens per text with a transformers tokenizer or processor, a ``tokenizers.Tokenizer`` or a callable."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor carries its tokenizer
    if not texts:
        return np.zeros(0, dtype=np.int64)
    if hasattr(tok, "encode_batch") and not callable(getattr(tok, "batch_encode_plus", None)):
        encodings = tok.encode_batch(texts, add_special_tokens=False)  # tokenizers.Tokenizer
        return np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
    if hasattr(tok, "convert_tokens_to_ids"):  # transformers tokenizer
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))
    if callable(tok):
        return np.fromiter((len(tok(t)) for t in texts), dtype=np.int64, count=len(texts))
    raise TypeError(f"tokenizer must be a transformers tokenizer/processor, a tokenizers.Tokenizer or a callable; got {type(tokenizer)}")


def count_tokens(conversations: Union[pa.Array, pa.ChunkedArray, Sequence], tokenizer: Any = None) -> np.ndarray:
    """Text tokens per sample of a ``conversations`` column (Arrow array or list of turn lists).

    Counts the turns' values without the ``<image>`` placeholder and without any chat template; with no
    ``tokenizer``, the character-based estimate of the module docstring.

    Example:
        >>> count_tokens([[{"from": "human", "value": "<image>\\n图里有什么？"}, {"from": "gpt", "value": "a cat"}]]).tolist()
        [6]
    """
    values, parents, n = _turn_values(conversations)
    if tokenizer is not None:
        per_turn = _token_lengths(tokenizer, values.to_pylist())
        return np.bincount(parents, weights=per_turn, minlength=n).astype(np.int64) if n else np.zeros(0, np.int64)
    total, cjk = _char_counts(values)
    row_total = np.bincount(parents, weights=total, minlength=n)
    row_cjk = np.bincount(parents, weights=cjk, minlength=n)
    return np.ceil(row_cjk / CJK_CHARS_PER_TOKEN + (row_total - row_cjk) / OTHER_CHARS_PER_TOKEN).astype(np.int64)


# --------------------------------------------------------------------------------------------------------------
# The schedule: keys of a stream's samples, pure functions of (seed, stream, k, costs)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _stream_seed(seed: int, name: str, task: Optional[str], salt: int = 0) -> int:
    """A 64-bit key for one stream's uniforms; ``salt`` is 0 at epoch 0, else derived from the epoch."""
    digest = hashlib.blake2b(f"{seed}\x00{name}\x00{task}\x00{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _hash64(*parts: Any) -> int:
    digest = hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _generator_salt(salt: int, generator: np.random.Generator) -> int:
    """The salt after ``shuffle_data_sources(generator)``: a draw of (a copy of) the generator, folded in."""
    draw = int(deepcopy(generator).integers(0, 1 << 63))
    return _hash64("salt", salt, draw) or 1


def _epoch_salt(epoch: int) -> int:
    """The salt of an epoch: what ``IterableDataset.set_epoch(epoch)`` makes of an unsalted mix.

    datasets calls ``shuffle_data_sources(np.random.default_rng(epoch))`` on every epoch but 0; the map-style
    mix derives its salt the same way, so both agree for every epoch.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    return 0 if epoch == 0 else _generator_salt(0, np.random.default_rng(int(epoch)))


def _salted(streams: Sequence["_Stream"], seed: int, salt: int) -> list["_Stream"]:
    """The streams with the uniforms of a salt (the same streams for salt 0)."""
    if not salt:
        return list(streams)
    return [replace(s, seed=_stream_seed(seed, s.name, s.task, salt)) for s in streams]


def _order_seed(stream: "_Stream") -> int:
    """Seed of the per-epoch order of a (salted) stream's rows."""
    return _hash64("order", stream.seed)


def _shards_seed(stream: "_Stream") -> int:
    """Seed of the per-epoch shard order of a (salted) stream's streaming input."""
    return _hash64("shards", stream.seed)


def _check_epoch_shuffle(epoch_shuffle: Any) -> Union[str, int, None]:
    if epoch_shuffle is None or epoch_shuffle == "auto":
        return epoch_shuffle
    if isinstance(epoch_shuffle, bool) or not isinstance(epoch_shuffle, (int, np.integer)) or epoch_shuffle < 1:
        raise ValueError(f"epoch_shuffle must be 'auto', None or a buffer size >= 1, got {epoch_shuffle!r}")
    return int(epoch_shuffle)


def _buffer_order(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The order a shuffle buffer of ``size`` rows gives ``n`` rows (the map-style twin of ``_buffer_shuffled``).

    Rounds: fill the buffer to ``size`` rows, permute it, emit ``size - size // 2`` rows, keep the rest; at the
    end permute what is left and emit it. It depends on row positions only, never on how rows are batched.
    """
    keep = size // 2
    out_n = size - keep
    out = []
    buffer = np.arange(min(size, n), dtype=np.int64)
    nxt = len(buffer)
    while len(buffer) == size:
        perm = rng.permutation(size)
        out.append(buffer[perm[:out_n]])
        add = np.arange(nxt, min(n, nxt + out_n), dtype=np.int64)
        nxt += len(add)
        buffer = np.concatenate([buffer[perm[out_n:]], add])
    if len(buffer):
        out.append(buffer[rng.permutation(len(buffer))])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _uniforms(stream_seed: int, start: int, count: int) -> np.ndarray:
    """u_k for k in [start, start + count): splitmix64 of (stream seed, k), 53 bits, in [0, 1)."""
    with np.errstate(over="ignore"):
        z = np.arange(start + 1, start + count + 1, dtype=np.uint64) * _GOLDEN + np.uint64(stream_seed)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _keys(cost_before: np.ndarray, costs: np.ndarray, u: np.ndarray, share: float) -> np.ndarray:
    """Keys of consecutive samples of one stream (the same expression in every path, so equal floats)."""
    return (cost_before.astype(np.float64) + u * costs.astype(np.float64)) / share


def _schedule_costs(costs: Optional[np.ndarray], n: int) -> np.ndarray:
    """Costs as the schedule sees them: 1 per sample by samples, tokens (at least 1) by tokens."""
    if costs is None:
        return np.ones(n, dtype=np.int64)
    return np.maximum(costs, 1)


@dataclass(frozen=True)
class _Stream:
    """One stream of the schedule: a source (and a task with ``task_aligned``) and its share."""

    index: int
    name: str
    task: Optional[str]
    share: float
    seed: int


# --------------------------------------------------------------------------------------------------------------
# Features: every input cast to one set of columns carrying ``source``


def _target_features(named: Mapping[str, hfds.Features]) -> hfds.Features:
    """The library's features plus any other column an input has (``source`` always present)."""
    target = {}
    image_decode = None
    for name, features in named.items():
        for column, feature in features.items():
            if column == "image" and isinstance(feature, hfds.Image) and image_decode is None:
                image_decode = feature.decode
            if column not in FEATURES and column not in target:
                target[column] = feature
    out = hfds.Features(dict(FEATURES))
    if image_decode is not None and image_decode != FEATURES["image"].decode:
        out["image"] = hfds.Image(decode=image_decode)
    for column, feature in target.items():
        out[column] = feature
    return out


def _align_map_style(ds: hfds.Dataset, name: str, target: hfds.Features) -> hfds.Dataset:
    """``ds`` with the target's columns in its order; ``source`` filled with ``name`` where empty.

    Columns are added beside the Arrow table (nothing is rewritten) under a fingerprint derived from the
    input's, since hashing a 600k-value column would cost more than the mix itself.
    """

    def add(ds: hfds.Dataset, column: str, values: list, feature) -> hfds.Dataset:
        fp = hashlib.sha256(f"{ds._fingerprint}|mix-add|{column}|{name}".encode()).hexdigest()[:16]
        return ds.add_column(column, values, feature=feature, new_fingerprint=fp)

    columns = ds.column_names
    if SOURCE_COLUMN in columns:
        src = ds.with_format("arrow", columns=[SOURCE_COLUMN])[:][SOURCE_COLUMN]
        if src.null_count or not pa.types.is_string(src.type):
            filled = pc.fill_null(src.cast(pa.string()), name)
            ds = add(ds.remove_columns(SOURCE_COLUMN), SOURCE_COLUMN, filled.to_pylist(), hfds.Value("string"))
    else:
        ds = add(ds, SOURCE_COLUMN, [name] * len(ds), hfds.Value("string"))
    for column, feature in target.items():
        if column not in ds.column_names:
            ds = add(ds, column, [None] * len(ds), feature)
    ds = ds.select_columns(list(target))
    for column, feature in target.items():
        if ds.features[column] != feature and hasattr(feature, "decode") and type(ds.features[column]) is type(feature):
            ds = ds.cast_column(column, feature)  # e.g. Image(decode=False) -> Image(): metadata only
    if ds.features != target:
        ds = ds.cast(target)
    return ds


def _align_table(table: pa.Table, name: str, schema: pa.Schema) -> pa.Table:
    """An Arrow batch of an input with the target schema; ``source`` filled with ``name`` where empty."""
    n = len(table)
    if SOURCE_COLUMN in table.column_names:
        src = table[SOURCE_COLUMN]
        if src.null_count or not pa.types.is_string(src.type):
            src = pc.fill_null(src.cast(pa.string()), name)
            table = table.set_column(table.column_names.index(SOURCE_COLUMN), SOURCE_COLUMN, src)
    else:
        table = table.append_column(SOURCE_COLUMN, pa.array([name] * n, type=pa.string()))
    table = table.select([c for c in table.column_names if c in schema.names])
    return table_cast(table, schema)


def _align_example(example: Mapping[str, Any], name: str, columns: Sequence[str]) -> dict:
    row = {c: example.get(c) for c in columns}
    if row.get(SOURCE_COLUMN) is None:
        row[SOURCE_COLUMN] = name
    return row


# --------------------------------------------------------------------------------------------------------------
# Streaming: batches of each stream, merged block by block


class _StreamFeed:
    """Reads one stream's passes in batches: Arrow tables (``arrow=True``) or lists of examples.

    Each batch comes with the schedule costs (None by samples) and, when asked, what the report needs.
    """

    def __init__(
        self,
        source: _BaseExamplesIterable,
        name: str,
        task: Optional[str],
        schema: pa.Schema,
        arrow: bool,
        by: str,
        tokenizer: Any,
        batch_size: int = BATCH_SIZE,
        buffer: Optional[tuple[int, int]] = None,
    ) -> None:
        self.source, self.name, self.task, self.schema = source, name, task, schema
        self.arrow, self.by, self.tokenizer, self.batch_size = arrow, by, tokenizer, batch_size
        self.buffer = buffer  # (size, seed): every pass goes through the same shuffle buffer; None: input order

    def _tables(self) -> Iterator[pa.Table]:
        """The input's tables cast to the target schema, then cut or joined into ``batch_size`` rows.

        Cast first: an input's tables need not share one schema (a column of nulls comes as type null).
        """
        self.source._init_state_dict()  # a new pass starts from the beginning (the copy may hold a position)
        pending, rows = [], 0
        for _, table in self.source.iter_arrow():
            table = _align_table(table, self.name, self.schema)
            for offset in range(0, len(table), self.batch_size):
                piece = table.slice(offset, self.batch_size)
                pending.append(piece)
                rows += len(piece)
                if rows >= self.batch_size:
                    yield pending[0] if len(pending) == 1 else pa.concat_tables(pending)
                    pending, rows = [], 0
        if rows:
            yield pending[0] if len(pending) == 1 else pa.concat_tables(pending)

    def _lists(self) -> Iterator[list]:
        self.source._init_state_dict()
        it = iter(self.source)
        while True:
            batch = [ex for _, ex in islice(it, self.batch_size)]
            if not batch:
                return
            yield batch

    def batches(self, report: bool = False) -> Iterator[tuple[Any, Optional[np.ndarray], Optional[tuple], int]]:
        """One pass: (payload, schedule costs or None, (tasks, languages, tokens) when ``report``, rows).

        With ``buffer`` the rows come through a shuffle buffer whose generator starts afresh on every pass,
        so every pass gives the same order (as the cursor assumes).
        """
        if self.buffer is None:
            return self._batches(report)
        size, seed = self.buffer
        return _buffer_shuffled(self._batches(report), size, np.random.default_rng(seed))

    def _batches(self, report: bool) -> Iterator[tuple[Any, Optional[np.ndarray], Optional[tuple], int]]:
        columns = self.schema.names
        for raw in self._tables() if self.arrow else self._lists():
            if self.arrow:
                table = raw
                if self.task is not None:
                    table = table.filter(pc.equal(table["task"], self.task))
                if not len(table):
                    continue
                conversations = lambda: table["conversations"]  # noqa: E731
                if report:
                    tasks = _column_list(table, "task")
                    languages = _column_list(table, "language")
                    payload = None
                else:
                    payload = table
            else:
                rows = raw if self.task is None else [ex for ex in raw if ex.get("task") == self.task]
                if not rows:
                    continue
                conversations = lambda: [ex.get("conversations") or [] for ex in rows]  # noqa: E731
                if report:
                    tasks = [ex.get("task") for ex in rows]
                    languages = [ex.get("language") for ex in rows]
                    payload = None
                else:
                    payload = [_align_example(ex, self.name, columns) for ex in rows]
            n = len(table) if self.arrow else len(rows)
            tokens = None
            if report or self.by == "tokens":
                tokens = count_tokens(conversations(), self.tokenizer)
            costs = tokens if self.by == "tokens" else None
            yield payload, costs, ((tasks, languages, tokens) if report else None), n


def _column_list(table: pa.Table, column: str) -> list:
    return table[column].to_pylist() if column in table.column_names else [None] * len(table)


# A feed's batch is (payload, costs, extra, n): payload an Arrow table, a list of examples or None; costs an
# array or None; extra None or (tasks, languages, tokens). The helpers below cut, join and reorder such batches.


def _part_concat(parts: list) -> Any:
    first = parts[0]
    if first is None:
        return None
    if len(parts) == 1:
        return first
    if isinstance(first, pa.Table):
        return pa.concat_tables(parts)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    return [x for part in parts for x in part]


def _part_take(part: Any, idx: np.ndarray) -> Any:
    if part is None:
        return None
    if isinstance(part, pa.Table):
        return part.take(pa.array(idx, type=pa.int64()))
    if isinstance(part, np.ndarray):
        return part[idx]
    return [part[i] for i in idx.tolist()]


def _part_slice(part: Any, start: int, end: int) -> Any:
    if part is None:
        return None
    if isinstance(part, pa.Table):
        return part.slice(start, end - start)
    return part[start:end]


def _batch_concat(batches: list) -> tuple:
    extra = None
    if batches[0][2] is not None:
        extra = tuple(_part_concat([b[2][i] for b in batches]) for i in range(3))
    return (_part_concat([b[0] for b in batches]), _part_concat([b[1] for b in batches]), extra,
            sum(b[3] for b in batches))


def _batch_take(batch: tuple, idx: np.ndarray) -> tuple:
    payload, costs, extra, _ = batch
    extra = None if extra is None else tuple(_part_take(x, idx) for x in extra)
    return _part_take(payload, idx), _part_take(costs, idx), extra, len(idx)


def _batch_slice(batch: tuple, start: int, end: int) -> tuple:
    payload, costs, extra, _ = batch
    extra = None if extra is None else tuple(_part_slice(x, start, end) for x in extra)
    return _part_slice(payload, start, end), _part_slice(costs, start, end), extra, end - start


def _buffer_shuffled(batches: Iterator[tuple], size: int, rng: np.random.Generator) -> Iterator[tuple]:
    """The batches' rows through a shuffle buffer of ``size`` rows (exactly the order of ``_buffer_order``)."""
    out_n = size - size // 2
    pool: list = []
    pool_n = 0
    try:
        for batch in batches:
            if not batch[3]:
                continue
            pool.append(batch)
            pool_n += batch[3]
            while pool_n >= size:
                head, rest, taken = [], [], 0
                for b in pool:  # the first `size` rows of the pool
                    if taken >= size:
                        rest.append(b)
                    elif taken + b[3] <= size:
                        head.append(b)
                        taken += b[3]
                    else:
                        cut = size - taken
                        head.append(_batch_slice(b, 0, cut))
                        rest.append(_batch_slice(b, cut, b[3]))
                        taken = size
                buffer = _batch_concat(head)
                perm = rng.permutation(size)
                yield _batch_take(buffer, perm[:out_n])
                pool = [_batch_take(buffer, perm[out_n:])] + rest
                pool_n -= out_n
    finally:
        close = getattr(batches, "close", None)
        if close is not None:  # the input's readers are released with this generator (see _run_schedule)
            close()
    if pool_n:
        buffer = _batch_concat([b for b in pool if b[3]])
        yield _batch_take(buffer, rng.permutation(pool_n))


@dataclass
class _Block:
    """A run of the mix: segments (stream, payload, start, end) and the order of their concatenation."""

    segments: list
    order: np.ndarray


class _StreamCursor:
    """Where one stream stands: keys handed out, rows read, and the first pass's costs once it has ended.

    During the first pass keys come from the rows read (their costs). After it, the pass length and costs
    are known, so keys of later passes are computed without reading (as the map-style plan does), and rows
    are read only when the mix emits them: a restarted input is not read for samples the mix never takes.
    Later passes are assumed to repeat the first (an input is a fixed sequence).
    """

    def __init__(self, stream: _Stream, feed: _StreamFeed, report: bool, batch_size: int) -> None:
        self.stream, self.feed, self.report, self.batch_size = stream, feed, report, batch_size
        self.keys = np.empty(0)
        self.cursor = 0
        self.k = 0  # elements given keys so far (all passes)
        self.cost = 0  # their schedule cost
        self.pass_len: Optional[int] = None
        self.pass_costs: list[np.ndarray] = []
        self.key_reader: Optional[Iterator] = feed.batches(report)  # first pass: keys from the rows read
        self.row_reader: Optional[Iterator] = None  # later passes: rows read on demand
        self.rows: list = []  # read, not yet emitted: [payload, extra, start, end]
        self.passes_done = 0

    def _set_keys(self, costs: np.ndarray) -> None:
        n = len(costs)
        before = np.cumsum(costs) - costs + self.cost
        self.keys = _keys(before, costs, _uniforms(self.stream.seed, self.k, n), self.stream.share)
        self.cursor = 0
        self.k += n
        self.cost += int(costs.sum())

    def refill(self) -> bool:
        """Keys for the next samples of the current pass; False when the pass has ended."""
        if self.key_reader is not None:
            for payload, costs, extra, n in self.key_reader:
                c = _schedule_costs(costs, n)
                self.pass_costs.append(c)
                self.rows.append([payload, extra, 0, n])
                self._set_keys(c)
                return True
            self.key_reader = None
            self.pass_len = self.k
            if not self.pass_len:
                raise ValueError(f"source {_stream_label(self.stream)} has no samples to mix")
            self.pass_costs = [np.concatenate(self.pass_costs)]
            return False
        pos = self.k % self.pass_len
        if pos == 0 and self.k // self.pass_len > self.passes_done:
            return False  # a later pass just ended; the caller starts the next one
        b = min(self.batch_size, self.pass_len - pos)
        self._set_keys(self.pass_costs[0][pos:pos + b])
        return True

    def next_pass(self) -> None:
        self.passes_done += 1

    def take(self, m: int) -> list:
        """The next ``m`` rows as chunks (payload, extra, start, end), reading later passes on demand."""
        out = []
        fresh = False
        while m:
            if not self.rows:
                if self.row_reader is None:
                    self.row_reader, fresh = self.feed.batches(self.report), True
                batch = next(self.row_reader, None)
                if batch is None:
                    self.row_reader = None
                    if fresh:
                        raise ValueError(f"source {_stream_label(self.stream)} gave no samples on a later pass")
                    continue
                fresh = False
                payload, _, extra, n = batch
                self.rows.append([payload, extra, 0, n])
                continue
            chunk = self.rows[0]
            take = min(m, chunk[3] - chunk[2])
            out.append((chunk[0], chunk[1], chunk[2], chunk[2] + take))
            chunk[2] += take
            m -= take
            if chunk[2] == chunk[3]:
                self.rows.pop(0)
        return out

    def close(self) -> None:
        for reader in (self.key_reader, self.row_reader):
            if reader is not None:
                reader.close()


def _run_schedule(
    streams: Sequence[_Stream],
    feeds: Sequence[_StreamFeed],
    stopping_strategy: str,
    total: Optional[int],
    skip: int = 0,
    report: bool = False,
) -> Iterator[_Block]:
    """Merge the streams in key order, block by block, applying the stopping rule.

    A block holds every not yet emitted sample whose (key, stream) is at most the smallest last
    (key, stream) of the streams' current key batches; the stream that set it then gets new keys. A
    stream's pass can only end there, right after its last sample closed a block, which is where the
    stopping rules cut.
    """
    S = len(streams)
    cursors = [_StreamCursor(streams[j], feeds[j], report, feeds[j].batch_size) for j in range(S)]
    exhausted = [False] * S
    try:
        for c in cursors:
            if not c.refill():
                raise ValueError(f"source {_stream_label(c.stream)} has no samples to mix")
        position = 0
        while True:
            t = min(range(S), key=lambda j: (cursors[j].keys[-1], j))
            threshold = cursors[t].keys[-1]
            counts, seg_keys, seg_ids = [], [], []
            for j, c in enumerate(cursors):
                end = int(np.searchsorted(c.keys, threshold, side="right" if j <= t else "left"))
                counts.append(end - c.cursor)
                if end > c.cursor:
                    seg_keys.append(c.keys[c.cursor:end])
                    seg_ids.append(np.full(end - c.cursor, j, dtype=np.int64))
                    c.cursor = end
            order = np.lexsort((np.concatenate(seg_ids), np.concatenate(seg_keys)))
            start = position
            position += len(order)
            if total is not None and position >= total:
                order = order[: total - start]
                position = total
            if skip > start:
                order = order[min(skip - start, len(order)):]
            if len(order):
                segments = [(j, *chunk) for j, m in enumerate(counts) if m for chunk in cursors[j].take(m)]
                yield _Block(segments, order)
            else:  # skipped on resumption: the rows are read past, not realised
                for j, m in enumerate(counts):
                    if m:
                        cursors[j].take(m)
            if total is not None and position >= total:
                return
            if not cursors[t].refill():  # the pass of stream t ended with the last sample of this block
                exhausted[t] = True
                if total is None and (stopping_strategy == "first_exhausted" or all(exhausted)):
                    return
                cursors[t].next_pass()
                if not cursors[t].refill():
                    raise ValueError(f"source {_stream_label(cursors[t].stream)} has no samples to mix")
    finally:
        # Close the readers left open (a cycled input, or any input under first_exhausted / total) now: their
        # own clean-up (e.g. the parquet reader's fix for apache/arrow#45214) then runs at once, not at
        # interpreter exit, where a pending Arrow reader thread aborts the process.
        for c in cursors:
            c.close()


def _stream_label(stream: _Stream) -> str:
    return repr(stream.name) + (f" (task {stream.task!r})" if stream.task else "")


class MixExamplesIterable(_BaseExamplesIterable):
    """The streaming mix: the inputs' examples iterables merged by the schedule of ``mix``.

    Yields the inputs' raw examples aligned to the target columns (features are applied once, by the
    ``IterableDataset`` around it). Has an Arrow path when every input has one. It is a single shard:
    ``split_dataset_by_node`` gives each rank every world_size-th sample. ``state_dict`` records the
    samples yielded; resuming replays the schedule up to there (reading, not decoding, the inputs).

    Epochs: ``IterableDataset.set_epoch(n)`` reaches the mix as ``shuffle_data_sources(default_rng(n))``
    (for n > 0, through any wrapper: map, formatting, split by node, DataLoader workers). That returns a copy
    with a ``salt`` drawn from the generator: new uniforms for every stream, and each stream's rows reordered
    per ``epoch_shuffle`` (see ``mix``). Salt 0 (epoch 0) is the unshuffled order.
    """

    def __init__(
        self,
        sources: Sequence[_BaseExamplesIterable],
        source_of_stream: Sequence[int],
        streams: Sequence[_Stream],
        features: hfds.Features,
        by: str,
        stopping_strategy: str,
        total: Optional[int],
        tokenizer: Any = None,
        batch_size: int = BATCH_SIZE,
        seed: int = 0,
        epoch_shuffle: Union[str, int, None] = "auto",
        salt: int = 0,
    ) -> None:
        super().__init__()
        # Kept under `sources`, not `ex_iterables`: datasets would otherwise shift the inputs' RNGs per epoch
        # or per DataLoader worker, and the streaming order would stop matching the map-style one. The epoch
        # reaches the inputs through the salt instead (see _feeds).
        self.sources = list(sources)
        self.source_of_stream = list(source_of_stream)
        self.streams = list(streams)  # epoch 0's streams; the report names rows by their index
        self.target_features = features
        self.by, self.stopping_strategy, self.total = by, stopping_strategy, total
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.seed, self.epoch_shuffle, self.salt = seed, epoch_shuffle, salt

    @property
    def scheduled_streams(self) -> list[_Stream]:
        """The streams with this salt's uniforms (the same as ``streams`` for salt 0)."""
        return _salted(self.streams, self.seed, self.salt)

    @property
    def iter_arrow(self) -> Optional[Callable[[], Iterator[tuple[str, pa.Table]]]]:
        return self._iter_arrow if all(s.iter_arrow for s in self.sources) else None

    @property
    def sleep_on_threads_shutdown(self) -> bool:
        return any(s.sleep_on_threads_shutdown for s in self.sources)

    def _source_for(self, stream: _Stream) -> _BaseExamplesIterable:
        """A stream's input for this salt: as given (salt 0, or ``epoch_shuffle`` None or a buffer size), or
        with its shards reordered and its own shuffle buffers reseeded (``"auto"``), as datasets does per epoch."""
        source = deepcopy(self.sources[self.source_of_stream[stream.index]])
        if self.salt and self.epoch_shuffle == "auto":
            from datasets.iterable_dataset import DataSourcesShufflingDisallowed, shift_ex_examples_rngs

            seed = _shards_seed(stream)
            try:
                source = source.shuffle_data_sources(np.random.default_rng(seed))
            except DataSourcesShufflingDisallowed:  # an input after skip()/take() keeps its shard order
                pass
            source = shift_ex_examples_rngs(source, seed % (1 << 20))
        return source

    def _buffer_for(self, stream: _Stream) -> Optional[tuple[int, int]]:
        if not self.salt or self.epoch_shuffle is None:
            return None
        size = EPOCH_BUFFER_SIZE if self.epoch_shuffle == "auto" else int(self.epoch_shuffle)
        return size, _order_seed(stream)

    def _feeds(self, arrow: bool) -> list[_StreamFeed]:
        schema = self.target_features.arrow_schema
        return [
            _StreamFeed(
                self._source_for(s), s.name, s.task, schema, arrow, self.by, self.tokenizer, self.batch_size,
                self._buffer_for(s),
            )
            for s in self.scheduled_streams
        ]

    def _blocks(self, arrow: bool, report: bool = False) -> Iterator[_Block]:
        skip = self._state_dict["emitted"] if self._state_dict else 0
        return _run_schedule(self.scheduled_streams, self._feeds(arrow), self.stopping_strategy, self.total, skip,
                             report)

    def _init_state_dict(self) -> dict:
        self._state_dict = {"emitted": 0, "type": self.__class__.__name__}
        return self._state_dict

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        emitted = self._state_dict["emitted"] if self._state_dict else 0
        for block in self._blocks(arrow=False):
            rows = [row for (_, rows_, _, start, end) in block.segments for row in rows_[start:end]]
            for i in block.order:
                if self._state_dict:
                    self._state_dict["emitted"] += 1
                yield f"mix_{emitted}", rows[i]
                emitted += 1

    def _iter_arrow(self) -> Iterator[tuple[str, pa.Table]]:
        emitted = self._state_dict["emitted"] if self._state_dict else 0
        for block in self._blocks(arrow=True):
            parts = [table.slice(start, end - start) for (_, table, _, start, end) in block.segments]
            table = pa.concat_tables(parts).take(pa.array(block.order, type=pa.int64()))
            if self._state_dict:
                self._state_dict["emitted"] += len(table)
            yield f"mix_{emitted}", table
            emitted += len(table)

    def tables_with_counts(self, counts: "_Counts") -> Iterator[pa.Table]:
        """The mix as Arrow tables in the target schema, adding every table's composition to ``counts``."""
        arrow = bool(self.iter_arrow)
        schema = self.target_features.arrow_schema
        for block in _run_schedule(self.scheduled_streams, self._feeds(arrow), self.stopping_strategy, self.total):
            ids = np.concatenate([np.full(end - start, j) for (j, _, _, start, end) in block.segments])
            if arrow:
                parts = [table.slice(start, end - start) for (_, table, _, start, end) in block.segments]
                table = pa.concat_tables(parts).take(pa.array(block.order, type=pa.int64()))
            else:
                rows = [row for (_, rows_, _, start, end) in block.segments for row in rows_[start:end]]
                encode = self.target_features.encode_example
                table = pa.Table.from_pylist([encode(rows[i]) for i in block.order], schema=schema)
            counts.add(ids[block.order], _column_list(table, "task"), _column_list(table, "language"),
                       count_tokens(table["conversations"], self.tokenizer))
            yield table

    def composition(self) -> "_Counts":
        """Counts per stream x task x language of the whole mix, from a pass reading no images."""
        counts = _Counts()
        for block in _run_schedule(self.scheduled_streams, self._feeds(all(s.iter_arrow for s in self.sources)),
                                   self.stopping_strategy, self.total, 0, report=True):
            stream_ids, tasks, languages, tokens = [], [], [], []
            for j, _, (t, lang, tok), start, end in block.segments:
                stream_ids.append(np.full(end - start, j))
                tasks.extend(t[start:end])
                languages.extend(lang[start:end])
                tokens.append(tok[start:end])
            order = block.order
            ids = np.concatenate(stream_ids)[order]
            toks = np.concatenate(tokens)[order]
            counts.add(ids, [tasks[i] for i in order], [languages[i] for i in order], toks)
        return counts

    def shuffle_data_sources(self, generator: np.random.Generator) -> "MixExamplesIterable":
        """A copy salted by the generator (datasets passes ``default_rng(epoch)`` from ``set_epoch``)."""
        out = copy(self)
        out.salt = _generator_salt(self.salt, generator)
        out._state_dict = None
        return out

    def shard_data_sources(self, num_shards: int, index: int, contiguous: bool = True) -> "MixExamplesIterable":
        if index < self.num_shards:
            return self
        raise IndexError(f"the mix has {self.num_shards} shard; asked for shard {index} of {num_shards}")

    def reshard_data_sources(self) -> "MixExamplesIterable":
        return self

    @property
    def num_shards(self) -> int:
        return 1


# --------------------------------------------------------------------------------------------------------------
# Map-style: the same keys for whole columns


def _stream_keys(stream: _Stream, costs: np.ndarray, m: int) -> np.ndarray:
    """Keys of the first ``m`` samples of a stream cycling over samples of these schedule costs."""
    n = len(costs)
    idx = np.arange(m, dtype=np.int64)
    passes, pos = np.divmod(idx, n)
    before = np.cumsum(costs) - costs
    cost_before = passes * int(costs.sum()) + before[pos]
    return _keys(cost_before, costs[pos], _uniforms(stream.seed, 0, m), stream.share)


def _keys_up_to(stream: _Stream, costs: np.ndarray, bound: float, inclusive: bool) -> np.ndarray:
    """Keys of the stream's samples with key < bound (or <= bound when ``inclusive``)."""
    n, per_pass = len(costs), float(costs.sum())
    m = max(1, int(math.ceil(bound * stream.share / per_pass * n)) + 2)
    keys = _stream_keys(stream, costs, m)
    while keys[-1] <= bound:
        m *= 2
        keys = _stream_keys(stream, costs, m)
    return keys[: int(np.searchsorted(keys, bound, side="right" if inclusive else "left"))]


def _map_style_plan(
    streams: Sequence[_Stream], costs: Sequence[np.ndarray], stopping_strategy: str, total: Optional[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(stream, k) of every sample of the mix, in order: the map-style twin of ``_run_schedule``."""
    for s, c in zip(streams, costs):
        if not len(c):
            raise ValueError(f"source {_stream_label(s)} has no samples to mix")
    if total is None:
        ends = [(float(_stream_keys(s, c, len(c))[-1]), s.index) for s, c in zip(streams, costs)]
        cut_key, cut_stream = min(ends) if stopping_strategy == "first_exhausted" else max(ends)
        per_stream = [_keys_up_to(s, c, cut_key, inclusive=s.index <= cut_stream) for s, c in zip(streams, costs)]
    else:
        rate = sum(s.share * len(c) / float(c.sum()) for s, c in zip(streams, costs))  # samples per unit of key
        bound = total / rate
        while True:
            per_stream = [_keys_up_to(s, c, bound, inclusive=True) for s, c in zip(streams, costs)]
            if sum(len(k) for k in per_stream) >= total:
                break
            bound *= 2
    ids = np.concatenate([np.full(len(k), j, dtype=np.int64) for j, k in enumerate(per_stream)])
    ks = np.concatenate([np.arange(len(k), dtype=np.int64) for k in per_stream])
    order = np.lexsort((ids, np.concatenate(per_stream)))
    if total is not None:
        order = order[:total]
    return ids[order], ks[order]


class _EpochPlan:
    """What the map-style mix needs to compute its rows for any epoch: the streams and their rows and costs.

    Immutable but for a small cache of computed epochs, so shared (not copied) by the datasets derived from
    a mix (``deepcopy`` returns it).
    """

    def __init__(self, streams, rows_of_stream, costs, offsets, stopping_strategy, total, seed, epoch_shuffle,
                 base_index, base_rows) -> None:
        self.streams = list(streams)
        self.rows_of_stream = list(rows_of_stream)  # rows of the source, in input order
        self.costs = list(costs)  # schedule costs of those rows
        self.offsets = np.asarray(offsets, dtype=np.int64)  # first row of each stream's source in the concatenation
        self.stopping_strategy, self.total, self.seed = stopping_strategy, total, seed
        self.epoch_shuffle = epoch_shuffle
        self.base_index = base_index  # the concatenation's own indices mapping, if it has one
        self.base_rows = base_rows  # rows of the concatenation's table
        self._cache: dict[int, np.ndarray] = {}

    def __deepcopy__(self, memo: dict) -> "_EpochPlan":
        return self

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}

    def order(self, stream: _Stream, salt: int) -> Optional[np.ndarray]:
        """The per-epoch order of a (salted) stream's rows; None keeps the input order."""
        if not salt or self.epoch_shuffle is None:
            return None
        rng = np.random.default_rng(_order_seed(stream))
        n = len(self.rows_of_stream[stream.index])
        return rng.permutation(n) if self.epoch_shuffle == "auto" else _buffer_order(n, int(self.epoch_shuffle), rng)

    def schedule(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(stream, row of its source) of every sample of the mix at ``epoch``, in order."""
        salt = _epoch_salt(epoch)
        streams = _salted(self.streams, self.seed, salt)
        rows_of_stream, costs = [], []
        for s in streams:
            order = self.order(s, salt)
            rows, c = self.rows_of_stream[s.index], self.costs[s.index]
            rows_of_stream.append(rows if order is None else rows[order])
            costs.append(c if order is None else c[order])
        stream_ids, ks = _map_style_plan(streams, costs, self.stopping_strategy, self.total)
        source_rows = np.empty(len(stream_ids), dtype=np.int64)
        for s, rows in zip(streams, rows_of_stream):
            where = stream_ids == s.index
            source_rows[where] = rows[ks[where] % len(rows)]
        return stream_ids, source_rows

    def remember(self, epoch: int, global_rows: np.ndarray) -> None:
        """Cache an epoch's order, given as rows of the concatenation (before its own indices mapping)."""
        rows = self.base_index[global_rows] if self.base_index is not None else global_rows
        if len(self._cache) >= 4:
            self._cache.pop(next(iter(self._cache)))
        self._cache[epoch] = rows

    def rows(self, epoch: int) -> np.ndarray:
        """Rows of the concatenation's table, in the order of the mix at ``epoch``."""
        if epoch not in self._cache:
            stream_ids, source_rows = self.schedule(epoch)
            self.remember(epoch, source_rows + self.offsets[stream_ids])
        return self._cache[epoch]


def _apply_steps(rows: np.ndarray, steps: Sequence[tuple], epoch: int) -> np.ndarray:
    """A derived dataset's rows: the mix's rows at an epoch through its shard and select steps."""
    for step in steps:
        if step[0] == "shard":
            _, num_shards, index, contiguous = step
            if contiguous:
                div, mod = divmod(len(rows), num_shards)
                start = div * index + min(index, mod)
                rows = rows[start:start + div + (1 if index < mod else 0)]
            else:
                rows = rows[index::num_shards]
        else:
            positions = step[1]
            if len(positions) and int(positions.max()) >= len(rows):
                raise ValueError(
                    f"this dataset selects position {int(positions.max())} of a mix that has {len(rows)} samples at "
                    f"epoch {epoch}: without total= the length of a mix may change by a few samples from one epoch "
                    "to the next; call set_epoch on the mix before select/shuffle, or mix with total="
                )
            rows = rows[positions]
    return rows


def _indices_table(rows: np.ndarray):
    from datasets.table import InMemoryTable

    return InMemoryTable(pa.table({"indices": pa.array(rows.astype(np.uint64), type=pa.uint64())}))


class MixedDataset(hfds.Dataset):
    """A map-style mix (a ``datasets.Dataset``) whose order follows ``set_epoch(n)``.

    ``set_epoch`` swaps the indices mapping in place: epoch 0 is the order ``mix`` returned, every other epoch
    a different, deterministic order of the same composition (see ``mix``). Datasets derived with
    ``split_dataset_by_node``/``shard``, ``select`` (and what goes through it, like ``shuffle``), formatting
    and column selection follow their own ``set_epoch`` too: a shard is recomputed from that epoch's mix, so
    shards stay disjoint, complete and equal within one sample every epoch. Operations that rewrite rows
    (``map``, ``filter``, ``flatten_indices``...) give datasets fixed at the epoch they were made at.

    Example:
        >>> mixed, _ = mix({"zh": zh, "en": en}, {"zh": 0.6, "en": 0.4})          # doctest: +SKIP
        >>> part = split_dataset_by_node(mixed, rank=rank, world_size=world_size)  # doctest: +SKIP
        >>> for epoch in range(3):                                                # doctest: +SKIP
        ...     part.set_epoch(epoch)
        ...     for sample in part: ...
    """

    _mix_plan: _EpochPlan
    _mix_epoch: int
    _mix_steps: tuple
    _mix_indices: Any

    @classmethod
    def _adopt(cls, ds: hfds.Dataset, data, plan: _EpochPlan, epoch: int, steps: tuple) -> "MixedDataset":
        """``ds`` (a fresh dataset of these rows) as a MixedDataset over the concatenation's table ``data``."""
        ds.__class__ = cls
        ds._data = data
        ds._indices = _indices_table(_apply_steps(plan.rows(epoch), steps, epoch))
        ds._mix_plan, ds._mix_epoch, ds._mix_steps, ds._mix_indices = plan, epoch, steps, ds._indices
        return ds

    @property
    def epoch(self) -> int:
        return self._mix_epoch

    def _follows_the_mix(self) -> bool:
        return self._indices is self._mix_indices and self._data.num_rows == self._mix_plan.base_rows

    def set_epoch(self, epoch: int) -> None:
        """Reorder in place for ``epoch`` (deterministic; epoch 0 is the order ``mix`` gave)."""
        _epoch_salt(epoch)  # validates
        epoch = int(epoch)
        if epoch == self._mix_epoch:
            return
        if not self._follows_the_mix():
            raise ValueError(
                "this dataset was derived from a mix by an operation that rewrites its rows (map, filter, "
                "flatten_indices, ...): it keeps the order of the epoch it was made at. Call set_epoch on the mix "
                "(or its split by node) and derive it again"
            )
        plan = self._mix_plan
        self._indices = _indices_table(_apply_steps(plan.rows(epoch), self._mix_steps, epoch))
        self._mix_indices = self._indices
        self._fingerprint = hashlib.sha256(
            f"{self._fingerprint}|set_epoch|{plan.epoch_shuffle}|{self._mix_epoch}->{epoch}".encode()
        ).hexdigest()[:16]
        self._mix_epoch = epoch

    def _derived(self, out: hfds.Dataset, step: tuple) -> hfds.Dataset:
        if not isinstance(out, hfds.Dataset) or out is self or not self._follows_the_mix():
            return out
        return MixedDataset._adopt(out, self._data, self._mix_plan, self._mix_epoch, self._mix_steps + (step,))

    def select(self, indices: Iterable, *args, **kwargs) -> hfds.Dataset:
        if isinstance(indices, Iterator):
            indices = list(indices)
        if isinstance(indices, (pa.Array, pa.ChunkedArray)):
            indices = indices.to_numpy().astype(np.int64)
        out = hfds.Dataset.select(self, indices, *args, **kwargs)
        positions = np.asarray(indices if not isinstance(indices, range) else np.arange(
            indices.start, indices.stop, indices.step), dtype=np.int64).reshape(-1)
        positions = np.where(positions < 0, positions + len(self), positions)
        return self._derived(out, ("select", positions))

    def shard(self, num_shards: int, index: int, contiguous: bool = True, *args, **kwargs) -> hfds.Dataset:
        out = hfds.Dataset.select(self, _shard_indices(len(self), num_shards, index, contiguous), *args,
                                  **_select_kwargs(kwargs))
        return self._derived(out, ("shard", num_shards, index, contiguous))


def _shard_indices(n: int, num_shards: int, index: int, contiguous: bool):
    """The positions ``Dataset.shard`` keeps."""
    if not 0 <= index < num_shards:
        raise ValueError("index should be in [0, num_shards-1]")
    if contiguous:
        div, mod = divmod(n, num_shards)
        start = div * index + min(index, mod)
        return range(start, start + div + (1 if index < mod else 0))
    return np.arange(index, n, num_shards)


def _select_kwargs(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k in ("keep_in_memory", "indices_cache_file_name", "writer_batch_size")}


# --------------------------------------------------------------------------------------------------------------
# The report


class _Counts:
    """Samples and tokens per (stream, task, language)."""

    def __init__(self) -> None:
        self.samples: dict[tuple, int] = {}
        self.tokens: dict[tuple, int] = {}

    def add(self, stream_ids: np.ndarray, tasks: Sequence, languages: Sequence, tokens: np.ndarray) -> None:
        if not len(stream_ids):
            return
        # factorise (stream, task, language) once, then count with numpy
        task_codes, task_values = _factorize(tasks)
        lang_codes, lang_values = _factorize(languages)
        stream_ids = np.asarray(stream_ids, dtype=np.int64)
        combined = (stream_ids * len(task_values) + task_codes) * len(lang_values) + lang_codes
        keys, inverse = np.unique(combined, return_inverse=True)
        samples = np.bincount(inverse)
        token_sums = np.bincount(inverse, weights=np.asarray(tokens, dtype=np.float64))
        for key, n, tok in zip(keys.tolist(), samples.tolist(), token_sums.tolist()):
            rest, lang = divmod(key, len(lang_values))
            stream, task = divmod(rest, len(task_values))
            k = (stream, task_values[task], lang_values[lang])
            self.samples[k] = self.samples.get(k, 0) + n
            self.tokens[k] = self.tokens.get(k, 0) + int(round(tok))


def _factorize(values: Sequence) -> tuple[np.ndarray, list]:
    """Integer codes of the values (None allowed) and the distinct values, in first-seen order."""
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


@dataclass
class MixRow:
    """One line of the composition: a source, a task and a language."""

    source: str
    task: Optional[str]
    language: Optional[str]
    samples: int
    tokens: int


@dataclass
class MixReport:
    """Composition of a mix: samples and tokens per source x task x language, achieved vs requested shares.

    For a streaming mix the counts are computed on first use, by running the schedule over the inputs
    without decoding images (``ready`` tells whether that happened). The counts are those of epoch 0 (other
    epochs keep the shares; counts can differ by a sample or two).

    Example:
        >>> r = MixReport(by="samples", requested={"zh": 0.5, "en": 0.5},
        ...               rows=[MixRow("zh", "conversation", "zh", 5, 50), MixRow("en", "conversation", "en", 5, 20)])
        >>> r.achieved(), r.achieved("tokens")
        ({'zh': 0.5, 'en': 0.5}, {'zh': 0.7142857142857143, 'en': 0.2857142857142857})
    """

    by: str
    requested: dict[str, float]
    rows: Optional[list[MixRow]] = None
    seed: int = 0
    stopping_strategy: str = "all_exhausted"
    total: Optional[int] = None
    task_proportions: Optional[dict[str, float]] = None
    token_counter: str = "estimate"
    streaming: bool = False
    _compute: Optional[Callable[[], list[MixRow]]] = field(default=None, repr=False, compare=False)

    @property
    def ready(self) -> bool:
        return self.rows is not None

    def _rows(self) -> list[MixRow]:
        if self.rows is None:
            if self._compute is None:
                raise RuntimeError("this report has no rows and no way to compute them")
            self.rows = self._compute()
        return self.rows

    @property
    def num_samples(self) -> int:
        return sum(r.samples for r in self._rows())

    @property
    def num_tokens(self) -> int:
        return sum(r.tokens for r in self._rows())

    def per_source(self, unit: str = "samples") -> dict[str, int]:
        out = {name: 0 for name in self.requested}
        for r in self._rows():
            out[r.source] = out.get(r.source, 0) + getattr(r, unit)
        return out

    def achieved(self, unit: Optional[str] = None) -> dict[str, float]:
        """Share of each source in the mix, in ``unit`` (samples or tokens; default: the mix's ``by``)."""
        counts = self.per_source(unit or self.by)
        whole = sum(counts.values())
        return {k: (v / whole if whole else 0.0) for k, v in counts.items()}

    def max_deviation(self) -> float:
        """Largest |achieved - requested| over the sources, in the mix's unit."""
        achieved = self.achieved()
        return max(abs(achieved.get(k, 0.0) - v) for k, v in self.requested.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "seed": self.seed,
            "stopping_strategy": self.stopping_strategy,
            "total": self.total,
            "token_counter": self.token_counter,
            "task_proportions": self.task_proportions,
            "num_samples": self.num_samples,
            "num_tokens": self.num_tokens,
            "requested": self.requested,
            "achieved": {"samples": self.achieved("samples"), "tokens": self.achieved("tokens")},
            "rows": [r.__dict__.copy() for r in self._rows()],
        }

    def __str__(self) -> str:
        rows = self._rows()
        n, tokens = self.num_samples, self.num_tokens
        head = (
            f"mix by {self.by}: {n:,} samples, {tokens:,} tokens ({self.token_counter}), seed {self.seed}, "
            + (f"total {self.total:,}" if self.total is not None else self.stopping_strategy)
        )
        table = [("source", "task", "language", "samples", "% samples", "tokens", "% tokens")]
        for r in rows:
            table.append((
                r.source, r.task or "-", r.language or "-", f"{r.samples:,}", _pct(r.samples, n), f"{r.tokens:,}",
                _pct(r.tokens, tokens),
            ))
        lines = [head, *_format_table(table, 3), ""]
        achieved = self.achieved()
        other = "tokens" if self.by == "samples" else "samples"
        achieved_other = self.achieved(other)
        summary = [("source", f"requested ({self.by})", f"achieved ({self.by})", "difference", f"achieved ({other})")]
        for name, want in self.requested.items():
            got = achieved.get(name, 0.0)
            summary.append((name, f"{want:.2%}", f"{got:.2%}", f"{_signed_points(got - want)} pt", f"{achieved_other.get(name, 0.0):.2%}"))
        lines += _format_table(summary, 1)
        if self.task_proportions:
            lines.append("task proportions (every source): " + ", ".join(f"{t} {p:.2%}" for t, p in self.task_proportions.items()))
        return "\n".join(lines)


def _signed_points(diff: float) -> str:
    text = f"{diff * 100:+.2f}"
    return "+0.00" if text == "-0.00" else text


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "-"


def _format_table(rows: list[tuple], text_columns: int) -> list[str]:
    """Aligned plain-text rows: the first ``text_columns`` to the left, numbers to the right."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    numeric = [i >= text_columns for i in range(len(widths))]
    out = []
    for r in rows:
        cells = [str(c).rjust(w) if num else str(c).ljust(w) for c, w, num in zip(r, widths, numeric)]
        out.append("  ".join(cells).rstrip())
    return out


def _rows_from_counts(counts: _Counts, streams: Sequence[_Stream]) -> list[MixRow]:
    rows = [
        MixRow(streams[j].name, task, lang, counts.samples[(j, task, lang)], counts.tokens[(j, task, lang)])
        for (j, task, lang) in counts.samples
    ]
    merged: dict[tuple, MixRow] = {}
    for r in rows:  # with task_aligned a source has one stream per task: fold them per source again
        key = (r.source, r.task, r.language)
        if key in merged:
            merged[key].samples += r.samples
            merged[key].tokens += r.tokens
        else:
            merged[key] = r
    order = {s.name: i for i, s in enumerate(streams)}
    task_order = {t: i for i, t in enumerate(TASKS)}
    return sorted(merged.values(), key=lambda r: (order[r.source], task_order.get(r.task, len(TASKS)), str(r.task),
                                                  str(r.language)))


# --------------------------------------------------------------------------------------------------------------
# mix


def _normalize_weights(names: Sequence[str], weights: Union[Mapping[str, float], Sequence[float]]) -> dict[str, float]:
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(names)
        missing = [n for n in names if n not in weights]
        if unknown or missing:
            raise ValueError(f"weights must name the datasets {list(names)}; unknown {sorted(unknown)}, missing {missing}")
        values = [float(weights[n]) for n in names]
    else:
        values = [float(w) for w in weights]
        if len(values) != len(names):
            raise ValueError(f"got {len(values)} weights for {len(names)} datasets")
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero; got {dict(zip(names, values))}")
    whole = sum(values)
    return {n: v / whole for n, v in zip(names, values)}


def _columns_of(ds: hfds.Dataset, columns: Sequence[str]) -> dict[str, list]:
    present = [c for c in columns if c in ds.column_names]
    table = ds.with_format("arrow", columns=present)[:] if present else None
    return {c: (table[c].to_pylist() if c in present else [None] * len(ds)) for c in columns}


def _map_style_tokens(ds: hfds.Dataset, tokenizer: Any, batch_size: int = 10_000) -> np.ndarray:
    if "conversations" not in ds.column_names:
        return np.zeros(len(ds), dtype=np.int64)
    parts = [count_tokens(t["conversations"], tokenizer)
             for t in ds.with_format("arrow", columns=["conversations"]).iter(batch_size=batch_size)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _proportions(tasks: Sequence, weights: np.ndarray) -> dict[str, float]:
    sums: dict[str, float] = {}
    for t, w in zip(tasks, weights.tolist()):
        sums[t] = sums.get(t, 0) + w
    if None in sums:
        raise ValueError("task_aligned needs a task on every sample of the reference source; some have none")
    whole = sum(sums.values())
    rank = {t: i for i, t in enumerate(TASKS)}
    return {t: sums[t] / whole for t in sorted(sums, key=lambda t: (rank.get(t, len(TASKS)), t))}


def _reference_name(names: Sequence[str], task_aligned: Union[bool, str], languages: Callable[[str], Optional[str]]) -> str:
    if isinstance(task_aligned, str):
        if task_aligned not in names:
            raise ValueError(f"task_aligned={task_aligned!r} names no dataset; datasets: {list(names)}")
        return task_aligned
    for name in names:
        if name == "zh" or languages(name) == "zh":
            return name
    return names[0]


def _first_language_map(ds: hfds.Dataset) -> Optional[str]:
    return ds[0]["language"] if len(ds) and "language" in ds.column_names else None


def _first_language_iterable(ex_iterable: _BaseExamplesIterable) -> Optional[str]:
    ex_iterable = deepcopy(ex_iterable)
    ex_iterable._init_state_dict()
    for _, ex in ex_iterable:
        return ex.get("language")
    return None


def mix(
    datasets: Union[Mapping[str, AnyDataset], Sequence[AnyDataset]],
    weights: Union[Mapping[str, float], Sequence[float]],
    by: str = "samples",
    stopping_strategy: str = "all_exhausted",
    seed: int = 0,
    task_aligned: Union[bool, str, Mapping[str, float]] = False,
    total: Optional[int] = None,
    tokenizer: Any = None,
    epoch_shuffle: Union[str, int, None] = "auto",
) -> tuple[AnyDataset, MixReport]:
    """Mix datasets in the given shares; returns ``(mixed, report)``.

    Args:
        datasets: name -> ``Dataset`` or ``IterableDataset`` (a list is named "0", "1"...). All map-style
            gives a map-style mix; any streaming input gives a streaming mix (map-style inputs are streamed).
            Each input keeps its own order (shuffle it first if wanted); inputs are cast to one set of
            features, and a ``source`` column is added or its empty values filled with the input's name.
        weights: name -> weight (or a list in the datasets' order); normalised to shares.
        by: ``"samples"``: shares of samples; ``"tokens"``: shares of text tokens (``tokenizer`` or the
            character-based estimate of the module docstring).
        stopping_strategy: ``"all_exhausted"`` (every input seen once; shorter ones repeat) or
            ``"first_exhausted"`` (stop when the first input runs out; nothing repeats).
        seed: fixes the order; the same seed gives the same mix, map-style or streaming (epoch 0; other
            epochs: see ``epoch_shuffle``).
        task_aligned: every source contributes the same task proportions: ``True`` takes them from the
            Chinese source (the one named "zh" or whose samples are in Chinese, else the first), a name
            takes them from that source, a mapping task -> proportion gives them. Measured in ``by`` units.
            A streaming source is read once per task.
        total: exactly this many samples, cycling inputs as needed (overrides ``stopping_strategy``).
        tokenizer: counts tokens for ``by="tokens"`` and the report (transformers tokenizer or processor,
            ``tokenizers.Tokenizer``, or a callable returning a token list).
        epoch_shuffle: how ``set_epoch(n)`` reorders each stream's rows for n > 0 (the interleave always
            changes): ``"auto"`` (map-style: a full permutation; streaming: shard order and a buffer of
            ``EPOCH_BUFFER_SIZE`` rows), an integer (a shuffle buffer of that many rows, the same sequence
            map-style or streaming) or ``None`` (input order). See "Epochs" in the module docstring.

    Returns:
        ``(mixed, report)``: a ``MixedDataset`` (a ``datasets.Dataset``) or an ``IterableDataset``, both with
        ``set_epoch``; the report describes epoch 0.

    Example:
        >>> import llava_zh
        >>> zh = llava_zh.load_dataset("sample")                                       # doctest: +SKIP
        >>> en = llava_zh.load_llava_instruct_150k("llava_instruct_150k.json")          # doctest: +SKIP
        >>> mixed, report = llava_zh.mix({"zh": zh, "en": en}, {"zh": 0.6, "en": 0.4}, by="tokens")  # doctest: +SKIP
        >>> print(report)                                                              # doctest: +SKIP
    """
    if isinstance(datasets, Mapping):
        named = {str(k): v for k, v in datasets.items()}
    else:
        named = {str(i): v for i, v in enumerate(datasets)}
    if not named:
        raise ValueError("mix needs at least one dataset")
    for name, ds in named.items():
        if not isinstance(ds, (hfds.Dataset, hfds.IterableDataset)):
            raise TypeError(f"dataset {name!r} is a {type(ds).__name__}; expected hfds.Dataset or IterableDataset "
                            "(pick a split of a DatasetDict, e.g. ds['train'])")
    if by not in BY:
        raise ValueError(f"by must be one of {list(BY)}, got {by!r}")
    if stopping_strategy not in STOPPING_STRATEGIES:
        raise ValueError(f"stopping_strategy must be one of {list(STOPPING_STRATEGIES)}, got {stopping_strategy!r}")
    if total is not None and (not isinstance(total, (int, np.integer)) or total < 1):
        raise ValueError(f"total must be a positive integer, got {total!r}")
    epoch_shuffle = _check_epoch_shuffle(epoch_shuffle)
    shares = _normalize_weights(list(named), weights)
    active = [n for n in named if shares[n] > 0]  # a zero weight leaves its dataset out
    streaming = any(isinstance(ds, hfds.IterableDataset) for ds in named.values())
    if streaming:  # contiguous shards read in order (epoch 0); "auto" reorders them per epoch
        named = {n: (ds.to_iterable_dataset(num_shards=max(1, min(MAP_STYLE_SHARDS, len(ds))))
                     if isinstance(ds, hfds.Dataset) else ds) for n, ds in named.items()}
        for n, ds in named.items():
            if ds._distributed:
                raise ValueError(f"dataset {n!r} is already split by node: mix the full datasets, then split the mix")
        named = {n: ds._resolve_features() for n, ds in named.items()}
    target = _target_features({n: ds.features for n, ds in named.items()})
    token_counter = "tokenizer" if tokenizer is not None else (
        f"estimate: CJK {CJK_CHARS_PER_TOKEN} chars/token, other {OTHER_CHARS_PER_TOKEN:g} chars/token")
    report = MixReport(by=by, requested={n: shares[n] for n in named}, seed=seed, stopping_strategy=stopping_strategy,
                       total=total, token_counter=token_counter, streaming=streaming)
    if streaming:
        return _mix_streaming(named, active, shares, target, by, stopping_strategy, seed, task_aligned, total,
                              tokenizer, report, epoch_shuffle)
    return _mix_map_style(named, active, shares, target, by, stopping_strategy, seed, task_aligned, total,
                          tokenizer, report, epoch_shuffle)


def _task_proportions(task_aligned, names, reference_tasks: Callable[[str], dict[str, float]], languages) -> Optional[dict[str, float]]:
    if task_aligned is False or task_aligned is None:
        return None
    if isinstance(task_aligned, Mapping):
        values = {str(t): float(p) for t, p in task_aligned.items() if float(p) > 0}
        if not values:
            raise ValueError("task_aligned proportions must have a positive value")
        whole = sum(values.values())
        return {t: p / whole for t, p in values.items()}
    return reference_tasks(_reference_name(names, task_aligned, languages))


def _make_streams(active, shares, proportions, seed) -> list[_Stream]:
    streams = []
    for name in active:
        for task, p in (proportions.items() if proportions else [(None, 1.0)]):
            streams.append(_Stream(len(streams), name, task, shares[name] * p, _stream_seed(seed, name, task)))
    return streams


def _mix_map_style(named, active, shares, target, by, stopping_strategy, seed, task_aligned, total, tokenizer, report,
                   epoch_shuffle="auto"):
    names = list(named)
    aligned = {n: _align_map_style(ds, n, target) for n, ds in named.items()}
    columns = {n: _columns_of(ds, ["task", "language"]) for n, ds in aligned.items() if n in active}
    tokens = {n: _map_style_tokens(ds, tokenizer) for n, ds in aligned.items() if n in active}

    def reference_tasks(name: str) -> dict[str, float]:
        w = tokens[name] if by == "tokens" else np.ones(len(tokens[name]))
        return _proportions(columns[name]["task"], w)

    def language_of(name: str) -> Optional[str]:
        langs = columns.get(name, {}).get("language") or [None]
        return langs[0]

    proportions = _task_proportions(task_aligned, active, reference_tasks, language_of)
    streams = _make_streams(active, shares, proportions, seed)
    rows_of_stream, costs = [], []
    for s in streams:
        if s.task is None:
            rows = np.arange(len(aligned[s.name]), dtype=np.int64)
        else:
            rows = np.flatnonzero(np.asarray([t == s.task for t in columns[s.name]["task"]], dtype=bool))
            if not len(rows):
                raise ValueError(f"task_aligned: source {s.name!r} has no {s.task!r} samples")
        rows_of_stream.append(rows)
        costs.append(_schedule_costs(tokens[s.name][rows] if by == "tokens" else None, len(rows)))
    offsets, start = {}, 0
    for n in names:
        offsets[n] = start
        start += len(aligned[n])
    concatenated = hfds.concatenate_datasets([aligned[n] for n in names])
    base = concatenated._indices.column(0).to_numpy().astype(np.int64) if concatenated._indices is not None else None
    plan = _EpochPlan(streams, rows_of_stream, costs, [offsets[s.name] for s in streams], stopping_strategy, total,
                      seed, epoch_shuffle, base, concatenated.data.num_rows)
    stream_ids, source_rows = plan.schedule(0)
    global_rows = source_rows + plan.offsets[stream_ids]
    counts = _Counts()
    task_col = np.empty(len(stream_ids), dtype=object)
    lang_col = np.empty(len(stream_ids), dtype=object)
    tok_col = np.empty(len(stream_ids), dtype=np.int64)
    for s in streams:
        where = np.flatnonzero(stream_ids == s.index)
        r = source_rows[where]
        task_col[where] = np.asarray(columns[s.name]["task"], dtype=object)[r] if len(r) else []
        lang_col[where] = np.asarray(columns[s.name]["language"], dtype=object)[r] if len(r) else []
        tok_col[where] = tokens[s.name][r]
    counts.add(stream_ids, task_col.tolist(), lang_col.tolist(), tok_col)
    report.rows = _rows_from_counts(counts, streams)
    report.task_proportions = proportions
    fingerprint = hashlib.sha256(
        repr((
            [aligned[n]._fingerprint for n in names], shares, by, stopping_strategy, seed, proportions, total,
            report.token_counter, len(global_rows),
        )).encode()
        + global_rows.tobytes()
    ).hexdigest()[:16]
    mixed = concatenated.select(global_rows, new_fingerprint=fingerprint)
    plan.remember(0, global_rows)
    return MixedDataset._adopt(mixed, concatenated._data, plan, epoch=0, steps=()), report


def _mix_streaming(named, active, shares, target, by, stopping_strategy, seed, task_aligned, total, tokenizer, report,
                   epoch_shuffle="auto"):
    names = list(named)
    sources = [deepcopy(named[n]._ex_iterable) for n in names]
    source_index = {n: i for i, n in enumerate(names)}

    def reference_tasks(name: str) -> dict[str, float]:
        feed = _StreamFeed(deepcopy(sources[source_index[name]]), name, None, target.arrow_schema,
                           bool(sources[source_index[name]].iter_arrow), by, tokenizer)
        task_list: list = []
        weights: list = []
        for _, _, (tasks, _, tokens), n in feed.batches(report=True):
            task_list.extend(tasks)
            weights.append(tokens if by == "tokens" else np.ones(n))
        return _proportions(task_list, np.concatenate(weights) if weights else np.zeros(0))

    def language_of(name: str) -> Optional[str]:
        return _first_language_iterable(sources[source_index[name]])

    proportions = _task_proportions(task_aligned, active, reference_tasks, language_of)
    streams = _make_streams(active, shares, proportions, seed)
    ex_iterable = MixExamplesIterable(
        sources, [source_index[s.name] for s in streams], streams, target, by, stopping_strategy, total, tokenizer,
        seed=seed, epoch_shuffle=epoch_shuffle,
    )
    info = hfds.DatasetInfo.from_merge([named[n].info for n in names])
    info.features = target
    token_per_repo_id = {repo: tok for n in names for repo, tok in named[n]._token_per_repo_id.items()}
    mixed = hfds.IterableDataset(ex_iterable, info=info, split=named[names[0]].split,
                                     token_per_repo_id=token_per_repo_id)
    report.task_proportions = proportions
    report._compute = lambda: _rows_from_counts(ex_iterable.composition(), streams)
    return mixed, report


# --------------------------------------------------------------------------------------------------------------
# Writing a mix


def write_mix(
    mixed: AnyDataset,
    out_dir: Union[str, os.PathLike],
    report: Optional[MixReport] = None,
    max_shard_size: Union[int, str] = "500MB",
    batch_size: int = 1000,
    overwrite: bool = False,
) -> list[str]:
    """Write a mix, in its order, as parquet shards with the images embedded; returns the files written.

    Files: ``out_dir/data/train-XXXXX-of-YYYYY.parquet`` (each under ``max_shard_size``, a shard closing
    once it passes it) and, with ``report``, ``out_dir/mix_report.json``. ``datasets.load_dataset(out_dir)``
    and ``llava_zh.load_dataset(out_dir)`` read it back. A streaming mix fills a not yet computed
    ``report`` while it is written, so the inputs are read once.

    Example:
        >>> mixed, report = mix({"zh": zh, "en": en}, {"zh": 0.6, "en": 0.4})   # doctest: +SKIP
        >>> write_mix(mixed, "mixed/", report)                                   # doctest: +SKIP
        ['mixed/data/train-00000-of-00001.parquet']
    """
    import pyarrow.parquet as pq
    from datasets.table import embed_table_storage

    from .publishing import array_row_nbytes
    from datasets.utils.py_utils import convert_file_size_to_int
    from tqdm.auto import tqdm

    limit = convert_file_size_to_int(max_shard_size)
    data_dir = os.path.join(os.fspath(out_dir), "data")
    os.makedirs(data_dir, exist_ok=True)
    existing = [f for f in os.listdir(data_dir) if f.endswith((".parquet", ".parquet.partial"))]
    if existing:
        if not overwrite:
            raise FileExistsError(f"{data_dir} already holds {len(existing)} parquet files; pass overwrite=True")
        for f in existing:
            os.remove(os.path.join(data_dir, f))
    features = hfds.Features({k: (hfds.Image(decode=True) if isinstance(v, hfds.Image) else v)
                              for k, v in mixed.features.items()})
    schema = features.arrow_schema

    counts = None
    if isinstance(mixed, hfds.IterableDataset):
        ex = mixed._ex_iterable
        if (report is not None and not report.ready and isinstance(ex, MixExamplesIterable) and not mixed._distributed
                and not mixed.epoch):  # the report describes epoch 0
            counts = _Counts()
            tables = ex.tables_with_counts(counts)
        else:  # rows encoded here: datasets' own conversion infers a type per row (a None image gives "null")
            undecoded = mixed
            for column, feature in mixed.features.items():
                if isinstance(feature, hfds.Image):
                    undecoded = undecoded.cast_column(column, hfds.Image(decode=False))
            undecoded = undecoded.with_format(None)
            undecoded.set_epoch(mixed.epoch)  # a derived IterableDataset starts at epoch 0
            tables = (pa.Table.from_pydict(features.encode_batch(batch), schema=schema)
                      for batch in undecoded.iter(batch_size=batch_size))
        total = None
    else:
        tables = mixed.with_format("arrow").iter(batch_size=batch_size)
        total = len(mixed)

    partials: list[str] = []
    writer, written = None, 0
    with tqdm(total=total, unit=" samples", desc="writing the mix") as bar:
        for table in tables:
            for offset in range(0, len(table), batch_size):
                chunk = embed_table_storage(table_cast(table.slice(offset, batch_size), schema))
                sizes = sum(array_row_nbytes(column) for column in chunk.columns)
                start = 0
                while start < len(chunk):  # cut where a file would pass the limit (a file holds at least one row)
                    if writer is None:
                        partials.append(os.path.join(data_dir, f"train-{len(partials):05d}.parquet.partial"))
                        writer, written = pq.ParquetWriter(partials[-1], schema), 0
                    cum = np.cumsum(sizes[start:])
                    k = int(np.searchsorted(cum, limit - written, side="right"))
                    if written == 0:
                        k = max(k, 1)
                    if k:
                        writer.write_table(chunk.slice(start, k))
                        written += int(cum[k - 1])
                        start += k
                        bar.update(k)
                    if start < len(chunk) or written >= limit:
                        writer.close()
                        writer = None
        if writer is not None:
            writer.close()
    if not partials:  # an empty mix still gets one (empty) file, so that it loads
        partials.append(os.path.join(data_dir, "train-00000.parquet.partial"))
        pq.ParquetWriter(partials[-1], schema).close()
    files = []
    for i, partial in enumerate(partials):
        final = os.path.join(data_dir, f"train-{i:05d}-of-{len(partials):05d}.parquet")
        os.replace(partial, final)
        files.append(final)
    if report is not None:
        if counts is not None:
            ex = mixed._ex_iterable
            report.rows = _rows_from_counts(counts, ex.streams)
        with open(os.path.join(os.fspath(out_dir), "mix_report.json"), "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, ensure_ascii=False, indent=2)
    return files
