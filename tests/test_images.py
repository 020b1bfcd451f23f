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
    assert any(n.endswith(".index.json") for n in kept) and any(n.endswith(".tar") for n in kept)
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
