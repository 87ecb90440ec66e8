"""Greedy multi-layer perforation against measured time (SPEC §6).

Every step tries raising each layer's rate one notch (for each allowed mask kind), measures the
candidate's NLL on held-out images and its forward time, and commits the candidate with the lowest

    cost = (L - L0) / (t0 - t)        (infinite when t >= t0)

where L0 and t0 belong to the ORIGINAL network. The original is timed again beside every candidate,
in alternating passes (original, candidate, original, ...), and the gain is taken as a fraction of
that time: t0 - t = t0 * (1 - t / t0_beside). A drift of this shared machine scales t and t0_beside
alike, so it leaves the gain and the cost unchanged (with t0 timed once at the start, a drift of a
few percent wipes out a one-notch gain, which is a few percent of t0 itself). Committed masks stay
fixed (quirk Q5); random kinds are drawn twice and the better draw kept; impact maps are
re-estimated on the current perforated network after every commit (iterative impact, SPEC §4.5),
so impact masks are nested.

Each step is saved atomically (``step_NNN.json`` and ``state.json`` in the output folder); a search
started again with the same folder resumes after the last saved step. At the end every saved step is
re-timed in alternating rounds (``retimed.json``) and the networks at about 2x / 3x / 4x are picked
by those speedups (``plan_<t>x.json``).

    python -m perforated.search.greedy --network nin --weights W.npz --data D --out runs/greedy_nin
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..files import write_json_atomic
from .impact import estimate_impact
from ..ops.masks import Mask, count_for_rate, make_mask
from ..graph.model import Model
from ..graph.plan import PerforationPlan
from ..timing import alternating_times
from ..graph.networks import NETWORKS, perforable_layers, pool_window

GAIN_RULE = "relative to the original timed beside"  # recorded in state.json: older folders used t0 alone
NOTCH_RULE = "next rate where the kind computes fewer positions"  # older folders: the next rate, always
RATES: Tuple[float, ...] = (0.0, 1 / 3) + tuple(1 - 1 / k for k in range(2, 21))  # 21 values


def kept_positions(kind: str, size: Tuple[int, int], rate: float) -> int:
    """Positions a `kind` mask keeps at `rate` on a `size` map: a grid keeps rows x cols (fewer than the
    others, whatever its seed); every other kind keeps count_for_rate (SPEC §4)."""
    if kind == "grid":
        return make_mask("grid", size, rate, 0).count
    return count_for_rate(size, rate)


def next_notch(kind: str, size: Tuple[int, int], level: int, computed_now: int) -> Optional[int]:
    """The next notch of a layer at rate index `level` computing `computed_now` positions: the first
    index of RATES above `level` at which a `kind` mask keeps fewer positions. Neighbouring rates often
    keep the same count on a small map (8x8 keeps floor(64/k) = 4 positions for every rate 1 - 1/k,
    k = 13..16; a grid keeps 4 from level 8 to 16), and such a notch would cost a step, and could even
    be committed on timing noise, while it gains nothing. None when no rate left keeps fewer."""
    for nxt in range(level + 1, len(RATES)):
        if kept_positions(kind, size, RATES[nxt]) < computed_now:
            return nxt
    return None


class GreedySearch:
    """The search state and its steps. ``timer="measured"`` times forward passes at ``timing_batch``;
    ``timer="macs"`` uses multiply-adds instead (deterministic: for tests and for dry runs)."""

    def __init__(self, network: str, weights, eval_x: np.ndarray, eval_y: np.ndarray, out: Path,
                 kinds: Sequence[str] = ("uniform",), impact_x: Optional[np.ndarray] = None,
                 impact_y: Optional[np.ndarray] = None, eval_batch: int = 100, timing_batch: Optional[int] = None,
                 timer: str = "measured", repeat: int = 3, seed: int = 0, log: Callable[[str], None] = print):
        if timer not in ("measured", "macs"):
            raise ValueError(f"GreedySearch: timer must be 'measured' or 'macs', got {timer!r}")
        if "impact" in kinds and impact_x is None:
            raise ValueError("GreedySearch: kind 'impact' needs impact_x / impact_y (training images)")
        self.network, self.weights, self.kinds = network, weights, tuple(kinds)
        self.eval_x, self.eval_y, self.impact_x, self.impact_y = eval_x, eval_y, impact_x, impact_y
        self.eval_batch, self.repeat, self.timer, self.log = eval_batch, repeat, timer, log
        self.timing_batch = timing_batch or NETWORKS[network]["timing_batch"]
        self.rows = NETWORKS[network]["layers"]()
        self.layers = perforable_layers(self.rows)
        self.sizes = Model(network, 1).output_sizes()
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(seed)
        self.fingerprint = self._fingerprint()
        self.stopped: Optional[str] = None  # why the search ended before its steps (saved, see run())
        state_path = self.out / "state.json"
        if state_path.is_file():
            self._resume(json.loads(state_path.read_text()))
        else:
            self.level = {l: 0 for l in self.layers}
            self.masks: Dict[str, Mask] = {}
            self.step = 0
            self.L0, self.t0 = self.evaluate({}), self.time({})
            self._save(None)
        self.impact = self._impact() if "impact" in self.kinds else {}

    def _fingerprint(self) -> str:
        """What a saved search depends on: network, weights, held-out and impact images, mask kinds,
        timer. A folder written with other inputs must not be resumed as if it were this search."""
        h = hashlib.sha256(json.dumps([self.network, self.kinds, self.timer, self.timing_batch,
                                       self.eval_batch]).encode())
        params = Model(self.network, 1, weights=self.weights).params
        for name in sorted(params):
            for key in sorted(params[name]):
                h.update(f"{name}/{key}".encode())
                h.update(np.ascontiguousarray(params[name][key]).tobytes())
        for arr in (self.eval_x, self.eval_y, self.impact_x, self.impact_y):
            if arr is not None:
                h.update(repr(arr.shape).encode())
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    # -- measurements --------------------------------------------------------------------------

    def evaluate(self, masks: Dict[str, Mask]) -> float:
        """Mean NLL over the held-out images."""
        model = Model(self.network, self.eval_batch, masks=masks, weights=self.weights)
        total, n = 0.0, len(self.eval_x)
        for start in range(0, n, self.eval_batch):
            x, y = self.eval_x[start:start + self.eval_batch], self.eval_y[start:start + self.eval_batch]
            real = len(x)
            if real < self.eval_batch:
                reps = np.arange(self.eval_batch) % real
                x, y = x[reps], y[reps]
            model.forward(np.ascontiguousarray(x, dtype=np.float32))
            total += float(model.loss(y)[0][:real].sum())
        return total / n

    def time(self, masks: Optional[Dict[str, Mask]] = None, plan: Optional[PerforationPlan] = None,
             repeat: Optional[int] = None, rng: Optional[np.random.Generator] = None) -> float:
        """Forward time of the network perforated by `masks` or `plan` (see times())."""
        return self.times([plan if plan is not None else masks], repeat, rng)[0]

    def times(self, variants: Sequence[Union[None, Dict[str, Mask], PerforationPlan]],
              repeat: Optional[int] = None, rng: Optional[np.random.Generator] = None) -> List[float]:
        """Forward times of the network perforated by each variant (masks, a plan, or None for the
        original), in alternating passes after a warm-up (pass p times every variant once; the median
        of `repeat` passes each), on one random input from `rng` (default: the search's);
        multiply-adds with ``timer="macs"``."""
        batch = self.timing_batch if self.timer == "measured" else 1
        models = [Model(self.network, batch, plan=v) if isinstance(v, PerforationPlan)
                  else Model(self.network, batch, masks=v) for v in variants]
        if self.timer == "macs":
            return [float(m.multiply_adds()) for m in models]
        x = (rng or self.rng).standard_normal(models[0].x.shape, dtype=np.float32)
        for model in models:
            model.x[...] = x
        times = alternating_times([model.forward for model in models], repeat or self.repeat)
        return [float(np.median(runs)) for runs in times]

    def retime(self, rounds: int = 5, repeat: int = 2) -> dict:
        """Time the original network and every saved step again, in alternating rounds (round r times
        each network once), and keep the median per network in retimed.json; pick() then uses these
        speedups. Why: during the search each candidate is timed once, minutes after t0, so a drift
        of this shared machine moves its speedup (one NIN search read 3.25x for a plan that measures
        2.5-2.6x in alternating rounds); alternation exposes every plan to the same drift. It narrows
        the noise, it does not remove it: two re-timings of one NIN search differed by up to 10%."""
        if rounds < 1:
            raise ValueError(f"GreedySearch.retime: rounds must be >= 1, got {rounds}")
        steps = saved_steps(self.out)
        plans = [None] + [PerforationPlan(self.network, r["plan"]["layers"]) for r in steps]
        self.log(f"greedy: re-timing the original network and {len(steps)} steps, {rounds} alternating rounds")
        times: List[List[float]] = [[] for _ in plans]
        rng = np.random.default_rng(0)  # not the search's generator: a resumed search draws the same masks
        # one model at a time, built again each round: a NIN at batch 128 holds 0.69 GB of activation
        # buffers, so keeping the models of 20-odd steps for all rounds would not fit a small machine
        for _ in range(rounds):
            for i, plan in enumerate(plans):
                times[i].append(self.time(plan=plan, repeat=repeat, rng=rng))
        t0 = float(np.median(times[0]))
        record = {"fingerprint": self.fingerprint, "timer": self.timer, "rounds": rounds, "repeat": repeat,
                  "timing_batch": self.timing_batch, "t0": t0,
                  "steps": [{"step": r["step"], "time": float(np.median(t)), "speedup": t0 / float(np.median(t))}
                            for r, t in zip(steps, times[1:])]}
        write_json_atomic(self.out / "retimed.json", record)
        return record

    def run_retimed(self, steps: int, until: Optional[float], rounds: int = 5) -> None:
        """run(), then retime(); with `until`, go on one step at a time (re-timing after each) until a
        re-timed step reaches it. The search's own timer drifts, so its `until` alone can stop short of
        the speedup the picks need. A search resumed after it finished is not re-timed: its
        retimed.json covers every saved step, and timing again (re-timings differ by up to 10%) could
        move the picks, and the rows fine-tuned from them, between two runs of one pipeline."""
        def finished(record: dict) -> bool:
            best = max((r["speedup"] for r in record["steps"]), default=1.0)
            return self.step >= steps or self.stopped is not None or (until is not None and best >= until)

        record = current_retiming(self.out, saved_steps(self.out))
        if record is not None and finished(record):
            self.log(f"greedy: {self.out / 'retimed.json'} re-timed all {self.step} saved steps and the search "
                     f"is finished; picking from it (delete the file to time again)")
            return
        self.run(steps, until=until)
        while True:
            record = self.retime(rounds)
            if until is None or finished(record):
                return
            before = self.step
            self.run(self.step + 1)
            if self.step == before:  # no layer has a notch left
                return

    def _impact(self) -> Dict[str, np.ndarray]:
        model = Model(self.network, self.eval_batch, masks=self.masks, weights=self.weights)
        return estimate_impact(model, self.impact_x, self.impact_y, self.layers)

    # -- masks -----------------------------------------------------------------------------------

    def _mask(self, layer: str, kind: str, rate: float) -> Mask:
        size, seed = self.sizes[layer], int(self.rng.integers(2**31))
        if kind == "impact":
            scores = self.impact[layer].astype(np.float32)
            if layer in self.masks:  # rank perforated positions below every computed one, even one of
                # impact 0 (a position no image activates): the masks stay nested without relying on ties
                computed = np.zeros(scores.size, bool)
                computed[self.masks[layer].indices] = True
                scores.reshape(-1)[~computed] = min(float(scores.min()), 0.0) - 1.0
            return make_mask("impact", size, rate, seed, scores=scores)
        if kind == "pooling":
            return make_mask("pooling", size, rate, seed, pool=pool_window(self.rows, layer, size))
        return make_mask(kind, size, rate, seed)

    # -- the search ------------------------------------------------------------------------------

    def next_level(self, layer: str, kind: str = "uniform") -> Optional[int]:
        """The layer's next notch for a `kind` mask (:func:`next_notch`)."""
        size = self.sizes[layer]
        now = self.masks[layer].count if layer in self.masks else size[0] * size[1]
        return next_notch(kind, size, self.level[layer], now)

    def candidates(self) -> List[dict]:
        out = []
        for layer in self.layers:
            for kind in self.kinds:
                nxt = self.next_level(layer, kind)
                if nxt is None:
                    continue
                rate = RATES[nxt]
                draws = 1 if kind == "impact" else 2  # random kinds: keep the better of two draws
                best = None
                for _ in range(draws):
                    masks = dict(self.masks, **{layer: self._mask(layer, kind, rate)})
                    loss = self.evaluate(masks)
                    if best is None or loss < best["loss"]:
                        best = {"layer": layer, "kind": kind, "rate": rate, "level": nxt, "masks": masks,
                                "loss": loss}
                best["t0_beside"], best["time"] = self.times([None, best["masks"]])
                gain = self.t0 * (1 - best["time"] / best["t0_beside"])
                best["cost"] = (best["loss"] - self.L0) / gain if gain > 0 else math.inf
                out.append(best)
        return out

    def speedup(self) -> float:
        """The last committed step's speedup by the search's timer (1 before any step)."""
        path = self.out / f"step_{self.step:03d}.json"
        return json.loads(path.read_text())["speedup"] if self.step and path.is_file() else 1.0

    def run(self, steps: int, until: Optional[float] = None) -> None:
        """Run until `steps` steps are saved in total (counting resumed ones), every layer is at its
        last notch (no rate left computes fewer positions), or (with `until`) a committed step
        reaches that speedup."""
        while self.step < steps and (until is None or self.speedup() < until):
            cands = self.candidates()
            if not cands:
                self._stop("every layer is at its last notch (no rate left computes fewer positions)")
                break
            best = min(cands, key=lambda c: c["cost"] if not math.isnan(c["cost"]) else math.inf)
            if not math.isfinite(best["cost"]):  # no candidate is faster than the original network
                self._stop("no candidate runs faster than the original network")
                break
            self.level[best["layer"]] = best["level"]
            self.masks = best["masks"]
            self.step += 1
            self.stopped = None
            self._save(best)
            self.log(f"greedy step {self.step}/{steps}: {best['layer']} -> rate {best['rate']:.3f} ({best['kind']}), "
                     f"NLL {best['loss']:.4f} (L0 {self.L0:.4f}), speedup {best['t0_beside'] / best['time']:.2f}x, "
                     f"cost {best['cost']:.3g}")
            if "impact" in self.kinds:
                self.impact = self._impact()

    def _stop(self, reason: str) -> None:
        """End the search before its steps, and say so in state.json: run_retimed() then treats a
        resumed search as finished and does not time it again."""
        self.stopped = reason
        self._save(None)
        self.log(f"greedy: {reason}; stopped")

    # -- persistence -----------------------------------------------------------------------------

    def plan_dict(self) -> dict:
        return PerforationPlan.from_masks(self.network, self.masks).to_dict()

    def _save(self, best: Optional[dict]) -> None:
        record = {"fingerprint": self.fingerprint, "step": self.step, "L0": self.L0, "t0": self.t0,
                  "timer": self.timer, "gain": GAIN_RULE, "notch": NOTCH_RULE, "stopped": self.stopped,
                  "level": self.level, "plan": self.plan_dict(), "rng": self.rng.bit_generator.state}
        if best is not None:
            record.update(loss=best["loss"], time=best["time"], cost=best["cost"], layer=best["layer"],
                          kind=best["kind"], rate=best["rate"], t0_beside=best["t0_beside"],
                          speedup=best["t0_beside"] / best["time"])
            write_json_atomic(self.out / f"step_{self.step:03d}.json", record)
        write_json_atomic(self.out / "state.json", record)

    def _resume(self, record: dict) -> None:
        if record.get("fingerprint") != self.fingerprint:
            raise ValueError(f"GreedySearch: {self.out} holds a search with other weights, images, mask kinds "
                             f"or timer (fingerprint {record.get('fingerprint')}, this search "
                             f"{self.fingerprint}); use a new --out folder, or delete this one to start over")
        self.step, self.L0, self.t0 = record["step"], record["L0"], record["t0"]
        self.stopped = record.get("stopped")
        self.level = {l: record["level"].get(l, 0) for l in self.layers}
        self.masks = {}
        for name, spec in record["plan"]["layers"].items():
            mask = Mask.from_indices(self.sizes[name], np.asarray(spec["indices"]), seed=spec["seed"])
            mask.kind = spec.get("made_as", mask.kind)  # keep the generator's name across a resume
            self.masks[name] = mask
        self.rng.bit_generator.state = record["rng"]
        self.log(f"greedy: resumed after step {self.step} from {self.out}")
        if self.step and record.get("gain") != GAIN_RULE:
            self.log(f"greedy: note: steps 1-{self.step} of this folder took their gains against a t0 timed once "
                     f"at the start; the next steps take them against the original timed beside each candidate")
        if self.step and record.get("notch") != NOTCH_RULE:
            self.log(f"greedy: note: steps 1-{self.step} of this folder raised a layer to the next rate even "
                     f"where that computed as many positions; the next steps skip such rates")

    def speedups(self) -> Tuple[List[dict], List[float], str]:
        """(saved steps, their speedups, where the speedups come from): the re-timed ones when
        retimed.json covers every saved step of this search, else the search's own timings."""
        steps = saved_steps(self.out)
        retimed = current_retiming(self.out, steps)
        if retimed:
            return steps, [r["speedup"] for r in retimed["steps"]], \
                f"re-timed, median of {retimed['rounds']} alternating rounds"
        return steps, [r["speedup"] for r in steps], "the search's timer"

    def pick(self, speedups: Sequence[float] = (2.0, 3.0, 4.0)) -> Dict[float, Path]:
        """Write plan_<s>x.json: of the saved steps reaching each speedup (re-timed speedups when
        retime() has run since the last step, else the search's timings), the one with the lowest
        held-out NLL, the earlier on a tie. Not simply the first: the NLL is not monotone along the
        path (impact masks are re-estimated on each perforated network), so a later step can be both
        fast enough and more accurate (NIN, results/greedy_nin.md of 2026-12-02: step 6 at 2.00x, NLL
        0.1518, after step 5 at 2.06x, 0.1552). A target no step reaches gets no plan, and a plan left
        from an earlier pick is removed."""
        steps, measured, source = self.speedups()
        picked = {}
        for target in speedups:
            dest = self.out / f"plan_{target:g}x.json"
            hit = min((i for i, s in enumerate(measured) if s >= target),
                      key=lambda i: (steps[i]["loss"], i), default=None)
            if hit is None:
                dest.unlink(missing_ok=True)
                continue
            record = steps[hit]
            write_json_atomic(dest, dict(record["plan"], step=record["step"], speedup=measured[hit],
                                         speedup_from=source, search_speedup=record["speedup"],
                                         nll=record["loss"]))
            picked[target] = dest
        return picked


def saved_steps(folder: Path) -> List[dict]:
    """The step_NNN.json records of a search folder, in order."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("step_*.json"))]


def current_retiming(folder: Path, steps: List[dict]) -> Optional[dict]:
    """retimed.json when it re-timed exactly these saved steps of the same search, else None (a step
    saved after the re-timing, or a folder reused by another search, makes it stale)."""
    path = Path(folder) / "retimed.json"
    if not steps or not path.is_file():
        return None
    retimed = json.loads(path.read_text())
    same = (retimed.get("fingerprint") == steps[0].get("fingerprint")
            and [r["step"] for r in retimed["steps"]] == [r["step"] for r in steps])
    return retimed if same else None


def write_report(folder: Path, path: Path, command: str = "") -> None:
    """A Markdown table of a search's saved steps (layer, rate, NLL, speedup, cost; the re-timed
    speedup when retimed.json covers them) and its picked plans."""
    folder = Path(folder)
    steps = saved_steps(folder)
    if not steps:
        raise ValueError(f"write_report: no step_*.json in {folder}")
    retimed = current_retiming(folder, steps)  # the speedups pick() used, when they were re-timed
    lines = [f"# Greedy perforation search: {folder.name}", ""]
    if command:
        lines += [f"Command: `{command}`  "]
    lines += [f"Original network: NLL {steps[0]['L0']:.4f}, forward {steps[0]['t0'] * 1e3:.1f} ms "
              f"(timer: {steps[0]['timer']})."]
    header = "| step | layer | rate | mask | NLL | speedup | cost |"
    if retimed:
        lines += [f"Re-timed: the original network and every step at batch {retimed['timing_batch']}, median of "
                  f"{retimed['rounds']} alternating rounds (each round times every network once, median of "
                  f"{retimed['repeat']} passes); the original network: {retimed['t0'] * 1e3:.1f} ms."]
        header += " re-timed speedup |"
    lines += ["", header, "|" + "---|" * (header.count("|") - 1)]
    for i, r in enumerate(steps):
        line = (f"| {r['step']} | {r['layer']} | {r['rate']:.3f} | {r['kind']} "
                f"| {r['loss']:.4f} | {r['speedup']:.2f} | {r['cost']:.3g} |")
        lines.append(line + (f" {retimed['steps'][i]['speedup']:.2f} |" if retimed else ""))
    picked = sorted(folder.glob("plan_*x.json"), key=lambda p: float(p.stem[5:-1]))
    if picked:
        source = json.loads(picked[0].read_text()).get("speedup_from", "the search's timer")
        lines += ["", f"Picked (of the steps reaching each speedup, the lowest NLL; speedups: {source}):", ""]
        for p in picked:
            plan = json.loads(p.read_text())
            rates = ", ".join(f"{n} {spec['rate']:.3f}" for n, spec in sorted(plan["layers"].items()))
            lines.append(f"- {p.stem[5:]}: step {plan['step']}, speedup {plan['speedup']:.2f}, NLL {plan['nll']:.4f}: {rates}")
    Path(path).write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    import argparse

    from .. import data as D

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="nin")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", help="CIFAR-10 tarball, image folder or cifar-10-batches-py "
                        "(default: the shared CIFAR-10 tarball)")
    parser.add_argument("--out", required=True, help="folder for step files; reused to resume")
    parser.add_argument("--steps", type=int, default=50, help="steps in total (reference: NIN 50)")
    parser.add_argument("--kinds", default="uniform", help="comma-separated mask kinds to try")
    parser.add_argument("--eval-images", type=int, default=10000, help="held-out training images for the NLL")
    parser.add_argument("--val", type=int, default=0,
                        help="take the NLL images from the project's validation split instead (its N images, "
                             "held out of training by perforated.train --val N; 5000 for CIFAR-10) and the "
                             "impact images from the rest")
    parser.add_argument("--impact-images", type=int, default=5000)
    parser.add_argument("--timer", default="measured", choices=("measured", "macs"))
    parser.add_argument("--until", type=float, default=None,
                        help="stop once a step reaches this speedup (e.g. 4: enough for the 2x/3x/4x plans); "
                             "with re-timing, once a re-timed step does")
    parser.add_argument("--eval-batch", type=int, default=100)
    parser.add_argument("--retime-rounds", type=int, default=5,
                        help="re-time every step in this many alternating rounds before picking the 2x/3x/4x "
                             "plans (0: pick by the search's own timings; ignored with --timer macs)")
    parser.add_argument("--report", default=None, help="also write a Markdown summary of the steps here")
    args = parser.parse_args(argv)
    if args.val:
        kept, val = D.load_dataset(args.data)["train"].split_off(args.val)
        preprocess = D.preprocess_for(args.weights, kept)
        impact = kept.subset(min(args.impact_images, len(kept)), seed=0)
        (ev_x, ev_y), (im_x, im_y) = (preprocess(val.images), val.labels), (preprocess(impact.images), impact.labels)
    else:
        (ev_x, ev_y), (im_x, im_y) = D.training_subsets(args.data, args.weights,
                                                         [args.eval_images, args.impact_images], seed=0)
    search = GreedySearch(args.network, args.weights, ev_x, ev_y, Path(args.out), kinds=args.kinds.split(","),
                          impact_x=im_x, impact_y=im_y, timer=args.timer, eval_batch=args.eval_batch,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.timer == "measured" and args.retime_rounds > 0:
        search.run_retimed(args.steps, args.until, args.retime_rounds)
    else:
        search.run(args.steps, until=args.until)
    for target, path in search.pick().items():
        print(f"{target:g}x: {path}")
    if args.report:
        write_report(search.out, Path(args.report), "python -m perforated.search.greedy " + " ".join(argv or sys.argv[1:]))


if __name__ == "__main__":
    main()
