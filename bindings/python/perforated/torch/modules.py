"""``PerforatedConv2d``: a drop-in ``nn.Conv2d`` computing only a mask's output positions.

The mask is described by a plan entry (``kind``, ``rate``, ``seed``; the format of perforation plans)
and made for each output size the layer sees (cached), or given explicitly. The weights are the
``nn.Conv2d``'s own parameters: the state dict has the same keys plus ``_extra_state`` (the mask
spec), so a plain ``nn.Conv2d`` state dict loads into a ``PerforatedConv2d`` (keeping its spec) and
``strip_masks(state_dict)`` gives one that loads into a plain ``nn.Conv2d``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..ops.masks import Mask
from ..graph.plan import PerforationPlan, spec_mask
from .functional import IMPLEMENTATIONS, conv_output_size, perforated_conv2d

SPEC_MARK = "perforated"  # key marking our extra state inside a state dict


def _spec(fn: str, rate: float, kind: str, seed: int, mask: Optional[Mask], scores: Any) -> Dict[str, Any]:
    if mask is not None:
        if not isinstance(mask, Mask):
            raise TypeError(f"{fn}: mask must be a perforated.Mask, got {type(mask).__name__}")
        return {"kind": "indices", "rate": float(mask.rate), "seed": int(mask.seed),
                "indices": mask.indices.tolist(), "size": list(mask.shape), "made_as": mask.kind}
    spec = PerforationPlan._check_spec(fn, {"kind": kind, "rate": rate, "seed": seed})
    if spec["kind"] == "pooling":
        raise ValueError(f"{fn}: kind 'pooling' needs the next pooling layer's window, which a single layer "
                         f"does not know; use 'uniform', 'grid', 'impact' (with scores) or an explicit mask")
    if spec["kind"] == "indices":
        raise ValueError(f"{fn}: kind 'indices' needs the positions: pass mask=Mask.from_indices(size, indices)")
    if spec["kind"] == "impact":
        if scores is None:
            raise ValueError(f"{fn}: kind 'impact' needs scores, an (h, w) map of the output size")
        spec["scores"] = np.ascontiguousarray(np.asarray(scores, dtype=np.float32))
    return spec


class PerforatedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with perforation: ``rate`` (fraction of output positions NOT computed), ``kind``
    (``"uniform"`` or ``"grid"``; ``"impact"`` with ``scores``), ``seed``; or an explicit ``mask`` (a
    :class:`perforated.Mask` of the output size). ``rate=0`` runs the dense ``F.conv2d``.
    ``implementation``: ``"auto"`` (libperforated for CPU float32, PyTorch operations otherwise),
    ``"c"`` or ``"torch"`` (see :func:`perforated.torch.perforated_conv2d`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None, *, rate: float = 0.0, kind: str = "uniform",
                 seed: int = 0, mask: Optional[Mask] = None, scores: Any = None,
                 implementation: str = "auto") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.set_perforation(rate=rate, kind=kind, seed=seed, mask=mask, scores=scores)
        self.implementation = implementation

    @property
    def implementation(self) -> str:
        return self._implementation

    @implementation.setter
    def implementation(self, value: str) -> None:
        if value not in IMPLEMENTATIONS:
            raise ValueError(f"PerforatedConv2d: implementation must be one of {IMPLEMENTATIONS}, got {value!r}")
        self._implementation = value

    def set_perforation(self, rate: float = 0.0, kind: str = "uniform", seed: int = 0,
                        mask: Optional[Mask] = None, scores: Any = None) -> None:
        """Replace the perforation spec (the weights stay); masks are made again on the next call."""
        self.spec = _spec("PerforatedConv2d", rate, kind, seed, mask, scores)
        self._masks: Dict[Tuple[int, int], Optional[Mask]] = {}
        if mask is not None:
            self._masks[tuple(mask.shape)] = mask

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **perforation: Any) -> "PerforatedConv2d":
        """A PerforatedConv2d sharing `conv`'s weight and bias Parameters (same geometry, device, dtype);
        `perforation`: rate, kind, seed, mask, scores, implementation."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"PerforatedConv2d.from_conv: conv must be an nn.Conv2d, got {type(conv).__name__}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta",
                  dtype=conv.weight.dtype, **perforation)
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new

    def to_conv(self) -> nn.Conv2d:
        """A plain nn.Conv2d sharing this layer's weight and bias Parameters."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.bias is not None, self.padding_mode, device="meta",
                         dtype=self.weight.dtype)
        conv.weight = self.weight
        conv.bias = self.bias
        conv.train(self.training)
        return conv

    @property
    def rate(self) -> float:
        return float(self.spec["rate"])

    def mask_for(self, out_size: Tuple[int, int]) -> Optional[Mask]:
        """The mask used for an output of `out_size` (made once per size), or None when dense."""
        out_size = (int(out_size[0]), int(out_size[1]))
        if out_size in self._masks:
            return self._masks[out_size]
        spec = self.spec
        if spec["kind"] == "indices":
            raise ValueError(f"PerforatedConv2d: the mask has size {tuple(spec['size'])} but the output here is "
                             f"{out_size}; give an input of the size the mask was made for")
        scores = spec.get("scores")
        if scores is not None and tuple(scores.shape) != out_size:
            raise ValueError(f"PerforatedConv2d: scores have shape {tuple(scores.shape)} but the output here is "
                             f"{out_size}")
        mask = spec_mask("PerforatedConv2d", spec, out_size, scores=scores)
        if mask is not None and mask.count == out_size[0] * out_size[1]:
            mask = None  # nothing left out (a tiny map): the dense convolution
        self._masks[out_size] = mask
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding: Any = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        mask = self.mask_for(conv_output_size(x.shape[2:], self.kernel_size, self.stride, padding, self.dilation))
        return perforated_conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups,
                                 mask, self._implementation)

    # The spec rides in the state dict as extra state.
    def get_extra_state(self) -> Dict[str, Any]:
        spec = {k: v for k, v in self.spec.items() if k != "scores"}
        if self.spec["kind"] == "impact":
            spec["scores"] = self.spec["scores"].tolist()
        return {SPEC_MARK: 1, **spec}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Mapping) or SPEC_MARK not in state:
            raise ValueError("PerforatedConv2d: the extra state is not a perforation spec")
        spec = {k: v for k, v in state.items() if k != SPEC_MARK}
        if spec["kind"] == "indices":
            mask = Mask.from_indices(tuple(spec["size"]), np.asarray(spec["indices"], dtype=np.int64),
                                     seed=int(spec["seed"]))
            self.set_perforation(mask=mask)
        else:
            self.set_perforation(rate=spec["rate"], kind=spec["kind"], seed=spec["seed"],
                                 scores=spec.get("scores"))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,  # type: ignore
                              unexpected_keys, error_msgs) -> None:
        before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        key = prefix + "_extra_state"
        if key not in state_dict and key in missing_keys[before:]:
            missing_keys.remove(key)  # a plain nn.Conv2d state dict: keep this layer's own spec

    def extra_repr(self) -> str:
        spec = self.spec
        what = f"mask of {spec['size']}" if spec["kind"] == "indices" else f"kind={spec['kind']!r}, seed={spec['seed']}"
        return f"{super().extra_repr()}, rate={spec['rate']:.3g}, {what}"


def strip_masks(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of `state_dict` without the perforation specs, loadable into the dense model."""
    return {k: v for k, v in state_dict.items()
            if not (k.endswith("_extra_state") and isinstance(v, Mapping) and SPEC_MARK in v)}
