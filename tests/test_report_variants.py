"""The tables' NIN accuracy section lists the other fine-tuning recipes run on the same weights
(results/variants/nin_accuracy_*.json with the same SHA-256) and leaves out those from other weights."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from bench import report

# a frozen bench.tables result (a real CPU run, copied from results/ on 2026-12-07): regenerating
# results/ does not change what these rendering tests read
COMMITTED = Path(__file__).resolve().parent / "data" / "tables_snapshot.json"


def _variant(accuracy: dict, digest: str, epochs: int) -> dict:
    variant = copy.deepcopy(accuracy)
    variant["metadata"]["weights_digest"] = digest
    variant["metadata"]["command"] = f"python -m bench.nin_accuracy --finetune-epochs {epochs}"
    variant["rows"] = variant["rows"][:1]
    variant["rows"][0]["finetune"] = dict(variant["rows"][0]["finetune"], epochs=epochs)
    return variant


def test_variants_on_the_same_weights_are_shown(tmp_path):
    raw = json.loads(COMMITTED.read_text())
    accuracy = raw["nin_accuracy"]
    digest = accuracy["metadata"]["weights_digest"]
    (tmp_path / "variants").mkdir()
    (tmp_path / "variants" / "nin_accuracy_same.json").write_text(json.dumps(_variant(accuracy, digest, 77)))
    (tmp_path / "variants" / "nin_accuracy_other.json").write_text(json.dumps(_variant(accuracy, "0" * 12, 99)))
    text = report.write_all(raw, tmp_path)
    section = text.split("### Other fine-tuning recipes on the same weights")[1]
    assert "--finetune-epochs 77" in section and "| 77 x " in section
    assert "--finetune-epochs 99" not in text


def test_no_variants_no_section(tmp_path):
    raw = json.loads(COMMITTED.read_text())
    assert "Other fine-tuning recipes" not in report.write_all(raw, tmp_path)


def test_a_variant_whose_rows_are_all_in_the_main_table_is_named_not_repeated(tmp_path):
    raw = json.loads(COMMITTED.read_text())
    accuracy = raw["nin_accuracy"]
    same_run = copy.deepcopy(accuracy)
    same_run["metadata"]["command"] = "python -m bench.nin_accuracy --targets 2 --rounds 5"
    same_run["rows"] = [dict(row, speedup=row["speedup"] * 0.9) for row in accuracy["rows"][:2]]
    (tmp_path / "variants").mkdir()
    (tmp_path / "variants" / "nin_accuracy_same_run.json").write_text(json.dumps(same_run))
    section = report.write_all(raw, tmp_path).split("### Other fine-tuning recipes on the same weights")[1]
    assert "nin_accuracy_same_run.json: the same recipe" in section
    assert "--rounds 5" not in section  # its table is not shown again

    different = copy.deepcopy(same_run)  # one row fine-tuned to another error: a different run, shown
    different["rows"][0]["tuned_error"] += 0.5
    (tmp_path / "variants" / "nin_accuracy_same_run.json").write_text(json.dumps(different))
    section = report.write_all(raw, tmp_path).split("### Other fine-tuning recipes on the same weights")[1]
    assert "--rounds 5" in section and "the same recipe" not in section

    other_recipe = copy.deepcopy(same_run)  # the same errors from another recipe: shown
    for row in other_recipe["rows"]:
        row["finetune"] = dict(row["finetune"], epochs=row["finetune"]["epochs"] + 1)
    (tmp_path / "variants" / "nin_accuracy_same_run.json").write_text(json.dumps(other_recipe))
    section = report.write_all(raw, tmp_path).split("### Other fine-tuning recipes on the same weights")[1]
    assert "--rounds 5" in section and "the same recipe" not in section


def test_the_nin_rows_are_plotted_beside_their_table(tmp_path):
    raw = json.loads(COMMITTED.read_text())
    text = report.write_all(raw, tmp_path, "_t")
    try:
        import matplotlib  # noqa: F401  (bench extra; the test extra does without)
    except ImportError:
        assert "Plot skipped: " in text
        return
    png = tmp_path / "plots" / "nin_accuracy_t.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![nin accuracy](plots/nin_accuracy_t.png)" in text
