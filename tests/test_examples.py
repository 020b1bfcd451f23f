"""The examples run as a user runs them (a subprocess from the repository root, offline)."""

import os
import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: int = 300) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quickstart():
    out = _run("quickstart.py")
    assert "samples per task" in out and "validation: 30 records read, 0 refused" in out


def test_mix_zh_en_runs_offline():
    out = _run("mix_zh_en.py")
    assert "zh" in out and "en" in out


def test_regenerate_images_with_the_tiny_model(tmp_path):
    out = _run("regenerate_images.py", "--tiny", "--out", str(tmp_path / "regen"))
    assert "records: 90" in out


def test_train_sft_tiny_loss_falls():
    out = _run("train_sft_tiny.py")
    summaries = [line for line in out.splitlines() if line.startswith("loss ") and "->" in line]
    assert summaries, out  # the plain PyTorch loop always runs; TRL's trainer too when installed
    for line in summaries:
        first, last = line.replace("loss", "").split("->")
        assert float(last) < float(first)


def test_train_packed_tiny_reports_efficiency_and_a_falling_loss():
    out = _run("train_packed_tiny.py")
    assert "efficiency" in out
    found = re.search(r"loss ([0-9.]+) -> ([0-9.]+)\s*$", out)
    assert found, out
    assert float(found.group(2)) < float(found.group(1))
