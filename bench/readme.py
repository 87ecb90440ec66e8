"""python -m bench.readme — rewrite the README's generated results block from results/tables.json.

The block sits between ``<!-- results:speed -->`` and ``<!-- /results:speed -->``: the speed table of
the paper's networks (multiplication reduction, speedup over our dense network, the paper's CPU
speedup, speedup over the fastest dense peer) and our dense speed against that peer, with the run's
command, machine and date. One rule picks every figure: the median time of each call in the run's
alternating rounds, as results/tables.md. ``--check`` exits 1 when the README differs (tests run it);
``python -m bench.tables`` (a full run into results/) rewrites the block itself.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from bench.markdown import md_table
from bench.paths import RESULTS

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- results:speed -->", "<!-- /results:speed -->"
NAMES = {"nin": "NIN", "alexnet": "AlexNet", "vgg16": "VGG-16"}


def speed_block(raw: dict) -> List[str]:
    """The block's Markdown lines for a bench.tables result (``results/tables.json``)."""
    from bench.report import best_dense_peer

    meta = raw["metadata"]
    rows, dense_notes = [], []
    for net in raw["networks"]:
        best = best_dense_peer(net)  # (median seconds, label): the tables' own choice of peer
        name = NAMES.get(net["network"], net["network"])
        paper = [r["paper"]["speedup"] for r in net["rows"] if r.get("paper")]
        vs_peer = "n/a"
        if best:
            vs_peer = " / ".join(f"{best[0] / r['measured']['time']['median']:.2f}" for r in net["rows"]) \
                + f" ({best[1]})"
            dense = net["dense"]["time"]["median"]
            dense_notes.append(f"{name} {best[0] / dense:.2f}x ({dense / net['batch'] * 1e3:.2f} vs "
                               f"{best[0] / net['batch'] * 1e3:.2f} ms per image, {best[1]})")
        rows.append([f"{name} ({net['batch']})",
                     " / ".join(f"{r['mult_reduction']:.2f}" for r in net["rows"]),
                     " / ".join(f"{r['speedup']:.2f}" for r in net["rows"]),
                     " / ".join(f"{p:.1f}" for p in paper) if len(paper) == len(net["rows"]) else "-",
                     vs_peer])
    intro = (f"`{meta['command']}` (`results/tables.md`, `results/peers.csv`), {meta['date']}, {meta['cpu']} "
             f"({meta.get('isa') or 'ISA not recorded'}, {meta['logical_cpus']} logical CPUs), "
             f"{meta.get('threads', '?')} threads for every engine, commit {meta.get('commit') or 'not recorded'}; "
             f"medians of {meta.get('repeat', '?')} alternating rounds, peers timed in the same rounds as ours:")
    lines = [START, intro, ""]
    lines += md_table(["network (batch)", "mult. reduction", "speedup over our dense network", "paper (CPU)",
                       "over the best dense peer's network"], rows)
    if dense_notes:
        lines += ["", "Our dense networks against the fastest dense peer (its time / ours): "
                  + "; ".join(dense_notes) + "."]
    return lines + [END]


def rewrite(text: str, block: List[str]) -> str:
    """`text` with its block replaced (the markers must be there, once each)."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README: expected one {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + "\n".join(block) + tail


def update(raw: dict, readme: Path = README) -> bool:
    """Rewrite the README's block from `raw`; True when the file changed."""
    text = readme.read_text()
    new = rewrite(text, speed_block(raw))
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", default=str(RESULTS / "tables.json"), help="a bench.tables result")
    p.add_argument("--readme", default=str(README))
    p.add_argument("--check", action="store_true", help="exit 1 if the README's block differs; change nothing")
    args = p.parse_args(argv)
    raw = json.loads(Path(args.tables).read_text())
    readme = Path(args.readme)
    if args.check:
        same = rewrite(readme.read_text(), speed_block(raw)) == readme.read_text()
        print("README results block matches " + args.tables if same else
              f"README results block differs from {args.tables}: run python -m bench.readme")
        return 0 if same else 1
    print(("rewrote" if update(raw, readme) else "unchanged:") + f" the results block of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
