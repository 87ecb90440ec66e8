"""Fine-tune a perforated PyTorch model: ``python -m perforated.torch.finetune``.

One process, or several under ``torchrun --nproc_per_node=N`` (DistributedDataParallel; gloo on CPU,
nccl on GPUs): each process takes ``--batch`` images per step, so a step of N processes sees N x batch
images and equals one process with batch N x batch (same data order, per-image augmentation seeded by
image and epoch, gradients averaged by DDP).

    python -m perforated.torch.finetune --model resnet18 --plan plan.json --epochs 2 --out ft.pt
    torchrun --nproc_per_node=2 -m perforated.torch.finetune --model resnet18 --rate 0.5 --kind grid ...

Models: a torchvision name (``resnet18``, ``vgg16``, ``mobilenet_v2``, ...; random weights unless
``--weights``, a plain or a perforated model's state dict: a perforated one brings its layers' masks),
an ONNX file (``perforated.torch.graph.from_onnx``: its weights, its number of classes;
plans name its convolutions by module name, see ``GraphModule.module_names``), or ``path/to/file.py:function``
returning an ``nn.Module``. ``--weights`` loads a
state dict (``.pt``: a plain or a perforated model's). Data: CIFAR-10 through ``perforated.data``
(``--data``: the tarball, a cifar-10-batches-py directory or an image folder ``root/<split>/<class>/``);
``--val 5000`` holds out the last 5,000 training images (after a seeded shuffle) for evaluation instead of
the test split. ``--checkpoint`` is written every epoch and every ``--save-every`` steps, atomically, and
a run started again with the same path resumes from it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..data import Preprocess, Split, augment, load_dataset
from .convert import perforate, plan_of, uniform_plan
from .modules import SPEC_MARK


def build_model(spec: str, num_classes: int) -> nn.Module:
    """A torchvision model name (random weights), an ONNX file (its weights; its own classes) or
    ``file.py:function``."""
    if spec.endswith(".onnx"):
        from .graph import from_onnx

        return from_onnx(spec)
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        path, func = spec.rsplit(":", 1)
        loader = importlib.util.spec_from_file_location(Path(path).stem, path)
        if loader is None or loader.loader is None:
            raise ValueError(f"--model: cannot load {path}")
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
        if not hasattr(module, func):
            raise ValueError(f"--model: {path} has no function {func!r}")
        model = getattr(module, func)(num_classes=num_classes)
    else:
        try:
            import torchvision
        except ImportError as e:
            raise ValueError(f"--model {spec!r}: torchvision models need torchvision (pip install torchvision)") from e
        names = torchvision.models.list_models(module=torchvision.models)
        if spec not in names:
            raise ValueError(f"--model: {spec!r} is neither a torchvision classification model ({', '.join(names[:6])}, "
                             f"...) nor file.py:function")
        model = torchvision.models.get_model(spec, weights=None, num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise TypeError(f"--model {spec!r} did not give an nn.Module but a {type(model).__name__}")
    return model


class ImageSet(torch.utils.data.Dataset):
    """A split's images normalised by `preprocess`; with `augment`, a random crop (pad 4) and flip drawn
    from a generator seeded by (seed, epoch, image): the same for an image whatever process reads it."""

    def __init__(self, split: Split, preprocess: Preprocess, augment: bool = False, seed: int = 0) -> None:
        self.split, self.preprocess, self.augment, self.seed = split, preprocess, augment, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x = self.preprocess(self.split.images[i:i + 1])
        if self.augment:  # perforated.data's crop and flip, drawn for this image and epoch
            augment(x, np.random.default_rng((self.seed, self.epoch, i)))
        return torch.from_numpy(x[0]), int(self.split.labels[i])


def _splits(args) -> Dict[str, Split]:
    data = load_dataset(args.data)
    train, test = data["train"], data["test"]
    if args.limit:
        train = train.subset(args.limit, seed=args.seed)  # the splits may be stored class by class
    if args.val:
        if not 0 < args.val < len(train):
            raise ValueError(f"--val must be in [1, {len(train) - 1}], got {args.val}")
        kept, val = train.split_off(args.val)  # the project's validation split, whatever --seed
        return {"train": kept, "eval": val, "eval_name": "val"}
    if args.eval_limit:
        test = test.subset(args.eval_limit, seed=args.seed)
    return {"train": train, "eval": test, "eval_name": "test"}


def _optimizer(args, params) -> torch.optim.Optimizer:
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def evaluate(model: nn.Module, loader, device: torch.device) -> Dict[str, float]:
    model.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    model.train()
    return {"error": 1.0 - correct / max(total, 1), "loss": loss / max(total, 1), "images": total}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m perforated.torch.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="torchvision model name, model.onnx or file.py:function")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--weights", help="state dict (.pt) to start from")
    p.add_argument("--plan", help="perforation plan JSON (qualified module names)")
    p.add_argument("--rate", type=float, help="instead of --plan: this rate on every convolution")
    p.add_argument("--kind", default="uniform", help="mask kind with --rate (uniform, grid)")
    p.add_argument("--skip", nargs="*", default=[], help="with --rate: convolutions to leave dense")
    p.add_argument("--data", help="CIFAR-10 tarball, batches directory or image folder (default: the shared one)")
    p.add_argument("--limit", type=int, default=0, help="use N training images (a seeded draw)")
    p.add_argument("--val", type=int, default=0, help="hold out N training images for evaluation: the project's validation split (perforated.data.held_out_split, "
                   "the same images whatever --seed; 5000 for CIFAR-10)")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate on N test images (a seeded draw)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps in all (0: no limit)")
    p.add_argument("--batch", type=int, default=64, help="images per process per step")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", choices=("const", "cosine"), default="cosine")
    p.add_argument("--no-augment", action="store_true", help="no random crops and flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--checkpoint", help="checkpoint path: written as training goes, resumed from when present")
    p.add_argument("--save-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--out", help="final state dict (.pt) of the fine-tuned model; with {rank} in it every "
                   "process writes its own")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after each epoch")
    args = p.parse_args(argv)
    if args.plan and args.rate is not None:
        p.error("give --plan or --rate, not both")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    log = (lambda **kv: print(json.dumps(kv), flush=True)) if rank == 0 else (lambda **kv: None)

    torch.manual_seed(args.seed)
    splits = _splits(args)
    train = splits["train"]
    pre = Preprocess.fit(train, "channel")
    model = build_model(args.model, args.num_classes)
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        perforated_state = any(k.endswith("_extra_state") for k in state)
        if not perforated_state:
            model.load_state_dict(state)
    example = torch.from_numpy(pre(train.images[:1]))
    if args.plan or args.rate is not None:
        plan = args.plan if args.plan else uniform_plan(model, args.rate, args.kind, args.seed, example, args.skip)
        perforate(model, plan, example_input=example)
    elif args.weights and perforated_state:  # a perforated model's weights: its layers' specs come with them
        names = [k[:-len("._extra_state")] for k, v in state.items()
                 if k.endswith("._extra_state") and isinstance(v, dict) and SPEC_MARK in v]
        perforate(model, {"layers": {n: {"rate": 0.0} for n in names}})
    if args.weights and perforated_state:
        model.load_state_dict(state)  # weights, and each perforated layer's spec (its extra state)
    model.to(device)
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    train_set = ImageSet(train, pre, augment=not args.no_augment, seed=args.seed)
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=args.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch, sampler=sampler, drop_last=True,
                                         num_workers=args.workers)
    eval_loader = torch.utils.data.DataLoader(ImageSet(splits["eval"], pre), batch_size=max(args.batch, 64))
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError(f"--batch {args.batch} x {world} processes exceeds the {len(train)} training images")
    total = args.epochs * per_epoch if not args.steps else min(args.steps, args.epochs * per_epoch)
    opt = _optimizer(args, ddp.parameters())
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
             if args.schedule == "cosine" else None)

    step = 0
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if sched is not None and saved.get("scheduler"):
            sched.load_state_dict(saved["scheduler"])
        step = int(saved["step"])
        log(event="resumed", checkpoint=str(ckpt), step=step)

    def save() -> None:
        if ckpt is not None and rank == 0:
            _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict() if sched is not None else None, "step": step,
                          "args": vars(args)}, ckpt)

    log(event="start", model=args.model, processes=world, device=str(device), train_images=len(train),
        eval=splits["eval_name"], eval_images=len(splits["eval"]), steps=total, steps_per_epoch=per_epoch,
        perforated=len(plan_of(model)["layers"]))
    ddp.train()
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        train_set.epoch = epoch
        for i, (x, y) in enumerate(loader):
            if i < skip:
                continue  # resuming inside an epoch: the same order, the batches already done skipped
            x, y = x.to(device), y.to(device)
            loss = loss_fn(ddp(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if step % max(1, per_epoch // 10) == 0 or step == total:
                log(event="step", step=step, epoch=epoch, loss=loss.item(), lr=opt.param_groups[0]["lr"],
                    seconds=round(time.perf_counter() - t0, 2))
            if args.save_every and step % args.save_every == 0:
                save()
            if step >= total:
                break
        save()
        if not args.no_eval and rank == 0:
            log(event="eval", step=step, epoch=epoch, split=splits["eval_name"],
                **evaluate(model, eval_loader, device))
        if world > 1:
            dist.barrier()
    if args.out and (rank == 0 or "{rank}" in args.out):
        out = args.out.replace("{rank}", str(rank))
        _save_atomic(model.state_dict(), Path(out))
        log(event="saved", path=out)
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
