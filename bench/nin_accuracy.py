"""NIN rows of the Table 3 analogue on CIFAR-10: speedup, multiplication and memory reduction, and the
top-1 error increase before and after fine-tuning, for grid and impact masks.

    python -m bench.nin_accuracy [--weights results/models/nin_cifar10.npz] [--finetune-epochs 1]

Plans: the same rate on conv1, conv2 and conv3, the rate whose multiplication reduction (uniform
count) is 2x / 3x / 4x (Grid keeps n x n positions, so its reduction comes out a little higher); and,
with ``--greedy DIR``, the plans a ``perforated.search.greedy`` search picked at 2x / 3x / 4x. The
masks are written as self-contained plans to results/plans/nin_<kind>_<t>x.json. Each perforated
network is fine-tuned from the original weights with its masks fixed (``perforated.train`` with
``--plan``), in runs/nin_accuracy/<weights hash>/<settings>/<kind>_<t>x/ (greedy rows:
greedy_<t>x_<mask digest>/), which resumes if interrupted; finished rows are kept in rows.json
beside them, so a stopped run starts again where it was. Errors are on the whole test set; speedups are whole-network forward times at batch 128 in alternating rounds.

Writes results/nin_accuracy.{json,md}; ``python -m bench.tables`` reads the JSON (it never retrains).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

import perforated
from bench import measure
from bench.paper import PAPER_NIN_TUNED
from bench.paths import RESULTS
from bench.markdown import md_table, shown
from bench.measure import interleaved_times
from bench.rates import rate_for_reduction
from perforated.data import load_dataset, preprocess_for, training_subsets
from perforated.files import file_digest, write_json_atomic
from perforated.search.impact import estimate_impact
from perforated.graph.model import Model
from perforated.graph.networks import NETWORKS
from perforated.graph.plan import PerforationPlan, layer_masks
from perforated.train.sgd import TrainConfig, evaluate_split, train

DEFAULT_WEIGHTS = RESULTS / "models" / "nin_cifar10.npz"
PAPER_NOTE = ("The paper's NIN rows (its Table 2, CIFAR-10, greedy impact plans): error increase after "
              "fine-tuning " + " and ".join(f"{e:+.1f} at {s:g}x" for s, e in PAPER_NIN_TUNED.items())
              + " are this issue's targets.")


def finetune(plan_path: Optional[Path], weights: Path, out: Path, epochs: int, lr: float, subset: Optional[int],
             data: Optional[str], test_images: Optional[int], lowrank: Optional[Path] = None,
             batchnorm: bool = False, teacher: Optional[Path] = None, val: int = 0) -> dict:
    """Fine-tune the perforated network (masks fixed; plan None: the dense network, the control), or
    with ``lowrank`` (a LowRankPlan JSON) the decomposed network whose decomposed ``weights`` are
    given; resumes from out/checkpoint.npz if present. ``batchnorm``: with a batch normalisation after
    every conv but the last, starting as the identity and folded back when saved (for weights that
    were trained that way: it re-centres the activations that perforation shifted). ``teacher``: the
    original network's weights, to fine-tune by distillation from it (perforated.train.distill). ``val``: hold
    out the project's validation split (perforated.train --val) from the fine-tuning images."""
    cfg = TrainConfig(network="nin", data=data, epochs=epochs, lr=lr, warmup=0.0, schedule="cosine",
                      plan=str(plan_path) if plan_path else None, lowrank=str(lowrank) if lowrank else None,
                      weights=str(weights), subset=subset, eval_every=epochs,
                      eval_subset=test_images,  # the same seeded test subset as run() (seed 0 + 1)
                      lr_mult={"cccp6": 0.1}, progress=50, batchnorm=batchnorm,
                      teacher=str(teacher) if teacher else None, val=val)
    resume = (out / "checkpoint.npz").is_file()
    result = train(cfg, out, resume=resume)
    last = result["history"][-1]
    return {"epochs": epochs, "lr": lr, "images_per_epoch": result["train_images"], "batchnorm": batchnorm,
            **({"validation_images_held_out": val} if val else {}),
            "distilled": bool(teacher),
            **({"distill_weight": cfg.distill_weight, "distill_temperature": cfg.distill_temperature} if teacher else {}),
            "top1_error": last["test_top1_error"], "seconds": sum(h["seconds"] for h in result["history"])}


def row_plans(args, impact: Dict[str, np.ndarray], plans_dir: Path):
    """(key, kind, target, plan path, writer) of every row: the equal-rate plans of each kind, then the
    plans a greedy search picked (``--greedy DIR``: its plan_<t>x.json files)."""
    out = []
    for kind in args.kinds:
        for target in args.targets:
            rate = rate_for_reduction("nin", target)
            out.append((f"{kind}_{target:g}x", kind, target, plans_dir / f"nin_{kind}_{target:g}x.json",
                        lambda path, kind=kind, rate=rate: PerforationPlan.from_masks(
                            "nin", layer_masks("nin", kind, rate, scores=impact)).save(path)))
    if args.greedy:
        for target in args.targets:
            source = Path(args.greedy) / f"plan_{target:g}x.json"
            if not source.is_file():
                measure.progress(f"greedy: no {source} (the search did not reach {target:g}x); row skipped")
                continue
            layers = json.loads(source.read_text())["layers"]
            made = sorted({spec.get("made_as", "indices") for spec in layers.values()})
            kind = "greedy " + "+".join(made)
            # keyed by the masks too: a search re-picked (or another search) gets its own row and run
            digest = hashlib.sha256(json.dumps(layers, sort_keys=True).encode()).hexdigest()[:8]
            out.append((f"greedy_{target:g}x_{digest}", kind, target, plans_dir / f"nin_greedy_{target:g}x.json",
                        lambda path, source=source: path.write_text(source.read_text())))
    return out


def run(args) -> Tuple[dict, List[str]]:
    """(the state of finished rows, the keys of this invocation's rows in table order)."""
    # finished rows and fine-tuning runs are kept per weights file and fine-tuning settings: new
    # weights or settings start afresh
    runs = (Path(args.runs) / file_digest(args.weights)
            / f"ft{args.finetune_epochs}_lr{args.finetune_lr:g}_n{args.finetune_subset or 'all'}"
              f"{'_bn' if args.finetune_batchnorm else ''}"
              f"{f'_kd{TrainConfig.distill_weight:g}_T{TrainConfig.distill_temperature:g}' if args.finetune_distill else ''}"
              f"{f'_val{args.val}' if args.val else ''}")
    runs.mkdir(parents=True, exist_ok=True)
    state_path = runs / "rows.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    splits = load_dataset(args.data)
    preprocess = preprocess_for(args.weights, splits["train"])
    test = splits["test"]
    if args.test_images:
        test = test.subset(min(args.test_images, len(test)), seed=1)
    if "dense_error" not in state:
        measure.progress("original network on the test set")
        state["dense_error"] = evaluate_split(Model("nin", 100, weights=args.weights), test, preprocess)["top1_error"]
        state["test_images"] = len(test)
        write_json_atomic(state_path, state)
    if state["test_images"] != len(test):
        raise ValueError(f"nin_accuracy: {state_path} holds rows measured on {state['test_images']} test images, "
                         f"this run asks for {len(test)} (--test-images); use another --runs folder")
    impact = {}
    if "impact" in args.kinds and any("error" not in state.get("rows", {}).get(f"impact_{t:g}x", {})
                                      for t in args.targets):
        measure.progress(f"impact maps over {args.impact_images} training images")
        [(ix, iy)] = training_subsets(args.data, args.weights, [args.impact_images], seed=0)
        impact = estimate_impact(Model("nin", 100, weights=args.weights), ix, iy)
    plans_dir = args.out / "plans"
    plans_dir.mkdir(parents=True, exist_ok=True)
    keys = []
    for key, kind, target, plan_path, make in row_plans(args, impact, plans_dir):
        keys.append(key)
        row = state.setdefault("rows", {}).get(key, {})
        if "error" in row:
            # a finished row keeps its masks: the plan file written beside the table is rewritten from
            # the row (it may hold another run's plan, e.g. a checkout where only runs/ was carried);
            # a row from before plan_json was kept takes it from the file it names, once
            if "plan_json" not in row:
                row["plan_json"] = json.loads(Path(row["plan"]).read_text())
            write_json_atomic(plan_path, row["plan_json"])  # json.loads kept the key order: no spurious diff
            row["plan"] = str(plan_path)
        if "error" not in row:
            make(plan_path)  # (re)written for these weights
            measure.progress(f"{key}: error before fine-tuning")
            model = Model("nin", 100, plan=plan_path, weights=args.weights)
            row.update(kind=kind, target=target, plan=str(plan_path), plan_json=json.loads(plan_path.read_text()),
                       error=evaluate_split(model, test, preprocess)["top1_error"])
        if "tuned_error" not in row and args.finetune_epochs > 0:
            measure.progress(f"{key}: fine-tuning {args.finetune_epochs} epoch(s)")
            tuned = finetune(plan_path, args.weights, runs / key, args.finetune_epochs, args.finetune_lr,
                             args.finetune_subset, args.data, args.test_images, batchnorm=args.finetune_batchnorm,
                             teacher=args.weights if args.finetune_distill else None, val=args.val)
            row.update(tuned_error=tuned["top1_error"], finetune=tuned)
        state["rows"][key] = row
        write_json_atomic(state_path, state)
    if "dense_tuned_error" not in state and args.finetune_epochs > 0 and args.control:
        # the control: the same extra training changes the original network too (for better or worse),
        # so tuned rows are compared with the original fine-tuned alike as well
        measure.progress(f"original network: the same fine-tuning ({args.finetune_epochs} epoch(s))")
        tuned = finetune(None, args.weights, runs / "dense", args.finetune_epochs, args.finetune_lr,
                         args.finetune_subset, args.data, args.test_images, batchnorm=args.finetune_batchnorm,
                         teacher=args.weights if args.finetune_distill else None, val=args.val)
        state["dense_tuned_error"] = tuned["top1_error"]
        write_json_atomic(state_path, state)
    return state, keys


def measure_speed(state: dict, keys: List[str], rounds: int) -> None:
    batch = NETWORKS["nin"]["timing_batch"]
    models = [Model("nin", batch)] + [Model("nin", batch, plan=state["rows"][k]["plan"]) for k in keys]
    measure.progress(f"timing {len(models)} networks at batch {batch}, {rounds} alternating rounds")
    times = interleaved_times(models, rounds)
    dense = models[0]
    for k, m, t in zip(keys, models[1:], times[1:]):
        r = state["rows"][k]
        r.update(rate=float(np.mean([mask.rate for mask in m.masks.values()])),
                 rates={name: float(m.masks[name].rate) if name in m.masks else 0.0
                        for name in ("conv1", "conv2", "conv3")},
                 speedup=times[0]["median"] / t["median"], mult_reduction=dense.multiply_adds() / m.multiply_adds(),
                 mem_reduction=dense.activation_bytes() / m.activation_bytes(), time=t)
    state["dense_time"] = times[0]


def write(state: dict, keys: List[str], args, seconds: float) -> dict:
    meta = measure.machine_metadata()
    meta.update(threads=perforated.get_num_threads(), rounds=args.rounds, seconds=seconds, weights=shown(args.weights),
                weights_digest=file_digest(args.weights))
    rows = []
    for r in (state["rows"][k] for k in keys):
        r = dict({k: v for k, v in r.items() if k != "plan_json"}, error_increase=r["error"] - state["dense_error"])
        if r.get("tuned_error") is not None:
            r["tuned_error_increase"] = r["tuned_error"] - state["dense_error"]
            if state.get("dense_tuned_error") is not None:
                r["tuned_error_increase_vs_tuned_dense"] = r["tuned_error"] - state["dense_tuned_error"]
        rows.append(r)
    raw = {"metadata": meta, "dense_error": state["dense_error"], "dense_time": state.get("dense_time"),
           "test_images": state["test_images"], "dense_tuned_error": state.get("dense_tuned_error"),
           "rows": rows, "note": PAPER_NOTE}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "nin_accuracy.json", raw)
    (args.out / "nin_accuracy.md").write_text("\n".join(markdown(raw)) + "\n")
    if args.out.resolve() == RESULTS.resolve():  # (bench.readme imports the tables, which import this module)
        print("the README's accuracy table follows these rows after: python -m bench.readme", file=sys.stderr)
    return raw


def table(raw: dict) -> tuple:
    header = ["mask", "target", "rates conv1/conv2/conv3", "speedup", "mult. red.", "mem. red.", "error", "error+",
              "tuned error", "tuned error+", "tuned error+ vs original tuned alike", "fine-tuning"]
    rows = []
    for r in raw["rows"]:
        ft = r.get("finetune")
        rates = "/".join(f"{v:.2f}" for v in r["rates"].values()) if "rates" in r else f"{r['rate']:.3f}"
        alike = r.get("tuned_error_increase_vs_tuned_dense")
        rows.append([r["kind"], f"{r['target']:g}x", rates, f"{r['speedup']:.2f}",
                     f"{r['mult_reduction']:.2f}", f"{r['mem_reduction']:.2f}", f"{r['error']:.2f}%",
                     f"{r['error_increase']:+.2f}",
                     f"{r['tuned_error']:.2f}%" if r.get("tuned_error") is not None else "not measured",
                     f"{r['tuned_error_increase']:+.2f}" if r.get("tuned_error_increase") is not None else "not measured",
                     f"{alike:+.2f}" if alike is not None else "not measured",
                     f"{ft['epochs']} x {ft['images_per_epoch']} images, lr {ft['lr']:g}"
                     f"{', batch norm' if ft.get('batchnorm') else ''}"
                     f"{', distilled from the original' if ft.get('distilled') else ''}" if ft else "none"])
    return header, rows


def markdown(raw: dict) -> List[str]:
    m = raw["metadata"]
    header, rows = table(raw)
    weights = m["weights"] + (f" (SHA-256 {m['weights_digest']}...)" if m.get("weights_digest") else "")
    return ["# NIN on CIFAR-10: perforated networks, error before and after fine-tuning", "",
            f"Command: `{m['command']}`  ", f"Date: {m['date']}  ",
            f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs; {m['threads']} threads  ",
            f"OpenBLAS: {m.get('openblas_config', 'n/a')}  ",
            f"Weights: {weights}; original network top-1 error {raw['dense_error']:.2f}% "
            f"({raw['test_images']} test images; every error below is on the same images)  ",
            f"Speedup: whole-network forward time at batch 128, median of {m['rounds']} alternating rounds.  ",
            "Original network fine-tuned alike (the control: the same extra training changes the original "
            "network too, for better or worse): "
            + (f"{raw['dense_tuned_error']:.2f}%." if raw.get("dense_tuned_error") is not None else "not measured."),
            "",
           ] + md_table(header, rows) + ["", raw["note"]]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--data", default=None)
    p.add_argument("--kinds", type=lambda s: [k for k in s.split(",") if k], default=["grid", "impact"])
    p.add_argument("--targets", type=lambda s: [float(t) for t in s.split(",") if t], default=[2.0, 3.0, 4.0])
    p.add_argument("--impact-images", type=int, default=5000)
    p.add_argument("--greedy", default=None, help="a perforated.search.greedy output folder: add rows for its "
                   "plan_<t>x.json plans (masks chosen by the search against measured time)")
    p.add_argument("--finetune-epochs", type=int, default=1,
                   help="0: no fine-tuning; results/nin_accuracy.md uses 12 with --finetune-lr 0.01 "
                        "--finetune-batchnorm (scripts/nin_results.sh's default, hours per row on 2 cores)")
    p.add_argument("--finetune-lr", type=float, default=0.001,
                   help="0.001 suits one epoch; 0.01 with 12 epochs and --finetune-batchnorm (results/)")
    p.add_argument("--finetune-batchnorm", action="store_true",
                   help="fine-tune with batch normalisation after every conv but the last (identity at the start, "
                        "folded back): for weights trained with perforated.train --batchnorm")
    p.add_argument("--finetune-distill", action="store_true",
                   help="fine-tune by distillation from the original network (its softened outputs as extra "
                        "targets, perforated.train.distill; not the paper's protocol)")
    p.add_argument("--no-control", dest="control", action="store_false",
                   help="do not fine-tune the original network alike (the control column then reads "
                        "'not measured'; a later run without this flag adds it)")
    p.add_argument("--finetune-subset", type=int, default=None, help="training images per fine-tuning epoch")
    p.add_argument("--val", type=int, default=0,
                   help="hold the project's validation split (N images, as perforated.train --val) out of "
                        "fine-tuning: for weights trained with it, so that choices are made on it")
    p.add_argument("--test-images", type=int, default=None, help="evaluate on this many test images "
                   "(default: all 10,000; fine-tuning runs report on all of them)")
    p.add_argument("--rounds", type=int, default=15, help="alternating timing rounds (cheap beside the "
                   "fine-tuning; 5 left about 10%% noise on this shared machine)")
    p.add_argument("--runs", default="runs/nin_accuracy", help="fine-tuning runs and finished rows (resumable)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not args.weights.is_file():
        p.error(f"--weights: no file at {args.weights} (train NIN first: see README, 'Training')")
    unknown = [k for k in args.kinds if k not in ("uniform", "grid", "pooling", "impact")]
    if unknown:
        p.error(f"--kinds: unknown {unknown}")
    start = time.perf_counter()
    state, keys = run(args)
    measure_speed(state, keys, args.rounds)
    raw = write(state, keys, args, time.perf_counter() - start)
    print("\n".join(markdown(raw)))


if __name__ == "__main__":
    main()
