"""Image containers: folder, zip, tar, tar.gz; original bytes; COCO-style top-folder aliases; cached tar index."""

import os

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
