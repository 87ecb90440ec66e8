"""A training run's epochs as a Markdown table, read from the run folder's ``log.jsonl``.

    python -m perforated.train.log runs/nin_bn3

One row per epoch: the learning rate at its end, the train error (with dropout and augmentation on,
as the epoch ran), the test errors where the run evaluated, and the epoch's minutes (an epoch resumed
from a mid-epoch checkpoint counts only the minutes after the resume). A run resumed
from an older checkpoint logs some epochs twice; the last record of an epoch wins (it belongs to
the weights the run went on with).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List

HEADER = ["epoch", "lr at the end", "train error (dropout on)", "test top-1", "test top-5", "minutes"]


def read_log(folder: Path) -> List[dict]:
    """The run's epoch records in epoch order, the last one logged for each epoch."""
    path = Path(folder) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"train_log: no log at {path} (a run folder of perforated.train holds one)")
    by_epoch = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            by_epoch[int(record["epoch"])] = record
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"train_log: {path} line {number} is not an epoch record ({e})") from None
    return [by_epoch[e] for e in sorted(by_epoch)]


def table(records: List[dict]) -> str:
    """The epochs as a Markdown table; validation columns when the run held out a validation split."""
    def pct(record: dict, key: str) -> str:
        return f"{record[key]:.2f}%" if key in record else "-"

    val = any("val_top1_error" in r for r in records)
    header = HEADER[:3] + (["validation top-1", "validation top-5"] if val else []) + HEADER[3:]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        cells = [str(r["epoch"]), f"{r['lr']:.4f}" if "lr" in r else "-", pct(r, "train_error")]
        cells += [pct(r, "val_top1_error"), pct(r, "val_top5_error")] if val else []
        cells += [pct(r, "test_top1_error"), pct(r, "test_top5_error"),
                  f"{r['seconds'] / 60:.1f}" if "seconds" in r else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder of perforated.train (holds log.jsonl)")
    args = parser.parse_args(argv)
    try:
        records = read_log(args.run)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    print(table(records))


if __name__ == "__main__":
    main()
