"""Low-rank vs perforation vs both (SPEC §9-§10, issue 6): ``python -m bench.lowrank_tables [--quick]``.

For VGG-16 (batch 16; quick 2), AlexNet (batch 256; quick 16) and NIN (batch 128; quick 8), at each
target theoretical speedup T (whole-network multiply-add reduction), in one run on this machine:

- low-rank, spatial (accnn's ``acc_conv``) and channel (Zhang et al.), ranks by rank selection at
  ``--ratio T``;
- perforation alone: the same uniform rate on every perforable layer (uniform masks), chosen by
  bisection so that the theoretical speedup is T;
- both: perforation at the rate giving sqrt(T) alone, then rank selection to T on top of it (the mask
  on the k x k part of channel-decomposed layers, on the horizontal part of spatial ones).

Each row gives the theoretical speedup, the measured CPU speedup (whole forward pass against the dense
network of the same run, random input) and the relative change of the logits against the dense network.
Weights are random (He, seeded): there is no ImageNet here, so accuracy is not measured; the logits
change only shows that the decomposition is not an identity. NIN accuracy columns read "not measured"
unless trained weights exist at results/models/nin_cifar10.npz: then NIN's plans are fitted on real
training images, its rows carry the top-1 error increase on CIFAR-10 test images before and after
fine-tuning (bench/lowrank_nin.py; resumable in runs/lowrank_nin/), and a summary says which method
is fastest at equal error increase. That NIN run is also written alone to results/lowrank_nin.*;
``--speed-only`` (what ``python -m bench.tables`` runs) never evaluates or trains: it times the plans
stored there again and keeps their accuracy columns.
Beside them: accnn's published VGG-16 figures and the paper's complementarity claim.
Writes results/lowrank{_quick}.md, .csv and .json (and results/lowrank_nin.* after a NIN accuracy run).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

import perforated
from bench import lowrank_nin, measure
from bench.markdown import NOT_MEASURED, md_table, write_csv
from bench.rates import rate_for_reduction
from perforated.search import lowrank as LR
from perforated.files import file_digest
from perforated.graph.model import Model
from perforated.graph.networks import NETWORKS
from perforated.graph.plan import PerforationPlan
from perforated.timing import alternating_times

QUICK_BATCH = {"vgg16": 2, "alexnet": 16, "nin": 8}
from bench.paths import RESULTS
NIN_WEIGHTS = RESULTS / "models" / "nin_cifar10.npz"
ACCURACY_FILE = "lowrank_nin.json"
TARGETS = {"vgg16": (2.4, 3.0), "alexnet": (2.0, 3.0), "nin": (2.0, 3.0)}
ACCNN_VGG16 = [  # MXNet accnn README, VGG-16 top-5 accuracy (original 89.6%)
    {"plan": "accnn 2.4x plan", "theoretical": 2.4, "cpu": 2.2, "gpu": 1.1, "top5": 88.6, "tuned_top5": 89.8},
    {"plan": "accnn rank selection 3x", "theoretical": 3.0, "cpu": 2.6, "gpu": 1.2, "top5": 87.5, "tuned_top5": 89.6},
]
CLAIM = ("The paper (Figurnov et al. 2016) presents perforation as complementary to other acceleration "
         "methods and combines it with the low-rank channel decomposition of Zhang et al.: a combined plan "
         "should be faster than either method alone at equal accuracy loss. Without ImageNet, VGG-16 and "
         "AlexNet rows test only the speed side (does a combined plan's measured speedup keep up with its "
         "theoretical one as well as each method alone?); NIN rows, with weights trained on CIFAR-10, also "
         "give the error increase at each theoretical speedup, before and after fine-tuning, and which method "
         "is fastest at equal error increase.")


def _time_beside(dense: Model, model: Model, x: np.ndarray, repeat: int) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(dense, model) forward times from `repeat` alternating rounds (dense, model, dense, ...): the
    plan's speedup then comes from timings exposed to the same drift of this shared machine (the
    dense network timed once before every plan gave measured/theoretical ratios that wandered)."""
    for m in (dense, model):
        m.x[...] = x
    return tuple(measure.summarize(r) for r in alternating_times([dense.forward, model.forward], repeat))


def plans_for(network: str, weights, images: Optional[np.ndarray] = None):
    """Yield ``(method, target, plan)`` of every row: low-rank spatial and channel by rank selection,
    uniform perforation by bisection, and both combinations (a PerforationPlan or a LowRankPlan)."""
    for target in TARGETS[network]:
        for method in ("spatial", "channel"):
            measure.progress(f"{network}: low-rank {method}, ratio {target}")
            yield f"low-rank ({method})", target, LR.plan_for_ratio(network, target, method, weights, images=images)
        rate = rate_for_reduction(network, target)
        measure.progress(f"{network}: perforation, rate {rate:.3f}")
        yield "perforation", target, PerforationPlan.uniform_rate(network, rate, kind="uniform", seed=1)
        half = rate_for_reduction(network, math.sqrt(target))
        for method in ("channel", "spatial"):
            measure.progress(f"{network}: perforation {half:.3f} + low-rank {method} to {target}")
            yield (f"perforation + low-rank ({method})", target,
                   LR.plan_for_ratio(network, target, method, weights, rate=half, seed=1, images=images))


def stored_plans(net: dict):
    """The ``(method, target, plan)`` of the rows of a stored run (e.g. results/lowrank_nin.json)."""
    for r in net["rows"]:
        plan = dict(r["plan"])
        if r["method"] == "perforation":
            yield r["method"], r["target"], PerforationPlan(plan["network"], plan["layers"])
        else:
            plan.pop("theoretical_speedup", None)
            yield r["method"], r["target"], LR.LowRankPlan(plan.pop("network"), plan.pop("layers"), **plan)


# kept from a stored run: its accuracy, and the logits change of its real-image fit (a speed-only run
# refits channel decompositions on random images, which times the same but changes the logits more)
ROW_ACCURACY = ("top1_error", "error_increase", "tuned_error", "tuned_error_increase", "finetune",
                "logits_relative_change")
NET_ACCURACY = ("dense_error", "dense_tuned_error", "finetune")


def run_network(network: str, batch: int, repeat: int, weights, evaluate=None,
                images: Optional[np.ndarray] = None, stored: Optional[dict] = None) -> Dict[str, object]:
    """evaluate: None, or a function model -> top-1 error (%) (NIN with trained weights); images: real
    images to fit channel decompositions and rank energies on (else random images, weight energies);
    stored: a stored run of this network whose plans are timed again and whose accuracy is kept."""
    x = np.random.default_rng(0).standard_normal((batch,) + tuple(NETWORKS[network]["input"]), np.float32)
    measure.progress(f"{network}: dense, batch {batch}")
    dense = Model(network, batch, weights=weights)  # kept: every plan is timed beside it
    dense.x[...] = x
    dense_time = measure.summarize(alternating_times([dense.forward], repeat)[0])
    ref = dense.forward().copy()
    dense_macs = dense.multiply_adds()
    dense_error = evaluate(dense) if evaluate else None
    rows: List[Dict[str, object]] = []
    plans = stored_plans(stored) if stored else plans_for(network, weights, images)
    for i, (label, target, plan) in enumerate(plans):
        if isinstance(plan, PerforationPlan):
            model = Model(network, batch, plan=plan, weights=weights)
        else:
            model, _ = LR.apply_plan(plan, batch, weights, images)
        beside, t = _time_beside(dense, model, x, repeat)
        logits = model.forward()
        r = {"method": label, "target": target, "plan": plan.to_dict(), "time": t, "dense_time_beside": beside,
             "theoretical_speedup": dense_macs / model.multiply_adds(),
             "measured_speedup": beside["median"] / t["median"],
             "logits_relative_change": float(np.linalg.norm(logits - ref) / np.linalg.norm(ref))}
        if evaluate:
            r["top1_error"] = evaluate(model)
            r["error_increase"] = r["top1_error"] - dense_error
        if stored:
            r.update({k: stored["rows"][i][k] for k in ROW_ACCURACY if k in stored["rows"][i]})
        rows.append(r)
        measure.progress(f"  {label} T={target}: theoretical {r['theoretical_speedup']:.2f}x, "
                         f"measured {r['measured_speedup']:.2f}x")
        del model
        gc.collect()
    net = {"network": network, "batch": batch, "dense_time": dense_time, "dense_multiply_adds": dense_macs,
           "dense_error": dense_error, "rows": rows}
    if stored:
        net.update({k: stored[k] for k in NET_ACCURACY if stored.get(k) is not None})
    return net


def _plan_summary(row: dict) -> str:
    layers = row["plan"]["layers"]
    rates = {s.get("rate", 0) for s in layers.values() if s.get("rate", 0) > 0}
    ranks = sum(1 for s in layers.values() if s.get("rank"))
    parts = []
    if rates:
        parts.append("rate " + "/".join(f"{r:.3f}" for r in sorted(rates)))
    if ranks:
        parts.append(f"{ranks} layers decomposed")
    return ", ".join(parts)


def table(raw: dict) -> tuple:
    """(header, rows) of the low-rank table: every network's rows of one run."""
    header = ["network", "batch", "target", "method", "plan", "theoretical speedup", "measured CPU speedup",
              "measured / theoretical", "logits rel. change vs dense", "error+ (NIN)", "tuned error+ (NIN)"]
    rows = []
    for net in raw["networks"]:
        for r in net["rows"]:
            err = NOT_MEASURED if net["network"] == "nin" else "-"
            before, tuned = r.get("error_increase"), r.get("tuned_error_increase")
            rows.append([net["network"], str(net["batch"]), f"{r['target']:g}", r["method"], _plan_summary(r),
                         f"{r['theoretical_speedup']:.2f}", f"{r['measured_speedup']:.2f}",
                         f"{r['measured_speedup'] / r['theoretical_speedup']:.2f}",
                         f"{r['logits_relative_change']:.3f}", f"{before:+.2f}" if before is not None else err,
                         f"{tuned:+.2f}" if tuned is not None else err])
    return header, rows


def write(raw: dict, out: Path, suffix: str) -> str:
    meta = raw["metadata"]
    header, rows = table(raw)
    write_csv(out / f"lowrank{suffix}.csv", header, rows)
    lines = ["# Low-rank decomposition, perforation, and both (issue 6)", "",
             f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
             f"Machine: {meta['cpu']}, {meta['logical_cpus']} logical CPUs (shared with other jobs: one run, "
             f"noisy), {meta['platform']}  ", f"Library: {meta['perforated_build']}  ",
             (f"Timing: whole forward pass; each plan timed in {meta['repeat']} alternating rounds with the dense "
              f"network after a warm-up, speedup = median dense / median plan of those rounds.  "
              if meta.get("timing") == "alternating" else
              f"Timing: whole forward pass, median of {meta['repeat']} runs after a warm-up; speedups against "
              f"the dense network timed in the same run.  "),
             f"Weights: {meta['weights']}. VGG-16 / AlexNet accuracy is not measured (no ImageNet); NIN: "
             f"{meta['nin_weights']}.  ", f"NIN accuracy columns: {meta.get('nin_accuracy_source', 'this run')}.  ",
             *([f"Note: {meta['note']}"] if meta.get("note") else []), "",
             "Theoretical speedup = dense multiply-adds / multiply-adds of the plan (whole network, FC "
             "included, perforated layers counting computed positions). Rank selection budget: whole "
             "network <= dense / T. Combined rows: uniform perforation at the rate giving sqrt(T) alone, then "
             "rank selection to T.", "",
             "Noise: quick runs time each plan once on a shared 2-core machine; a measured/theoretical ratio "
             "above 1 (or far apart between neighbouring rows) is noise, not a result. Small batches (NIN 8, "
             "VGG-16 2) also carry a per-layer overhead that the theoretical speedup ignores.", "",
             "## Ours", ""]
    lines += md_table(header, rows)
    for net in raw["networks"]:
        if net.get("dense_error") is None:
            continue
        ft = net.get("finetune")
        lines += ["", f"### {net['network']}: accuracy", "",
                  f"Original network: top-1 error {net['dense_error']:.2f}%"
                  + (f"; fine-tuned alike (the control: {ft['epochs']} epoch(s) x {ft['subset'] or 50000} "
                     f"images, lr {ft['lr']:g}): {net['dense_tuned_error']:.2f}%. Tuned error+ is against the "
                     f"original network's {net['dense_error']:.2f}%." if ft else "."),
                  "", "Faster at equal accuracy loss? (measured speedups of this run)", ""]
        lines += [f"- {line}" for line in lowrank_nin.equal_loss(net)]
    lines += ["", "## Published: MXNet accnn on VGG-16 (top-5 accuracy, original 89.6%)", ""]
    lines += md_table(["plan", "theoretical", "CPU speedup", "GPU speedup", "top-5", "top-5 after 5 epochs fine-tuning"],
                 [[a["plan"], f"{a['theoretical']}x", f"{a['cpu']}x", f"{a['gpu']}x", f"{a['top5']}%",
                   f"{a['tuned_top5']}%"] for a in ACCNN_VGG16])
    lines += ["", "accnn's measured/theoretical: 2.2/2.4 = 0.92, 2.6/3 = 0.87 (CPU).", "",
              "## The paper's complementarity claim", "", CLAIM, ""]
    text = "\n".join(lines)
    (out / f"lowrank{suffix}.md").write_text(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batches 2 / 16 / 8 (VGG-16 / AlexNet / NIN), one repeat")
    parser.add_argument("--networks", default="vgg16,alexnet,nin", help="comma-separated subset")
    parser.add_argument("--repeat", type=int, default=None, help="timed repeats (default 3; quick 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--nin-test-images", type=int, default=2000,
                        help="CIFAR-10 test images for NIN's error column (when trained weights exist)")
    parser.add_argument("--nin-fit-images", type=int, default=lowrank_nin.FIT_IMAGES,
                        help="training images whose responses fit NIN's channel decompositions and rank energies")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="NIN rows: 0 skips fine-tuning")
    parser.add_argument("--finetune-lr", type=float, default=0.001,
                        help="NIN rows: 0.001 takes the control of the 12.63%% weights from 12.65 to 13.45%% on "
                             "2,000 images (results/lowrank_nin.md); 0.005 made the 15.95%% weights' control "
                             "worse (16.25 -> 17.15%%; results/variants/lowrank_nin_lr0.005.md)")
    parser.add_argument("--finetune-subset", type=int, default=10000, help="training images per fine-tuning epoch")
    parser.add_argument("--data", default=None, help="CIFAR-10 (default: ../shared/datasets)")
    parser.add_argument("--runs", default="runs/lowrank_nin", help="NIN fine-tuning runs and finished rows (resumable)")
    parser.add_argument("--speed-only", action="store_true",
                        help="no NIN evaluation or fine-tuning: time NIN's plans stored in OUT/lowrank_nin.json "
                             "and keep their accuracy columns (what bench.tables does)")
    args = parser.parse_args(argv)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in networks if n not in TARGETS]
    if unknown:
        parser.error(f"--networks: unknown {unknown}; choose from {sorted(TARGETS)}")
    repeat = args.repeat or (1 if args.quick else 3)
    args.out.mkdir(parents=True, exist_ok=True)
    stored_file = args.out / ACCURACY_FILE
    results, accuracy_source, stored_meta = [], None, None
    for network in networks:
        batch = QUICK_BATCH[network] if args.quick else NETWORKS[network]["timing_batch"]
        trained = network == "nin" and NIN_WEIGHTS.is_file()
        weights = LR.network_weights(network, NIN_WEIGHTS) if trained else LR.network_weights(network, seed=0)
        if trained and not (args.quick or args.speed_only):
            results.append(nin_accuracy_run(args, batch, repeat, weights))
            accuracy_source = f"this run (also in results/{ACCURACY_FILE})"
        elif network == "nin" and stored_file.is_file():
            stored = json.loads(stored_file.read_text())
            results.append(run_network(network, batch, repeat, weights, stored=stored["networks"][0]))
            m = stored_meta = stored["metadata"]
            accuracy_source = (f"{stored_file} (`{m['command']}`, {m['date']}, {m['cpu']}): its plans, "
                               f"timed again here")
        else:
            results.append(run_network(network, batch, repeat, weights))
    meta = _metadata(args, repeat)
    if stored_meta is not None:  # the NIN errors are the stored run's: so is their description
        meta["nin_weights"] = stored_meta.get("nin_weights", meta["nin_weights"])
    meta["nin_accuracy_source"] = accuracy_source or "none (no trained NIN weights or stored NIN run)"
    raw = {"metadata": meta, "accnn_vgg16": ACCNN_VGG16, "claim": CLAIM, "networks": results}
    suffix = "_quick" if args.quick else ""
    (args.out / f"lowrank{suffix}.json").write_text(json.dumps(raw, indent=1, default=str))
    print(write(raw, args.out, suffix))
    measure.progress(f"wrote {args.out}/lowrank{suffix}.md (.csv, .json)")


def _metadata(args, repeat: int) -> dict:
    meta = measure.machine_metadata()
    meta.update(threads=perforated.get_num_threads(), repeat=repeat, quick=args.quick, timing="alternating",
                weights="random He initialisation, seed 0 (NIN: trained weights when present)",
                nin_weights=(f"trained weights results/models/nin_cifar10.npz (SHA-256 {file_digest(NIN_WEIGHTS)}...), "
                             f"error+ = top-1 error increase on "
                             f"{args.nin_test_images} CIFAR-10 test images (seeded random subset); channel "
                             f"decompositions (asymmetric) and rank energies fitted on the responses to "
                             f"{args.nin_fit_images} training images"
                             if NIN_WEIGHTS.is_file() else "no trained weights at results/models/nin_cifar10.npz"))
    return meta


def nin_accuracy_run(args, batch: int, repeat: int, weights) -> dict:
    """NIN rows with errors before and after fine-tuning; also written alone to results/lowrank_nin.*
    (which later speed-only runs, e.g. bench.tables, time again and take the accuracy from)."""
    evaluate = lowrank_nin.evaluator(NIN_WEIGHTS, args.nin_test_images, args.data)
    images = LR.fit_images(args.data, NIN_WEIGHTS, args.nin_fit_images)  # responses only, never labels
    net = run_network("nin", batch, repeat, weights, evaluate, images)
    if args.finetune_epochs > 0:
        lowrank_nin.finetune_rows(net, NIN_WEIGHTS, weights, images, args)
    meta = _metadata(args, repeat)
    meta["nin_accuracy_source"] = "this run"
    raw = {"metadata": meta, "accnn_vgg16": ACCNN_VGG16, "claim": CLAIM, "networks": [net]}
    (args.out / ACCURACY_FILE).write_text(json.dumps(raw, indent=1, default=str))
    write(raw, args.out, "_nin")
    return net


if __name__ == "__main__":
    main()
