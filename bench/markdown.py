"""Rendering helpers shared by every results writer of the harness: Markdown tables, CSV files, paths
as a reader would type them. The bottom of bench's import graph (imports nothing from bench)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Union

NOT_MEASURED = "not measured"


def md_table(header: List[str], rows: List[List[str]]) -> List[str]:
    """Lines of a Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def write_csv(path: Path, header: List[str], rows: List[List[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)


def shown(path: Path) -> str:
    """A path as the reader of the report would type it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_result(stem: Path, data: Union[dict, list], lines: List[str]) -> str:
    """``stem``.json (the measurements) and ``stem``.md (their table, `lines`), folder made if needed;
    returns the Markdown text."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
    text = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(text)
    return text
