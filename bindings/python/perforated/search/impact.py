"""Impact of output positions (SPEC §4.4): a first-order estimate of the loss change when a position is
zeroed, used to choose impact masks.

    G_l(x, y) = mean over images of sum over channels |dL/dV_l(x, y, c) * V_l(x, y, c)|

V_l is conv layer l's output before ReLU and L the per-image cross-entropy, with dropout off. ReLU runs
in place on V, so the model holds relu(V); that is enough: where V <= 0 the gradient through the
ReLU is 0, and where V > 0, relu(V) = V. On a perforated network the estimate covers the computed
positions and is 0 at the perforated ones ("iterative impact", SPEC §4.5, quirk Q1), so masks chosen
from it are nested.

    python -m perforated.search.impact --network nin --weights W.npz --data D [--plan P.json] --images 5000 --out impact.npz
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Iterable, Optional

import numpy as np

from ..graph.model import ConvStep, Model


def estimate_impact(model: Model, images: np.ndarray, labels: np.ndarray,
                    layers: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """Impact maps ``{layer: (h, w) float64}`` over ``images`` (N, C, H, W) float32 with ``labels`` (N,).

    ``layers``: conv layer names (default: every conv). Runs the model in batches of ``model.batch``;
    a last partial batch is padded with repeated images whose contribution is dropped."""
    convs = {s.name: s for s in model.steps if isinstance(s, ConvStep)}
    names = list(layers) if layers is not None else list(convs)
    unknown = [n for n in names if n not in convs]
    if unknown:
        raise ValueError(f"estimate_impact: no conv layers named {unknown}; the model has {sorted(convs)}")
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"estimate_impact: need as many labels as images (> 0), got {len(images)} images "
                         f"and {len(labels)} labels")
    sums = {n: np.zeros(convs[n].layout.positions, np.float64) for n in names}
    batch = model.batch
    for start in range(0, len(images), batch):
        x, y = images[start:start + batch], labels[start:start + batch]
        real = len(x)
        if real < batch:  # pad with repeats; their rows are excluded below
            reps = np.arange(batch) % real
            x, y = x[reps], y[reps]
        model.forward(np.ascontiguousarray(x, dtype=np.float32), training=False)
        model.loss(y)

        def hook(step, dy):
            if step.name in sums:
                # dy is the gradient of the MEAN loss: times batch gives the per-image loss's gradient
                g = np.abs(dy.reshape(batch, dy.shape[1], -1)[:real] * step.y.reshape(batch, dy.shape[1], -1)[:real])
                sums[step.name] += g.sum(axis=(0, 1), dtype=np.float64) * batch

        model.backward(y, hook=hook)
    maps = {}
    for n in names:
        step = convs[n]
        h, w = step.layout.h, step.layout.w
        full = np.zeros(h * w, np.float64)
        mask = step.layout.mask
        if mask is not None:
            full[mask.indices] = sums[n] / len(images)
        else:
            full[:] = sums[n] / len(images)
        maps[n] = full.reshape(h, w)
    return maps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="nin")
    parser.add_argument("--weights", required=True, help="trained weights (.npz, Model.save_weights format)")
    parser.add_argument("--data", help="CIFAR-10 tarball, image folder or cifar-10-batches-py "
                        "(default: the shared CIFAR-10 tarball)")
    parser.add_argument("--plan", help="a perforation plan: impact of the current perforated network")
    parser.add_argument("--images", type=int, default=5000, help="training images to average over (5000)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--layers", help="comma-separated conv layers (default: the perforable ones)")
    parser.add_argument("--out", required=True, help="output .npz of layer -> (h, w) impact map")
    args = parser.parse_args(argv)
    from .. import data as D
    from ..graph.networks import NETWORKS, perforable_layers

    [(x, y)] = D.training_subsets(args.data, args.weights, [args.images], seed=0)
    model = Model(args.network, args.batch, plan=args.plan, weights=args.weights)
    layers = args.layers.split(",") if args.layers else perforable_layers(NETWORKS[args.network]["layers"]())
    maps = estimate_impact(model, x, y, layers)
    np.savez(args.out, **{k: v.astype(np.float32) for k, v in maps.items()})
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v.shape}" for k, v in maps.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
