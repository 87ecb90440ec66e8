"""Impact estimation and the greedy per-layer search (SPEC sections 4 and 6) on a PyTorch model.

``impact_maps(model, batches)``: per Conv2d, ``G(y, x) = mean over images of sum over channels
|dL/dV * V|`` (V the conv output, L the per-image cross-entropy, model in eval mode); for a layer already
perforated, V and dL/dV are those of its computed positions (the gradient of a computed value includes
the positions that copy it) and the other positions score 0, so masks chosen from the maps are nested.

``greedy_search(model, held_out, example_input, ...)``: the paper's greedy: from the dense model, raise one
layer's rate one notch per step (rates 0, 1/3, 1 - 1/k for k = 2..20), choosing the candidate with the
least ``(L - L0) / (t0 - t)``: L the mean NLL on the held-out batches, t the forward time of the whole
model measured on its device (our C path on CPU float32), both relative to the original model. Each step
is written as a plan (``step_NNN.json``, qualified module names, masks as positions) when ``out`` is given.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..search.greedy import RATES, next_notch
from ..ops.masks import make_mask
from .convert import conv_layers, output_sizes, perforate, plan_of
from .modules import PerforatedConv2d, strip_masks

Batches = Iterable[Tuple[torch.Tensor, torch.Tensor]]


def impact_maps(model: nn.Module, batches: Batches, layers: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """``{conv name: (h, w) float64 impact map}`` over `batches` of ``(x, labels)`` (see the module docstring)."""
    modules = dict(model.named_modules())
    names = list(layers) if layers is not None else [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    bad = [n for n in names if not isinstance(modules.get(n), nn.Conv2d)]
    if bad:
        raise ValueError(f"impact_maps: {bad} are not Conv2d modules of this model")
    outputs: Dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, inputs, output) -> None:
            output.retain_grad()
            outputs[name] = output
        return hook

    hooks = [modules[n].register_forward_hook(keep(n)) for n in names]
    sums: Dict[str, torch.Tensor] = {}
    images = 0
    training = model.training
    model.eval()
    try:
        for x, y in batches:
            device = next(model.parameters()).device
            x, y = x.to(device), y.to(device)
            outputs.clear()
            loss = F.cross_entropy(model(x), y, reduction="sum")  # per-image losses: their sum
            model.zero_grad(set_to_none=True)
            loss.backward()
            for n in names:
                v, g = outputs[n].detach(), outputs[n].grad
                flat_v, flat_g = v.flatten(2), g.flatten(2)
                module = modules[n]
                mask = module.mask_for(tuple(v.shape[2:])) if isinstance(module, PerforatedConv2d) else None
                if mask is None:
                    score = (flat_g * flat_v).abs().sum((0, 1))
                else:
                    idx = torch.as_tensor(mask.indices.astype(np.int64), device=v.device)
                    near = torch.as_tensor(mask.nearest.astype(np.int64), device=v.device)
                    g_c = torch.zeros(flat_g.shape[:2] + (mask.count,), dtype=g.dtype, device=g.device)
                    g_c.index_add_(2, near, flat_g)  # a computed value's gradient: its copies' too
                    score = torch.zeros(flat_v.shape[2], dtype=v.dtype, device=v.device)
                    score[idx] = (g_c * flat_v.index_select(2, idx)).abs().sum((0, 1))
                sums[n] = sums.get(n, 0) + score.double().cpu().reshape(v.shape[2:])
            images += len(y)
    finally:
        for h in hooks:
            h.remove()
        model.train(training)
        model.zero_grad(set_to_none=True)
    if images == 0:
        raise ValueError("impact_maps: batches gave no images")
    return {n: (sums[n] / images).numpy() for n in names}


def mean_nll(model: nn.Module, batches: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> float:
    training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        device = next(model.parameters()).device
        for x, y in batches:
            total += float(F.cross_entropy(model(x.to(device)), y.to(device), reduction="sum"))
            count += len(y)
    model.train(training)
    return total / max(count, 1)


def forward_time(model: nn.Module, x: torch.Tensor, repeat: int = 3) -> float:
    """Minimum wall time of `repeat` forward passes of `x` after one untimed (eval mode, no gradients;
    CUDA synchronised)."""
    training = model.training
    model.eval()
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    best = float("inf")
    with torch.no_grad():
        for i in range(repeat + 1):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i:
                best = min(best, time.perf_counter() - start)
    model.train(training)
    return best


def greedy_search(model: nn.Module, held_out: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                  example_input: torch.Tensor, *, target_speedup: Optional[float] = None, steps: int = 50,
                  kind: str = "impact", layers: Optional[Sequence[str]] = None,
                  impact_batches: Optional[Sequence[Tuple[torch.Tensor, torch.Tensor]]] = None,
                  repeat: int = 3, out: Optional[Path] = None,
                  time_fn: Optional[Callable[[nn.Module], float]] = None,
                  log: Callable[[dict], None] = lambda entry: None) -> Dict[str, object]:
    """Perforate `model` in place by the greedy search; returns ``{"plan", "history"}``.

    held_out: a few ``(x, labels)`` batches for the NLL (kept in memory: the same for every candidate).
    example_input: the timing batch (its forward time is t). kind: ``"impact"`` (maps recomputed on the
    current perforated model after every step, from `impact_batches`, default `held_out`), ``"uniform"`` or
    ``"grid"``. layers: qualified Conv2d names (default: every conv with more than one output position).
    Stops after `steps` steps, when the measured speedup reaches `target_speedup`, or when no layer can go
    further. time_fn(model) replaces the measured forward time (tests, other devices)."""
    if kind not in ("impact", "uniform", "grid"):
        raise ValueError(f"greedy_search: kind must be 'impact', 'uniform' or 'grid', got {kind!r}")
    names = list(layers) if layers is not None else conv_layers(model, example_input[:1])
    sizes = output_sizes(model, example_input[:1])
    missing = [n for n in names if n not in sizes]
    if missing:
        raise ValueError(f"greedy_search: {missing} are not Conv2d modules run by this model")
    perforate(model, {"layers": {n: {"rate": 0.0} for n in names}})  # every candidate a PerforatedConv2d
    modules = {n: model.get_submodule(n) for n in names}
    timer = time_fn or (lambda m: forward_time(m, example_input, repeat))
    l0, t0 = mean_nll(model, held_out), timer(model)
    level = {n: 0 for n in names}
    history: List[dict] = [{"step": 0, "nll": l0, "time_s": t0, "speedup": 1.0}]
    log(history[0])

    def mask_at(n: str, rate: float, maps: Optional[Dict[str, np.ndarray]]):
        if kind == "impact":
            return make_mask("impact", sizes[n], rate, 0, scores=np.ascontiguousarray(maps[n], dtype=np.float32))
        return make_mask(kind, sizes[n], rate, level[n] + 1000 * names.index(n))

    for step in range(1, steps + 1):
        maps = impact_maps(model, impact_batches or held_out, names) if kind == "impact" else None
        best = None
        for n in names:
            m = modules[n]
            now = m.mask_for(sizes[n])
            nxt = next_notch(kind, sizes[n], level[n], now.count if now is not None else sizes[n][0] * sizes[n][1])
            if nxt is None:
                continue
            saved = m.get_extra_state()  # the layer's committed perforation, put back after the trial
            m.set_perforation(mask=mask_at(n, RATES[nxt], maps))
            loss, t = mean_nll(model, held_out), timer(model)
            m.set_extra_state(saved)
            cost = (loss - l0) / (t0 - t) if t < t0 else float("inf")
            if best is None or cost < best[0]:
                best = (cost, n, nxt, loss, t)
        if best is None:
            break
        cost, n, nxt, loss, t = best
        modules[n].set_perforation(mask=mask_at(n, RATES[nxt], maps))
        level[n] = nxt
        entry = {"step": step, "layer": n, "rate": RATES[nxt], "nll": loss, "time_s": t, "speedup": t0 / t,
                 "cost": cost if np.isfinite(cost) else None}
        history.append(entry)
        log(entry)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"step_{step:03d}.json").write_text(json.dumps(dict(plan_of(model), **entry), indent=1))
        if target_speedup is not None and t0 / t >= target_speedup:
            break
    return {"plan": plan_of(model), "history": history}


def main(argv=None) -> int:
    """``python -m perforated.torch.search``: the greedy search on a torch model and CIFAR-10-like data."""
    import argparse

    from ..data import Preprocess, load_dataset
    from ..data import held_out_split
    from .finetune import ImageSet, build_model

    p = argparse.ArgumentParser(prog="python -m perforated.torch.search",
                                description="Greedy perforation search (SPEC section 6) on a PyTorch model: "
                                            "NLL on held-out training images, forward time measured here.")
    p.add_argument("--model", required=True, help="torchvision model name, model.onnx or file.py:function")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--weights", help="state dict (.pt) of the model to search on (a perforated one's masks "
                   "are dropped: the search starts from the dense network)")
    p.add_argument("--data", help="CIFAR-10 tarball, batches directory or image folder (default: the shared one)")
    p.add_argument("--held-out", type=int, default=1000, help="training images for the NLL (the last ones of a "
                   "seeded shuffle)")
    p.add_argument("--impact-images", type=int, default=500, help="images for the impact maps (kind impact)")
    p.add_argument("--batch", type=int, default=100, help="batch of the NLL and impact passes")
    p.add_argument("--timing-batch", type=int, default=32, help="batch whose forward time is measured")
    p.add_argument("--kind", default="impact", choices=("impact", "uniform", "grid"))
    p.add_argument("--target", type=float, default=2.0, help="stop at this measured speedup")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3, help="timed forwards per candidate (minimum taken)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for step_NNN.json plans and plan.json")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    train = load_dataset(args.data)["train"]
    pre = Preprocess.fit(train, "channel")
    images = ImageSet(train, pre)
    # held out: the tail of the seeded shuffle, as finetune --val takes it; impact images from the rest
    kept, held = held_out_split(len(train), min(args.held_out, len(train) - 1))

    def batches(idx):
        return list(torch.utils.data.DataLoader(torch.utils.data.Subset(images, idx.tolist()), batch_size=args.batch))

    held_out = batches(held)
    impact = held_out if args.kind != "impact" else batches(kept[:args.impact_images])
    model = build_model(args.model, args.num_classes)
    if args.weights:  # a perforated model's state dict loses its masks here: the search starts dense
        model.load_state_dict(strip_masks(torch.load(args.weights, map_location="cpu", weights_only=True)))
    example = torch.cat([x for x, _ in held_out])[:args.timing_batch]
    out = Path(args.out)
    result = greedy_search(model, held_out, example, target_speedup=args.target, steps=args.steps, kind=args.kind,
                           impact_batches=impact, repeat=args.repeat, out=out,
                           log=lambda entry: print(json.dumps(entry), flush=True))
    (out / "plan.json").write_text(json.dumps(result["plan"], indent=1))
    print(json.dumps({"event": "saved", "plan": str(out / "plan.json"),
                      "speedup": result["history"][-1]["speedup"], "steps": len(result["history"]) - 1}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
