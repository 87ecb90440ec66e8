"""Perforate the ``nn.Conv2d`` modules of any PyTorch model by a plan, and undo it.

Plans use the JSON format of perforation plans with qualified module names (``model.named_modules()``)
as layer names::

    {"layers": {"layer1.0.conv1": {"kind": "grid", "rate": 0.5, "seed": 0}, ...}}

or ``{"rate": r, "kind": k, "seed": s}`` for every convolution (see :func:`conv_layers`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from ..ops.masks import Mask
from ..graph.plan import PerforationPlan, plan_layers
from .modules import PerforatedConv2d

PlanLike = Union[None, PerforationPlan, str, "os.PathLike[str]", Mapping]


def _check_module(fn: str, model: Any) -> nn.Module:
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(f"{fn}: model is a scripted (TorchScript) module, whose submodules cannot be replaced; "
                        f"perforate the nn.Module first, then script it")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def output_sizes(model: nn.Module, example_input: Any) -> Dict[str, tuple]:
    """``{qualified name: (oh, ow)}`` of every Conv2d, from one forward pass of `example_input`
    (a tensor, or a tuple of positional arguments) in eval mode without gradients."""
    sizes: Dict[str, tuple] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: sizes.__setitem__(name, tuple(out.shape[-2:]))))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()  # batch norms in training mode refuse a batch of one; no running statistics change
        with torch.no_grad():
            args = example_input if isinstance(example_input, tuple) else (example_input,)
            model(*args)
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return sizes


def conv_layers(model: nn.Module, example_input: Any = None) -> List[str]:
    """Qualified names of the Conv2d modules a plan may name (with `example_input`: those whose output
    has more than one position)."""
    model = _check_module("conv_layers", model)
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return _spread_over_positions(names, output_sizes(model, example_input)) if example_input is not None else names


def _spread_over_positions(names: List[str], sizes: Mapping[str, tuple]) -> List[str]:
    """The names among `names` that ran (are in `sizes`) with more than one output position."""
    return [n for n in names if n in sizes and sizes[n][0] * sizes[n][1] > 1]


def uniform_plan(model: nn.Module, rate: float, kind: str = "uniform", seed: int = 0,
                 example_input: Any = None, skip: Optional[List[str]] = None) -> Dict[str, Any]:
    """A plan dict with the same `rate` and `kind` on every convolution of `model` (seed + i for the i-th),
    except the names in `skip`; save it with ``json.dump`` and edit it like any plan."""
    names = [n for n in conv_layers(model, example_input) if n not in set(skip or ())]
    return {"layers": {n: PerforationPlan._check_spec(n, {"kind": kind, "rate": rate, "seed": seed + i})
                       for i, n in enumerate(names)}}


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def perforate(model: nn.Module, plan: PlanLike, example_input: Any = None,
              implementation: str = "auto") -> nn.Module:
    """Replace the ``nn.Conv2d`` modules that `plan` names by :class:`PerforatedConv2d` sharing their
    weights (in place; returns `model`). `plan`: a plan dict, a plan JSON file's path, or
    ``{"rate": r, "kind": k}`` for every convolution. A named module that does not exist or is not a
    Conv2d raises an error naming it. With `example_input` the masks are made now (and a plan's
    explicit positions are checked against the real output sizes); otherwise on the first call."""
    fn = "perforate"
    model = _check_module(fn, model)
    modules = dict(model.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    if isinstance(plan, (str, os.PathLike)):
        with open(plan) as f:
            plan = json.load(f)
    if isinstance(plan, Mapping) and "layers" in plan and isinstance(plan["layers"], Mapping):
        for name in plan["layers"]:
            if name not in modules:
                raise ValueError(f"{fn}: the plan names module {name!r}, which this model does not have; "
                                 f"its Conv2d modules: {convs[:8]}{'...' if len(convs) > 8 else ''}")
            if not isinstance(modules[name], nn.Conv2d):
                raise ValueError(f"{fn}: the plan names module {name!r}, a {type(modules[name]).__name__}, "
                                 f"not an nn.Conv2d")
    sizes = output_sizes(model, example_input) if example_input is not None else {}
    uniform = isinstance(plan, Mapping) and "rate" in plan
    candidates = _spread_over_positions(convs, sizes) if uniform and sizes else convs
    layers = plan_layers(plan, candidates, "Conv2d module of this model")
    replacements: Dict[str, PerforatedConv2d] = {}
    for name, spec in layers.items():
        conv = modules[name]
        if isinstance(conv, PerforatedConv2d):
            conv = conv.to_conv()
        if spec["kind"] == "indices":
            size = spec.get("size") or sizes.get(name)
            if size is None:
                raise ValueError(f"{fn}: layers.{name} lists positions but not the map size: add "
                                 f"\"size\": [h, w] to it or pass example_input")
            perforation: Dict[str, Any] = {"mask": Mask.from_indices(tuple(size), np.asarray(spec["indices"]),
                                                                     seed=spec["seed"])}
        else:
            perforation = {"rate": spec["rate"], "kind": spec["kind"], "seed": spec["seed"]}
        new = PerforatedConv2d.from_conv(conv, implementation=implementation, **perforation)
        if name in sizes:
            new.mask_for(sizes[name])  # made now; an explicit mask of another size is refused here
        replacements[name] = new
    for name, new in replacements.items():  # all or nothing: the model changes only once all are made
        _set_module(model, name, new)
    return model


def unperforate(model: nn.Module) -> nn.Module:
    """Replace every :class:`PerforatedConv2d` by a plain ``nn.Conv2d`` sharing its weights (in place)."""
    model = _check_module("unperforate", model)
    for name, m in list(model.named_modules()):
        if isinstance(m, PerforatedConv2d):
            _set_module(model, name, m.to_conv())
    return model


def plan_of(model: nn.Module) -> Dict[str, Any]:
    """The plan of a perforated model: ``{"layers": {name: spec}}`` of its perforated layers (rate 0 left
    out; explicit masks as positions with
    their map size), ready for ``json.dump`` and for :func:`perforate` on a fresh copy of the model."""
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, PerforatedConv2d) and (m.spec["kind"] == "indices" or m.spec["rate"] > 0):
            spec = {k: v for k, v in m.spec.items() if k != "scores"}
            if m.spec["kind"] == "impact":  # scores are data: write the positions they chose
                made = [(size, mk) for size, mk in m._masks.items() if mk is not None]
                if len(made) != 1:
                    raise ValueError(f"plan_of: {name} is an impact-mask layer; run it once on one input size "
                                     f"so that its positions exist")
                size, mk = made[0]
                spec = {"kind": "indices", "rate": float(mk.rate), "seed": int(mk.seed),
                        "indices": mk.indices.tolist(), "size": list(size), "made_as": "impact"}
            layers[name] = spec
    return {"layers": layers}
