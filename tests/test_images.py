"""Image containers: folder, zip, tar, tar.gz; original bytes; COCO-style top-folder aliases; cached tar index;
the tar header scanner against tarfile; reused read buffers."""

import io
import os
import tarfile

import numpy as np
import pytest

from factories import jpeg_bytes, write_images
from llava_zh.images import ImageStore, open_container

IMAGES = {"a.jpg": jpeg_bytes(10, 10), "sub/b.jpg": jpeg_bytes(12, 8, (1, 2, 3))}


@pytest.mark.parametrize("kind", ["folder", "zip", "tar", "tar.gz"])
def test_containers_return_original_bytes(tmp_path, kind):
    path = write_images(tmp_path, IMAGES, kind)
    c = open_container(path, index_dir=str(tmp_path / "idx"))
    try:
        for name, data in IMAGES.items():
            assert c.get(name) == data
        assert c.get("missing.jpg") is None
    finally:
        c.close()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_single_top_folder_is_stripped(tmp_path, kind):
    path = write_images(tmp_path, IMAGES, kind, prefix="train2017/")
    c = open_container(path, index_dir=str(tmp_path / "idx"))
    assert c.get("a.jpg") == IMAGES["a.jpg"]
    assert c.get("train2017/sub/b.jpg") == IMAGES["sub/b.jpg"]
    c.close()


def test_tar_index_is_kept_and_reused(tmp_path):
    path = write_images(tmp_path, IMAGES, "tar.gz")
    idx = tmp_path / "idx"
    open_container(path, index_dir=str(idx)).close()
    kept = sorted(os.listdir(idx))
    assert any(n.endswith(".index.npz") for n in kept) and any(n.endswith(".tar") for n in kept)
    c = open_container(path, index_dir=str(idx))
    assert c.get("sub/b.jpg") == IMAGES["sub/b.jpg"]
    c.close()


def test_store_searches_containers_in_order_and_pickles(tmp_path):
    import pickle

    first = write_images(tmp_path / "one", {"a.jpg": b"first"}, "folder")
    second = write_images(tmp_path / "two", {"a.jpg": b"second", "c.jpg": b"only"}, "zip")
    store = ImageStore([str(first), str(second)])
    assert store.get("a.jpg") == b"first" and store.get("c.jpg") == b"only"
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("c.jpg") == b"only"
    store.close()
    clone.close()


def test_not_a_container(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("x")
    with pytest.raises(ValueError, match="not an image container"):
        open_container(p)


def test_zip_stored_and_deflated_members(tmp_path):
    import zipfile

    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("stored.jpg"), IMAGES["a.jpg"], compress_type=zipfile.ZIP_STORED)
        z.writestr(zipfile.ZipInfo("deflated.jpg"), IMAGES["sub/b.jpg"], compress_type=zipfile.ZIP_DEFLATED)
    c = open_container(path)
    assert c.get("stored.jpg") == IMAGES["a.jpg"] and c.get("deflated.jpg") == IMAGES["sub/b.jpg"]
    c.close()


# --- archive indexes and batched reads ------------------------------------------------------------

from llava_zh import images as images_module  # noqa: E402
from llava_zh.images import ImageBatch, read_zip_index  # noqa: E402


def test_zip_index_reads_zip64_prepended_data_and_unicode_names(tmp_path):
    """The central directory reader agrees with ``zipfile`` on a zip64 archive (more than 65,535
    members), with bytes prepended (a self-extracting zip), a forced zip64 member, a deflated member
    and UTF-8 names."""
    import zipfile

    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(65_540):
            z.writestr(f"top/{i}.jpg", b"%d" % i)
        with z.open("top/forced.jpg", "w", force_zip64=True) as w:
            w.write(b"forced")
        z.writestr(zipfile.ZipInfo("top/deflated.jpg"), b"d" * 100, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("top/图片/猫.jpg", b"cat")
        z.writestr("top/dir/", b"")
    prefixed = tmp_path / "sfx.zip"
    prefixed.write_bytes(b"#!/bin/sh\nexit 0\n" * 10 + path.read_bytes())
    for archive in (path, prefixed):
        index = read_zip_index(str(archive))
        with zipfile.ZipFile(archive) as z:
            expected = sorted(i.filename for i in z.infolist() if not i.is_dir())
        assert sorted(index.names_list) == expected and index.top == "top/"
        c = open_container(archive)
        assert c.get("65539.jpg") == b"65539" and c.get("top/0.jpg") == b"0"
        assert c.get("forced.jpg") == b"forced" and c.get("deflated.jpg") == b"d" * 100
        assert c.get("图片/猫.jpg") == b"cat" and c.get("dir") is None and c.get("nope.jpg") is None
        c.close()


def test_zip_index_finds_a_zip64_end_record_the_classic_one_does_not_announce(tmp_path, monkeypatch):
    """Python's zipfile writes a zip64 end record once the central directory starts past 2 GiB, with the
    classic record's fields still in range (found preparing 60,000 images, 2.8 GB). The 2 GiB limit is
    lowered here so a small archive is written the same way."""
    import zipfile

    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    names = {f"{i}.jpg": bytes([i]) * 400 for i in range(6)}
    path = write_images(tmp_path, names, "zip")
    raw = path.read_bytes()
    assert b"PK\x06\x06" in raw[-200:] and raw[-22 + 16:-22 + 20] != b"\xff" * 4  # classic fields in range
    index = read_zip_index(str(path))
    assert sorted(index.names_list) == sorted(names)
    c = open_container(path)
    assert all(c.get(n) == data for n, data in names.items())
    c.close()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_member_index_is_kept_and_reused(tmp_path, monkeypatch, kind):
    path = write_images(tmp_path, IMAGES, kind)
    idx = tmp_path / "idx"
    open_container(path, index_dir=str(idx)).close()
    assert any(n.endswith(".index.npz") for n in os.listdir(idx))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the kept index should have been used")

    monkeypatch.setattr(images_module, "read_zip_index", no_rebuild)
    monkeypatch.setattr(images_module, "build_tar_index", no_rebuild)
    c = open_container(path, index_dir=str(idx))
    assert c.get("sub/b.jpg") == IMAGES["sub/b.jpg"] and c.get("missing.jpg") is None
    c.close()


def test_store_over_archives_keeps_the_order_of_containers(tmp_path):
    """One lookup table for many archives still answers as searching them in order would: the first
    archive holding a name wins, a name under an archive's single top folder included."""
    first = write_images(tmp_path / "one", {"a.jpg": b"first", "b.jpg": b"first-b"}, "zip", prefix="train2017/")
    second = write_images(tmp_path / "two", {"a.jpg": b"second", "c.jpg": b"only"}, "tar")
    third = write_images(tmp_path / "three", {"train2017/b.jpg": b"third"}, "zip")
    store = ImageStore([str(first), str(second), str(third)], index_dir=str(tmp_path / "idx"))
    assert store.get("a.jpg") == b"first" and store.get("c.jpg") == b"only"
    assert store.get("train2017/b.jpg") == b"first-b" and store.get("b.jpg") == b"first-b"
    assert store.get("nope.jpg") is None
    for name in ("a.jpg", "b.jpg", "c.jpg", "train2017/b.jpg", "train2017/a.jpg", "nope.jpg"):
        one_by_one = next((d for d in (c.get(name) for c in store.containers) if d is not None), None)
        assert store.get(name) == one_by_one, name
    store.close()


def test_image_batch_reads_many_images_into_one_buffer(tmp_path):
    import pyarrow as pa

    data = {f"{i}.jpg": jpeg_bytes(8 + i, 8, (i, i, i)) for i in range(5)}
    path = write_images(tmp_path, data, "zip")
    with ImageStore([str(path)]) as store:
        names = ["0.jpg", "missing.jpg", "1.jpg", None, "2.jpg", "3.jpg", "4.jpg"]
        batch = store.fetch(names)
        assert isinstance(batch, ImageBatch) and len(batch) == len(names)
        assert batch.found.tolist() == [True, False, True, False, True, True, True]
        assert bytes(batch.get(2)) == data["1.jpg"] and batch.get(1) is None
        whole = batch.array(range(len(names)))  # contiguous: shares the batch's buffer
        assert whole.to_pylist() == [data.get(n, b"") if n else b"" for n in names]
        assert whole.buffers()[2].address == pa.py_buffer(batch.data).address
        picked = batch.array([6, 0, 4])  # out of order: copied
        assert picked.to_pylist() == [data["4.jpg"], data["0.jpg"], data["2.jpg"]]


def _tar_with(path, fmt, members):
    """A tar in ``fmt`` holding ``members``: (name, bytes) for files, (name, "dir"|"symlink"|"hardlink")."""
    with tarfile.open(path, "w", format=fmt) as t:
        for name, what in members:
            info = tarfile.TarInfo(name)
            if isinstance(what, bytes):
                info.size = len(what)
                t.addfile(info, io.BytesIO(what))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[what]
            info.linkname = "a.jpg" if what != "dir" else ""
            t.addfile(info)
    return path


TAR_MEMBERS = [
    ("a.jpg", b"\xff\xd8a"),
    ("sub", "dir"),
    ("sub/b.jpg", b"b" * 1000),
    ("link.jpg", "symlink"),
    ("hard.jpg", "hardlink"),
    ("empty.jpg", b""),
    ("图片/猫.jpg", b"cat"),
    ("deep/" + "x" * 120 + "/c.jpg", b"c" * 513),  # over 100 bytes: ustar prefix, GNU or pax long name
    ("exact.jpg", b"e" * 512),
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_index_agrees_with_tarfile(tmp_path, fmt):
    """The header scanner gives tarfile's own names, offsets and sizes, or hands the archive to tarfile."""
    path = str(_tar_with(tmp_path / "x.tar", fmt, TAR_MEMBERS))
    fast, slow = images_module.build_tar_index(path), images_module._tarfile_index(path)
    assert fast.names_list == slow.names_list
    assert fast.offsets.tolist() == slow.offsets.tolist() and fast.sizes.tolist() == slow.sizes.tolist()
    c = open_container(path)
    for name, what in TAR_MEMBERS:
        if isinstance(what, bytes):
            assert c.get(name) == what
    assert c.get("sub") is None and c.get("link.jpg") is None
    c.close()


def test_tar_scanner_reads_plain_ustar_itself_and_refuses_what_it_does_not_know(tmp_path):
    plain = str(_tar_with(tmp_path / "plain.tar", tarfile.USTAR_FORMAT, TAR_MEMBERS))
    names, offsets, sizes = images_module._scan_tar_headers(plain)
    assert "deep/" + "x" * 120 + "/c.jpg" in names and "sub" not in names  # prefix joined, directory skipped
    assert sizes[names.index("exact.jpg")] == 512
    # pax records (a non-ASCII name in PAX format) and GNU long names go to tarfile
    assert images_module._scan_tar_headers(str(_tar_with(tmp_path / "pax.tar", tarfile.PAX_FORMAT, TAR_MEMBERS))) is None
    assert images_module._scan_tar_headers(str(_tar_with(tmp_path / "gnu.tar", tarfile.GNU_FORMAT, TAR_MEMBERS))) is None
    # a damaged checksum: tarfile decides (and here refuses the archive, as it should)
    raw = bytearray(open(plain, "rb").read())
    raw[0] ^= 0x01  # the first member's name changes; its checksum no longer matches
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(raw))
    assert images_module._scan_tar_headers(str(damaged)) is None
    with pytest.raises(tarfile.ReadError):
        images_module.build_tar_index(str(damaged))


def test_buffer_pool_reuses_a_buffer_only_when_nothing_refers_to_it():
    import pyarrow as pa

    pool = images_module.BufferPool(keep=2, granule=64)
    a = pool.take(10)
    b = pool.take(10)
    assert not np.shares_memory(a, b)
    arrow = pa.py_buffer(a)  # an Arrow buffer made from it keeps it alive
    del a
    c = pool.take(10)  # both pooled buffers are in use: a fresh one outside the pool
    assert not np.shares_memory(c, np.frombuffer(arrow, dtype=np.uint8)) and not np.shares_memory(c, b)
    del arrow
    d = pool.take(20)
    assert len(d) == 20 and len(pool._buffers) == 2
    e = pool.take(100)  # bigger than any pooled buffer: the free one is replaced by one that fits
    assert len(e) == 100 and not np.shares_memory(e, d) and not np.shares_memory(e, b)


def test_tables_from_a_reused_buffer_keep_their_bytes(tmp_path):
    """Tables kept by the caller (streaming, a list) are never overwritten by later batches."""
    names = {f"{i}.jpg": bytes([i]) * (1000 + i) for i in range(30)}
    path = write_images(tmp_path, names, "zip")
    store = ImageStore([str(path)])
    arrays = [store.fetch([f"{i}.jpg" for i in range(k, k + 10)]).array(range(10)) for k in (0, 10, 20)]
    arrays += [store.fetch([f"{i}.jpg" for i in range(k, k + 10)]).array(range(10)) for k in (0, 10, 20)]
    for n, arr in enumerate(arrays):
        k = (n % 3) * 10
        assert arr.to_pylist() == [names[f"{i}.jpg"] for i in range(k, k + 10)]
    store.close()


@pytest.mark.parametrize("kind", ["zip", "tar", "folder"])
@pytest.mark.parametrize("reads", ["runs", "small runs", "no preadv"])
def test_fetch_reads_any_order_duplicates_and_missing_names(tmp_path, monkeypatch, kind, reads):
    """A batch read through runs of neighbours gives every image exactly as one-by-one reads do."""
    import random
    import struct
    import zipfile

    if reads == "small runs":  # runs cut short by the gap limit and by the number of buffers per call
        monkeypatch.setattr(images_module, "_MAX_GAP", 600)
        monkeypatch.setattr(images_module, "_IOV_MAX", 6)
    if reads == "no preadv":  # a system without os.preadv: image by image, headers checked one by one
        monkeypatch.delattr(os, "preadv")
    rng = random.Random(7)
    names = {f"d{i // 10}/{i}.jpg": bytes([i % 256]) * rng.randrange(0, 3000) for i in range(60)}
    path = write_images(tmp_path, names, kind)
    if kind == "zip":  # members whose local headers differ in length, and a deflated member
        path.unlink()
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
            for i, (name, data) in enumerate(names.items()):
                info = zipfile.ZipInfo(name)
                info.extra = struct.pack("<HH", 0xCAFE, 4 * (i % 3)) + b"\0" * (4 * (i % 3))
                z.writestr(info, data)
            z.writestr("deflated.jpg", b"z" * 5000, compress_type=zipfile.ZIP_DEFLATED)
        names["deflated.jpg"] = b"z" * 5000
    store = ImageStore([str(path)])
    wanted = list(names) * 2 + ["missing.jpg", None, "./d0/1.jpg"]
    rng.shuffle(wanted)
    batch = store.fetch(wanted)
    for i, name in enumerate(wanted):
        expected = store.get(name) if name is not None else None
        got = batch.get(i)
        assert (bytes(got) if got is not None else None) == expected, name
        if name is not None and name != "missing.jpg":
            assert expected == names[name.removeprefix("./")]
    store.close()


def test_fetch_marks_images_cut_off_by_a_shrunken_archive_missing(tmp_path):
    names = {f"{i}.jpg": bytes([i]) * 1000 for i in range(10)}
    path = write_images(tmp_path, names, "tar")
    store = ImageStore([str(path)])
    store.locate_many(["0.jpg"])  # index read while the archive is whole
    with open(path, "r+b") as f:
        f.truncate(5 * 1536 + 512 + 500)  # (header 512 + data padded to 1024 each) the sixth image is cut
    batch = store.fetch(list(names))
    assert [batch.get(i) is not None for i in range(10)] == [True] * 5 + [False] * 5
    assert all(bytes(batch.get(i)) == names[f"{i}.jpg"] for i in range(5))
    store.close()


def test_a_damaged_local_header_makes_that_image_missing_not_the_batch(tmp_path):
    names = {f"{i}.jpg": bytes([i]) * 100 for i in range(5)}
    path = write_images(tmp_path, names, "zip")
    raw = bytearray(path.read_bytes())
    at = raw.find(b"PK\x03\x04", 1)  # the second member's local header
    raw[at:at + 4] = b"XXXX"
    path.write_bytes(bytes(raw))
    store = ImageStore([str(path)])
    batch = store.fetch([f"{i}.jpg" for i in range(5)])
    assert [batch.get(i) is not None for i in range(5)] == [True, False, True, True, True]
    assert bytes(batch.get(4)) == names["4.jpg"]
    store.close()


def test_archives_then_folder_answer_a_batch_as_one_by_one_search_does(tmp_path):
    """A local folder's layout: its archives first, then the folder for loose images."""
    zipped = write_images(tmp_path / "z", {"a.jpg": b"zip-a", "b.jpg": b"zip-b"}, "zip")
    folder = write_images(tmp_path / "f", {"b.jpg": b"folder-b", "c.jpg": b"folder-c"}, "folder")
    for order in ([zipped, folder], [folder, zipped]):
        store = ImageStore([str(p) for p in order])
        names = ["a.jpg", "b.jpg", "c.jpg", "nope.jpg", None]
        batch = store.fetch(names)
        got = [bytes(batch.get(i)) if batch.get(i) is not None else None for i in range(len(names))]
        assert got == [store.get(n) if n else None for n in names]
        assert got[1] == (b"zip-b" if order[0] == zipped else b"folder-b")
        assert store.locate_many(names).listed.tolist() == [True, True, True, False, False]
        store.close()


def test_zip_index_when_the_entry_signature_also_appears_inside_an_entry(tmp_path):
    """Entries are found at once by their signature; one hidden in an extra field or a comment is noticed
    (the lengths no longer chain) and the directory is walked entry by entry instead."""
    import struct
    import zipfile

    from llava_zh.images import _central_entries

    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.jpg", b"a")
        info = zipfile.ZipInfo("b.jpg")
        info.extra = struct.pack("<HH", 0xCAFE, 8) + b"PK\x01\x02" + b"\0" * 4
        info.comment = b"PK\x01\x02 in a comment"
        z.writestr(info, b"b")
        z.writestr("c.jpg", b"c")
    index = read_zip_index(str(path))
    assert index.names_list == ["a.jpg", "b.jpg", "c.jpg"]
    c = open_container(path)
    assert [c.get(n) for n in ("a.jpg", "b.jpg", "c.jpg")] == [b"a", b"b", b"c"]
    c.close()
    plain = write_images(tmp_path / "plain", {f"{i}.jpg": b"x" for i in range(5)}, "zip")
    with zipfile.ZipFile(plain) as z:
        start = z.start_dir
    raw = np.frombuffer(plain.read_bytes()[start:-22], dtype=np.uint8)
    assert _central_entries(raw).tolist() == [k * (46 + 5) for k in range(5)]  # found at once
    hidden = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    with zipfile.ZipFile(path) as z:
        hidden = hidden[z.start_dir:len(hidden) - 22]
    assert _central_entries(hidden) is None  # the walk then reads it


def test_a_batch_read_in_slices_gives_the_images_of_the_whole(tmp_path):
    """``Located.slice`` keeps each entry's place (the inline one of a deflated member too), so reading a
    batch piece by piece, as the builder does, gives the same bytes as reading it at once."""
    import zipfile

    from llava_zh.images import ImageBatch

    path = tmp_path / "images.zip"
    members = {f"{i}.jpg": jpeg_bytes(8 + i, 8, (i, 2, 3)) for i in range(9)}
    with zipfile.ZipFile(path, "w") as z:
        for i, (name, data) in enumerate(members.items()):
            z.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED if i in (2, 7) else zipfile.ZIP_STORED)
    names = ["3.jpg", "2.jpg", None, "missing.jpg", "7.jpg", "0.jpg", "8.jpg", "3.jpg"]
    with ImageStore([str(path)], index_dir=str(tmp_path / "idx")) as store:
        located = store.locate_many(names)
        assert sorted(located.inline) == [1, 4]
        whole = ImageBatch.read(located)
        expected = [members.get(n) if n else None for n in names]
        assert [None if whole.get(i) is None else bytes(whole.get(i)) for i in range(len(names))] == expected
        for bounds in ([0, 2, 5, 8], [0, 1, 8], [0, 8]):
            got = []
            for a, b in zip(bounds, bounds[1:]):
                part = located.slice(a, b)
                assert len(part) == b - a and part.listed.tolist() == located.listed[a:b].tolist()
                batch = ImageBatch.read(part)
                got += [None if batch.get(i) is None else bytes(batch.get(i)) for i in range(b - a)]
            assert got == expected
        assert located.slice(1, 2).inline.keys() == {0} and located.slice(2, 4).inline == {}
