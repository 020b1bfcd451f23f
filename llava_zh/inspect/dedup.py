"""Duplicate detection: exact digests, and MinHash with LSH for near-duplicates over character n-grams.

Chinese has no spaces between words, so texts are compared as sets of overlapping character n-grams
(shingles) rather than words. Two texts' Jaccard similarity (shared shingles / all shingles) is
estimated by the share of equal entries in their MinHash signatures (``num_perm`` minima of independent
hash permutations). ``MinHashIndex`` finds earlier signatures that may be similar with locality-sensitive
hashing: a signature is cut into ``bands`` bands of ``rows`` entries, and texts with an equal band land in
the same bucket; each candidate is then checked against the threshold with the full signature.

With the defaults (128 permutations, 8 bands of 5 rows) a pair at Jaccard 0.9 becomes a candidate with
probability 0.9995 and one at 0.8 with 0.96; candidates under the threshold are rejected by the check.
Memory per stored text: the signature (4 bytes a permutation) and one dict entry per band, about 1.2 KB
(some 700 MB for 600k distinct answers). The estimate's standard error is sqrt(J(1-J)/num_perm), 0.035
at J=0.8 with 128 permutations.

Everything is numpy and hashlib with fixed seeds (no per-process salt), so results are reproducible.

Example:
    >>> a = "图中有一只橘色的猫趴在窗台上晒太阳，旁边放着一盆绿萝，窗外是蓝天白云，阳光洒在木质地板上。"
    >>> index = MinHashIndex(threshold=0.7)
    >>> index.add(minhash(a), "first")
    >>> index.query(minhash(a.replace("橘色", "黑色")))[0]
    'first'
    >>> index.query(minhash("这张照片展示了一条繁忙的城市街道，路上有许多汽车和行人。")) is None
    True
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from typing import Any, Hashable, Optional

import numpy as np

_SPACE_RE = re.compile(r"\s+")
_PRIME = np.uint64(0x100000001B3)  # FNV prime: the base of the rolling polynomial over code points


def digest(data: bytes | str) -> bytes:
    """A 16-byte BLAKE2b digest, used as the key for exact duplicates (bytes of images, texts)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.blake2b(data, digest_size=16).digest()


def normalize_text(text: str) -> str:
    """NFKC (full-width -> half-width), case-folded, white space removed: the form near-dup compares."""
    return _SPACE_RE.sub("", unicodedata.normalize("NFKC", text).casefold())


def _mix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, vectorised: spreads every input bit over all 64 output bits."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def shingle_hashes(text: str, ngram: int = 3) -> np.ndarray:
    """64-bit hashes of the overlapping ``ngram``-character shingles of ``text`` (one per position).

    A text shorter than ``ngram`` is one shingle; an empty text has none.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be at least 1; got {ngram}")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if codes.size == 0:
        return codes
    n = min(ngram, codes.size)
    count = codes.size - n + 1
    h = np.zeros(count, dtype=np.uint64)
    for j in range(n):  # wrapping polynomial hash of each window
        h = h * _PRIME + codes[j : j + count] + np.uint64(1)
    return _mix64(h)


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a[:, None], b[:, None]


_PERMUTATIONS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def minhash(text: str, ngram: int = 5, num_perm: int = 128, seed: int = 1, normalize: bool = True) -> Optional[np.ndarray]:
    """The MinHash signature (``num_perm`` uint32) of the set of ``ngram``-character shingles of ``text``.

    Texts are compared after ``normalize_text`` unless ``normalize=False``. None for an empty text.
    Each permutation is a multiply-shift hash ``(a * h + b) >> 32`` of the 64-bit shingle hash ``h``.
    """
    hashes = shingle_hashes(normalize_text(text) if normalize else text, ngram)
    if hashes.size == 0:
        return None
    hashes = np.unique(hashes)
    key = (num_perm, seed)
    if key not in _PERMUTATIONS:
        _PERMUTATIONS[key] = _permutations(num_perm, seed)
    a, b = _PERMUTATIONS[key]
    return ((a * hashes[None, :] + b) >> np.uint64(32)).min(axis=1).astype(np.uint32)


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Share of equal signature entries: an unbiased estimate of the two shingle sets' Jaccard similarity."""
    return float(np.count_nonzero(sig_a == sig_b)) / sig_a.size


def shingle_jaccard(a: str, b: str, ngram: int = 5, normalize: bool = True) -> float:
    """The exact Jaccard similarity of two texts' shingle sets (for checks and tests; slow on big texts)."""
    sa = set(shingle_hashes(normalize_text(a) if normalize else a, ngram).tolist())
    sb = set(shingle_hashes(normalize_text(b) if normalize else b, ngram).tolist())
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def lsh_parameters(threshold: float, num_perm: int = 128, max_bands: int = 8, recall: float = 0.95) -> tuple[int, int]:
    """``(bands, rows)`` for LSH: the most rows per band (fewest false candidates) such that a pair at
    Jaccard ``threshold`` is a candidate with probability >= ``recall``, using at most ``max_bands`` bands
    (memory: one dict entry per band per text) and ``num_perm`` permutations.

    Example:
        >>> lsh_parameters(0.8)
        (8, 5)
        >>> lsh_parameters(0.9)
        (8, 11)
    """
    best: Optional[tuple[int, int]] = None
    for rows in range(1, num_perm + 1):
        p = threshold**rows
        bands = 1 if p >= 1.0 else math.ceil(math.log(1.0 - recall) / math.log1p(-p))
        if bands > max_bands or bands * rows > num_perm:
            break
        best = (bands, rows)
    if best is None:
        raise ValueError(
            f"a threshold of {threshold} needs more than {max_bands} LSH bands to find {recall:.0%} of the pairs; "
            f"pass a larger max_bands (more memory), or give bands and rows"
        )
    return best


class MinHashIndex:
    """Signatures seen so far, answering "is an earlier text at estimated Jaccard >= ``threshold``?".

    ``bands`` and ``rows`` default to ``lsh_parameters(threshold, num_perm, max_bands)``; at the default
    threshold 0.8 that is 8 bands of 5 rows, making a pair a candidate with probability
    ``1 - (1 - J**5)**8``: 0.96 at J=0.8, 0.9995 at J=0.9, 0.22 at J=0.5 (candidates below the threshold are
    then rejected by the full-signature estimate). Thresholds under about 0.6 leave few rows per band,
    so many texts of the same genre become candidates: slow on large data.

    Example:
        >>> index = MinHashIndex(threshold=0.8)
        >>> sig = minhash("一只猫坐在红色的沙发上看着窗外的小鸟")
        >>> index.query(sig) is None
        True
        >>> index.add(sig, 7)
        >>> index.query(sig)
        (7, 1.0)
    """

    def __init__(
        self,
        threshold: float = 0.8,
        num_perm: int = 128,
        bands: Optional[int] = None,
        rows: Optional[int] = None,
        max_bands: int = 8,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be within (0, 1]; got {threshold}")
        if bands is None or rows is None:
            auto_bands, auto_rows = lsh_parameters(threshold, num_perm, max_bands)
            bands = auto_bands if bands is None else bands
            rows = auto_rows if rows is None else rows
        if bands < 1 or rows < 1 or bands * rows > num_perm:
            raise ValueError(f"bands * rows must be within [1, num_perm={num_perm}]; got {bands} * {rows}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands = bands
        self.rows = rows
        self._tables: list[dict[int, Any]] = [{} for _ in range(bands)]  # band key -> slot or list of slots
        self._signatures = np.zeros((1024, num_perm), dtype=np.uint32)
        self._keys: list[Hashable] = []
        rng = np.random.default_rng(7)
        self._band_multipliers = rng.integers(1, 2**63, size=rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._last: Optional[tuple[np.ndarray, list[int]]] = None

    def __len__(self) -> int:
        return len(self._keys)

    def _band_keys(self, signature: np.ndarray) -> list[int]:
        """One 64-bit key per band: a random linear combination of the band's values, then mixed.

        The keys of the last signature are kept, so that ``add`` after ``query`` does not compute them again.
        """
        if self._last is not None and self._last[0] is signature:
            return self._last[1]
        if signature.shape != (self.num_perm,):
            raise ValueError(f"signature must have {self.num_perm} entries; got shape {signature.shape}")
        bands = signature[: self.bands * self.rows].astype(np.uint64).reshape(self.bands, self.rows)
        keys = _mix64((bands * self._band_multipliers).sum(axis=1, dtype=np.uint64)).tolist()
        self._last = (signature, keys)
        return keys

    def query(self, signature: np.ndarray) -> Optional[tuple[Hashable, float]]:
        """The earliest stored key at estimated Jaccard >= threshold, with that estimate; else None."""
        candidates: set[int] = set()
        for band_key, table in zip(self._band_keys(signature), self._tables):
            found = table.get(band_key)
            if found is None:
                continue
            if isinstance(found, list):
                candidates.update(found)
            else:
                candidates.add(found)
        if not candidates:
            return None
        slots = np.fromiter(sorted(candidates), dtype=np.int64, count=len(candidates))
        similarity = np.count_nonzero(self._signatures[slots] == signature[None, :], axis=1) / self.num_perm
        hits = np.flatnonzero(similarity >= self.threshold)
        if hits.size == 0:
            return None
        first = hits[0]  # slots are sorted: the earliest stored text wins
        return self._keys[int(slots[first])], float(similarity[first])

    def add(self, signature: np.ndarray, key: Hashable) -> None:
        band_keys = self._band_keys(signature)
        slot = len(self._keys)
        if slot == self._signatures.shape[0]:
            grown = np.zeros((2 * slot, self.num_perm), dtype=np.uint32)
            grown[:slot] = self._signatures
            self._signatures = grown
        self._signatures[slot] = signature
        self._keys.append(key)
        for band_key, table in zip(band_keys, self._tables):
            found = table.get(band_key)
            if found is None:
                table[band_key] = slot
            elif isinstance(found, list):
                found.append(slot)
            else:
                table[band_key] = [found, slot]
