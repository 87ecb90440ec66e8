"""bench.train_speed without PyTorch: the original network and a perforated one, timed together."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import train_speed as ts

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "results" / "plans" / "nin_grid_3x.json"


def test_plan_step_times_the_perforated_network():
    plain, perforated = ts.ours_step("nin", 2), ts.ours_step("nin", 2, plan=PLAN)
    assert plain.model.masks == {}
    assert set(perforated.model.masks) == {"conv1", "conv2", "conv3"}
    assert perforated.model.masks["conv2"].rate == pytest.approx(0.68, abs=0.01)  # the plan's grid 3x rate


def test_measure_without_peer_reports_the_plan_speedup():
    r = ts.measure("nin", batch=2, rounds=1, steps=1, threads=1, plan=PLAN, peer=False)
    assert set(r["images_per_s"]) == {"perforated", "perforated+plan"}
    rates = {k: v["median"] for k, v in r["images_per_s"].items()}
    assert all(v > 0 for v in rates.values())
    assert r["plan_training_speedup"] == pytest.approx(rates["perforated+plan"] / rates["perforated"])
    assert r["plan"] == str(PLAN) and "pytorch" not in r["images_per_s"]


def test_measure_errors_name_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="no plan file at"):
        ts.measure("nin", batch=2, plan=tmp_path / "missing.json", peer=False)
    with pytest.raises(ValueError, match="without the peer, give a plan"):
        ts.measure("nin", batch=2, peer=False)


def test_command_writes_json(tmp_path):
    out = tmp_path / "speed.json"
    res = subprocess.run([sys.executable, "-m", "bench.train_speed", "--batch", "2", "--rounds", "1", "--steps", "1",
                          "--threads", "1", "--plan", str(PLAN), "--no-peer", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "training speedup of the plan" in res.stdout
    data = json.loads(out.read_text())
    assert data["plan_training_speedup"] > 0 and "machine" in data


def test_command_refuses_no_peer_without_plan():
    res = subprocess.run([sys.executable, "-m", "bench.train_speed", "--no-peer"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 2 and "--no-peer needs --plan" in res.stderr
