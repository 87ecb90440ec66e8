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

import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Union

import numpy as np

from .files import read_plan_json, write_json_atomic
from .masks import KINDS, Mask, make_mask
from .networks import NETWORKS, perforable_layers, pool_window
from .shapes import conv_output_sizes

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
            if spec["rate"] <= 0 and spec["kind"] != "indices":
                continue
            size = tuple(out_sizes[name])
            kind = spec["kind"]
            if kind == "indices":
                masks[name] = Mask.from_indices(size, np.asarray(spec["indices"]), seed=spec["seed"])
            elif kind == "pooling":
                masks[name] = make_mask("pooling", size, spec["rate"], spec["seed"], pool=pool_window(rows, name, size))
            elif kind == "impact":
                masks[name] = make_mask("impact", size, spec["rate"], spec["seed"],
                                        scores=self._scores(name, spec))
            else:
                masks[name] = make_mask(kind, size, spec["rate"], spec["seed"])
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
