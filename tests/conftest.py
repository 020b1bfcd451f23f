"""Shared test set-up: every test gets its own Hugging Face caches and runs offline."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_hf_cache(tmp_path_factory, monkeypatch):
    """Point every HF cache at a fresh folder and forbid network access for the test.

    ``datasets`` and ``huggingface_hub`` read some paths at import time into module constants, so the
    constants are patched too (the environment alone would not reach an already imported module).
    """
    import datasets.config
    import huggingface_hub.constants

    root = tmp_path_factory.mktemp("hf")
    hub_cache = root / "hub"
    ds_cache = root / "datasets"
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(ds_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", ds_cache)
    monkeypatch.setattr(datasets.config, "HF_CACHE_HOME", str(root))
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", ds_cache / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", ds_cache / "downloads" / "extracted")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    yield root
