"""scripts/carry_run.sh: a run folder saved in parts under the 5 MB limit comes back byte for byte."""
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "carry_run.sh"


def carry(*args):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_save_and_restore_round_trip(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    data = os.urandom(9 * 1024 * 1024 + 17)  # three parts, the last one short
    (run / "checkpoint.npz").write_bytes(data)
    (run / "config.json").write_text('{"epochs": 3}')
    (run / "train.log").write_text("epoch 1\n")
    saved = tmp_path / "saved"
    r = carry("save", run, saved)
    assert r.returncode == 0, r.stderr
    parts = sorted(saved.glob("checkpoint.npz.part-*"))
    assert len(parts) == 3 and all(p.stat().st_size <= 4 * 1024 * 1024 for p in parts)
    back = tmp_path / "back"
    r = carry("restore", saved, back)
    assert r.returncode == 0, r.stderr
    assert (back / "checkpoint.npz").read_bytes() == data
    assert (back / "config.json").read_text() == '{"epochs": 3}'
    # a second restore would overwrite a checkpoint that training may have moved on since
    r = carry("restore", saved, back)
    assert r.returncode == 2 and "newer" in r.stderr


def test_a_damaged_part_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(os.urandom(5 * 1024 * 1024))
    saved = tmp_path / "saved"
    assert carry("save", run, saved).returncode == 0
    part = saved / "checkpoint.npz.part-01"
    part.write_bytes(part.read_bytes()[:-1])
    r = carry("restore", saved, tmp_path / "back")
    assert r.returncode == 1 and "SHA-256" in r.stderr
    assert not (tmp_path / "back" / "checkpoint.npz").exists()


@pytest.mark.parametrize("args", [(), ("save",), ("move", "a", "b")])
def test_bad_usage(args):
    r = carry(*args)
    assert r.returncode == 2 and "usage" in r.stderr


def test_save_without_checkpoint(tmp_path):
    r = carry("save", tmp_path, tmp_path / "saved")
    assert r.returncode == 2 and "no checkpoint" in r.stderr
