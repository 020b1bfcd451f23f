"""The llava-zh verbs, run as a user would (the console entry point's main, and one real subprocess)."""

import json
import subprocess
import sys

import pytest

from factories import make_dataset
from llava_zh.cli import COMMANDS, main


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert verb in capsys.readouterr().out


def test_no_verb_prints_help(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_info_on_a_folder(tmp_path, capsys):
    root, _, _ = make_dataset(tmp_path, "jsonl", "zip")
    assert main(["info", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tasks"] == {"complex_reasoning": 2, "conversation": 2, "detail_description": 2}
    assert out["splits"] == {"train": 6} and "image" in out["features"] and out["cache_dir"]


def test_validate_exit_status(tmp_path, capsys):
    root, _, _ = make_dataset(tmp_path, "json", "folder")
    assert main(["validate", str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    (root / "images" / "conversation-0001.jpg").unlink()
    q = tmp_path / "q.jsonl"
    assert main(["validate", str(root), "--quarantine", str(q)]) == 1
    out = capsys.readouterr().out
    assert "missing_image" in out and "conversation-0001" in out
    assert json.loads(q.read_text())["id"] == "conversation-0001"


def test_console_entry_point_runs_in_a_subprocess(tmp_path):
    root, _, _ = make_dataset(tmp_path, "jsonl", "folder")
    done = subprocess.run(
        [sys.executable, "-m", "llava_zh", "info", str(root), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "conversation" in done.stdout and "total" in done.stdout


def test_reading_verbs_take_num_proc(tmp_path, capsys):
    """``--num-proc`` reaches ``llava_zh.load_dataset`` (the same data as one process); validate, which
    prepares nothing, has none; with ``--streaming`` it is refused, naming why."""
    root, _, _ = make_dataset(tmp_path, "jsonl", "zip", n_per_task=3)
    assert main(["info", str(root), "--json", "--cache-dir", str(tmp_path / "c1")]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["info", str(root), "--json", "--num-proc", "2", "--cache-dir", str(tmp_path / "c2")]) == 0
    two = json.loads(capsys.readouterr().out)
    assert one["tasks"] == two["tasks"] == {"complex_reasoning": 3, "conversation": 3, "detail_description": 3}
    assert two["cache_dir"].startswith(str(tmp_path / "c2"))
    with pytest.raises(SystemExit):
        main(["validate", str(root), "--num-proc", "2"])
    assert "unrecognized arguments: --num-proc" in capsys.readouterr().err
    with pytest.raises(ValueError, match="streaming dataset prepares nothing"):
        main(["stats", str(root), "--streaming", "--num-proc", "2", "--out", str(tmp_path / "s")])
