"""python -m bench.readme — rewrite the README's generated results blocks from results/*.json.

``<!-- results:speed -->`` ... ``<!-- /results:speed -->``, from results/tables.json: the speed table of
the paper's networks (multiplication reduction, speedup over our dense network, the paper's CPU
speedup, speedup over the fastest dense peer) and our dense speed against that peer, with the run's
command, machine and date. One rule picks every figure: the median time of each call in the run's
alternating rounds, as results/tables.md.

``<!-- results:accuracy -->`` ... ``<!-- /results:accuracy -->``, from results/nin_accuracy.json: the NIN
rows before and after fine-tuning (greedy impact, impact and grid plans at each target), with the
run's command, machine and date; an error increase after fine-tuning is bold where it meets the
paper's target at that speedup (bench.paper.PAPER_NIN_TUNED).

``<!-- results:masks -->``, from results/mask_comparison.json: every mask kind and baseline on the whole NIN at
nominal rate 0.75 (one rule: the rows asked for that rate, with the rate each kind really took), error
increase before fine-tuning and measured speedup.

``<!-- results:lowrank -->``, from results/lowrank_nin.json: NIN's low-rank, perforation and combined plans
at each target, measured speedup and error increase before and after fine-tuning, from that one run.

``--check`` exits 1 when the README differs (tests run it); ``python -m bench.tables`` (a full run into
results/) and scripts/nin_results.sh rewrite the blocks themselves.
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
ACC_START, ACC_END = "<!-- results:accuracy -->", "<!-- /results:accuracy -->"
MASKS_START, MASKS_END = "<!-- results:masks -->", "<!-- /results:masks -->"
LR_START, LR_END = "<!-- results:lowrank -->", "<!-- /results:lowrank -->"
MASK_RATE = 0.75  # the nominal rate the README quotes the mask comparison at
PLAN_NAMES = {"greedy impact": "greedy impact", "impact": "impact, equal rates", "grid": "grid, equal rates"}
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


def accuracy_block(acc: dict) -> List[str]:
    """The accuracy block's Markdown lines for a bench.nin_accuracy result (``results/nin_accuracy.json``)."""
    from bench.paper import PAPER_NIN_TUNED

    m = acc["metadata"]
    rows = []
    targets = sorted({r["target"] for r in acc["rows"]})
    for target in targets:
        for kind in PLAN_NAMES:
            for r in (r for r in acc["rows"] if r["kind"] == kind and r["target"] == target):
                paper = PAPER_NIN_TUNED.get(target)
                tuned = r.get("tuned_error_increase")
                after = "not measured" if tuned is None else f"{tuned:+.2f}"
                if tuned is not None and paper is not None and tuned <= paper:
                    after = f"**{after}**"
                rows.append([f"{PLAN_NAMES[kind]} {target:g}x", f"{r['speedup']:.2f}", f"{r['error_increase']:+.2f}",
                             after, f"{paper:+.1f}" if paper is not None else "-"])
    ft = next((r["finetune"] for r in acc["rows"] if r.get("finetune")), None)
    recipe = (f"{ft['epochs']} epochs at lr {ft['lr']:g}" + (" with batch norm" if ft.get("batchnorm") else "")
              if ft else "no fine-tuning")
    intro = (f"`{m['command']}` (`results/nin_accuracy.md`), {m['date']}, {m['cpu']} ({m['logical_cpus']} logical "
             f"CPUs); original network top-1 error {acc['dense_error']:.2f}% on {acc['test_images']} test images, "
             f"{acc['dense_tuned_error']:.2f}% fine-tuned alike (the control); speedups: median of "
             f"{m['rounds']} alternating rounds at batch 128. Bold: meets the paper's target."
             if acc.get("dense_tuned_error") is not None else
             f"`{m['command']}` (`results/nin_accuracy.md`), {m['date']}, {m['cpu']}; original network top-1 error "
             f"{acc['dense_error']:.2f}% on {acc['test_images']} test images. Bold: meets the paper's target.")
    lines = [ACC_START, intro, ""]
    lines += md_table([f"NIN plan, {recipe}", "measured speedup", "error+ before", "after fine-tuning",
                       "paper target after (its greedy plans)"], rows)
    return lines + [ACC_END]


def masks_block(raw: dict) -> List[str]:
    """The mask comparison at nominal rate MASK_RATE on the whole network (``results/mask_comparison.json``)."""
    m = raw["metadata"]
    rows = sorted((r for r in raw["rows"] if r["scope"] == "network" and abs(r["nominal_rate"] - MASK_RATE) < 1e-9),
                  key=lambda r: r["error_increase"])
    if not rows:
        raise ValueError(f"mask_comparison.json has no whole-network rows at nominal rate {MASK_RATE}")
    intro = (f"`{m['command']}` (`results/mask_comparison.md`), {m['date']}, {m['cpu']} ({m['logical_cpus']} logical "
             f"CPUs); every kind asked for rate {MASK_RATE:g} on every perforable layer of NIN (the stride baselines "
             f"round to coarser grids: their own rate is listed); top-1 error on {m['images']} test images (original "
             f"{raw['dense']['top1_error']:.2f}%), before fine-tuning; speedup: median of {m['rounds']} alternating "
             f"rounds at batch 128:")
    table = md_table(["mask kind", "rate", "measured speedup", "error+ before fine-tuning"],
                     [[r["kind"], f"{r['rate']:.2f}", f"{r['speedup']:.2f}", f"{r['error_increase']:+.2f}"] for r in rows])
    return [MASKS_START, intro, ""] + table + [MASKS_END]


def lowrank_block(raw: dict) -> List[str]:
    """NIN's low-rank / perforation / combined rows (``results/lowrank_nin.json``), one run's figures."""
    m = raw["metadata"]
    net = next(n for n in raw["networks"] if n["network"] == "nin")
    ft = net.get("finetune")  # the recipe every row was fine-tuned with
    rows = []
    for r in sorted(net["rows"], key=lambda r: r["target"]):
        tuned = r.get("tuned_error_increase")
        rate = r["plan"].get("rate")
        method = r["method"] + (f", rate {rate:.2f}" if rate else "")
        rows.append([f"{method}, {r['target']:g}x", f"{r['theoretical_speedup']:.2f}", f"{r['measured_speedup']:.2f}",
                     f"{r['error_increase']:+.2f}", "not measured" if tuned is None else f"{tuned:+.2f}"])
    recipe = (f"{ft['epochs']} epoch(s) of {ft.get('subset') or 'all the'} training images at lr {ft['lr']:g}"
              if ft else "none")
    intro = (f"`{m['command']}` (`results/lowrank_nin.md`), {m['date']}, {m['cpu']} ({m['logical_cpus']} logical CPUs); "
             f"{m['nin_weights']}; original network {net['dense_error']:.2f}% there; speedup: median of "
             f"{m['repeat']} alternating rounds at batch {net['batch']}; fine-tuning: {recipe}:")
    table = md_table(["NIN plan, target", "theoretical speedup", "measured speedup", "error+ before",
                      "after fine-tuning"], rows)
    return [LR_START, intro, ""] + table + [LR_END]


# the optional blocks: results file, block maker, markers
OPTIONAL = [("nin_accuracy.json", accuracy_block, ACC_START, ACC_END),
            ("mask_comparison.json", masks_block, MASKS_START, MASKS_END),
            ("lowrank_nin.json", lowrank_block, LR_START, LR_END)]


def rewrite(text: str, block: List[str], start: str = START, end: str = END) -> str:
    """`text` with its block between `start` and `end` replaced (the markers must be there, once each)."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"README: expected one {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + "\n".join(block) + tail


def rewrite_all(text: str, raw: dict, accuracy: Optional[dict] = None, **others: Optional[dict]) -> str:
    """The blocks: speed from `raw` (tables.json), accuracy from `accuracy` (nin_accuracy.json), and the
    others of OPTIONAL by file stem (``mask_comparison=``, ``lowrank_nin=``), each rewritten when given."""
    text = rewrite(text, speed_block(raw))
    data = dict(others, nin_accuracy=accuracy)
    for name, make, start, end in OPTIONAL:
        if data.get(name[:-len(".json")]) is not None:
            text = rewrite(text, make(data[name[:-len(".json")]]), start, end)
    return text


def _optional(results: Path) -> dict:
    """The optional blocks' results present in `results`, by file stem."""
    out = {}
    for name, *_ in OPTIONAL:
        path = results / name
        if path.is_file():
            out[name[:-len(".json")]] = json.loads(path.read_text())
    return out


def _rewritten(text: str, raw: dict, results: Path) -> str:
    data = _optional(results)
    return rewrite_all(text, raw, data.pop("nin_accuracy", None), **data)


def update(raw: dict, readme: Path = README, results: Path = RESULTS) -> bool:
    """Rewrite the README's blocks from `raw` and the optional results in `results`; True when it changed."""
    text = readme.read_text()
    new = _rewritten(text, raw, results)
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
    results = Path(args.tables).resolve().parent
    if args.check:
        same = _rewritten(readme.read_text(), raw, results) == readme.read_text()
        print("README results block matches " + args.tables if same else
              f"README results block differs from {args.tables}: run python -m bench.readme")
        return 0 if same else 1
    print(("rewrote" if update(raw, readme, results) else "unchanged:") + f" the results blocks of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
