"""Knowledge distillation (Hinton, Vinyals and Dean, 2015) for fine-tuning a perforated network.

The original (dense) network is the teacher: while the perforated network is fine-tuned, it learns
from the teacher's softened class probabilities as well as from the labels,

    loss = (1 - a) * CE(labels, softmax(z)) + a * T^2 * KL(softmax(t / T) || softmax(z / T)),

z the student's logits, t the teacher's, a the weight of the soft targets and T the temperature (T^2
keeps the soft term's gradient on the scale of the hard term's). Why: a perforated network starts as
a close copy of its teacher, and the teacher's full output distribution says more per image than a
label does; this is not part of the paper, which fine-tunes with labels only.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from .._c.arrays import to_labels


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def check(weight: float, temperature: float) -> None:
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"distillation: distill_weight (of the teacher's soft targets) must be in (0, 1], "
                         f"got {weight}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"distillation: distill_temperature must be a finite number > 0, got {temperature}")


def distillation_loss(logits: np.ndarray, teacher_logits: np.ndarray, labels: np.ndarray, weight: float,
                      temperature: float) -> Tuple[np.ndarray, np.ndarray]:
    """(per-image loss, gradient of the batch-mean loss with respect to ``logits``), both float32;
    ``logits`` and ``teacher_logits`` batch x classes, ``labels`` integer classes."""
    check(weight, temperature)
    z, t = np.asarray(logits, np.float64), np.asarray(teacher_logits, np.float64)
    if z.shape != t.shape or z.ndim != 2:
        raise ValueError(f"distillation: logits and teacher_logits must be the same batch x classes shape, "
                         f"got {z.shape} and {t.shape}")
    labels = to_labels("distillation_loss", labels, len(z))
    if labels.size and (labels.min() < 0 or labels.max() >= z.shape[1]):
        raise ValueError(f"distillation_loss: labels must be in [0, {z.shape[1]}) (the classes), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    n, T = len(z), temperature
    rows = np.arange(n)
    log_p = _log_softmax(z)
    log_ps, log_pt = _log_softmax(z / T), _log_softmax(t / T)
    pt = np.exp(log_pt)
    hard = -log_p[rows, labels]
    soft = (pt * (log_pt - log_ps)).sum(axis=1) * T * T
    grad = np.exp(log_p) * (1 - weight)
    grad[rows, labels] -= 1 - weight
    grad += weight * T * (np.exp(log_ps) - pt)
    return ((1 - weight) * hard + weight * soft).astype(np.float32), (grad / n).astype(np.float32)
