"""Image containers: a folder, zip archives or tar archives, read as original bytes without extracting.

An ``ImageStore`` answers ``get(relative_path) -> bytes | None`` over several containers, in order.
Archive members are found by their full name and also with a single top-level folder stripped, so that
``000000033471.jpg`` finds ``train2017/000000033471.jpg`` inside COCO's ``train2017.zip``.
Archives are read through a compact member index (``MemberIndex``: zip from its central directory, tar
in one pass; both kept in the cache folder, so every process of a parallel preparation opens them in
milliseconds) and ``os.pread``, with no ``zipfile``/``tarfile`` object per read; a compressed tar is
decompressed once into the cache as a plain tar, since gzip has no random access. ``ImageStore.fetch``
reads a whole batch of images straight into one buffer that becomes the Arrow ``binary`` column as is:
names located with array arithmetic (``locate_many``), neighbouring members read by one ``os.preadv``
each run, into a buffer reused once no table holds it (``BufferPool``).

Example:
    >>> store = ImageStore.from_paths(["images/", "more.zip"])          # doctest: +SKIP
    >>> store.get("000000033471.jpg")[:2]                                # doctest: +SKIP
    b'\\xff\\xd8'
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import itertools
import os
import struct
import sys
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Protocol, Sequence, Union

if TYPE_CHECKING:
    import numpy as np

ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz")
INDEX_VERSION = 2


def is_archive(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


#: where a member's bytes lie: an open file descriptor, an offset and a size
Span = tuple[int, int, int]


class Container(Protocol):
    def get(self, name: str) -> Optional[bytes]: ...

    def locate(self, name: str) -> Optional[Union[Span, bytes]]:
        """Where ``name``'s bytes lie in a file (``(fd, offset, size)``), its bytes when they must be
        decoded to be read (a deflated zip member), or None when it is not there."""
        ...

    def lists(self, name: str) -> bool:
        """Whether ``name`` is there, even if its bytes cannot be read."""
        ...

    def names(self) -> Iterable[str]: ...

    def close(self) -> None: ...


def _bytes_of(found: Optional[Union[Span, bytes]]) -> Optional[bytes]:
    """The bytes a ``locate`` answer stands for."""
    if isinstance(found, tuple):
        fd, offset, size = found
        return os.pread(fd, size, offset)
    return found


def _clean(name: str) -> str:
    if "\\" in name:
        name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


class FolderContainer:
    """Images under a folder; a name is joined to the folder (names were checked to stay inside)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def get(self, name: str) -> Optional[bytes]:
        try:
            with open(self.root / _clean(name), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def locate(self, name: str) -> Optional[Union[Span, bytes]]:
        return self.get(name)  # one read per file either way

    def lists(self, name: str) -> bool:
        return (self.root / _clean(name)).is_file()

    def names(self) -> Iterable[str]:
        for p in self.root.rglob("*"):
            if p.is_file():
                yield p.relative_to(self.root).as_posix()

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"folder {self.root}"


class MemberIndex:
    """Archive members by name: their offset, size and kind in numpy arrays, one dict from name to row.

    Compact (about 100 bytes a member, against a kilobyte for ``ZipInfo``/``TarInfo``) and saved to /
    loaded from one ``.npz`` file, so each process of a parallel preparation opens a big archive in a
    few milliseconds. ``kinds`` is archive-specific (zip: method | flags << 16). A name is found as
    written or, when every member sits under one folder, under that folder (COCO's ``train2017/``).
    """

    def __init__(self, names: list[str], offsets, sizes, kinds, originals: Optional[list[str]] = None) -> None:
        import numpy as np

        cleaned = _clean_all(names)
        self.rows = dict(zip(cleaned, range(len(cleaned))))  # a repeated name: the last one wins
        self.names_list = cleaned
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.kinds = np.asarray(kinds, dtype=np.int64)
        self.originals = originals if originals is not None and originals != cleaned else None
        self.top = _single_top(cleaned)

    def find(self, name: str) -> int:
        """Row of ``name``, or -1."""
        name = _clean(name)
        row = self.rows.get(name)
        if row is None and self.top is not None:
            row = self.rows.get(self.top + name)
        return -1 if row is None else row

    def original(self, row: int) -> str:
        return self.originals[row] if self.originals is not None else self.names_list[row]

    def save(self, path: str) -> None:
        import numpy as np

        names = "\0".join(self.names_list)
        originals = "\0".join(self.originals) if self.originals is not None else ""
        separators = max(len(self.names_list) - 1, 0) + max(len(self.originals or ()) - 1, 0)
        if names.count("\0") + originals.count("\0") != separators:  # a NUL inside a member name: not cached
            return  # pragma: no cover
        buf = io.BytesIO()
        np.savez(buf, offsets=self.offsets, sizes=self.sizes, kinds=self.kinds,
                 names=np.frombuffer(names.encode("utf-8", "surrogatepass"), dtype=np.uint8),
                 originals=np.frombuffer(originals.encode("utf-8", "surrogatepass"), dtype=np.uint8),
                 version=np.array([INDEX_VERSION]))
        _atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str) -> Optional["MemberIndex"]:
        import numpy as np

        try:
            with np.load(path) as z:
                if int(z["version"][0]) != INDEX_VERSION:
                    return None
                names = z["names"].tobytes().decode("utf-8", "surrogatepass")
                originals = z["originals"].tobytes().decode("utf-8", "surrogatepass")
                index = cls.__new__(cls)
                index.names_list = names.split("\0") if names else []
                index.rows = dict(zip(index.names_list, range(len(index.names_list))))
                index.offsets, index.sizes, index.kinds = z["offsets"], z["sizes"], z["kinds"]
                index.originals = originals.split("\0") if originals else None
                index.top = _single_top(index.names_list)
                return index
        except (OSError, ValueError, KeyError):
            return None


def _clean_all(names: list[str]) -> list[str]:
    joined = "\0".join(names)
    if "\\" not in joined and "./" not in joined:
        return list(names)
    return [_clean(n) for n in names]


def _single_top(names: list[str]) -> Optional[str]:
    """``"top/"`` when every member sits under the same one folder ``top`` (COCO's ``train2017/``)."""
    if not names:
        return None
    cut = names[0].find("/")
    if cut < 0:
        return None
    top = names[0][: cut + 1]
    return top if sum(map(str.startswith, names, itertools.repeat(top))) == len(names) else None


def _cached_index(path: str, index_dir: Optional[str], build) -> "MemberIndex":
    """The member index of archive ``path`` from ``index_dir`` when kept there, else built and kept."""
    cached = _cache_path(path, index_dir, ".index.npz")
    if cached and os.path.exists(cached):
        index = MemberIndex.load(cached)
        if index is not None:
            return index
    index = build()
    if cached:
        index.save(cached)
    return index


def _cache_path(path: str, index_dir: Optional[str], suffix: str) -> Optional[str]:
    if not index_dir:
        return None
    os.makedirs(index_dir, exist_ok=True)
    return os.path.join(index_dir, f"{Path(path).name}.{_file_key(path)}{suffix}")


_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CENTRAL_SIZE = 46
_LENGTHS = struct.Struct("<HHH")
_LOCAL_LENGTHS = struct.Struct("<HH")


def read_zip_index(path: str) -> MemberIndex:
    """Every file member of a zip, straight from its central directory (zip64 and prepended data
    included), parsed with numpy: no ``ZipInfo`` object per member."""
    import numpy as np

    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        file_size = f.tell()
        tail_size = min(file_size, (1 << 16) + _EOCD.size)
        f.seek(file_size - tail_size)
        tail = f.read(tail_size)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0:
            raise zipfile.BadZipFile(f"{path}: not a zip file (no end of central directory)")
        cd_size, cd_offset = _EOCD.unpack_from(tail, at)[5:7]
        eocd_pos = file_size - tail_size + at
        end_of_cd = eocd_pos
        # zip64: the zip64 end record sits right before its locator, which sits right before ``at``. It
        # may be there even when the classic record's fields are not saturated (Python's zipfile writes
        # one as soon as the central directory starts past 2 GiB), and it then sits between the central
        # directory and ``at``: look for it always, as zipfile does.
        loc = at - _EOCD64_LOCATOR.size
        if loc >= 0 and tail[loc:loc + 4] == b"PK\x06\x07":
            f.seek(eocd_pos - _EOCD64_LOCATOR.size - _EOCD64.size)
            rec = f.read(_EOCD64.size)
            if rec[:4] == b"PK\x06\x06":
                end_of_cd = eocd_pos - _EOCD64_LOCATOR.size - _EOCD64.size
                fields = _EOCD64.unpack(rec)
                cd_size, cd_offset = fields[8], fields[9]
        concat = end_of_cd - cd_size - cd_offset  # bytes prepended to the archive (self-extracting zips)
        f.seek(cd_offset + concat)
        cd = f.read(cd_size)
    raw = np.frombuffer(cd, dtype=np.uint8)
    entry = _central_entries(raw)
    if entry is None:  # the signature also shows up inside some entry: walk the chain one entry at a time
        positions = []
        pos, lengths = 0, _LENGTHS.unpack_from
        while pos + _CENTRAL_SIZE <= len(cd):
            if cd[pos:pos + 4] != b"PK\x01\x02":
                raise zipfile.BadZipFile(f"{path}: bad central directory entry at {cd_offset + pos}")
            positions.append(pos)
            name_len, extra_len, comment_len = lengths(cd, pos + 28)
            pos += _CENTRAL_SIZE + name_len + extra_len + comment_len
        entry = np.asarray(positions, dtype=np.int64)

    def u16(off):
        return raw[entry + off].astype(np.int64) | (raw[entry + off + 1].astype(np.int64) << 8)

    def u32(off):
        return u16(off) | (u16(off + 2) << 16)

    flags, method, csize, size = u16(8), u16(10), u32(20), u32(24)
    name_len, extra_len, offset = u16(28), u16(30), u32(42)
    starts = entry + _CENTRAL_SIZE
    ends = starts + name_len
    raw_names = [cd[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
    joined = b"\0".join(raw_names)
    if joined.isascii() and joined.count(b"\0") == len(raw_names) - 1:
        names = joined.decode("ascii").split("\0") if raw_names else []
    else:
        names = [r.decode("utf-8") if fl & 0x800 else r.decode("cp437") for r, fl in zip(raw_names, flags.tolist())]
    for i in np.flatnonzero((csize == 0xFFFFFFFF) | (size == 0xFFFFFFFF) | (offset == 0xFFFFFFFF)).tolist():
        extra = cd[int(ends[i]):int(ends[i] + extra_len[i])]
        size[i], csize[i], offset[i] = _zip64_extra(extra, int(size[i]), int(csize[i]), int(offset[i]))
    folder = (name_len > 0) & (raw[np.maximum(ends - 1, 0)] == ord("/"))  # a folder's name ends with "/"
    if folder.any():
        keep = np.flatnonzero(~folder)
        names = [names[i] for i in keep.tolist()]
        offset, size, method, flags = offset[keep], size[keep], method[keep], flags[keep]
    return MemberIndex(names, offset + concat, size, method | (flags << 16), originals=names)


def _central_entries(raw):
    """Where the central directory's entries start, found at once: every ``PK\\1\\2`` signature, kept when
    each entry's lengths lead exactly to the next one and the last ends the directory; None when they do
    not (the signature also appears inside a name or field: the caller then walks the chain)."""
    import numpy as np

    n = len(raw)
    if n < _CENTRAL_SIZE:
        return np.zeros(0, dtype=np.int64) if n == 0 else None
    hits = np.flatnonzero((raw[:-3] == 0x50) & (raw[1:-2] == 0x4B) & (raw[2:-1] == 1) & (raw[3:] == 2))
    hits = hits[hits + _CENTRAL_SIZE <= n]
    if not len(hits) or hits[0] != 0:
        return None

    def u16(off):
        return raw[hits + off].astype(np.int64) | (raw[hits + off + 1].astype(np.int64) << 8)

    following = hits + _CENTRAL_SIZE + u16(28) + u16(30) + u16(32)
    if not (np.array_equal(following[:-1], hits[1:]) and following[-1] == n):
        return None
    return hits


def _zip64_extra(extra: bytes, size: int, csize: int, offset: int) -> tuple[int, int, int]:
    """The 64-bit values of a zip64 extra field, in its order: size, compressed size, offset."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 1:
            values = iter(struct.unpack_from(f"<{length // 8}Q", extra, pos + 4))
            if size == 0xFFFFFFFF:
                size = next(values)
            if csize == 0xFFFFFFFF:
                csize = next(values)
            if offset == 0xFFFFFFFF:
                offset = next(values)
            break
        pos += 4 + length
    return size, csize, offset


def _local_lengths(fd: int, header_offset: int) -> Optional[tuple[int, int]]:
    """The name and extra-field lengths of the zip local header at ``header_offset`` (its data starts
    30 + both bytes later), or None when no local header is there."""
    header = os.pread(fd, 30, header_offset)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        return None
    return _LOCAL_LENGTHS.unpack_from(header, 26)


class ZipContainer:
    """Members of a zip archive, found through its central directory.

    The central directory is read into a compact ``MemberIndex`` (kept in ``index_dir`` when given).
    Stored (uncompressed) members, the usual case for JPEGs, are read with ``os.pread`` at the offset
    the local header gives, several times faster than ``ZipFile.read``; deflated or encrypted members go
    through ``zipfile``, opened only when one is asked for.
    """

    def __init__(self, path: str | os.PathLike, index_dir: Optional[str] = None) -> None:
        self.path = str(path)
        self._index = _cached_index(self.path, index_dir, lambda: read_zip_index(self.path))
        self._zip: Optional[zipfile.ZipFile] = None
        self._fd = os.open(self.path, os.O_RDONLY)
        self._extra_guess = 0  # length of the local headers' extra field, learnt (see ``spans``)
        self._name_lengths = None

    def locate(self, name: str) -> Optional[Union[Span, bytes]]:
        row = self._index.find(name)
        return self.locate_row(row) if row >= 0 else None

    def lists(self, name: str) -> bool:
        return self._index.find(name) >= 0

    def locate_row(self, row: int) -> Optional[Union[Span, bytes]]:
        """Where member ``row``'s data lie, its bytes when it must be decompressed, or None when the
        archive lists it but cannot give it (a damaged header, a bad password, a broken stream)."""
        index = self._index
        kind = int(index.kinds[row])
        method, flags = kind & 0xFFFF, kind >> 16
        header_offset = int(index.offsets[row])
        if method == zipfile.ZIP_STORED and not flags & 0x1:
            lengths = _local_lengths(self._fd, header_offset)
            if lengths is not None:
                return (self._fd, header_offset + 30 + sum(lengths), int(index.sizes[row]))
        return self._decompressed(row)

    def _decompressed(self, row: int) -> Optional[bytes]:
        try:
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.path)
            return self._zip.read(self._index.original(row))
        except (zipfile.BadZipFile, zlib.error, RuntimeError, EOFError, OSError, NotImplementedError):
            return None

    def spans(self, rows) -> "Spans":
        """Where the data of many members lie (``Spans``), with no read per member: a stored member's
        data starts after its local header, whose length is its name's plus an extra field that one
        writer makes the same for every member. That extra length is learnt from one real header per
        call; ``heads`` tells ``ImageBatch.read`` to check every header as it reads the data (it reads
        them in the same system call), and to read a member again where the guess was wrong."""
        import numpy as np

        index = self._index
        kinds = index.kinds[rows]
        direct = ((kinds & 0xFFFF) == zipfile.ZIP_STORED) & ((kinds >> 16) & 0x1 == 0)
        heads = np.where(direct, index.offsets[rows], -1)
        offsets = np.full(len(rows), -1, dtype=np.int64)
        sizes = index.sizes[rows].copy()
        if direct.any():
            for k in np.flatnonzero(direct)[:8].tolist():  # learn from the first sound header
                lengths = _local_lengths(self._fd, int(heads[k]))
                if lengths is not None:
                    self._extra_guess = lengths[1]
                    break
            offsets = np.where(direct, heads + 30 + self._name_bytes()[rows] + self._extra_guess, -1)
        inline: dict[int, bytes] = {}
        for k in np.flatnonzero(~direct).tolist():  # deflated or encrypted: through zipfile
            data = self._decompressed(int(rows[k]))
            sizes[k] = len(data) if data is not None else 0  # None: listed, but missing from the batch
            if data is not None:
                inline[k] = data
        return Spans(self._fd, offsets, sizes, inline, heads)

    def _name_bytes(self):
        """Per member, the length in bytes of its name as stored (UTF-8 or cp437, as read)."""
        import numpy as np

        if self._name_lengths is None:
            index = self._index
            names = [index.original(r) for r in range(len(index.offsets))]
            joined = "\0".join(names)
            if joined.isascii():
                self._name_lengths = np.fromiter(map(len, names), dtype=np.int64, count=len(names))
            else:
                flags = index.kinds >> 16
                self._name_lengths = np.array(
                    [len(n.encode("utf-8" if f & 0x800 else "cp437", "replace")) for n, f in zip(names, flags.tolist())],
                    dtype=np.int64,
                )
        return self._name_lengths

    def get(self, name: str) -> Optional[bytes]:
        return _bytes_of(self.locate(name))

    def names(self) -> Iterable[str]:
        return list(self._index.rows)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"zip {self.path}"


def _file_key(path: str) -> str:
    st = os.stat(path)
    raw = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{INDEX_VERSION}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_tar_index(path: str) -> MemberIndex:
    """One pass over a plain tar: every file member's data offset and size.

    The 512-byte headers are parsed directly (about ten times faster than ``tarfile``, which builds a
    ``TarInfo`` per member); an archive holding anything this reader does not handle (pax or GNU
    long-name records, sparse files, a bad checksum, a size in base-256) is indexed by ``tarfile``.
    """
    found = _scan_tar_headers(path)
    if found is None:
        return _tarfile_index(path)
    names, offsets, sizes = found
    return MemberIndex(names, offsets, sizes, [0] * len(names))


#: archives smaller than this are indexed or decompressed without a progress bar (it takes seconds at most)
_BAR_FROM_BYTES = 1 << 30


def _bytes_bar(total: int, desc: str):
    """A tqdm bar in bytes for a one-time pass over a big archive (shown on a terminal only)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False,
                disable=True if total < _BAR_FROM_BYTES else None)


def _tarfile_index(path: str) -> MemberIndex:
    names, offsets, sizes = [], [], []
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if member.isfile():
                names.append(member.name)
                offsets.append(member.offset_data)
                sizes.append(member.size)
    return MemberIndex(names, offsets, sizes, [0] * len(names))


#: tar type flags of headers followed by ``size`` bytes of member data, and of those without data
_TAR_FILE, _TAR_NO_DATA = (b"0", b"\0", b"7"), (b"1", b"2", b"3", b"4", b"5", b"6")
_TAR_BLOCK = 512


def _scan_tar_headers(path: str) -> Optional[tuple[list[str], list[int], list[int]]]:
    """(names, data offsets, sizes) of the regular files of a plain ustar/GNU/v7 tar, read header by
    header; None when a header needs ``tarfile`` (see ``build_tar_index``)."""
    names: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []
    headers: list[bytes] = []
    checksums: list[int] = []
    end = os.path.getsize(path)
    bar = _bytes_bar(end, f"indexing {os.path.basename(path)}")
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        zero = bytes(_TAR_BLOCK)
        while pos + _TAR_BLOCK <= end:
            if len(headers) % 4096 == 0:
                bar.update(pos - bar.n)
            header = os.pread(fd, _TAR_BLOCK, pos)
            if header == zero:  # end-of-archive marker
                break
            kind = header[156:157]
            if kind not in _TAR_FILE and kind not in _TAR_NO_DATA:
                return None  # pax / GNU long name / sparse / vendor records
            try:
                size = int(header[124:136].rstrip(b"\0 ").decode("ascii") or "0", 8)
                checksums.append(int(header[148:156].rstrip(b"\0 ").decode("ascii") or "0", 8))
            except (UnicodeDecodeError, ValueError):
                return None  # base-256 numbers or a damaged header
            headers.append(header)
            name = header[:100].split(b"\0", 1)[0]
            if kind == b"\0" and name.endswith(b"/"):  # a v7 directory
                kind = b"5"
            if kind in _TAR_FILE:
                prefix = header[345:500].split(b"\0", 1)[0]
                if prefix:
                    if not (header[257:262] == b"ustar" and header[263:265] == b"00"):
                        return None  # not POSIX ustar: tarfile decides what those bytes mean
                    name = prefix + b"/" + name
                try:
                    text = name.decode("utf-8")
                except UnicodeDecodeError:
                    return None  # tarfile's own decoding rules apply
                names.append(text)
                offsets.append(pos + _TAR_BLOCK)
                sizes.append(size)
                pos += _TAR_BLOCK + -(-size // _TAR_BLOCK) * _TAR_BLOCK
            else:
                pos += _TAR_BLOCK
    finally:
        os.close(fd)
        bar.close()
    if headers:  # every checksum at once: the sum of the header's bytes, its checksum field read as spaces
        import numpy as np

        blocks = np.frombuffer(b"".join(headers), dtype=np.uint8).reshape(len(headers), _TAR_BLOCK)
        sums = blocks[:, :148].sum(axis=1, dtype=np.int64) + blocks[:, 156:].sum(axis=1, dtype=np.int64) + 8 * 32
        if not np.array_equal(sums, np.asarray(checksums, dtype=np.int64)):
            return None
    return names, offsets, sizes


class TarContainer:
    """Members of a tar archive read with ``os.pread`` through an offset index kept in ``index_dir``."""

    def __init__(self, path: str | os.PathLike, index_dir: Optional[str] = None) -> None:
        self.path = str(path)
        self.index_dir = index_dir
        self._plain = self._plain_tar()
        self._index = _cached_index(self.path, index_dir, lambda: build_tar_index(self._plain))
        self._fd = os.open(self._plain, os.O_RDONLY)

    def _plain_tar(self) -> str:
        if not self.path.lower().endswith((".tar.gz", ".tgz")):
            return self.path
        target = _cache_path(self.path, self.index_dir, ".tar")
        if target is None:
            raise ValueError(f"{self.path}: a compressed tar needs a cache folder to be read (index_dir)")
        if not os.path.exists(target):
            tmp = f"{target}.tmp.{os.getpid()}"
            with open(self.path, "rb") as raw, gzip.GzipFile(fileobj=raw) as src, open(tmp, "wb") as dst, \
                    _bytes_bar(os.fstat(raw.fileno()).st_size, f"decompressing {os.path.basename(self.path)}") as bar:
                while True:
                    block = src.read(8 << 20)
                    if not block:
                        break
                    dst.write(block)
                    bar.update(raw.tell() - bar.n)
            os.replace(tmp, target)
        return target

    def locate(self, name: str) -> Optional[Union[Span, bytes]]:
        row = self._index.find(name)
        return self.locate_row(row) if row >= 0 else None

    def lists(self, name: str) -> bool:
        return self._index.find(name) >= 0

    def locate_row(self, row: int) -> Span:
        return (self._fd, int(self._index.offsets[row]), int(self._index.sizes[row]))

    def spans(self, rows) -> "Spans":
        """Where the data of many members lie (``Spans``), straight from the index."""
        return Spans(self._fd, self._index.offsets[rows], self._index.sizes[rows], {}, None)

    def get(self, name: str) -> Optional[bytes]:
        return _bytes_of(self.locate(name))

    def names(self) -> Iterable[str]:
        return list(self._index.rows)

    def close(self) -> None:
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"tar {self.path}"


def open_container(path: str | os.PathLike, index_dir: Optional[str] = None) -> Container:
    """Open a folder, zip or tar as a container (dispatch on what the path is)."""
    path = str(path)
    if os.path.isdir(path):
        return FolderContainer(path)
    lower = path.lower()
    if lower.endswith(".zip"):
        return ZipContainer(path, index_dir=index_dir)
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        return TarContainer(path, index_dir=index_dir)
    raise ValueError(f"{path}: not an image container; expected a folder or one of {', '.join(ARCHIVE_SUFFIXES)}")


@dataclasses.dataclass
class Spans:
    """Where some members of one archive lie: data ``offsets`` and ``sizes`` in file ``fd``, ``inline``
    bytes (by position) for members that had to be decoded, and, for zip members, ``heads``: the offset
    of the local header that ``offsets`` was worked out from (-1 where none), to be checked on reading."""

    fd: int
    offsets: "np.ndarray"
    sizes: "np.ndarray"
    inline: dict[int, bytes]
    heads: Optional["np.ndarray"]


class Located:
    """Where the images of a batch lie, one entry per requested name: ``fds[i]``/``offsets[i]``/
    ``sizes[i]`` for bytes to read straight from a file, ``inline[i]`` for bytes already decoded (a
    deflated zip member, a file of a folder), neither when the image was not found; ``heads[i]``, where
    not -1, is the zip local header ``offsets[i]`` was worked out from (see ``ZipContainer.spans``)."""

    __slots__ = ("fds", "offsets", "sizes", "inline", "heads", "listed")

    def __init__(self, n: int) -> None:
        import numpy as np

        self.fds = np.full(n, -1, dtype=np.int64)
        self.offsets = np.zeros(n, dtype=np.int64)
        self.sizes = np.zeros(n, dtype=np.int64)
        self.inline: dict[int, bytes] = {}
        self.heads = np.full(n, -1, dtype=np.int64)  # zip local header each offset was worked out from
        self.listed = np.zeros(n, dtype=bool)  # the name is in a container (its bytes may still fail to read)

    @classmethod
    def from_list(cls, located: Sequence[Optional[Union[Span, bytes]]]) -> "Located":
        """From one ``Container.locate`` answer per image."""
        out = cls(len(located))
        for i, loc in enumerate(located):
            if isinstance(loc, tuple):
                out.fds[i], out.offsets[i], out.sizes[i] = loc
            elif loc is not None:
                out.inline[i] = loc
                out.sizes[i] = len(loc)
        out.listed = out.found
        return out

    def __len__(self) -> int:
        return len(self.fds)

    def slice(self, start: int, stop: int) -> "Located":
        """Entries ``start:stop`` (views of the arrays, not copies), to read a batch in pieces."""
        out = Located.__new__(Located)
        for name in ("fds", "offsets", "sizes", "heads", "listed"):
            setattr(out, name, getattr(self, name)[start:stop])
        out.inline = {i - start: raw for i, raw in self.inline.items() if start <= i < stop}
        return out

    @property
    def found(self):
        found = self.fds >= 0
        if self.inline:
            found[list(self.inline)] = True
        return found

    @property
    def nbytes(self) -> int:
        return int(self.sizes.sum())


class ImageBatch:
    """Images read into one contiguous buffer: image ``i`` is ``data[offsets[i]:offsets[i + 1]]``
    when ``found[i]``. ``array(rows)`` makes the Arrow ``binary`` column of some of them without
    copying the bytes again."""

    def __init__(self, data, offsets, found) -> None:
        self.data, self.offsets, self.found = data, offsets, found
        self._view = memoryview(data)

    @classmethod
    def read(cls, located: Union[Located, Sequence[Optional[Union[Span, bytes]]]], pool: Optional["BufferPool"] = None) -> "ImageBatch":
        """Read every located image into one buffer (from ``pool`` when given, else newly allocated).

        Images of the same file are read in file order, a run of neighbours with one ``os.preadv`` whose
        buffers are the images' places in the batch (the bytes between them, headers and padding, go to a
        scratch buffer): one system call for hundreds of images, and no copy but the kernel's.
        """
        import numpy as np

        if not isinstance(located, Located):
            located = Located.from_list(located)
        sizes = located.sizes
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        # not zeroed: every byte is read into
        data = pool.take(int(offsets[-1])) if pool is not None else np.empty(int(offsets[-1]), dtype=np.uint8)
        view = memoryview(data)
        found = located.found
        for i, raw in located.inline.items():
            view[int(offsets[i]):int(offsets[i + 1])] = raw
        direct = located.fds >= 0
        for fd in np.unique(located.fds[direct]).tolist():
            at = np.flatnonzero(located.fds == fd)
            heads = located.heads[at]
            ok = _gather_read(fd, located.offsets[at], sizes[at], offsets[at], view, heads if (heads >= 0).any() else None)
            found[at[~ok]] = False  # the archive changed under us: treat as missing
        return cls(data, offsets, found)

    def __len__(self) -> int:
        return len(self.found)

    def get(self, i: int) -> Optional[memoryview]:
        return self._view[int(self.offsets[i]):int(self.offsets[i + 1])] if self.found[i] else None

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def array(self, rows):
        """The ``binary`` Arrow array of images ``rows`` (empty for one not found), sharing this batch's
        buffer when ``rows`` follow each other in it (no copy)."""
        import numpy as np
        import pyarrow as pa

        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return pa.array([], type=pa.binary())
        if int(self.offsets[rows[-1] + 1] - self.offsets[rows[0]]) < (1 << 31) and np.array_equal(
            self.offsets[rows[1:]], self.offsets[rows[:-1] + 1]
        ):  # contiguous: one slice of the buffer, no copy
            base = int(self.offsets[rows[0]])
            offsets = np.append(self.offsets[rows], self.offsets[rows[-1] + 1]) - base
            buffer = pa.py_buffer(self.data)
            data = buffer.slice(base, int(offsets[-1]))
            return pa.Array.from_buffers(pa.binary(), len(rows), [None, pa.py_buffer(offsets.astype(np.int32)), data])
        return pa.array([bytes(self.get(i) or b"") for i in rows], type=pa.binary())


class BufferPool:
    """Big read buffers reused once nothing refers to them any more.

    Why: a new multi-megabyte buffer is mapped fresh by the allocator, and every 4 KB page of it faults on
    first touch; reading images into new buffers ran at a fifth of the speed of a plain read into a reused
    one. A buffer is handed out again only when its reference count shows that no view, memoryview or
    Arrow buffer made from it is alive (Arrow keeps the exporting array alive through the buffer protocol),
    so tables a caller keeps (streaming, ``Dataset.from_generator``) are never overwritten: they simply
    cost a fresh buffer. At most ``keep`` buffers are held; the pool is meant for one producing thread.

    Example:
        >>> pool = BufferPool()
        >>> a = pool.take(10); a[:] = 1
        >>> b = pool.take(10)          # a is still alive: another buffer
        >>> b is not a and len(b) == 10
        True
    """

    #: references to a free pooled buffer seen by ``sys.getrefcount``: the pool's list and the call's argument
    _FREE_REFS = 2

    def __init__(self, keep: int = 4, granule: int = 8 << 20) -> None:
        self.keep, self.granule = keep, granule
        self._buffers: list = []
        self._lock = threading.Lock()

    def take(self, nbytes: int):
        """A ``uint8`` array of ``nbytes`` (contents undefined) backed by a free pooled buffer if any."""
        import numpy as np

        with self._lock:
            buffers = self._buffers
            for k in range(len(buffers)):  # no loop variable holding a buffer: it would count as a reference
                if sys.getrefcount(buffers[k]) == self._FREE_REFS:
                    if len(buffers[k]) < nbytes:  # too small: replace it by one that fits, rounded up
                        buffers[k] = np.empty(self._rounded(nbytes), dtype=np.uint8)
                    return buffers[k][:nbytes]
            if len(self._buffers) < self.keep:
                self._buffers.append(np.empty(self._rounded(nbytes), dtype=np.uint8))
                return self._buffers[-1][:nbytes]
        return np.empty(nbytes, dtype=np.uint8)

    def _rounded(self, nbytes: int) -> int:
        return max(self.granule, -(-nbytes // self.granule) * self.granule)

    def clear(self) -> None:
        with self._lock:
            self._buffers.clear()


#: bytes between two images (headers, padding) that still join them into one read: reading past them
#: costs less than another system call
_MAX_GAP = 64 << 10
def _iov_max() -> int:
    """Buffers one ``preadv`` may take (POSIX guarantees 16; Linux allows 1024)."""
    try:
        limit = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        limit = -1
    return min(limit, 1024) if limit >= 16 else 16


_IOV_MAX = _iov_max()


def _gather_read(fd: int, file_offsets, sizes, places, view: memoryview, heads=None):
    """Read ``sizes[k]`` bytes at ``file_offsets[k]`` of ``fd`` into ``view[places[k]:]`` for every k;
    True where the whole image was read.

    Neighbours in the file are read by one ``os.preadv`` whose buffers are the images' places, the bytes
    between them going to a scratch buffer. With ``heads`` (zip local header offsets, -1 for none), each
    header is read in the same call and checked: where it does not lead to ``file_offsets[k]`` (the
    offset was a guess), the image is read again from where the header says.
    """
    import numpy as np

    ok = np.ones(len(sizes), dtype=bool)
    preadv = getattr(os, "preadv", None)  # missing on a few systems: then image by image
    order = np.argsort(file_offsets, kind="stable")
    starts, lengths, at = file_offsets[order], sizes[order], places[order]
    ends = starts + lengths
    begins = starts if heads is None else np.where(heads[order] >= 0, heads[order], starts)  # where a read of k starts
    gaps = np.empty(len(order), dtype=np.int64)
    gaps[:-1] = begins[1:] - ends[:-1]
    gaps[-1:] = -1
    # a run ends at a gap too big to read through, or before an image that overlaps the previous one
    # (the same member twice in a batch)
    last = (gaps < 0) | (gaps > _MAX_GAP)
    lead = (starts - begins).tolist()  # header bytes read before an image's data
    scratch = memoryview(bytearray(sum(lead) + int(np.where(last, 0, gaps).sum())))
    head_at = np.full(len(order), -1, dtype=np.int64)  # where each header landed in ``scratch``
    begins_l, starts_l, lengths_l, at_l, gaps_l, last_l = (
        begins.tolist(), starts.tolist(), lengths.tolist(), at.tolist(), gaps.tolist(), last.tolist())
    k, n, per_call, cursor = 0, len(order), _IOV_MAX // 3, 0  # up to 3 buffers an image
    while k < n:
        first, buffers = k, []
        while True:
            if lead[k]:
                head_at[k] = cursor
                buffers.append(scratch[cursor:cursor + lead[k]])
                cursor += lead[k]
            buffers.append(view[at_l[k]:at_l[k] + lengths_l[k]])
            if last_l[k] or k - first + 1 >= per_call:
                break
            if gaps_l[k]:
                buffers.append(scratch[cursor:cursor + gaps_l[k]])
                cursor += gaps_l[k]
            k += 1
        want = ends[k] - begins_l[first]
        if preadv is None or preadv(fd, buffers, begins_l[first]) != want:  # short: find out image by image
            for j in range(first, k + 1):
                got = _read_into(fd, view[at_l[j]:at_l[j] + lengths_l[j]], starts_l[j])
                ok[order[j]] = got == lengths_l[j]
                head_at[j] = -1 if heads is None or heads[order[j]] < 0 else -2  # -2: check it again below
        k += 1
    if heads is not None:
        _check_zip_headers(fd, np.frombuffer(scratch, dtype=np.uint8), head_at, begins, starts, lengths, at, order, view, ok)
    return ok


def _check_zip_headers(fd, scratch, head_at, begins, starts, lengths, at, order, view, ok) -> None:
    """Every zip local header read along with the data must lead to the data offset that was guessed;
    an image whose header says otherwise is read again from the right place (not found if it cannot be)."""
    import numpy as np

    checked = np.flatnonzero(head_at >= 0)
    p = head_at[checked]
    signature = (scratch[p] == 0x50) & (scratch[p + 1] == 0x4B) & (scratch[p + 2] == 3) & (scratch[p + 3] == 4)
    name_len = scratch[p + 26].astype(np.int64) | (scratch[p + 27].astype(np.int64) << 8)
    extra_len = scratch[p + 28].astype(np.int64) | (scratch[p + 29].astype(np.int64) << 8)
    right = signature & (30 + name_len + extra_len == (starts - begins)[checked])
    again = np.concatenate([checked[~right], np.flatnonzero(head_at == -2)])
    for j in again.tolist():
        header = _local_lengths(fd, int(begins[j]))
        if header is None:
            ok[order[j]] = False
            continue
        data_at = int(begins[j]) + 30 + sum(header)
        if data_at == int(starts[j]) and ok[order[j]]:
            continue  # read one by one from the right place already
        size = int(lengths[j])
        ok[order[j]] = _read_into(fd, view[int(at[j]):int(at[j]) + size], data_at) == size


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    """``os.preadv`` into ``view`` (``os.pread`` and a copy where preadv is missing); bytes read."""
    if hasattr(os, "preadv"):
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                break
            done += n
        return done
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


_ROW_BITS = 40


class ImageStore:
    """Several containers searched in order; opened lazily so the store can cross process boundaries.

    The archives that open the list (a local folder's archives come before the folder itself) answer
    through one dict (built once, in the order of the containers, so the first container holding a name
    still wins): a lookup is one dict access however many shards there are. A name none of them has is
    then looked for in the remaining containers, one by one, in order.
    """

    def __init__(self, paths: Sequence[str], index_dir: Optional[str] = None) -> None:
        self.paths = [str(p) for p in paths]
        self.index_dir = index_dir
        self._containers: Optional[list[Container]] = None
        self._combined: Optional[dict] = None
        self._tail: list[Container] = []
        self.pool = BufferPool()

    @classmethod
    def from_paths(cls, paths: Sequence[str], index_dir: Optional[str] = None) -> "ImageStore":
        return cls(paths, index_dir=index_dir)

    @property
    def containers(self) -> list[Container]:
        if self._containers is None:
            self._containers = [open_container(p, self.index_dir) for p in self.paths]
        return self._containers

    def _lookup(self) -> dict:
        """name -> container << 40 | row over the archives that open the list of containers (those after
        the first folder are searched one by one, with it, in ``self._tail``)."""
        if self._combined is None:
            containers = self.containers
            lead = 0
            while lead < len(containers) and isinstance(containers[lead], (ZipContainer, TarContainer)):
                lead += 1
            self._tail = containers[lead:]
            if lead == 1 and containers[0]._index.top is None:  # one archive: its own dict already says it
                self._combined = containers[0]._index.rows
                return self._combined
            combined: dict = {}
            for k in reversed(range(lead)):  # earlier containers overwrite later ones
                index = containers[k]._index
                base = k << _ROW_BITS
                names = index.names_list
                rows = range(base, base + len(names))
                if index.top is not None:  # the names without the one top folder answer too, after the full ones
                    cut = len(index.top)
                    combined.update(zip([n[cut:] for n in names], rows))
                combined.update(zip(names, rows))
            self._combined = combined
        return self._combined

    def get(self, name: str) -> Optional[bytes]:
        return _bytes_of(self.locate(name))

    def locate(self, name: str) -> Optional[Union[Span, bytes]]:
        hit = self._lookup().get(_clean(name))
        if hit is not None:
            return self._containers[hit >> _ROW_BITS].locate_row(hit & ((1 << _ROW_BITS) - 1))
        for container in self._tail:
            found = container.locate(name)
            if found is not None:
                return found
        return None

    def lists(self, name: str) -> bool:
        """Whether some container has ``name``, readable or not."""
        return self._lookup().get(_clean(name)) is not None or any(c.lists(name) for c in self._tail)

    def locate_many(self, names: Sequence[Optional[str]]) -> Located:
        """Where many images lie (``Located``); a name that is None or not found is left empty.
        Over archives this is one dict access per name and array arithmetic per archive."""
        import numpy as np

        combined = self._lookup()
        present = [n for n in names if n is not None]
        joined = "\0".join(present)
        if "\\" in joined or "./" in joined:
            names = [_clean(n) if n is not None else None for n in names]
        get = combined.get
        hits = np.array([-1 if n is None else get(n, -1) for n in names], dtype=np.int64)
        located = Located(len(hits))
        found = hits >= 0
        containers = hits >> _ROW_BITS
        for k in np.unique(containers[found]).tolist():
            at = np.flatnonzero(found & (containers == k))
            spans = self._containers[k].spans(hits[at] & ((1 << _ROW_BITS) - 1))
            located.listed[at] = True
            located.fds[at] = np.where(spans.offsets >= 0, spans.fd, -1)  # -1: inline, or unreadable
            located.offsets[at], located.sizes[at] = spans.offsets, spans.sizes
            if spans.heads is not None:
                located.heads[at] = spans.heads
            for j, raw in spans.inline.items():
                located.inline[int(at[j])] = raw
        if self._tail:  # names no leading archive has: the other containers, one name at a time, in order
            for i in np.flatnonzero(~found & np.array([n is not None for n in names], dtype=bool)).tolist():
                for container in self._tail:
                    loc = container.locate(names[i])
                    if loc is None:
                        continue
                    located.listed[i] = True
                    if isinstance(loc, tuple):
                        located.fds[i], located.offsets[i], located.sizes[i] = loc
                    else:
                        located.inline[i], located.sizes[i] = loc, len(loc)
                    break
                else:
                    located.listed[i] = any(c.lists(names[i]) for c in self._tail)
        return located

    def fetch(self, names: Sequence[Optional[str]]) -> "ImageBatch":
        """The bytes of many images read straight into one buffer (one copy, no object per image);
        a name that is None or not found is missing from the batch."""
        return ImageBatch.read(self.locate_many(names), self.pool)

    def describe(self) -> str:
        return ", ".join(self.paths) if self.paths else "no image container"

    def close(self) -> None:
        for c in self._containers or []:
            c.close()
        self._containers = None
        self._combined = None
        self._tail = []
        self.pool.clear()

    def __getstate__(self):
        return {"paths": self.paths, "index_dir": self.index_dir, "_containers": None, "_combined": None, "_tail": []}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.pool = BufferPool()

    def __enter__(self) -> "ImageStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
