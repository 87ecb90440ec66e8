"""NIN's accuracy columns in the low-rank table (issue 6): trained CIFAR-10 weights, fitting images,
fine-tuning of every row, and the "faster at equal accuracy loss" comparison.

- Fitting: channel decompositions and their rank energies use the responses of NIN on ``FIT_IMAGES``
  training images (normalised as the weights expect), not random images.
- Error: top-1 error on a seeded subset of the test set, the same images for every row.
- Fine-tuning (as bench.nin_accuracy does for perforated networks): each row's network is trained
  from its own starting weights (the decomposed ones for low-rank rows; masks fixed) for
  ``--finetune-epochs`` on ``--finetune-subset`` training images, and the original network alike as
  the control. Runs and finished rows live in runs/lowrank_nin/<weights hash>/ and resume.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from bench import measure
from bench.nin_accuracy import finetune
from perforated.search import lowrank as LR
from perforated.data import load_dataset, preprocess_for
from perforated.files import file_digest, write_json_atomic
from perforated.train.sgd import evaluate_split, save_weights

FIT_IMAGES = 128
SINGLE = ("perforation", "low-rank (spatial)", "low-rank (channel)")


def evaluator(weights_path: Path, images: int, data=None) -> Callable:
    """model -> top-1 error (%) on ``images`` test images (a seeded subset: the split is sorted by
    class), normalised as the weights expect; the same images for every model, so rows pair up."""
    splits = load_dataset(data)
    preprocess = preprocess_for(weights_path, splits["train"])
    test = splits["test"].subset(min(images, len(splits["test"])), seed=1)
    return lambda model: evaluate_split(model, test, preprocess)["top1_error"]


def row_key(row: dict) -> str:
    return re.sub(r"[^a-z0-9]+", "_", row["method"]).strip("_") + f"_{row['target']:g}x"


def _fresh_folder(folder: Path, what: dict) -> None:
    """A run folder for ``what`` (plan and settings): one left by an interrupted run of the same is kept
    (its checkpoint resumes), one of anything else is emptied (its checkpoint must not resume)."""
    stamp = folder / "run.json"
    if folder.exists() and (not stamp.is_file() or json.loads(stamp.read_text()) != what):
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, what)


def finetune_rows(net: dict, weights_path: Path, weights: LR.Weights, images: np.ndarray, args) -> None:
    """Fine-tune every row of ``net`` (NIN) and the original network; adds ``tuned_error`` and
    ``tuned_error_increase`` to the rows and ``dense_tuned_error`` to ``net``. Resumable."""
    runs = Path(args.runs) / file_digest(weights_path)
    runs.mkdir(parents=True, exist_ok=True)
    state_path = runs / "rows.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    preprocess = preprocess_for(weights_path, load_dataset(args.data)["train"])
    common = dict(epochs=args.finetune_epochs, lr=args.finetune_lr, subset=args.finetune_subset,
                  data=args.data, test_images=args.nin_test_images)
    for row in net["rows"]:
        key = row_key(row)
        plan = json.loads(json.dumps(row["plan"]))  # as stored: a changed plan is fine-tuned again
        if state.get(key, {}).get("plan") != plan or state[key].get("settings") != common:
            folder = runs / key
            _fresh_folder(folder, {"plan": plan, "settings": common})
            measure.progress(f"nin {key}: fine-tuning {args.finetune_epochs} epoch(s)")
            if row["method"] == "perforation":
                write_json_atomic(folder / "plan.json", row["plan"])
                tuned = finetune(folder / "plan.json", weights_path, folder / "run", **common)
            else:
                write_json_atomic(folder / "lowrank.json", row["plan"])
                lr_plan = LR.LowRankPlan.load(folder / "lowrank.json")
                model, _ = LR.apply_plan(lr_plan, 1, weights, images)  # the same fit as the row's
                save_weights(model, folder / "decomposed.npz", preprocess)
                tuned = finetune(None, folder / "decomposed.npz", folder / "run", lowrank=folder / "lowrank.json",
                                 **common)
            state[key] = {"tuned_error": tuned["top1_error"], "finetune": tuned, "plan": plan, "settings": common}
            write_json_atomic(state_path, state)
        row.update(tuned_error=state[key]["tuned_error"], finetune=state[key]["finetune"],
                   tuned_error_increase=state[key]["tuned_error"] - net["dense_error"])
    if state.get("dense", {}).get("settings") != common:
        measure.progress("nin original network: the same fine-tuning (the control)")
        _fresh_folder(runs / "dense", {"settings": common})
        state["dense"] = {"tuned_error": finetune(None, weights_path, runs / "dense", **common)["top1_error"],
                          "settings": common}
        write_json_atomic(state_path, state)
    net["dense_tuned_error"] = state["dense"]["tuned_error"]
    net["finetune"] = {k: common[k] for k in ("epochs", "lr", "subset")}


def equal_loss(net: dict, thresholds=(1.0, 2.0)) -> List[str]:
    """For each error-increase threshold: the best measured speedup of each method among its rows
    within it, and whether a combined plan beats every single method there (the paper's claim)."""
    rows = net["rows"]
    key = "tuned_error_increase" if all(r.get("tuned_error_increase") is not None for r in rows) else "error_increase"
    if any(r.get(key) is None for r in rows):
        return []
    which = "after fine-tuning" if key.startswith("tuned") else "before fine-tuning"
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = []
    for thr in thresholds:
        best: Dict[str, Optional[float]] = {}
        for m in methods:
            ok = [r["measured_speedup"] for r in rows if r["method"] == m and r[key] <= thr]
            best[m] = max(ok) if ok else None
        shown = ", ".join(f"{m} {best[m]:.2f}x" if best[m] else f"{m} none" for m in methods)
        singles = [v for m, v in best.items() if m in SINGLE and v]
        combined = [(v, m) for m, v in best.items() if m not in SINGLE and v]
        if combined and max(combined)[0] > max(singles, default=0.0):
            verdict = f"a combined plan is fastest ({max(combined)[1]})"
        else:
            fastest = max(((v, m) for m, v in best.items() if v), default=None)
            verdict = "no plan qualifies" if fastest is None else f"not shown: the fastest is {fastest[1]}"
        lines.append(f"error+ {which} <= {thr:+.1f} points: {shown}; {verdict}.")
    return lines
