"""Perforation plans: per layer the mask kind, rate and seed (and low-rank ranks), as editable JSON.

The accnn ``config.json`` habit: a plan is produced by a tool (a uniform rate, the greedy search, the
low-rank rank selection), saved, edited by hand if wanted, and applied to a model with ``--config``::

    {"network": "alexnet",
     "layers": {"conv1": {"kind": "grid", "rate": 0.5, "seed": 0},
                "conv2": {"kind": "impact", "rate": 0.75, "seed": 3, "scores": "impact.npz"}}}

``kind`` is a mask generator (``uniform``, ``grid``, ``pooling``, ``impact``); ``impact`` masks name the
score maps they were chosen from (an ``.npz`` of ``layer -> (h, w)`` arrays, relative to the plan file)
or carry explicit ``indices``. Layers absent from ``layers`` are not perforated.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..files import read_plan_json, write_json_atomic
from ..ops.masks import KINDS, Mask, make_mask
from .networks import NETWORKS, perforable_layers, pool_window
from .rows import conv_output_sizes

PathLike = Union[str, os.PathLike]


class PerforationPlan:
    """Per-layer perforation settings of one network (see the module docstring for the format)."""

    def __init__(self, network: str, layers: Optional[Dict[str, dict]] = None, base_dir: Optional[Path] = None):
        if network not in NETWORKS:
            raise ValueError(f"PerforationPlan: network must be one of {sorted(NETWORKS)}, got {network!r}")
        self.network = network
        self.layers: Dict[str, dict] = {}
        self.base_dir = base_dir
        allowed = set(perforable_layers(NETWORKS[network]["layers"]()))
        for name, spec in (layers or {}).items():
            if name not in allowed:
                raise ValueError(f"PerforationPlan: layer {name!r} of {network} is not perforable; "
                                 f"perforable layers: {sorted(allowed)}")
            self.layers[name] = self._check_spec(name, dict(spec))

    @staticmethod
    def _check_spec(name: str, spec: dict) -> dict:
        kind = spec.get("kind", "uniform")
        if kind not in KINDS + ("indices",):
            raise ValueError(f"PerforationPlan: layers.{name}.kind must be one of {KINDS + ('indices',)}, "
                             f"got {kind!r}")
        rate = spec.get("rate", 0.0)
        if not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"PerforationPlan: layers.{name}.rate must be a number in [0, 1), got {rate!r}")
        spec["kind"], spec["rate"] = kind, float(rate)
        spec["seed"] = int(spec.get("seed", 0))
        return spec

    @classmethod
    def uniform_rate(cls, network: str, rate: Union[float, Dict[str, float]], kind: str = "uniform",
                     seed: int = 0, layers: Optional[Iterable[str]] = None) -> "PerforationPlan":
        """The same rate (or a per-layer dict of rates) on every perforable layer (or on `layers`)."""
        names = list(layers) if layers is not None else perforable_layers(NETWORKS[network]["layers"]())
        specs = {}
        for i, name in enumerate(names):
            r = rate[name] if isinstance(rate, dict) else rate
            if r > 0:
                specs[name] = {"kind": kind, "rate": float(r), "seed": seed + i}
        return cls(network, specs)

    @classmethod
    def from_masks(cls, network: str, masks: Dict[str, Mask]) -> "PerforationPlan":
        """A self-contained plan holding the masks' positions (kind "indices"; "made_as" keeps the
        generator's name for people reading the file)."""
        return cls(network, {name: {"kind": "indices", "rate": float(m.rate), "seed": int(m.seed),
                                    "indices": m.indices.tolist(), "made_as": m.kind}
                             for name, m in masks.items()})

    def to_dict(self) -> dict:
        return {"network": self.network, "layers": self.layers}

    def save(self, path: PathLike) -> None:
        """Write the plan as JSON (atomically: a temporary file, then rename)."""
        write_json_atomic(path, self.to_dict(), sort_keys=True)

    @classmethod
    def load(cls, path: PathLike) -> "PerforationPlan":
        data = read_plan_json(path, "PerforationPlan.load")
        return cls(data["network"], data.get("layers", {}), base_dir=Path(path).parent)

    def masks(self, out_sizes: Dict[str, tuple]) -> Dict[str, Mask]:
        """Build the masks of the plan, given each perforated layer's output size ``(h, w)``."""
        rows = NETWORKS[self.network]["layers"]()
        masks: Dict[str, Mask] = {}
        for name, spec in self.layers.items():
            size = tuple(out_sizes[name])
            kind = spec["kind"]
            mask = spec_mask(name, spec, size,
                             pool=pool_window(rows, name, size) if kind == "pooling" else None,
                             scores=self._scores(name, spec) if kind == "impact" and spec["rate"] > 0 else None)
            if mask is not None:
                masks[name] = mask
        return masks

    def _scores(self, name: str, spec: dict) -> np.ndarray:
        source = spec.get("scores")
        if source is None:
            raise ValueError(f"PerforationPlan: layers.{name} is an impact mask but names no 'scores' file")
        path = Path(source)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        with np.load(path) as data:
            if name not in data:
                raise ValueError(f"PerforationPlan: {path} has no scores for layer {name!r}")
            return np.ascontiguousarray(data[name], dtype=np.float32)

    def __repr__(self) -> str:
        return f"PerforationPlan({self.network!r}, {self.layers!r})"


def spec_mask(name: str, spec: Mapping, size: Sequence[int], *, pool: Optional[Sequence] = None,
              scores: Optional[np.ndarray] = None) -> Optional[Mask]:
    """The mask of one checked plan entry (``{"kind", "rate", "seed"[, "indices"]}``) over an ``(h, w)``
    output map, or ``None`` when the entry does not perforate (rate 0). "pooling" needs ``pool`` (the
    next pooling's window), "impact" needs ``scores``; an error names the layer when they are missing."""
    size = (int(size[0]), int(size[1]))
    kind = spec["kind"]
    if kind == "indices":
        return Mask.from_indices(size, np.asarray(spec["indices"]), seed=spec["seed"])
    if spec["rate"] <= 0:
        return None
    if kind == "pooling" and pool is None:
        raise ValueError(f"plan: layers.{name} is a 'pooling' mask but no pooling window follows it here; "
                         f"use 'uniform', 'grid', 'impact' or 'indices'")
    if kind == "impact" and scores is None:
        raise ValueError(f"plan: layers.{name} is an 'impact' mask but no score map was given for it")
    return make_mask(kind, size, spec["rate"], spec["seed"], pool=pool, scores=scores)


def plan_layers(plan: Union[None, "PerforationPlan", str, os.PathLike, Mapping], names: List[str],
                what: str = "perforable convolution") -> Dict[str, dict]:
    """Checked ``{name: spec}`` of a plan given as a PerforationPlan, a plan file's path, a
    ``{"layers": {name: spec}}`` dict, or ``{"rate": r, "kind": k, "seed": s}`` for every name in `names`
    (seed + i for the i-th). Every named layer must be one of `names` (else an error names it)."""
    if plan is None:
        return {}
    if isinstance(plan, PerforationPlan):
        layers = plan.layers
    else:
        if isinstance(plan, (str, os.PathLike)):
            with open(plan) as f:
                plan = json.load(f)
        if not isinstance(plan, Mapping):
            raise TypeError(f"plan must be a PerforationPlan, a plan file's path or a dict, got {type(plan).__name__}")
        if "layers" in plan:
            layers = plan["layers"]
            if not isinstance(layers, Mapping):
                raise TypeError(f"plan: 'layers' must map names to specs, got {type(layers).__name__}")
        elif "rate" in plan:
            extra = set(plan) - {"rate", "kind", "seed"}
            if extra:
                raise ValueError(f"plan: unknown keys {sorted(extra)}; a uniform plan takes rate, kind, seed")
            kind, seed = plan.get("kind", "uniform"), int(plan.get("seed", 0))
            layers = {name: {"kind": kind, "rate": plan["rate"], "seed": seed + i} for i, name in enumerate(names)}
        else:
            raise ValueError("plan: a dict plan needs 'layers' ({name: spec}) or 'rate' (the same rate everywhere)")
    out = {}
    for name, spec in layers.items():
        if name not in names:
            raise ValueError(f"plan: {name!r} is not a {what} here; "
                             f"candidates: {names[:8]}{'...' if len(names) > 8 else ''}")
        if not isinstance(spec, Mapping):
            raise TypeError(f"plan: layers.{name} must be a dict like {{'kind': 'uniform', 'rate': 0.5}}, "
                            f"got {type(spec).__name__}")
        out[name] = PerforationPlan._check_spec(name, dict(spec))
    return out


def layer_masks(network: str, kind: str, rate: float, layers: Optional[Iterable[str]] = None,
                scores: Optional[Dict[str, np.ndarray]] = None, seed: int = 0) -> Dict[str, Mask]:
    """Masks of one kind and rate for `layers` (default: the perforable ones) of `network`, sized from
    its output maps: the next pooling's windows for "pooling", ``scores[layer]`` for "impact"; layer i
    gets seed ``seed + i``."""
    rows = NETWORKS[network]["layers"]()
    names = list(layers) if layers is not None else perforable_layers(rows)
    sizes = conv_output_sizes(rows, NETWORKS[network]["input"])
    masks = {}
    for i, name in enumerate(names):
        extra = {}
        if kind == "impact":
            if scores is None or name not in scores:
                raise ValueError(f"layer_masks: kind 'impact' needs scores for layer {name!r}")
            extra["scores"] = np.asarray(scores[name], np.float32)
        elif kind == "pooling":
            extra["pool"] = pool_window(rows, name, sizes[name])
        masks[name] = make_mask(kind, sizes[name], rate, seed + i, **extra)
    return masks
