"""Pack encoded samples, images included, into sequences of at most ``max_length`` tokens.

Padding a batch to its longest sample wastes a large share of every step on a set whose lengths vary as
much as this one's (a short conversation next to a long detailed description). Packing puts several whole
samples into one sequence and keeps them apart:

* every sample is used exactly once, whole (a sample longer than ``max_length`` raises, or with
  ``on_too_long="drop"`` is left out and listed in the report: never cut, never silently lost);
* position ids restart at 0 at each sample (``position_ids``), and for the Qwen2-VL family the multimodal
  (temporal, height, width) rope positions are computed per sample exactly as the model's own
  ``get_rope_index`` does (``mrope_position_ids``, shape ``(3, length)``);
* ``cu_seqlens`` gives the sample boundaries for variable-length attention;
* the label of each sample's first token is set to -100: transformers shifts labels inside the loss, so
  that label would otherwise be predicted from the previous sample's last token;
* images travel with their sample: ``pixel_values`` and ``image_grid_thw`` (or the ``images`` references of
  an :func:`llava_zh.encode` set) are concatenated in token order.

``pack`` returns a ``datasets.Dataset`` with one row per packed sequence; :class:`PackedCollator` turns rows
into model inputs with the attention kept inside each sample, either with a 4-D block-diagonal causal mask
(eager / sdpa attention) or through the restarting position ids alone (transformers derives the same
block-diagonal mask from them, and flash-attention 2 its varlen boundaries).

Example:
    >>> encoded = llava_zh.encode(llava_zh.load_dataset("sample"), processor, max_pixels=224 * 224)  # doctest: +SKIP
    >>> packed, report = llava_zh.pack(encoded, 4096, strategy="first_fit", return_report=True)      # doctest: +SKIP
    >>> print(report)                                                                                 # doctest: +SKIP
    30 samples -> 5 packs of <= 4096 tokens (first_fit): 17,778 tokens, efficiency 86.8% ...
    >>> batch = PackedCollator(processor)([packed[0]])   # input_ids [1, L], position_ids [4, 1, L] ...  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .collate import resolve_pad_token_id

IGNORE_INDEX = -100
STRATEGIES = ("greedy", "first_fit")
ON_TOO_LONG = ("raise", "drop")

logger = logging.getLogger(__name__)


class PackingError(ValueError):
    """Samples that cannot be packed (longer than ``max_length``, inconsistent image grids...)."""


# --------------------------------------------------------------------------------------------------
# bin assignment


def _greedy(lengths: np.ndarray, max_length: int) -> list[list[int]]:
    """Next fit in the dataset's order: a pack closes when the next sample does not fit. Keeps the order."""
    bins: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(lengths.tolist()):
        if current and used + n > max_length:
            bins.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        bins.append(current)
    return bins


def _first_fit(lengths: np.ndarray, max_length: int) -> list[list[int]]:
    """First fit decreasing: longest samples first, each into the first pack with room (a max segment tree
    over the packs' free space finds it in O(log n))."""
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(-lengths, kind="stable").tolist()
    size = 1
    while size < n:
        size *= 2
    tree = [max_length] * (2 * size)  # free space per pack (unopened packs are empty); internal nodes: max
    bins: list[list[int]] = []
    values = lengths.tolist()
    for i in order:
        need = values[i]
        node = 1
        while node < size:  # descend to the leftmost pack with room
            node = 2 * node if tree[2 * node] >= need else 2 * node + 1
        slot = node - size
        if slot == len(bins):
            bins.append([])
        bins[slot].append(i)
        tree[node] -= need
        node //= 2
        while node:
            best = tree[2 * node] if tree[2 * node] >= tree[2 * node + 1] else tree[2 * node + 1]
            if tree[node] == best:
                break
            tree[node] = best
            node //= 2
    for b in bins:  # samples inside a pack in the dataset's order
        b.sort()
    return bins


_ASSIGN = {"greedy": _greedy, "first_fit": _first_fit}


def assign_packs(lengths: Sequence[int], max_length: int, strategy: str = "greedy") -> list[list[int]]:
    """Group sample indices into packs whose lengths sum to at most ``max_length``.

    ``"greedy"``: next fit in order (packs follow the dataset order, a streaming-friendly choice);
    ``"first_fit"``: first fit decreasing (fewer packs; packs are ordered by their longest sample, so
    shuffle them when training, as a ``Trainer`` does). Every length must be at most ``max_length``.

    Example:
        >>> assign_packs([5, 4, 3, 6, 2], 10, "greedy")
        [[0, 1], [2, 3], [4]]
        >>> assign_packs([5, 4, 3, 6, 2], 10, "first_fit")
        [[1, 3], [0, 2, 4]]
    """
    if strategy not in _ASSIGN:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if max_length <= 0:
        raise ValueError(f"max_length must be a positive number of tokens, got {max_length!r}")
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if arr.size and (arr.max() > max_length or arr.min() < 0):
        bad = int(np.flatnonzero((arr > max_length) | (arr < 0))[0])
        raise PackingError(f"sample {bad}: expected a length between 0 and max_length={max_length}, got {int(arr[bad])}")
    return _ASSIGN[strategy](arr, max_length)


# --------------------------------------------------------------------------------------------------
# multimodal rope positions (Qwen2-VL family)


def mrope_position_ids(mm_token_type_ids: Sequence[int], image_grid_thw: Optional[Sequence[Sequence[int]]],
                       merge_size: int = 2, sample_id: Any = None) -> np.ndarray:
    """The (temporal, height, width) rope positions of one sample, shape ``(3, length)``.

    The same as ``Qwen2_5_VLModel.get_rope_index`` / ``Qwen2VLModel.get_rope_index`` (transformers 5.x) for one
    unpadded sample with images: text tokens advance all three positions by one; an image of grid
    ``(t, h, w)`` patches spans ``t x h/m x w/m`` tokens whose positions are ``start + (t_i, h_i, w_i)``, and
    the text after it starts at ``start + max(h, w) / m`` (m = ``merge_size``).

    Example:
        >>> mrope_position_ids([0, 0, 1, 1, 1, 1, 0], [[1, 4, 4]], merge_size=2).tolist()
        [[0, 1, 2, 2, 2, 2, 4], [0, 1, 2, 2, 3, 3, 4], [0, 1, 2, 3, 2, 3, 4]]
    """
    types = np.asarray(mm_token_type_ids, dtype=np.int64).reshape(-1)
    n = types.size
    out = np.empty((3, n), dtype=np.int64)
    if n == 0:
        return out
    change = np.flatnonzero(np.diff(types)) + 1
    starts = np.concatenate([[0], change]).tolist()
    ends = np.concatenate([change, [n]]).tolist()
    grids = iter([] if image_grid_thw is None else [list(map(int, g)) for g in image_grid_thw])
    who = f"sample {sample_id!r}: " if sample_id is not None else ""
    current = 0
    for s, e in zip(starts, ends):
        kind = int(types[s])
        if kind == 0:
            out[:, s:e] = np.arange(e - s) + current
            current += e - s
            continue
        if kind != 1:
            raise NotImplementedError(f"{who}token type {kind} (video/audio) is not supported by packing yet")
        grid = next(grids, None)
        if grid is None:
            raise PackingError(f"{who}more runs of image tokens than image grids")
        t, h, w = grid
        lt, lh, lw = t, h // merge_size, w // merge_size
        if lt * lh * lw != e - s:
            raise PackingError(f"{who}image grid {grid} (merge {merge_size}): expected {lt * lh * lw} image tokens, "
                               f"got a run of {e - s}")
        out[0, s:e] = np.repeat(np.arange(lt), lh * lw) + current
        out[1, s:e] = np.tile(np.repeat(np.arange(lh), lw), lt) + current
        out[2, s:e] = np.tile(np.arange(lw), lt * lh) + current
        current += max(h, w) // merge_size
    if next(grids, None) is not None:
        raise PackingError(f"{who}more image grids than runs of image tokens")
    return out


def _merge_size_of(grids: Any, types: Any) -> Optional[int]:
    """merge size = sqrt(patches / image tokens) of one sample with images."""
    patches = int(np.prod(np.asarray(grids, dtype=np.int64), axis=-1).sum())
    tokens = int(np.sum(np.asarray(types) == 1))
    if not tokens:
        return None
    merge = int(round(np.sqrt(patches / tokens)))
    return merge if merge * merge * tokens == patches else None


# --------------------------------------------------------------------------------------------------
# pack


@dataclasses.dataclass
class PackReport:
    """What :func:`pack` made: packs, tokens, efficiency and the samples it could not pack."""

    samples: int
    packs: int
    max_length: int
    strategy: str
    tokens: int
    too_long: list[tuple[int, Optional[str], int]]  # (index, id, length) of samples left out
    seconds: float = 0.0

    @property
    def efficiency(self) -> float:
        """Share of real tokens in the packs, each counted at ``max_length`` (1.0 = no padding at all)."""
        return self.tokens / (self.packs * self.max_length) if self.packs else 0.0

    @property
    def samples_per_pack(self) -> float:
        return (self.samples - len(self.too_long)) / self.packs if self.packs else 0.0

    def __str__(self) -> str:
        line = (f"{self.samples} samples -> {self.packs} packs of <= {self.max_length} tokens ({self.strategy}): "
                f"{self.tokens:,} tokens, efficiency {self.efficiency:.1%}, {self.samples_per_pack:.2f} samples/pack")
        if self.too_long:
            shown = ", ".join(f"{sid or i} ({n})" for i, sid, n in self.too_long[:5])
            line += f"; {len(self.too_long)} longer than max_length left out: {shown}" + (" ..." if len(self.too_long) > 5 else "")
        return line + f"; {self.seconds:.2f} s"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["efficiency"] = self.efficiency
        return out


def _lengths(encoded) -> np.ndarray:
    """Token count of every row: the ``length`` column when there is one, else from ``input_ids`` (pyarrow)."""
    import pyarrow.compute as pc

    column = "length" if "length" in encoded.column_names else "input_ids"
    parts = []
    for batch in encoded.select_columns([column]).with_format("arrow").iter(batch_size=50_000):
        values = batch[column]
        parts.append(np.asarray(values if column == "length" else pc.list_value_length(values), dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _ids_of(encoded, indices: list[int]) -> list[Optional[str]]:
    if "id" not in encoded.column_names or not indices:
        return [None] * len(indices)
    return list(encoded.select_columns(["id"])[indices]["id"])


def _packed_features(encoded, mrope: bool):
    import datasets

    f = encoded.features
    token = f["input_ids"]
    out = {
        "input_ids": token,
        "labels": f.get("labels", token),
        "position_ids": datasets.List(datasets.Value("int32")),
    }
    if mrope:
        out["mrope_position_ids"] = datasets.List(datasets.List(datasets.Value("int32")))
    if "mm_token_type_ids" in f:
        out["mm_token_type_ids"] = f["mm_token_type_ids"]
    out["seq_lengths"] = datasets.List(datasets.Value("int32"))
    out["cu_seqlens"] = datasets.List(datasets.Value("int32"))
    out["length"] = datasets.Value("int32")
    out["sample_index"] = datasets.List(datasets.Value("int64"))
    if "id" in f:
        out["id"] = datasets.List(f["id"])
    for key in ("pixel_values", "image_grid_thw"):
        if key in f:
            out[key] = f[key]
    if "images" in f:
        out["images"] = datasets.List(datasets.Image())
    return datasets.Features(out)


class PackRows:
    """``Dataset.map(batched=True)`` over packs (lists of sample indices): gathers and joins their samples."""

    def __init__(self, encoded, merge_size: Optional[int], mrope: bool) -> None:
        import datasets

        self.encoded = encoded
        self.mrope = mrope
        self.merge_size = merge_size
        names = encoded.column_names
        self.numeric = [c for c in ("input_ids", "labels", "mm_token_type_ids", "pixel_values", "image_grid_thw")
                        if c in names]
        self.has_images = "images" in names
        self.has_ids = "id" in names
        if self.has_images:
            self.images = encoded.select_columns(["images"]).cast_column("images", datasets.List(datasets.Image(decode=False)))

    def _merge(self, grids: Any, types: Any, sample: Any) -> int:
        if self.merge_size is None:
            self.merge_size = _merge_size_of(grids, types)
            if self.merge_size is None:
                raise PackingError(f"sample {sample!r}: cannot tell the merge size from its image grids and tokens; "
                                   "pass merge_size=")
        return self.merge_size

    def __call__(self, batch: Mapping[str, list]) -> dict[str, list]:
        packs = [list(p) for p in batch["sample_index"]]
        flat = [i for p in packs for i in p]
        rows = self.encoded.select_columns(self.numeric).with_format("numpy")[flat] if flat else {}
        ids = self.encoded.select_columns(["id"])[flat]["id"] if self.has_ids and flat else [None] * len(flat)
        images = self.images[flat]["images"] if self.has_images and flat else None
        out: dict[str, list] = {k: [] for k in ("input_ids", "labels", "position_ids", "seq_lengths", "cu_seqlens",
                                                 "length", "sample_index")}
        extra = [k for k in ("mm_token_type_ids", "pixel_values", "image_grid_thw") if k in self.numeric]
        for k in extra + (["mrope_position_ids"] if self.mrope else []) + (["id"] if self.has_ids else []) \
                + (["images"] if self.has_images else []):
            out[k] = []
        at = 0
        for pack in packs:
            members = range(at, at + len(pack))
            at += len(pack)
            input_ids = [np.asarray(rows["input_ids"][j]).reshape(-1) for j in members]
            lengths = [len(x) for x in input_ids]
            labels = []
            for j in members:
                lab = np.array(rows["labels"][j], dtype=np.int64).reshape(-1)
                if lab.size:
                    lab[0] = IGNORE_INDEX  # never predicted from the previous sample's last token
                labels.append(lab)
            out["input_ids"].append(np.concatenate(input_ids) if input_ids else np.zeros(0, np.int64))
            out["labels"].append(np.concatenate(labels) if labels else np.zeros(0, np.int64))
            out["position_ids"].append(np.concatenate([np.arange(n, dtype=np.int32) for n in lengths]))
            out["seq_lengths"].append(lengths)
            out["cu_seqlens"].append(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
            out["length"].append(int(sum(lengths)))
            out["sample_index"].append(pack)
            if "mm_token_type_ids" in out:
                out["mm_token_type_ids"].append(np.concatenate([np.asarray(rows["mm_token_type_ids"][j]).reshape(-1)
                                                                for j in members]))
            for key in ("pixel_values", "image_grid_thw"):
                if key in out:
                    present = [np.asarray(rows[key][j]) for j in members if rows[key][j] is not None
                               and np.asarray(rows[key][j]).size]
                    out[key].append(np.concatenate(present) if present else None)
            if self.mrope:
                positions = []
                for j in members:
                    types = np.asarray(rows["mm_token_type_ids"][j]).reshape(-1)
                    grids = rows["image_grid_thw"][j] if "image_grid_thw" in rows else None
                    grids = None if grids is None or not np.asarray(grids).size else np.asarray(grids).reshape(-1, 3)
                    merge = self._merge(grids, types, ids[j]) if grids is not None else (self.merge_size or 2)
                    positions.append(mrope_position_ids(types, grids, merge, ids[j]))
                out["mrope_position_ids"].append(np.concatenate(positions, axis=1).astype(np.int32))
            if self.has_ids:
                out["id"].append([ids[j] for j in members])
            if self.has_images:
                out["images"].append([im for j in members for im in (images[j] or [])])
        return out


def _code_version() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def pack(
    encoded: Any,
    max_length: int,
    strategy: str = "greedy",
    *,
    on_too_long: str = "raise",
    merge_size: Optional[int] = None,
    batch_size: int = 64,
    num_proc: Optional[int] = None,
    return_report: bool = False,
):
    """Pack encoded rows into a ``Dataset`` of sequences of at most ``max_length`` tokens.

    Args:
        encoded: rows with ``input_ids`` and ``labels`` (a ``Dataset`` from ``ChatTemplateEncoder.map`` or
            :func:`llava_zh.encode`, or a list of such dicts), images as ``pixel_values`` + ``image_grid_thw``
            or as ``images`` references; ``mm_token_type_ids`` (Qwen2-VL family) adds ``mrope_position_ids``.
        max_length: longest packed sequence.
        strategy: ``"greedy"`` (next fit, dataset order) or ``"first_fit"`` (first fit decreasing: fewer packs).
        on_too_long: ``"raise"`` (default, naming the samples) or ``"drop"`` (left out, listed in the report).
        merge_size: spatial merge of the vision tower (Qwen2-VL: 2); by default read from the data
            (patches per image token).
        return_report: return ``(packed, PackReport)``; the efficiency is the share of real tokens.

    Rows of the result: ``input_ids``, ``labels`` (first label of every sample -100), ``position_ids``
    (restarting at 0 per sample), ``mrope_position_ids`` ``(3, length)``, ``mm_token_type_ids``,
    ``seq_lengths``, ``cu_seqlens`` (``[0, n1, n1+n2, ...]``), ``length``, ``sample_index`` (rows of
    ``encoded``), ``id`` (their ids), and the images joined in order (``pixel_values``/``image_grid_thw``,
    ``images``). Cached beside ``encoded``'s cache files under a fingerprint of the data and the options.

    Example:
        >>> packed, report = pack(encoded, 2048, "first_fit", return_report=True)     # doctest: +SKIP
        >>> report.efficiency                                                         # doctest: +SKIP
        0.97
    """
    import datasets
    from datasets.fingerprint import Hasher

    start = time.perf_counter()
    if on_too_long not in ON_TOO_LONG:
        raise ValueError(f"on_too_long must be one of {list(ON_TOO_LONG)}, got {on_too_long!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if isinstance(encoded, datasets.IterableDataset):
        raise TypeError("pack() needs a map-style Dataset (packing looks at every length first)")
    if isinstance(encoded, (list, tuple)):
        encoded = datasets.Dataset.from_list([dict(r) for r in encoded])
    for column in ("input_ids", "labels"):
        if column not in encoded.column_names:
            raise PackingError(f"expected encoded rows with {column!r}, got columns {encoded.column_names}")
    lengths = _lengths(encoded)
    too_long_idx = np.flatnonzero(lengths > max_length).tolist()
    too_long = [(i, sid, int(lengths[i])) for i, sid in zip(too_long_idx, _ids_of(encoded, too_long_idx))]
    if too_long and on_too_long == "raise":
        shown = ", ".join(f"sample {sid!r} (row {i}): {n} tokens" if sid is not None else f"row {i}: {n} tokens"
                          for i, sid, n in too_long[:5])
        raise PackingError(f"{len(too_long)} sample(s) longer than max_length={max_length}: {shown}"
                           f"{' ...' if len(too_long) > 5 else ''}; encode with max_length (truncating whole turns) or "
                           "pass on_too_long='drop'")
    keep = np.flatnonzero(lengths <= max_length)
    bins = [[int(keep[j]) for j in b] for b in assign_packs(lengths[keep], max_length, strategy)] if keep.size else []
    if too_long:
        logger.warning("pack: %d sample(s) longer than max_length=%d left out: %s", len(too_long), max_length,
                       ", ".join(str(sid if sid is not None else i) for i, sid, _ in too_long[:10]))
    mrope = "mm_token_type_ids" in encoded.column_names
    fingerprint = Hasher.hash(["llava_zh.pack", encoded._fingerprint, max_length, strategy, on_too_long, merge_size,
                               _code_version()])
    features = _packed_features(encoded, mrope)
    cache_file = None
    if encoded.cache_files:
        cache_file = os.path.join(os.path.dirname(encoded.cache_files[0]["filename"]), f"pack-{fingerprint}.arrow")
    if cache_file and os.path.exists(cache_file):
        packed = datasets.Dataset.from_file(cache_file)
    else:
        index = datasets.Dataset.from_dict({"sample_index": bins},
                                           features=datasets.Features({"sample_index": datasets.List(datasets.Value("int64"))}))
        packed = index.map(PackRows(encoded, merge_size, mrope), batched=True, batch_size=batch_size, num_proc=num_proc,
                           features=features, remove_columns=["sample_index"], new_fingerprint=fingerprint,
                           cache_file_name=cache_file, desc="Packing")
    report = PackReport(samples=len(lengths), packs=len(bins), max_length=max_length, strategy=strategy,
                        tokens=int(lengths[keep].sum()) if keep.size else 0, too_long=too_long)
    report.seconds = time.perf_counter() - start
    return (packed, report) if return_report else packed


# --------------------------------------------------------------------------------------------------
# collating packed rows into model inputs


def _tensor(value: Any, dtype=None):
    import torch

    if isinstance(value, torch.Tensor):
        return value if dtype is None else value.to(dtype)
    arr = np.asarray(value)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t if dtype is None else t.to(dtype)


class PackedCollator:
    """Turn packed rows into model inputs whose attention stays inside each sample.

    Args:
        processor_or_tokenizer: where the pad token id comes from; with images given as references (rows from
            an :func:`llava_zh.encode` set), also the processor that recomputes their pixels.
        pad_token_id: instead of the tokenizer's.
        attention: ``"mask"``: a 4-D block-diagonal causal mask ``[B, 1, L, L]`` (additive float: 0 inside a
            sample, the dtype's minimum elsewhere) for eager and sdpa attention; ``"positions"``: no mask,
            the restarting position ids alone (transformers builds the same block-diagonal mask from them
            for eager/sdpa and the varlen boundaries for flash-attention 2; memory-light). The batch then holds
            ``use_cache=False``: transformers reads packing from the positions only when it makes no cache.
        mask_dtype: dtype of the 4-D mask (default float32; use the model's dtype for bf16 training);
            ``torch.bool`` gives a boolean mask (True = attend), 4x smaller, for sdpa attention only.
        pad_to_multiple_of: round the padded length of a batch of several packs up.
        reprocessor: an :class:`llava_zh.encoding.ImageReprocessor` for rows holding ``images``
            (default: one built on the processor with ``min_pixels``/``max_pixels``).
        return_cu_seqlens: add ``cu_seqlens`` (int32, over the flattened batch, padding as its own sequence)
            and ``max_seqlen``. They are NOT model inputs: pop them before calling a transformers model (its
            vision tower reads a ``cu_seqlens`` keyword); for custom varlen kernels.

    Output: ``input_ids`` / ``labels`` ``[B, L]`` (B packs, right padded), ``position_ids`` ``[4, B, L]`` for
    the Qwen2-VL family (row 0 the per-sample text positions, rows 1-3 the multimodal rope positions: the
    layout transformers' Qwen2-VL models read for packed inputs) or ``[B, L]`` otherwise, ``attention_mask``
    (``"mask"`` mode), ``mm_token_type_ids``, ``pixel_values``, ``image_grid_thw``.

    Example:
        >>> batch = PackedCollator(processor, attention="mask")([packed[0]])     # doctest: +SKIP
        >>> loss = model(**batch).loss                                            # doctest: +SKIP
    """

    ATTENTION = ("mask", "positions")

    def __init__(self, processor_or_tokenizer: Any = None, *, pad_token_id: Optional[int] = None,
                 attention: str = "mask", mask_dtype: Any = None, pad_to_multiple_of: Optional[int] = None,
                 reprocessor: Any = None, min_pixels: Optional[int] = None, max_pixels: Optional[int] = None,
                 return_cu_seqlens: bool = False) -> None:
        if attention not in self.ATTENTION:
            raise ValueError(f"attention must be one of {list(self.ATTENTION)}, got {attention!r}")
        self.pad_token_id = resolve_pad_token_id(processor_or_tokenizer, pad_token_id)
        self.attention = attention
        self.mask_dtype = mask_dtype
        self.pad_to_multiple_of = pad_to_multiple_of
        self.return_cu_seqlens = return_cu_seqlens
        if reprocessor is None and getattr(processor_or_tokenizer, "image_processor", None) is not None:
            from .encoding import ImageReprocessor

            reprocessor = ImageReprocessor(processor_or_tokenizer, min_pixels=min_pixels, max_pixels=max_pixels)
        self.reprocessor = reprocessor

    def _pixels(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        """A row whose images are references gets its pixels from the image processor."""
        if row.get("pixel_values") is not None or not row.get("images"):
            return row
        if self.reprocessor is None:
            raise ValueError(f"packed row with samples {row.get('id')!r} holds image references but no pixels: give "
                             "PackedCollator the processor (or a reprocessor) to compute them")
        return self.reprocessor(row)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        if not rows:
            raise ValueError("cannot collate an empty batch")
        rows = [self._pixels(r) for r in rows]
        lengths = [len(r["input_ids"]) for r in rows]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        b = len(rows)
        input_ids = torch.full((b, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)
        text_pos = torch.zeros((b, width), dtype=torch.long)
        segments: list[list[int]] = []  # per row: the lengths of its samples, then of its padding
        mrope = all(r.get("mrope_position_ids") is not None for r in rows)
        if mrope:
            rope = torch.zeros((3, b, width), dtype=torch.long)
        types = torch.zeros((b, width), dtype=torch.long) if all("mm_token_type_ids" in r for r in rows) else None
        cu: list[int] = [0]
        for k, r in enumerate(rows):
            n = lengths[k]
            input_ids[k, :n] = _tensor(r["input_ids"], torch.long).reshape(-1)
            labels[k, :n] = _tensor(r["labels"], torch.long).reshape(-1)
            seq = [int(x) for x in np.asarray(r.get("seq_lengths", [n])).reshape(-1)]
            if sum(seq) != n:
                raise ValueError(f"packed row {k}: expected seq_lengths summing to {n} tokens, got {seq}")
            pos = _tensor(r["position_ids"], torch.long).reshape(-1) if r.get("position_ids") is not None else \
                torch.cat([torch.arange(m) for m in seq])
            text_pos[k, :n] = pos
            text_pos[k, n:] = torch.arange(width - n)  # padding: a sequence of its own, starting at 0
            segments.append(seq + ([width - n] if width > n else []))
            if mrope:
                rope[:, k, :n] = _tensor(r["mrope_position_ids"], torch.long).reshape(3, -1)
                rope[:, k, n:] = torch.arange(width - n)
            if types is not None:
                types[k, :n] = _tensor(r["mm_token_type_ids"], torch.long).reshape(-1)
            for m in seq:
                cu.append(cu[-1] + m)
            if width > n:
                cu.append(cu[-1] + width - n)
        batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels}
        batch["position_ids"] = torch.cat([text_pos[None], rope], dim=0) if mrope else text_pos
        if self.attention == "mask":
            dtype = self.mask_dtype or torch.float32
            largest = max((m for blocks in segments for m in blocks), default=1)
            if dtype == torch.bool:  # True = attend (sdpa only: eager adds the mask to the scores)
                causal = torch.ones((largest, largest), dtype=torch.bool).tril_()
                mask = torch.zeros((b, 1, width, width), dtype=torch.bool)
            else:
                blocked = torch.finfo(dtype).min
                causal = torch.full((largest, largest), blocked, dtype=dtype).triu_(1)  # 0 on and below the diagonal
                mask = torch.full((b, 1, width, width), blocked, dtype=dtype)
            for k, blocks in enumerate(segments):  # one causal block per sample (and one for the padding)
                at = 0
                for m in blocks:
                    mask[k, 0, at:at + m, at:at + m] = causal[:m, :m]
                    at += m
            batch["attention_mask"] = mask
        else:
            # transformers looks for packed sequences in the position ids only when no cache is made
            batch["use_cache"] = False
        if types is not None:
            batch["mm_token_type_ids"] = types
        for key in ("pixel_values", "image_grid_thw"):
            present = [r.get(key) for r in rows if r.get(key) is not None and np.asarray(r.get(key)).size]
            if present:
                batch[key] = torch.cat([_tensor(v) for v in present], dim=0)
        if "image_grid_thw" in batch:
            batch["image_grid_thw"] = batch["image_grid_thw"].long()
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].float()
        if self.return_cu_seqlens:
            cu_tensor = torch.tensor(cu, dtype=torch.int32)
            batch["cu_seqlens"] = cu_tensor
            batch["max_seqlen"] = int((cu_tensor[1:] - cu_tensor[:-1]).max())
        return batch


def padded_tokens(lengths: Sequence[int], batch_size: int) -> int:
    """Tokens a padding collator computes when it pads each batch of ``batch_size`` rows to its longest.

    Example:
        >>> padded_tokens([3, 5, 2, 2], 2)
        14
    """
    arr = np.asarray(lengths, dtype=np.int64)
    total = 0
    for s in range(0, arr.size, batch_size):
        part = arr[s:s + batch_size]
        total += int(part.max()) * part.size
    return total


__all__ = ["PackReport", "PackRows", "PackedCollator", "PackingError", "assign_packs", "mrope_position_ids", "pack",
           "padded_tokens"]
