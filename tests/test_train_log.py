"""perforated.train.log: a run's log.jsonl as a Markdown table."""
import json

import pytest

from perforated.train import log as train_log


def write_log(folder, records, extra=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + extra)


def test_table_keeps_the_last_record_of_each_epoch(tmp_path, capsys):
    write_log(tmp_path / "run", [
        {"epoch": 1, "train_error": 30.0, "lr": 0.05, "seconds": 600},
        {"epoch": 2, "train_error": 25.0, "lr": 0.04, "seconds": 600, "test_top1_error": 24.0, "test_top5_error": 2.0},
        {"epoch": 2, "train_error": 24.5, "lr": 0.04, "seconds": 720, "test_top1_error": 23.5,
         "test_top5_error": 1.5},  # logged again by a run resumed from the epoch 1 checkpoint
    ])
    train_log.main([str(tmp_path / "run")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| epoch | lr at the end |") and len(lines) == 4
    assert lines[2] == "| 1 | 0.0500 | 30.00% | - | - | 10.0 |"
    assert lines[3] == "| 2 | 0.0400 | 24.50% | 23.50% | 1.50% | 12.0 |"


def test_missing_or_damaged_logs_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_log.main([str(tmp_path / "nowhere")])
    assert "no log at" in capsys.readouterr().err
    write_log(tmp_path / "bad", [{"epoch": 1}], extra="{not json\n")
    with pytest.raises(SystemExit):
        train_log.main([str(tmp_path / "bad")])
    assert "line 2 is not an epoch record" in capsys.readouterr().err
