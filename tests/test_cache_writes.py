"""Piecewise writes to the cache: same bytes, pieces of at most PIECE_BYTES, patch undone after."""

import fsspec
from fsspec.implementations.local import LocalFileOpener

import llava_zh
from factories import make_dataset
from llava_zh import cache_writes
from llava_zh.cache_writes import PIECE_BYTES, piecewise_local_writes


class _Recorder:
    """Stands in for the file under an fsspec opener: records the size of every write it gets."""

    def __init__(self, f):
        self.f, self.sizes = f, []

    def write(self, data):
        self.sizes.append(memoryview(data).nbytes)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_large_writes_go_out_in_pieces_with_the_same_bytes(tmp_path):
    payload = bytes(range(256)) * (3 * PIECE_BYTES // 256 + 77)
    fs = fsspec.filesystem("file")
    with piecewise_local_writes():
        with fs.open(str(tmp_path / "x.bin"), "wb") as f:
            f.f = recorder = _Recorder(f.f)
            assert f.write(payload) == len(payload)
            assert f.write(b"small") == 5
    assert (tmp_path / "x.bin").read_bytes() == payload + b"small"
    assert max(recorder.sizes) == PIECE_BYTES and sum(recorder.sizes) == len(payload) + 5
    assert len(recorder.sizes) == -(-len(payload) // PIECE_BYTES) + 1


def test_the_patch_is_undone_when_the_last_user_leaves():
    original = LocalFileOpener.write
    with piecewise_local_writes():
        with piecewise_local_writes():
            assert LocalFileOpener.write is cache_writes._piecewise_write
        assert LocalFileOpener.write is cache_writes._piecewise_write  # the outer user is still inside
    assert LocalFileOpener.write is original


def test_preparing_uses_it_and_leaves_nothing_patched(tmp_path, monkeypatch):
    original = LocalFileOpener.write
    seen = []
    monkeypatch.setattr(cache_writes, "PIECE_BYTES", 1000)  # small enough for these tiny images
    real = cache_writes._piecewise_write

    def spy(self, data, *args, **kwargs):
        seen.append(memoryview(data).nbytes)
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(cache_writes, "_piecewise_write", spy)
    root, by_task, _ = make_dataset(tmp_path, "jsonl", "zip", n_per_task=5)
    ds = llava_zh.load_dataset(str(root), cache_dir=str(tmp_path / "c"))
    assert len(ds) == 15 and seen and max(seen) > 1000  # the cache file went through it
    assert LocalFileOpener.write is original
