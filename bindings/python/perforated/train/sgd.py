"""Minimal SGD training on the C library's forward and backward passes.

``python -m perforated.train --network nin --data <tarball|folder|cifar-10-batches-py> --epochs 100
--batch 128 --lr 0.1 --out runs/nin`` trains from scratch (``--weights`` starts from saved weights,
``--plan plan.json`` fine-tunes a perforated network whose masks stay fixed).

- SGD with momentum, PyTorch's form: ``v = mu v + g + wd w`` (weight decay on weights, not biases),
  ``w -= lr * mult * v``; per-layer multipliers ``--lr-mult conv1=0.5,cccp6=0.1`` and ``--bias-lr-mult``.
- Learning rate per iteration: linear warm-up over ``--warmup`` epochs, then ``cosine`` to zero or
  ``step`` (times ``--gamma`` at each epoch of ``--steps``).
- Dropout is on in training (``model.forward(x, training=True)``).
- ``--teacher W.npz`` fine-tunes by knowledge distillation from that (original, dense) network:
  its softened outputs on the same batches are extra targets (``perforated.train.distill``).
- ``--batchnorm`` normalises every conv's output but the last's with batch statistics while training
  (not part of NIN / AlexNet / VGG-16; it lets the net train at higher rates in fewer epochs). Saved
  weights fold it into the convs: they are the plain network's. From ``--weights`` of the plain network
  the normalisations start as the identity on a first batch, so training goes on from that network.
  It runs on either device (``--device cuda`` keeps its statistics on the GPU too).
- A progress line every ``--progress`` batches (stderr and ``out/train.log``): loss, accuracy, lr,
  images/s and ETA. After each epoch: top-1 / top-5 error on the test split (``--eval-subset`` for a
  quicker estimate); with ``--val N`` the last N images of the project's validation shuffle
  (``perforated.data.held_out_split``: the same images in every run) are held out of training, the
  epochs are evaluated on them and the test split only after the last epoch, so that recipes and
  epochs are chosen without looking at the test set. Then an atomic checkpoint ``out/checkpoint.npz``
  (weights, momentum buffers, epoch, RNG state, dropout counters, config, history; also written every ``--checkpoint-every`` batches
  within an epoch, so a killed run loses at most that much), the weights alone ``out/weights.npz`` and a line in
  ``out/log.jsonl``. With ``--plan`` the masks are also frozen as positions in ``out/plan.json`` at the
  start (with ``--lowrank`` the plan is copied to ``out/lowrank_plan.json``), and a resumed run uses
  those. ``--resume`` continues from the checkpoint with its saved config and gives the same result
  as an uninterrupted run (the C library is deterministic for a fixed thread count).

Weights files hold ``name/weight`` and ``name/bias`` (the format of ``Model.save_weights``) plus
``_preprocess`` (the input normalisation, JSON) and ``_meta`` (network, plan, epochs; JSON), which
``Model.load_weights`` ignores and ``perforated.train.evaluate`` uses.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, TextIO

import numpy as np

from . import distill
from ..data import Preprocess, Split, batches, load_dataset, num_batches
from ..files import save_npz_atomic, save_params_npz
from ..graph.model import BatchNormStep, DropoutStep, Model
from ..graph.plan import PerforationPlan


@dataclass
class TrainConfig:
    network: str = "nin"
    data: Optional[str] = None
    epochs: int = 100
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    steps: List[float] = field(default_factory=lambda: [50.0, 75.0])
    gamma: float = 0.1
    warmup: float = 0.0
    lr_mult: Dict[str, float] = field(default_factory=dict)
    bias_lr_mult: float = 1.0
    init_scale: Dict[str, float] = field(default_factory=dict)
    seed: int = 0
    subset: Optional[int] = None
    val: int = 0
    eval_subset: Optional[int] = None
    eval_every: int = 1
    normalize: str = "channel"
    zca_epsilon: float = 0.1
    augment: bool = True
    plan: Optional[str] = None
    lowrank: Optional[str] = None
    device: str = "cpu"
    weights: Optional[str] = None
    progress: int = 20
    threads: Optional[int] = None
    checkpoint_every: int = 50
    batchnorm: bool = False
    teacher: Optional[str] = None
    distill_weight: float = 0.5
    distill_temperature: float = 4.0
    bn_recompute: int = 40

    def check(self) -> None:
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"TrainConfig: schedule must be 'cosine' or 'step', got {self.schedule!r}")
        for name in ("epochs", "batch", "progress", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: {name} must be positive, got {getattr(self, name)}")
        if self.val < 0:
            raise ValueError(f"TrainConfig: val must be >= 0 (0: no validation split), got {self.val}")
        if self.bn_recompute < 0:
            raise ValueError(f"TrainConfig: bn_recompute must be >= 0 (0: keep the running averages), "
                             f"got {self.bn_recompute}")
        if self.checkpoint_every < 0:
            raise ValueError(f"TrainConfig: checkpoint_every must be >= 0 (0: only after each epoch), "
                             f"got {self.checkpoint_every}")
        if self.plan and self.lowrank:
            raise ValueError("TrainConfig: give plan or lowrank, not both (a low-rank plan holds its own "
                             "perforation rates)")
        if self.teacher:
            distill.check(self.distill_weight, self.distill_temperature)
        if self.lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(f"TrainConfig: need lr > 0, 0 <= momentum < 1, weight_decay >= 0; got "
                             f"{self.lr}, {self.momentum}, {self.weight_decay}")


def build_model(network: str, batch: int, plan: Optional[str] = None, lowrank: Optional[str] = None,
                weights=None, seed: int = 0, device: str = "cpu", batchnorm: bool = False) -> Model:
    """The network to train or evaluate: named, perforated by ``plan`` (a PerforationPlan JSON), or
    rewritten by ``lowrank`` (a LowRankPlan JSON: decomposed layers and their masks; its ``weights``
    are the decomposed network's, e.g. from ``python -m perforated.search.lowrank --save-weights``). ``device``:
    ``"cpu"`` or ``"cuda"`` (the CUDA backend, with CuPy). ``batchnorm``: normalise every conv's output
    but the last's (training only; saved weights fold it in)."""
    if not lowrank:
        return Model(network, batch, plan=plan, weights=weights, seed=seed, device=device, batchnorm=batchnorm)
    if batchnorm:
        raise ValueError("build_model: batchnorm is not available for low-rank plans")
    from ..search.lowrank import LowRankPlan, plan_model

    if plan:
        raise ValueError("build_model: give plan or lowrank, not both (a low-rank plan holds its own rates)")
    lr_plan = LowRankPlan.load(lowrank)
    if lr_plan.network != network:
        raise ValueError(f"build_model: the low-rank plan {lowrank} is for {lr_plan.network!r}, "
                         f"not network {network!r}")
    return plan_model(lr_plan, batch, weights, seed=seed, device=device)


def learning_rate(cfg: TrainConfig, epoch: float) -> float:
    """The rate at fractional epoch ``epoch`` (0 at the start of training)."""
    if cfg.warmup > 0 and epoch < cfg.warmup:
        return cfg.lr * (epoch + 1e-3) / cfg.warmup
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup, 1e-9)
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min((epoch - cfg.warmup) / span, 1.0)))
    return cfg.lr * cfg.gamma ** sum(1 for s in cfg.steps if epoch >= s)


class SGD:
    """Momentum SGD over ``model.params`` using ``model.params.grads``."""

    def __init__(self, model: Model, momentum: float, weight_decay: float,
                 lr_mult: Optional[Dict[str, float]] = None, bias_lr_mult: float = 1.0):
        self.params, self.momentum, self.weight_decay = model.params, momentum, weight_decay
        unknown = set(lr_mult or {}) - set(model.params)
        if unknown:
            raise ValueError(f"SGD: lr_mult names unknown layers {sorted(unknown)}; layers: {list(model.params)}")
        self.mult = {n: (lr_mult or {}).get(n, 1.0) for n in model.params}
        self.bias_lr_mult = bias_lr_mult
        zeros_like = model.buffers.zeros_like  # on the model's device
        self.velocity = {n: {k: zeros_like(v) for k, v in p.items()} for n, p in model.params.items()}

    def step(self, lr: float) -> None:
        for name, p in self.params.items():
            grads, vel = self.params.grads[name], self.velocity[name]
            for key, w in p.items():
                v = vel[key]
                v *= self.momentum
                v += grads[key]
                if key == "weight" and self.weight_decay and name not in self.params.batchnorms:  # not gamma
                    v += self.weight_decay * w
                scale = lr * self.mult[name] * (self.bias_lr_mult if key == "bias" else 1.0)
                w -= np.float32(scale) * v


# -- evaluation ----------------------------------------------------------------------------------

def evaluate_split(model: Model, split: Split, preprocess: Preprocess, flip: bool = False) -> Dict[str, float]:
    """Top-1 / top-5 error (%) and mean loss over ``split`` (the last batch padded, padding ignored).

    flip: also classify each image mirrored left-right and average the two softmax outputs (two views,
    a common test-time protocol; training augments with the same flips). The loss is then the negative
    log of the averaged probability of the true class. Off by default: one view is the standard figure.
    """
    n = top1 = top5 = 0
    loss_sum = 0.0
    k = min(5, model.classes)
    to_host = model.buffers.to_host  # a CUDA model's logits and losses are GPU arrays
    for b in batches(split, model.batch, preprocess, last="pad"):
        v = b.valid
        if flip:
            probs = _softmax(to_host(model.forward(b.x, training=False))[:v])
            mirrored = np.ascontiguousarray(b.x[..., ::-1])
            probs = 0.5 * (probs + _softmax(to_host(model.forward(mirrored, training=False))[:v]))
            scores = probs
            loss = -np.log(np.maximum(probs[np.arange(v), b.labels[:v]], np.finfo(probs.dtype).tiny))
        else:
            scores = to_host(model.forward(b.x, training=False))[:v]
            loss = to_host(model.loss(b.labels)[0])[:v]
        top = np.argsort(-scores, axis=1)[:, :k]
        hit = top == b.labels[:v, None]
        top1 += int(hit[:, 0].sum())
        top5 += int(hit.any(axis=1).sum())
        loss_sum += float(loss.sum())
        n += v
    return {"top1_error": 100.0 * (1 - top1 / n), "top5_error": 100.0 * (1 - top5 / n),
            "loss": loss_sum / n, "images": n}


def _softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(distill._log_softmax(logits.astype(np.float64)))


# -- files ---------------------------------------------------------------------------------------

def save_weights(model: Model, path, preprocess: Optional[Preprocess] = None,
                 meta: Optional[dict] = None) -> None:
    """Weights in the ``Model.save_weights`` format (batch normalisation folded in) plus ``_preprocess``
    and ``_meta`` (JSON), atomically."""
    extra = {}
    if preprocess is not None:
        extra["_preprocess"] = np.array(preprocess.to_json())
    if meta is not None:
        extra["_meta"] = np.array(json.dumps(meta))
    save_params_npz(path, model.deploy_params(), **extra)


def read_preprocess(path) -> Optional[str]:
    """The ``_preprocess`` JSON stored in a weights file, or None."""
    with np.load(path) as data:
        return str(data["_preprocess"]) if "_preprocess" in data.files else None


def check_same_preprocess(teacher: str, preprocess: Preprocess) -> None:
    """A teacher sees the student's batches: refuse one whose weights file says it was trained on
    other input normalisation (its soft targets would be wrong without any error)."""
    stored = read_preprocess(teacher)
    if stored is None:
        return
    theirs, ours = json.loads(stored), json.loads(preprocess.to_json())
    same = theirs.get("mode") == ours.get("mode") and all(
        np.allclose(theirs.get(k, 0), ours.get(k, 0), rtol=1e-5) for k in ("mean", "std", "epsilon", "gcn_scale"))
    if not same:
        raise ValueError(f"train: the teacher {teacher} was trained with preprocessing {stored}, the student's "
                         f"batches use {preprocess.to_json()} (give the student --weights with the teacher's)")


def _dropouts(model: Model) -> List[DropoutStep]:
    return [s for s in model.steps if isinstance(s, DropoutStep)]


def _batchnorms(model: Model) -> List[BatchNormStep]:
    return [s for s in model.steps if isinstance(s, BatchNormStep)]


FROZEN_PLAN = "plan.json"  # a fine-tuning run's masks as positions, written when it starts
FROZEN_LOWRANK = "lowrank_plan.json"  # a low-rank fine-tuning run's plan, copied when it starts


def save_checkpoint(path: Path, model: Model, sgd: SGD, state: dict) -> None:
    arrays = {}
    for n, p in model.params.items():
        for k, v in p.items():
            arrays[f"param/{n}/{k}"] = model.buffers.to_host(v)
            arrays[f"momentum/{n}/{k}"] = model.buffers.to_host(sgd.velocity[n][k])
    for s in _batchnorms(model):
        for k, v in s.running.items():
            arrays[f"running/{s.name}/{k}"] = model.buffers.to_host(v)
    state = dict(state, dropout_calls={s.name: s.calls for s in _dropouts(model)})
    arrays["state"] = np.array(json.dumps(state))
    save_npz_atomic(path, arrays)


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's state dict (JSON part), with ``arrays``: the params and momentum buffers."""
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {path} (nothing to resume)")
    with np.load(path) as data:
        if "state" not in data.files:
            raise ValueError(f"load_checkpoint: {path} is not a training checkpoint (no 'state' entry)")
        state = json.loads(str(data["state"]))
        state["arrays"] = {k: data[k] for k in data.files if k != "state"}
    return state


def _restore(model: Model, sgd: SGD, state: dict) -> None:
    arrays = state["arrays"]
    for n, p in model.params.items():
        for k in p:
            model.buffers.copy_into(p[k], arrays[f"param/{n}/{k}"])
            model.buffers.copy_into(sgd.velocity[n][k], arrays[f"momentum/{n}/{k}"])
    for s in _dropouts(model):
        s.calls = int(state["dropout_calls"][s.name])
    for s in _batchnorms(model):
        for k, v in s.running.items():
            model.buffers.copy_into(v, arrays[f"running/{s.name}/{k}"])


# -- the loop ------------------------------------------------------------------------------------

def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _Log:
    def __init__(self, stream: Optional[TextIO], file: Optional[Path]):
        self.stream, self.file = stream, file

    def __call__(self, line: str) -> None:
        if self.stream is not None:
            print(line, file=self.stream, flush=True)
        if self.file is not None:
            with open(self.file, "a") as f:
                f.write(line + "\n")


_STDERR = object()


def train(cfg: TrainConfig, out, resume: bool = False, stream=_STDERR,
          splits: Optional[Dict[str, Split]] = None, stop_after: Optional[int] = None,
          stop_after_batches: Optional[int] = None, given: Optional[set] = None,
          set_epochs: Optional[int] = None) -> dict:
    """Train (or resume) into directory ``out``; returns the final state (history of epoch metrics).

    splits: the dataset already loaded (tests); else ``load_dataset(cfg.data)``.
    stop_after: end this session after that many epochs (a later ``resume=True`` goes on exactly).
    stop_after_batches: end it after that many batches instead, with a mid-epoch checkpoint (tests of
    the mid-epoch resume; a killed run resumes the same way from its last ``checkpoint_every``).
    stream: where progress lines go (``sys.stderr`` at call time by default; None: only ``out/train.log``).
    set_epochs: on resume, change the run's number of epochs (its schedule is recomputed from where it
    is: a cosine run shortened early in its course changes its rate little); logged in train.log.
    given: on resume, the config fields the user set (the command line's); only those are reported
    when they differ from the checkpoint's (None: every differing field)."""
    if stream is _STDERR:
        stream = sys.stderr
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.npz"
    state = None
    if resume:
        state = load_checkpoint(ckpt_path)
        saved = TrainConfig(**state["config"])
        diff = {k: getattr(cfg, k) for k, v in dataclasses.asdict(saved).items()
                if getattr(cfg, k) != v and k not in ("device", "threads") and (given is None or k in given)}
        if diff and stream is not None:
            print(f"resume: using the checkpoint's config; ignoring differing arguments {diff}", file=stream)
        saved.device, saved.threads = cfg.device, cfg.threads  # where it runs now, not part of the run
        if set_epochs is not None:
            done = int(state["epoch"]) + (1 if state.get("batch") else 0)
            if set_epochs < done:
                raise ValueError(f"train: set_epochs must be >= {done} (the epochs this run has reached), "
                                 f"got {set_epochs}")
            changed_epochs = (saved.epochs, set_epochs)
            saved.epochs = set_epochs
        cfg = saved
    cfg.check()
    log = _Log(stream, out / "train.log")
    if cfg.threads:
        from .. import set_num_threads

        set_num_threads(cfg.threads)

    splits = splits if splits is not None else load_dataset(cfg.data)
    if "train" not in splits:
        raise ValueError(f"train: the dataset has no 'train' split (splits: {sorted(splits)})")
    train_split, test_split = splits["train"], splits.get("test")
    val_split = None
    if cfg.val:  # before --subset: the validation images are the same whatever the subset
        if cfg.val >= len(train_split):
            raise ValueError(f"train: --val {cfg.val} leaves no training images (the split has {len(train_split)})")
        train_split, val_split = train_split.split_off(cfg.val)
    if cfg.subset:
        train_split = train_split.subset(min(cfg.subset, len(train_split)), seed=cfg.seed)
    if test_split is not None and cfg.eval_subset:
        test_split = test_split.subset(min(cfg.eval_subset, len(test_split)), seed=cfg.seed + 1)

    stored = read_preprocess(cfg.weights) if cfg.weights and state is None else None
    if state is not None and "preprocess" in state:
        preprocess = Preprocess.from_json(state["preprocess"], train_split)
    elif stored is not None:  # fine-tuning: keep the normalisation the weights were trained with
        preprocess = Preprocess.from_json(stored, train_split)
    else:
        preprocess = Preprocess.fit(train_split, cfg.normalize, cfg.zca_epsilon)

    # The masks are fixed for the whole run: a resumed run takes them from the copy frozen at its start,
    # so it neither needs the plan's files (impact scores) nor changes masks if they were rewritten.
    # A low-rank plan (ranks, seeded masks) is copied as it is for the same reason.
    frozen, frozen_lr = out / FROZEN_PLAN, out / FROZEN_LOWRANK
    plan = str(frozen) if cfg.plan and state is not None and frozen.is_file() else cfg.plan
    lowrank = str(frozen_lr) if cfg.lowrank and state is not None and frozen_lr.is_file() else cfg.lowrank
    model = build_model(cfg.network, cfg.batch, plan, lowrank, seed=cfg.seed, device=cfg.device,
                        batchnorm=cfg.batchnorm)
    if cfg.plan and state is None:
        PerforationPlan.from_masks(cfg.network, model.masks).save(frozen)
    if cfg.lowrank and state is None:
        from ..search.lowrank import LowRankPlan

        LowRankPlan.load(cfg.lowrank).save(frozen_lr)
    if cfg.weights and state is None:
        model.load_weights(cfg.weights)
        if cfg.batchnorm:  # keep the loaded network's function: normalisations start as the identity
            model.calibrate_batchnorm(next(iter(batches(train_split, cfg.batch, preprocess,
                                                        np.random.default_rng(cfg.seed), shuffle=True,
                                                        augment_data=False, last="pad"))).x)
    elif state is None:
        for name, factor in cfg.init_scale.items():
            if name not in model.params:
                raise ValueError(f"train: init_scale names unknown layer {name!r}; layers: {list(model.params)}")
            model.params[name]["weight"] *= np.float32(factor)  # in place, on either device
    sgd = SGD(model, cfg.momentum, cfg.weight_decay, cfg.lr_mult, cfg.bias_lr_mult)
    teacher = None
    if cfg.teacher:  # the original network, in inference mode, on the same (augmented) batches
        check_same_preprocess(cfg.teacher, preprocess)
        teacher = Model(cfg.network, cfg.batch, weights=cfg.teacher, device=cfg.device)
    rng = np.random.default_rng(cfg.seed)
    start_epoch, history, skip, running = 0, [], 0, (0.0, 0, 0)
    if state is not None:
        _restore(model, sgd, state)
        rng.bit_generator.state = state["rng"]
        start_epoch, history = int(state["epoch"]), list(state["history"])
        skip = int(state.get("batch", 0))  # a mid-epoch checkpoint: replay the epoch's draws up to there
        if skip:
            rng.bit_generator.state = state["epoch_rng"]
            running = tuple(state["running"])
        log(f"resumed from {ckpt_path} after epoch {start_epoch}" + (f" batch {skip}" if skip else "")
            + (f"; masks from {plan}" if cfg.plan else "") + (f"; low-rank plan from {lowrank}" if cfg.lowrank else ""))
        if set_epochs is not None and changed_epochs[0] != changed_epochs[1]:
            log(f"epochs changed from {changed_epochs[0]} to {changed_epochs[1]} (schedule recomputed from here)")
    else:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")

    last = "drop" if len(train_split) >= cfg.batch else "pad"
    nb = num_batches(len(train_split), cfg.batch, last)
    log(f"training {cfg.network} on {len(train_split)} images ({nb} batches of {cfg.batch}/epoch), "
        f"epochs {start_epoch + 1}..{cfg.epochs}, preprocess {cfg.normalize}, augment {cfg.augment}"
        + (f", plan {cfg.plan}" if cfg.plan else "") + (f", low-rank plan {cfg.lowrank}" if cfg.lowrank else "")
        + (f", distilled from {cfg.teacher} (weight {cfg.distill_weight:g}, temperature {cfg.distill_temperature:g})"
           if cfg.teacher else ""))
    session_start, session_images = time.perf_counter(), 0
    meta = {"network": cfg.network, "plan": cfg.plan, "lowrank": cfg.lowrank, "config": dataclasses.asdict(cfg)}
    if state is not None and start_epoch >= cfg.epochs and not skip and not (out / "weights.npz").is_file():
        # a finished run carried without its weights (carry_run.sh --exclude weights.npz): the last
        # checkpoint holds the same parameters and normalisation statistics, so this file is exact
        save_weights(model, out / "weights.npz", preprocess, dict(meta, epoch=start_epoch))
        log(f"the run had finished; wrote {out / 'weights.npz'} (epoch {start_epoch}) from its checkpoint")
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    batches_done = 0
    for epoch in range(start_epoch, end_epoch):
        t_epoch = time.perf_counter()
        epoch_rng = rng.bit_generator.state  # the epoch's shuffle and augmentation replay from here
        run_loss, run_hits, run_n = running if skip else (0.0, 0, 0)
        for i, b in enumerate(batches(train_split, cfg.batch, preprocess, rng, shuffle=True,
                                      augment_data=cfg.augment, last=last)):
            if i < skip:
                continue
            lr = learning_rate(cfg, epoch + i / nb)
            model.forward(b.x, training=True)
            loss, prob = model.loss(b.labels)  # the cross-entropy: the progress line reads the same either way
            if teacher is None:
                model.backward(b.labels)
            else:
                teacher.forward(b.x)
                _, dlogits = distill.distillation_loss(model.buffers.to_host(model.logits),
                                                       teacher.buffers.to_host(teacher.logits), b.labels,
                                                       cfg.distill_weight, cfg.distill_temperature)
                model.backward_logits(dlogits)
            loss, prob = model.buffers.to_host(loss), model.buffers.to_host(prob)  # small: batch x classes
            sgd.step(lr)
            v = b.valid
            batch_loss = float(loss[:v].sum())
            if not math.isfinite(batch_loss):
                raise FloatingPointError(f"train: the loss became {batch_loss} at epoch {epoch + 1} batch {i + 1} "
                                         f"(lr {lr:.4g}); lower --lr or add --warmup")
            run_loss += batch_loss
            run_hits += int((prob[:v].argmax(axis=1) == b.labels[:v]).sum())
            run_n += v
            session_images += cfg.batch
            if (i + 1) % cfg.progress == 0 or i + 1 == nb:
                elapsed = time.perf_counter() - session_start
                rate = session_images / elapsed
                left_epoch = (nb - i - 1) * cfg.batch / rate
                left_all = left_epoch + (cfg.epochs - epoch - 1) * nb * cfg.batch / rate
                log(f"epoch {epoch + 1}/{cfg.epochs} batch {i + 1}/{nb} loss {run_loss / run_n:.4f} "
                    f"acc {100.0 * run_hits / run_n:.2f}% lr {lr:.4g} {rate:.1f} img/s "
                    f"ETA epoch {_fmt_time(left_epoch)} total {_fmt_time(left_all)}")
            batches_done += 1
            halt = stop_after_batches is not None and batches_done >= stop_after_batches
            if i + 1 < nb and (halt or (cfg.checkpoint_every and (i + 1) % cfg.checkpoint_every == 0)):
                save_checkpoint(ckpt_path, model, sgd, {
                    "epoch": epoch, "batch": i + 1, "epoch_rng": epoch_rng, "running": [run_loss, run_hits, run_n],
                    "config": dataclasses.asdict(cfg), "rng": epoch_rng, "history": history,
                    "preprocess": preprocess.to_json()})
            if halt and i + 1 < nb:
                log(f"stopped at epoch {epoch + 1} batch {i + 1}; continue with --resume")
                return {"history": history, "model": model, "preprocess": preprocess, "config": cfg,
                        "train_images": len(train_split)}
        skip = 0
        record = {"epoch": epoch + 1, "train_loss": run_loss / max(run_n, 1),
                  "train_error": 100.0 * (1 - run_hits / max(run_n, 1)),
                  "seconds": time.perf_counter() - t_epoch, "lr": lr}
        if cfg.batchnorm and cfg.bn_recompute:  # before the evaluation and the folded weights
            t = time.perf_counter()
            fixed = batches(train_split, cfg.batch, preprocess, np.random.default_rng(cfg.seed + 2), shuffle=True,
                            last=last)  # the same images every epoch, as evaluated: no augmentation
            used = model.recompute_batchnorm_statistics(b.x for b in itertools.islice(fixed, cfg.bn_recompute))
            log(f"epoch {epoch + 1}: batch-normalisation statistics recomputed on {used} x {cfg.batch} training "
                f"images (dropout off) in {time.perf_counter() - t:.0f} s")
        scheduled = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        if val_split is not None and scheduled:
            ev = evaluate_split(model, val_split, preprocess)
            record.update(val_loss=ev["loss"], val_top1_error=ev["top1_error"], val_top5_error=ev["top5_error"],
                          val_images=ev["images"])
            log(f"epoch {epoch + 1} validation: top-1 error {ev['top1_error']:.2f}% top-5 error "
                f"{ev['top5_error']:.2f}% loss {ev['loss']:.4f} ({ev['images']} images)")
        if test_split is not None and (epoch + 1 == cfg.epochs if val_split is not None else scheduled):
            ev = evaluate_split(model, test_split, preprocess)
            record.update(test_loss=ev["loss"], test_top1_error=ev["top1_error"], test_top5_error=ev["top5_error"],
                          test_images=ev["images"])
            log(f"epoch {epoch + 1} test: top-1 error {ev['top1_error']:.2f}% top-5 error "
                f"{ev['top5_error']:.2f}% loss {ev['loss']:.4f} ({ev['images']} images)")
        history.append(record)
        new_state = {"epoch": epoch + 1, "config": dataclasses.asdict(cfg), "rng": rng.bit_generator.state,
                     "history": history, "preprocess": preprocess.to_json()}
        save_weights(model, out / "weights.npz", preprocess, dict(meta, epoch=epoch + 1))
        save_checkpoint(ckpt_path, model, sgd, new_state)
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    return {"history": history, "model": model, "preprocess": preprocess, "config": cfg,
            "train_images": len(train_split)}


# -- command line --------------------------------------------------------------------------------

def _mults(text: str) -> Dict[str, float]:
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected name=value items, got {item!r}")
        out[name] = float(value)
    return out


def parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m perforated.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default=d.network)
    p.add_argument("--data", default=None, help="tarball, image folder or cifar-10-batches-py "
                   "(default: $PERFORATED_DATA or shared/datasets/cifar10-jpeg.tar.gz)")
    p.add_argument("--out", required=True, help="run directory (checkpoint, weights, logs)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz with its config")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=("cosine", "step"), default=d.schedule)
    p.add_argument("--steps", type=lambda s: [float(v) for v in s.split(",") if v], default=d.steps,
                   help="epochs at which the step schedule multiplies the rate by --gamma (e.g. 50,75)")
    p.add_argument("--gamma", type=float, default=d.gamma)
    p.add_argument("--warmup", type=float, default=d.warmup, help="epochs of linear warm-up")
    p.add_argument("--lr-mult", type=_mults, default={}, help="per-layer multipliers, e.g. cccp6=0.1")
    p.add_argument("--bias-lr-mult", type=float, default=d.bias_lr_mult)
    p.add_argument("--init-scale", type=_mults, default={},
                   help="multiply these layers' initial (He) weights, e.g. cccp6=0.1 (training from scratch)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--subset", type=int, default=None, help="train on this many (seeded) training images")
    p.add_argument("--val", type=int, default=d.val,
                   help="hold out N training images (the project's validation split; 5000 for CIFAR-10): "
                        "epochs are evaluated on them, the test split only after the last epoch")
    p.add_argument("--eval-subset", type=int, default=None, help="evaluate on this many test images")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--normalize", choices=("channel", "zca", "none"), default=d.normalize)
    p.add_argument("--zca-epsilon", type=float, default=d.zca_epsilon)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--plan", default=None, help="perforation plan JSON (masks fixed while fine-tuning)")
    p.add_argument("--lowrank", default=None, help="low-rank plan JSON (perforated.search.lowrank): fine-tune the "
                   "decomposed network; --weights then holds its decomposed weights (--save-weights)")
    p.add_argument("--weights", default=None, help="initial weights .npz (e.g. to fine-tune)")
    p.add_argument("--progress", type=int, default=d.progress, help="a progress line every N batches")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the CUDA backend (a CUDA build, a GPU and CuPy); data stays on the host")
    p.add_argument("--batchnorm", action="store_true",
                   help="normalise every conv's output but the last's while training (faster "
                   "convergence; CPU or CUDA); saved weights fold it into the convs (the plain network)")
    p.add_argument("--teacher", default=None,
                   help="weights .npz of the original network: fine-tune by distillation from it (its softened "
                   "outputs as extra targets; perforated.train.distill)")
    p.add_argument("--distill-weight", type=float, default=d.distill_weight,
                   help="weight of the teacher's soft targets against the labels, in (0, 1]")
    p.add_argument("--distill-temperature", type=float, default=d.distill_temperature,
                   help="softening of both networks' outputs (Hinton et al.); the progress line's loss stays the "
                        "cross-entropy with the labels")
    p.add_argument("--bn-recompute", type=int, default=d.bn_recompute,
                   help="with --batchnorm: at each epoch end, set the normalisations' statistics from this many "
                        "batches of training images (no augmentation, dropout off) instead of the running "
                        "averages, before evaluating and saving the folded weights (0: keep the averages)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="also checkpoint every N batches within an epoch (0: only after each epoch)")
    p.add_argument("--set-epochs", type=int, default=None,
                   help="with --resume: change the run's number of epochs (its schedule follows from here)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many epochs in this session (continue later with --resume)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    p = parser()
    args = vars(p.parse_args(argv))
    out, resume, stop_after = args.pop("out"), args.pop("resume"), args.pop("stop_after")
    set_epochs = args.pop("set_epochs")
    if set_epochs is not None and not resume:
        print("--set-epochs changes a resumed run; without --resume give --epochs", file=sys.stderr)
        return 2
    given = {k for k, v in args.items() if v != p.get_default(k)}  # what the command line set
    if not resume and not args["teacher"] and given & {"distill_weight", "distill_temperature"}:
        print("--distill-weight / --distill-temperature need --teacher (the network to distil from)", file=sys.stderr)
        return 2
    if args["teacher"]:  # resumable from another working directory
        args["teacher"] = str(Path(args["teacher"]).resolve())
    cfg = TrainConfig(**args)
    try:
        result = train(cfg, out, resume=resume, stop_after=stop_after, given=given, set_epochs=set_epochs)
    except KeyboardInterrupt:
        print(f"interrupted; resume with the same command and --resume (checkpoint: {out}/checkpoint.npz)",
              file=sys.stderr)
        return 130
    h = result["history"]
    if h and "test_top1_error" in h[-1]:
        print(f"top-1 error: {h[-1]['test_top1_error']:.2f}%")
        print(f"top-5 error: {h[-1]['test_top5_error']:.2f}%")
    print(f"weights: {Path(out) / 'weights.npz'}")
    return 0


if __name__ == "__main__":  # python -m perforated.train runs train/__main__.py, which calls main()
    sys.exit(main())
