"""Training: SGD on the C library's forward and backward passes (:mod:`.sgd`, ``python -m perforated.train``),
knowledge distillation (:mod:`.distill`), evaluation of saved weights (:mod:`.evaluate`) and a run's log
as a table (:mod:`.log`). The data it reads is :mod:`perforated.data`."""
from .sgd import SGD, TrainConfig, evaluate_split, load_checkpoint, save_weights, train

__all__ = ["SGD", "TrainConfig", "evaluate_split", "load_checkpoint", "save_weights", "train"]
