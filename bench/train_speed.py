"""Training throughput (images/s) of our C library vs PyTorch CPU on the same network, same run.

``python -m bench.train_speed --network nin --batch 128 --threads 2`` times full SGD steps
(forward with dropout, softmax cross-entropy, backward, momentum update) on random CIFAR-sized input
for ``perforated.graph.model.Model`` and for a PyTorch model built from the same rows (Caffe ceil-mode
pooling, inverted dropout), both with the given thread count, interleaved in rounds so that both see the same load of a
shared machine, and prints images/s of each (median over rounds) and their ratio. ``--check`` first compares the two networks' gradients on the same
weights (dropout left out) and prints the largest relative difference. ``--batchnorm`` times (and
checks) both networks with batch normalisation after every conv but the last, as
``python -m perforated.train --batchnorm`` trains. ``--plan P.json`` also times the network perforated by
that plan (as ``python -m perforated.train --plan`` fine-tunes it) and prints its training speedup over
the original network in the same rounds; PyTorch is then optional (``--no-peer``, or not installed).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import List

import numpy as np


def torch_model(rows: List[tuple], input_shape, classes: int, dropout: bool = True, batchnorm: bool = False):
    """A ``torch.nn.Sequential`` of the network rows (conv, relu, pool, dropout, lrn, fc); with
    ``batchnorm``, a ``BatchNorm2d`` named ``<conv>_bn`` after every conv but the last (as
    ``Model(batchnorm=True)``)."""
    import torch.nn as nn

    from perforated.ops.batchnorm import EPS, MOMENTUM

    mods, c = [], input_shape[0]
    last_conv = max(i for i, r in enumerate(rows) if r[0] == "conv")
    for index, (kind, name, p) in enumerate(rows):
        if kind == "conv":
            conv = nn.Conv2d(c, p["out"], p["kernel"], p.get("stride", 1), p.get("pad", 0), groups=p.get("groups", 1))
            mods.append((name, conv))
            c = p["out"]
            if batchnorm and index != last_conv:
                mods.append((name + "_bn", nn.BatchNorm2d(c, eps=EPS, momentum=MOMENTUM)))
        elif kind == "relu":
            mods.append((name, nn.ReLU(inplace=True)))
        elif kind == "dropout":
            if dropout:
                mods.append((name, nn.Dropout(p["ratio"])))
        elif kind == "pool":
            if p.get("global_"):
                mods.append((name, nn.AdaptiveAvgPool2d(1)))
            elif p["mode"] == "max":
                mods.append((name, nn.MaxPool2d(p["kernel"], p["stride"], p.get("pad", 0), ceil_mode=True)))
            else:
                mods.append((name, nn.AvgPool2d(p["kernel"], p["stride"], p.get("pad", 0), ceil_mode=True)))
        elif kind == "lrn":
            mods.append((name, nn.LocalResponseNorm(p["size"], p["alpha"], p["beta"], p["k"])))
        elif kind == "fc":
            mods.append((name + "_flat", nn.Flatten()))
            mods.append((name, nn.LazyLinear(p["out"])))
        else:
            raise ValueError(f"torch_model: unknown row kind {kind!r}")
    mods.append(("flatten", nn.Flatten()))
    from collections import OrderedDict

    return nn.Sequential(OrderedDict(mods))


def copy_weights_to_torch(model, net) -> None:
    import torch

    with torch.no_grad():
        for name, p in model.params.items():
            layer = getattr(net, name)
            layer.weight.copy_(torch.from_numpy(p["weight"]).reshape(layer.weight.shape))
            layer.bias.copy_(torch.from_numpy(p["bias"]))


def check_gradients(network: str = "nin", batch: int = 8, seed: int = 0, batchnorm: bool = False) -> float:
    """Largest relative difference (||a-b|| / ||b|| per parameter tensor, max over tensors) between our
    gradients (float32) and PyTorch's (float64) on the same weights and images, dropout removed.
    A norm, not the largest element: with batch normalisation a few outputs land within rounding of
    a ReLU's kink, and each flips its gradient element whole (seen: one element of 786,432)."""
    import torch

    from perforated.graph.model import Model
    from perforated.graph.networks import NETWORKS

    info = NETWORKS[network]
    rows = [r for r in info["layers"]() if r[0] != "dropout"]
    model = Model(rows, batch, input_shape=info["input"], classes=info["classes"], seed=seed, batchnorm=batchnorm)
    net = torch_model(rows, info["input"], info["classes"], batchnorm=batchnorm).double()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + tuple(info["input"])).astype(np.float32)
    y = rng.integers(0, info["classes"], batch)
    net(torch.zeros((1,) + tuple(info["input"]), dtype=torch.float64))  # materialise lazy layers
    copy_weights_to_torch(model, net)
    model.forward(x, training=True)
    model.loss(y)
    model.backward(y)
    out = net(torch.from_numpy(x).double())
    torch.nn.functional.cross_entropy(out, torch.from_numpy(y)).backward()
    worst = 0.0
    for name in model.params:
        layer = getattr(net, name)
        for key, ref in (("weight", layer.weight.grad), ("bias", layer.bias.grad)):
            if key == "bias" and name + "_bn" in model.params:
                continue  # a bias before a normalisation has a zero gradient: only rounding to compare
            ref = ref.numpy().reshape(model.params.grads[name][key].shape)
            diff = np.linalg.norm(model.params.grads[name][key] - ref) / max(np.linalg.norm(ref), 1e-30)
            worst = max(worst, float(diff))
    return worst


def ours_step(network: str, batch: int, batchnorm: bool = False, plan=None):
    """A closure running one SGD step of our model (perforated by ``plan`` when given, a plan JSON path)
    on fixed random input."""
    from perforated.graph.model import Model
    from perforated.train.sgd import SGD

    model = Model(network, batch, plan=plan, batchnorm=batchnorm)
    sgd = SGD(model, 0.9, 5e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(model.x.shape).astype(np.float32)
    y = rng.integers(0, model.classes, batch)

    def step():
        model.forward(x, training=True)
        model.loss(y)
        model.backward(y)
        sgd.step(1e-4)

    step.model = model  # what is timed, for a look (tests)
    return step


def torch_step(network: str, batch: int, batchnorm: bool = False):
    """The same for the PyTorch model (train mode: dropout on)."""
    import torch

    from perforated.graph.networks import NETWORKS

    info = NETWORKS[network]
    net = torch_model(info["layers"](), info["input"], info["classes"], batchnorm=batchnorm)
    net(torch.zeros((1,) + tuple(info["input"])))
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    x = torch.randn((batch,) + tuple(info["input"]))
    y = torch.randint(0, info["classes"], (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def interleaved(steps: dict, rounds: int, per_round: int, batch: int) -> dict:
    """images/s of each step function: one warm-up step each, then ``rounds`` rounds in which each
    runs ``per_round`` steps in turn (so both see the same load of a shared machine); median over rounds."""
    for fn in steps.values():
        fn()
    rates = {k: [] for k in steps}
    for _ in range(rounds):
        for k, fn in steps.items():
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            rates[k].append(per_round * batch / (time.perf_counter() - start))
    return {k: {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v))} for k, v in rates.items()}


def measure(network: str = "nin", batch: int = 128, rounds: int = 3, steps: int = 2, threads: int = 2,
            batchnorm: bool = False, plan=None, peer: bool = True, check: bool = False) -> dict:
    """images/s of each timed step (``perforated``: the original network; ``perforated+plan``: perforated
    by ``plan``; ``pytorch``: the peer, when ``peer``), the ratios, and the gradient check when asked."""
    import perforated

    if plan is not None and not Path(plan).is_file():
        raise FileNotFoundError(f"train_speed: no plan file at {plan}")
    if not peer and plan is None:
        raise ValueError("train_speed: without the peer, give a plan (there would be nothing to compare)")
    perforated.set_num_threads(threads)
    out = {"network": network, "batchnorm": batchnorm, "batch": batch, "threads": threads, "rounds": rounds,
           "steps_per_round": steps, "plan": str(plan) if plan else None}
    fns = {"perforated": ours_step(network, batch, batchnorm)}
    if plan is not None:
        fns["perforated+plan"] = ours_step(network, batch, batchnorm, plan)
    if peer:
        import torch

        torch.set_num_threads(threads)
        out["torch"] = torch.__version__
        if check:
            out["gradient_check"] = check_gradients(network, batchnorm=batchnorm)
        fns["pytorch"] = torch_step(network, batch, batchnorm)
    r = out["images_per_s"] = interleaved(fns, rounds, steps, batch)
    if peer:
        out["ratio_perforated_pytorch"] = r["perforated"]["median"] / r["pytorch"]["median"]
    if plan is not None:
        out["plan_training_speedup"] = r["perforated+plan"]["median"] / r["perforated"]["median"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="nin")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="steps per round and library")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--check", action="store_true", help="compare gradients with PyTorch first")
    p.add_argument("--batchnorm", action="store_true", help="both networks with batch normalisation")
    p.add_argument("--plan", default=None, help="also time the network perforated by this plan JSON")
    p.add_argument("--no-peer", action="store_true", help="leave PyTorch out (needs --plan)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    a = p.parse_args()
    if a.no_peer and a.plan is None:
        p.error("--no-peer needs --plan (without the peer and a plan there is nothing to compare)")
    if a.no_peer and a.check:
        p.error("--check compares gradients with PyTorch: leave out --no-peer")
    import perforated

    peer = not a.no_peer
    if peer and a.plan is not None:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("train_speed: PyTorch is not installed; timing without the peer")
            peer = False
    r = measure(a.network, a.batch, a.rounds, a.steps, a.threads, a.batchnorm, a.plan, peer, a.check)
    if "gradient_check" in r:
        print(f"gradient check vs PyTorch (float64, no dropout): largest relative difference (norm) "
              f"{r['gradient_check']:.2e}")
    print(f"{a.network}{' with batch normalisation' if a.batchnorm else ''} training step (forward+backward+SGD), batch {a.batch}, {a.threads} threads, "
          f"{a.rounds} interleaved rounds of {a.steps} steps each after 1 warm-up; median (min..max) images/s")
    rates = r["images_per_s"]
    extras = {"perforated": perforated.build_info(), "perforated+plan": f"plan {a.plan}",
              "pytorch": f"torch {r.get('torch')}"}
    for k in rates:
        print(f"  {k:15s}: {rates[k]['median']:.1f} ({rates[k]['min']:.1f}..{rates[k]['max']:.1f})   [{extras[k]}]")
    if "ratio_perforated_pytorch" in r:
        print(f"  ratio perforated/pytorch: {r['ratio_perforated_pytorch']:.2f}")
    if "plan_training_speedup" in r:
        print(f"  training speedup of the plan (perforated+plan / perforated): {r['plan_training_speedup']:.2f}")
    if a.json:
        from bench.measure import machine_metadata

        with open(a.json, "w") as f:
            json.dump(dict(r, machine=machine_metadata()), f, indent=2)


if __name__ == "__main__":
    main()
