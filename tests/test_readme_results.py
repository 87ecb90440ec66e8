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
    path.write_text(text)
    assert readme.main(["--check", "--readme", str(path)]) == 1  # the committed data differs from 9.87
    assert readme.update(json.loads((ROOT / "results" / "tables.json").read_text()), path)
    assert readme.main(["--check", "--readme", str(path)]) == 0
