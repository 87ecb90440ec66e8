"""scripts/carry_run.sh: a run folder saved in parts under the 5 MB limit comes back byte for byte."""
import os
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "carry_run.sh"
PART = 4 * 1024 * 1024


def carry(*args):
    # without the sanitizer CI preloads for the library's tests: tar and gzip are not built for it
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env)


def make_run(path: Path, checkpoint_bytes: int) -> bytes:
    (path / "sub").mkdir(parents=True)
    data = os.urandom(checkpoint_bytes)  # incompressible, like trained weights
    (path / "checkpoint.npz").write_bytes(data)
    (path / "weights.npz").write_bytes(b"w" * 100)
    (path / "config.json").write_text('{"epochs": 3}')
    (path / "sub" / "step_001.json").write_text('{"step": 1}')
    return data


def test_save_and_restore_round_trip(tmp_path):
    run = tmp_path / "run"
    data = make_run(run, 9 * 1024 * 1024 + 17)
    saved = tmp_path / "saved"
    r = carry("save", run, saved, "--exclude", "weights.npz")
    assert r.returncode == 0, r.stderr
    parts = sorted(saved.glob("run.tar.gz.part-*"))
    assert len(parts) == 3 and all(p.stat().st_size <= PART for p in parts)
    assert (saved / "files.txt").read_text().split() == ["checkpoint.npz", "config.json", "sub/", "sub/step_001.json"]
    back = tmp_path / "back"
    r = carry("restore", saved, back)
    assert r.returncode == 0, r.stderr
    assert (back / "checkpoint.npz").read_bytes() == data
    assert (back / "sub" / "step_001.json").read_text() == '{"step": 1}'
    assert not (back / "weights.npz").exists()
    # once the run has gone on, restoring the older save over it is refused
    time.sleep(0.01)
    (back / "checkpoint.npz").write_bytes(b"newer")
    r = carry("restore", saved, back)
    assert r.returncode == 2 and "newer" in r.stderr
    assert (back / "checkpoint.npz").read_bytes() == b"newer"


def test_keep_npz_leaves_out_the_other_checkpoints(tmp_path):
    run = tmp_path / "run"
    make_run(run, 1000)
    (run / "sub" / "checkpoint.npz").write_bytes(b"in progress")
    (run / "sub" / "weights.npz").write_bytes(b"w")
    (run / "sub" / "rows.json").write_text("[]")
    (run / "sub" / "log.tmp").write_text("being written")
    saved = tmp_path / "saved"
    r = carry("save", run, saved, "--keep-npz", "*/checkpoint.npz", "--exclude", "config.json")
    assert r.returncode == 0, r.stderr
    assert (saved / "files.txt").read_text().split() == ["sub/", "sub/checkpoint.npz", "sub/rows.json",
                                                         "sub/step_001.json"]
    assert carry("restore", saved, tmp_path / "back").returncode == 0
    assert (tmp_path / "back" / "sub" / "checkpoint.npz").read_bytes() == b"in progress"


def test_a_damaged_part_is_refused(tmp_path):
    make_run(tmp_path / "run", 5 * 1024 * 1024)
    saved = tmp_path / "saved"
    assert carry("save", tmp_path / "run", saved).returncode == 0
    part = saved / "run.tar.gz.part-01"
    part.write_bytes(part.read_bytes()[:-1])
    r = carry("restore", saved, tmp_path / "back")
    assert r.returncode == 1 and "SHA-256" in r.stderr
    assert not (tmp_path / "back").exists()


@pytest.mark.parametrize("args", [(), ("save",), ("move", "a", "b"), ("save", "a", "b", "--exclude"),
                                  ("restore", "a", "b", "--exclude", "x"),
                                  ("save", "a", "b", "--keep", "x"), ("restore", "a", "b", "--keep-npz", "x")])
def test_bad_usage(args):
    r = carry(*args)
    assert r.returncode == 2 and "usage" in r.stderr


def test_missing_folders(tmp_path):
    r = carry("save", tmp_path / "none", tmp_path / "saved")
    assert r.returncode == 2 and "no run folder" in r.stderr
    r = carry("restore", tmp_path, tmp_path / "back")
    assert r.returncode == 2 and "no saved run" in r.stderr
