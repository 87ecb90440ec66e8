"""Top-1 / top-5 error of saved weights on a split (the test set by default).

``python -m perforated.train.evaluate --network nin --weights W.npz [--data ...] [--plan plan.json | --lowrank
plan.json]`` prints
``top-1 error: X%`` and ``top-5 error: Y%`` (``--flip``: averaged over each image and its mirror). The
input normalisation is the one stored in the weights file (``_preprocess``, written by
``perforated.train``); weights without it are normalised with the training set's per-channel mean and
standard deviation.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..data import Preprocess, Split, default_data_path, load_dataset
from .sgd import build_model, evaluate_split, read_preprocess


def evaluate(network: str, weights, data=None, plan=None, split: str = "test", batch: int = 100,
             subset: Optional[int] = None, splits: Optional[Dict[str, Split]] = None,
             threads: Optional[int] = None, lowrank=None, device: str = "cpu", flip: bool = False) -> Dict[str, float]:
    """Top-1 / top-5 error (%), mean loss and image count of ``weights`` on ``split`` (``flip``: two
    views, the image and its mirror, softmax outputs averaged)."""
    if not Path(weights).is_file():
        raise FileNotFoundError(f"evaluate: no weights file at {weights}")
    if threads:
        from .. import set_num_threads

        set_num_threads(threads)
    splits = splits if splits is not None else load_dataset(data)
    if split not in splits:
        raise ValueError(f"evaluate: the dataset has no split {split!r} (splits: {sorted(splits)})")
    stored = read_preprocess(weights)
    train = splits.get("train")
    if stored is not None:
        preprocess = Preprocess.from_json(stored, train)
    elif train is not None:
        preprocess = Preprocess.fit(train, "channel")
    else:
        raise ValueError(f"evaluate: {weights} stores no normalisation and the dataset has no 'train' split")
    target = splits[split]
    if subset:
        target = target.subset(min(subset, len(target)), seed=1)
    model = build_model(network, batch, plan, lowrank, weights, device=device)
    return evaluate_split(model, target, preprocess, flip=flip)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perforated.train.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="nin")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", default=None, help=f"dataset (default: {default_data_path()})")
    p.add_argument("--plan", default=None, help="perforation plan JSON")
    p.add_argument("--lowrank", default=None, help="low-rank plan JSON (the weights are the decomposed network's)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--subset", type=int, default=None, help="evaluate on this many (seeded) images")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--flip", action="store_true", help="two views per image, it and its left-right mirror, "
                   "softmax averaged (the default, one view, is the figure the README and results/ report)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: the CUDA backend (with CuPy)")
    a = p.parse_args(argv)
    r = evaluate(a.network, a.weights, a.data, a.plan, a.split, a.batch, a.subset, threads=a.threads,
                 lowrank=a.lowrank, device=a.device, flip=a.flip)
    print(f"images: {r['images']} ({a.split}{', 2 views: image and mirror' if a.flip else ''})")
    print(f"top-1 error: {r['top1_error']:.2f}%")
    print(f"top-5 error: {r['top5_error']:.2f}%")
    print(f"loss: {r['loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
