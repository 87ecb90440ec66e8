"""Files written atomically (a temporary file in the same folder, then a rename: a reader or a resumed
run never sees half a file) and the plan-file reader shared by perforation and low-rank plans."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Mapping, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def file_digest(path: PathLike, length: int = 12) -> str:
    """The first `length` hex digits of the file's SHA-256: the key under which runs made from a
    weights file are kept (``sha256sum FILE | cut -c1-12`` in the shell scripts gives the same)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:length]


def write_json_atomic(path: PathLike, data: object, indent: int = 2, sort_keys: bool = False) -> None:
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
    os.replace(tmp, path)


def save_npz_atomic(path: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """``arrays`` as an ``.npz`` at ``path`` (any name: written through an open file, so numpy adds no
    suffix), atomically."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def save_params_npz(path: PathLike, params: Mapping[str, Mapping[str, np.ndarray]], **extra: np.ndarray) -> None:
    """``{layer: {"weight", "bias"}}`` as ``layer/weight`` ... keys of an ``.npz`` (plus ``extra``
    arrays under their own keys, e.g. ``_preprocess``), written atomically."""
    save_npz_atomic(path, {**{f"{n}/{k}": v for n, p in params.items() for k, v in p.items()}, **extra})


def read_plan_json(path: PathLike, who: str) -> Dict[str, object]:
    """A plan file's object, with errors that name the caller, the path and what was expected."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{who}: no plan file at {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{who}: {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or "network" not in data:
        raise ValueError(f"{who}: {path} must hold an object with a 'network' key")
    return data
