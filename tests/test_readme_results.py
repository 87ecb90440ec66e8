"""The README's generated results block equals what bench.readme writes from results/tables.json."""
import json
from pathlib import Path

import pytest

from bench import readme

ROOT = Path(__file__).resolve().parents[1]


def test_readme_block_matches_the_committed_tables():
    assert readme.main(["--check", "--tables", str(ROOT / "results" / "tables.json"),
                        "--readme", str(ROOT / "README.md")]) == 0


def test_block_follows_the_data_and_markers_are_required(tmp_path):
    raw = json.loads((ROOT / "results" / "tables.json").read_text())
    net = raw["networks"][0]
    net["rows"][0]["speedup"] = 9.87
    text = readme.rewrite(f"intro\n{readme.START}\nold\n{readme.END}\ntail\n", readme.speed_block(raw))
    assert "| 9.87 / " in text and text.startswith("intro\n") and text.endswith("\ntail\n") and "old" not in text
    with pytest.raises(ValueError, match="expected one"):
        readme.rewrite("no markers here", readme.speed_block(raw))
    path = tmp_path / "README.md"
    path.write_text(text + f"{readme.ACC_START}\n{readme.ACC_END}\n")
    assert readme.main(["--check", "--readme", str(path)]) == 1  # the committed data differs from 9.87
    assert readme.update(json.loads((ROOT / "results" / "tables.json").read_text()), path)
    assert readme.main(["--check", "--readme", str(path)]) == 0


def test_accuracy_block_follows_nin_accuracy_json():
    acc = json.loads((ROOT / "results" / "nin_accuracy.json").read_text())
    greedy2 = next(r for r in acc["rows"] if r["kind"] == "greedy impact" and r["target"] == 2.0)
    greedy2["tuned_error_increase"] = 1.25  # misses the paper's +1.0: no longer bold
    grid3 = next(r for r in acc["rows"] if r["kind"] == "grid" and r["target"] == 3.0)
    grid3["speedup"] = 7.77
    block = "\n".join(readme.accuracy_block(acc))
    assert "| greedy impact 2x | 2.28 | +1.99 | +1.25 | +1.0 |" in block
    assert "| grid, equal rates 3x | 7.77 | +5.24 | **+2.29** | +2.5 |" in block
    assert "| greedy impact 4x |" in block and block.count("\n| ") == 1 + len(acc["rows"])  # header and rows
    text = f"a\n{readme.START}\n{readme.END}\nb\n{readme.ACC_START}\nSTALE\n{readme.ACC_END}\nc\n"
    raw = json.loads((ROOT / "results" / "tables.json").read_text())
    new = readme.rewrite_all(text, raw, acc)
    assert "STALE" not in new and "+1.25" in new and new.endswith("\nc\n")
    with pytest.raises(ValueError, match="results:accuracy"):
        readme.rewrite_all(f"{readme.START}\n{readme.END}\n", raw, acc)
