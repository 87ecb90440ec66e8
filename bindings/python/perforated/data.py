"""CIFAR-10 (and image-folder) data: loading, caching, normalisation, augmentation, batches.

Three sources, recognised from the path (:func:`load_dataset`):

- a tarball in the image-folder layout (``<root>/{train,test}/<class>/*.jpg``, the layout of
  ``shared/datasets/cifar10-jpeg.tar.gz``): decoded once with Pillow and cached as uint8 arrays in an
  ``.npz`` under ``$PERFORATED_CACHE`` (default ``~/.cache/perforated``), keyed by the tarball's
  path, size and modification time; the original ``cifar-10-python.tar.gz`` release is read too;
- a plain image folder ``root/<split>/<class>/*`` (any format Pillow reads; all images one size),
  cached the same way, keyed by the file list, sizes and times;
- the original ``cifar-10-batches-py`` release (pickled ``data_batch_1..5`` and ``test_batch``).

Classes of a folder are its subfolder names sorted alphabetically (the label is the index). Images are
kept as ``uint8 [N][C][H][W]``; a batch is converted to float32 only when it is drawn, so a whole split
is never held as floats. :class:`Preprocess` holds the normalisation (per-channel mean / std of the
training set, or the NIN paper's global contrast normalisation + ZCA whitening); :func:`batches`
shuffles, augments (random crop from a zero-padded image, horizontal flip; seeded) and yields
fixed-size batches, padding the last one with repeated images whose ``valid`` count excludes them.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .files import file_digest

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp")
CACHE_VERSION = 1


# The validation split (issue 32): `--val N` of perforated.train, perforated.search.greedy, perforated.torch.finetune
# and .search holds out the last N training images of this seed's shuffle, the same images whatever the
# run's own seed, so every choice (recipe, epochs, plans) is made on one set and the test set is left for
# the final figures. 5,000 is the size the project uses for CIFAR-10.
VALIDATION_SEED = 0
VALIDATION_IMAGES = 5000


def held_out_split(n: int, held: int, seed: int = VALIDATION_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices of `n` training images: the held-out ones are the last `held` of a
    seeded shuffle."""
    if not 0 < held < n:
        raise ValueError(f"held_out_split: held must be in [1, {n - 1}] for {n} images, got {held}")
    order = np.random.default_rng(seed).permutation(n)
    return order[:n - held], order[n - held:]


@dataclass
class Split:
    """One split: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``, class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: List[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def split_off(self, held: int, seed: Optional[int] = None) -> Tuple["Split", "Split"]:
        """(kept, held-out) splits: the held-out images are the last `held` of a seeded shuffle
        (:func:`held_out_split`; by default the project's one validation split)."""
        keep, out = held_out_split(len(self), held, VALIDATION_SEED if seed is None else seed)
        return (Split(self.images[keep], self.labels[keep], self.classes),
                Split(self.images[out], self.labels[out], self.classes))

    def subset(self, n: int, seed: int = 0) -> "Split":
        """``n`` images drawn without replacement (seeded), in the drawn order."""
        if not 0 < n <= len(self):
            raise ValueError(f"Split.subset: n must be in [1, {len(self)}], got {n}")
        idx = np.random.default_rng(seed).permutation(len(self))[:n]
        return Split(self.images[idx], self.labels[idx], self.classes)


# -- locating the data ---------------------------------------------------------------------------

def default_data_path() -> Path:
    """``$PERFORATED_DATA``, else ``shared/datasets/cifar10-jpeg.tar.gz`` beside or inside the checkout
    (found from the source tree, or from the working directory when the package is installed)."""
    env = os.environ.get("PERFORATED_DATA")
    if env:
        return Path(env)
    roots = [Path(__file__).resolve().parents[3], Path.cwd()]
    candidates = [r / sub / "shared" / "datasets" / "cifar10-jpeg.tar.gz" for r in roots for sub in ("..", ".")]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def cache_dir(path: Optional[PathLike] = None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get("PERFORATED_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "perforated"


def load_dataset(path: Optional[PathLike] = None, cache: Union[bool, PathLike] = True) -> Dict[str, Split]:
    """Splits (``"train"``, ``"test"``, ...) of the dataset at ``path`` (see the module docstring).

    cache: True (the default cache directory), False (decode every time) or a directory.
    """
    path = Path(path) if path is not None else default_data_path()
    if not path.exists():
        raise FileNotFoundError(f"load_dataset: {path} does not exist (expected a CIFAR-10 tarball, an image "
                                f"folder root/<split>/<class>/*, or a cifar-10-batches-py directory)")
    if path.is_dir():
        batches_dir = _find_batches_dir(path)
        if batches_dir is not None:
            return load_cifar_batches(batches_dir)
        return _cached(path, "folder", cache, lambda: load_image_folder(path))
    if tarfile.is_tarfile(str(path)):
        return _cached(path, "tar", cache, lambda: load_tarball(path))
    raise ValueError(f"load_dataset: {path} is a file but not a tar archive (expected a .tar.gz of an image "
                     f"folder or of cifar-10-batches-py)")


def _find_batches_dir(path: Path) -> Optional[Path]:
    for d in (path, path / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
            return d
    return None


# -- caching -------------------------------------------------------------------------------------

def _cache_key(path: Path, kind: str) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{kind}|{path.resolve()}".encode())
    if kind == "tar":  # by content: a copied or re-laid tarball (a new mtime) keeps its cache
        h.update(f"|{file_digest(path, 64)}".encode())
    else:
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"|{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cached(path: Path, kind: str, cache, load) -> Dict[str, Split]:
    if cache is False:
        return load()
    directory = cache_dir(None if cache is True else cache)
    stem = path.name.split(".")[0] or "data"
    file = directory / f"{stem}-{_cache_key(path, kind)}.npz"
    if file.is_file():
        try:
            return _read_cache(file)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    splits = load()
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"classes": np.array(json.dumps(next(iter(splits.values())).classes)),
              "splits": np.array(json.dumps(sorted(splits)))}
    for name, s in splits.items():
        arrays[f"{name}/images"], arrays[f"{name}/labels"] = s.images, s.labels
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, file)
    return splits


def _read_cache(file: Path) -> Dict[str, Split]:
    with np.load(file) as data:
        classes = json.loads(str(data["classes"]))
        return {name: Split(data[f"{name}/images"], data[f"{name}/labels"].astype(np.int64), classes)
                for name in json.loads(str(data["splits"]))}


# -- decoding ------------------------------------------------------------------------------------

def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    except Exception as e:  # Pillow raises several types for undecodable data
        raise ValueError(f"load_dataset: cannot decode image {where}: {e}") from None


def _assemble(items: Dict[str, List[Tuple[str, str, np.ndarray]]], source: str) -> Dict[str, Split]:
    """items: split -> [(class, sort key, image CHW)] -> Splits with classes sorted alphabetically."""
    if not items:
        raise ValueError(f"load_dataset: no images found in {source} (expected <split>/<class>/<image> "
                         f"with extensions {', '.join(IMAGE_EXTENSIONS)})")
    classes = sorted({c for entries in items.values() for c, _, _ in entries})
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    shape = None
    for name, entries in sorted(items.items()):
        entries.sort(key=lambda e: (index[e[0]], e[1]))
        for c, key, img in entries:
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise ValueError(f"load_dataset: image {key} in {source} is {img.shape[2]}x{img.shape[1]}, "
                                 f"expected every image to be {shape[2]}x{shape[1]} like the first one")
        images = np.stack([img for _, _, img in entries])
        labels = np.array([index[c] for c, _, _ in entries], np.int64)
        splits[name] = Split(images, labels, classes)
    return splits


def load_tarball(path: PathLike) -> Dict[str, Split]:
    """Decode a tarball of an image folder (``.../<split>/<class>/<image>``) or of the original
    ``cifar-10-batches-py`` release."""
    path = Path(path)
    items: Dict[str, List[Tuple[str, str, np.ndarray]]] = {}
    pickled: Dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                parts = m.name.split("/")
                base = parts[-1]
                if len(parts) >= 2 and parts[-2] == "cifar-10-batches-py" and (
                        base.startswith("data_batch_") or base in ("test_batch", "batches.meta")):
                    pickled[base] = tf.extractfile(m).read()
                    continue
                if len(parts) < 3 or not base.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                split, cls = parts[-3], parts[-2]
                img = _decode(tf.extractfile(m).read(), f"{m.name} in {path}")
                items.setdefault(split, []).append((cls, m.name, img))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"load_dataset: {path} is not a readable tar archive: {e}") from None
    if pickled:
        return _splits_from_batches({k: _unpickle(v, f"{k} in {path}") for k, v in pickled.items()}, str(path))
    return _assemble(items, str(path))


def load_image_folder(root: PathLike) -> Dict[str, Split]:
    """Decode ``root/<split>/<class>/<image>`` (also accepted: one extra level, ``root/<name>/<split>/...``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"load_image_folder: {root} is not a directory")
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    if len(subdirs) == 1 and not any(f.is_file() for f in subdirs[0].glob("*/*")):
        root = subdirs[0]  # e.g. cifar10/ unpacked from the tarball
        subdirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    items: Dict[str, List[Tuple[str, str, np.ndarray]]] = {}
    for split_dir in subdirs:
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            for f in sorted(class_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    items.setdefault(split_dir.name, []).append((class_dir.name, str(f), _decode(f.read_bytes(), str(f))))
    return _assemble(items, str(root))


# -- the original python release -----------------------------------------------------------------

def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = pickle.loads(data, encoding="bytes")
    except Exception as e:
        raise ValueError(f"load_cifar_batches: {where} is not a CIFAR-10 pickle batch: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"load_cifar_batches: {where} holds a {type(obj).__name__}, expected a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def load_cifar_batches(directory: PathLike) -> Dict[str, Split]:
    """The original ``cifar-10-batches-py`` release: ``data_batch_1..5``, ``test_batch``, ``batches.meta``.

    Only load files from sources you trust: they are Python pickles."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"load_cifar_batches: {directory} is not a directory")
    files = {}
    for f in sorted(directory.iterdir()):
        if f.name.startswith("data_batch_") or f.name in ("test_batch", "batches.meta"):
            files[f.name] = _unpickle(f.read_bytes(), str(f))
    return _splits_from_batches(files, str(directory))


def _splits_from_batches(files: Dict[str, dict], source: str) -> Dict[str, Split]:
    train = sorted((k for k in files if k.startswith("data_batch_")), key=lambda k: int(k.rsplit("_", 1)[1])
                   if k.rsplit("_", 1)[1].isdigit() else 0)
    if not train or "test_batch" not in files:
        raise FileNotFoundError(f"load_cifar_batches: {source} must hold data_batch_1..5 and test_batch; "
                                f"found {sorted(files) or 'none of them'}")
    classes = [f"class{i}" for i in range(10)]
    if "batches.meta" in files:
        names = files["batches.meta"].get("label_names")
        if names is not None:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def split(keys: Sequence[str]) -> Split:
        images, labels = [], []
        for k in keys:
            b = files[k]
            data, lab = b.get("data"), b.get("labels")
            if data is None or lab is None:
                raise ValueError(f"load_cifar_batches: {k} in {source} lacks 'data' or 'labels' "
                                 f"(keys: {sorted(b)})")
            data = np.asarray(data)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(lab) != data.shape[0]:
                raise ValueError(f"load_cifar_batches: {k} in {source}: expected uint8 data (N, 3072) with N "
                                 f"labels, got {data.dtype} {data.shape} with {len(lab)} labels")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(np.asarray(lab, np.int64))
        lab = np.concatenate(labels)
        if lab.size and (lab.min() < 0 or lab.max() >= len(classes)):
            raise ValueError(f"load_cifar_batches: labels in {source} must lie in [0, {len(classes)}), "
                             f"got [{lab.min()}, {lab.max()}]")
        return Split(np.ascontiguousarray(np.concatenate(images)), lab, classes)

    return {"train": split(train), "test": split(["test_batch"])}


# -- normalisation -------------------------------------------------------------------------------

class Preprocess:
    """uint8 images -> float32 network input.

    ``mode="channel"``: ``(x - mean[c]) / std[c]`` with the training set's per-channel statistics
    (0..255 scale). ``mode="zca"`` (the NIN / maxout CIFAR-10 preprocessing): per-image global contrast
    normalisation (subtract the image's mean, scale its standard deviation to ``gcn_scale``) then ZCA
    whitening ``(x - mu) @ W`` with ``W = U diag(1 / sqrt(s + epsilon)) U^T`` from the training set's
    covariance ``U diag(s) U^T``. A ZCA ``W`` is (C*H*W)^2 floats (38 MB for CIFAR-10), so only its
    settings are saved with the weights (:meth:`to_json`) and it is recomputed from the training set.
    """

    def __init__(self, mode: str = "channel", mean=None, std=None, epsilon: float = 0.1,
                 gcn_scale: float = 55.0, zca_mean=None, zca_matrix=None):
        if mode not in ("channel", "zca", "none"):
            raise ValueError(f"Preprocess: mode must be 'channel', 'zca' or 'none', got {mode!r}")
        self.mode, self.epsilon, self.gcn_scale = mode, float(epsilon), float(gcn_scale)
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        self.zca_mean, self.zca_matrix = zca_mean, zca_matrix

    @classmethod
    def fit(cls, train: Split, mode: str = "channel", epsilon: float = 0.1, gcn_scale: float = 55.0,
            max_images: int = 50000) -> "Preprocess":
        """Statistics from (at most ``max_images`` of) the training split."""
        images = train.images[:max_images]
        if mode == "channel":
            x = images.astype(np.float64)
            mean = x.mean(axis=(0, 2, 3))
            std = x.std(axis=(0, 2, 3))
            return cls("channel", mean, np.maximum(std, 1e-6))
        if mode == "none":
            return cls("none")
        p = cls("zca", epsilon=epsilon, gcn_scale=gcn_scale)
        x = p._gcn(images.reshape(len(images), -1).astype(np.float64))
        mu = x.mean(axis=0)
        x -= mu
        cov = x.T @ x / len(x)
        s, u = np.linalg.eigh(cov)
        p.zca_mean = mu.astype(np.float32)
        p.zca_matrix = ((u * (1.0 / np.sqrt(np.maximum(s, 0) + epsilon))) @ u.T).astype(np.float32)
        return p

    def _gcn(self, x: np.ndarray) -> np.ndarray:
        x = x - x.mean(axis=1, keepdims=True)
        return x * (self.gcn_scale / np.maximum(x.std(axis=1, keepdims=True), 1e-8))

    def __call__(self, images: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """uint8 ``(N, C, H, W)`` -> float32 ``(N, C, H, W)`` (written into ``out`` when given)."""
        out = np.empty(images.shape, np.float32) if out is None else out
        if self.mode == "channel":
            c = images.shape[1]
            np.subtract(images, self.mean.reshape(1, c, 1, 1), out=out, casting="unsafe")
            out /= self.std.reshape(1, c, 1, 1)
        elif self.mode == "zca":
            x = self._gcn(images.reshape(len(images), -1).astype(np.float32))
            x -= self.zca_mean
            np.matmul(x, self.zca_matrix, out=out.reshape(len(images), -1))
        else:
            np.copyto(out, images, casting="unsafe")
            out /= 255.0
        return out

    def to_json(self) -> str:
        d = {"mode": self.mode}
        if self.mode == "channel":
            d.update(mean=[float(v) for v in self.mean], std=[float(v) for v in self.std])
        elif self.mode == "zca":
            d.update(epsilon=self.epsilon, gcn_scale=self.gcn_scale)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str, train: Optional[Split] = None) -> "Preprocess":
        """Rebuild from :meth:`to_json`; a ZCA transform is refitted on ``train``."""
        d = json.loads(text)
        if d.get("mode") == "zca":
            if train is None:
                raise ValueError("Preprocess.from_json: a ZCA preprocessing needs the training split to refit")
            return cls.fit(train, "zca", d.get("epsilon", 0.1), d.get("gcn_scale", 55.0))
        return cls(d.get("mode", "channel"), d.get("mean"), d.get("std"))


# -- augmentation and batches --------------------------------------------------------------------

def augment(x: np.ndarray, rng: np.random.Generator, pad: int = 4, flip: bool = True) -> np.ndarray:
    """In place: each image replaced by a random crop of itself zero-padded by ``pad`` pixels (zero is
    the mean after normalisation), and mirrored left-right with probability 1/2."""
    n, c, h, w = x.shape
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2)) if pad > 0 else np.zeros((n, 2), np.int64)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    if pad > 0:
        padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), np.float32)
        padded[:, :, pad:pad + h, pad:pad + w] = x
        for i, (dy, dx) in enumerate(offsets):
            x[i] = padded[i, :, dy:dy + h, dx:dx + w]
    if flips.any():
        x[flips] = x[flips][..., ::-1]
    return x


@dataclass
class Batch:
    """``x`` float32 ``(batch, C, H, W)`` contiguous, ``labels`` int64 ``(batch,)``; only the first
    ``valid`` images are real (the rest repeat earlier ones to fill a fixed-size batch)."""

    x: np.ndarray
    labels: np.ndarray
    valid: int
    index: np.ndarray


def batches(split: Split, batch: int, preprocess: Preprocess, rng: Optional[np.random.Generator] = None,
            shuffle: bool = False, augment_data: bool = False, last: str = "pad",
            pad: int = 4, flip: bool = True) -> Iterator[Batch]:
    """Fixed-size batches of ``split``: shuffled (with ``rng``) when asked, augmented when asked.

    last: ``"pad"`` fills the final partial batch with repeated images (``Batch.valid`` counts the real
    ones), ``"drop"`` leaves it out.
    """
    if last not in ("pad", "drop"):
        raise ValueError(f"batches: last must be 'pad' or 'drop', got {last!r}")
    if batch < 1:
        raise ValueError(f"batches: batch must be positive, got {batch}")
    if (shuffle or augment_data) and rng is None:
        raise ValueError("batches: shuffle and augment_data need an rng")
    n = len(split)
    order = rng.permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch):
        idx = order[start:start + batch]
        valid = len(idx)
        if valid < batch:
            if last == "drop":
                return
            idx = np.resize(idx, batch)  # repeats the batch's own images
        x = preprocess(split.images[idx])
        if augment_data:
            augment(x, rng, pad, flip)
        yield Batch(np.ascontiguousarray(x), split.labels[idx].astype(np.int64), valid, idx)


def num_batches(n: int, batch: int, last: str = "pad") -> int:
    return n // batch if last == "drop" else -(-n // batch)


def preprocess_for(weights, train: Split) -> Preprocess:
    """The normalisation stored with trained weights (``_preprocess``), else channel statistics of
    the training split."""
    stored = None
    if weights is not None and isinstance(weights, (str, Path)):
        with np.load(weights) as data:
            stored = str(data["_preprocess"]) if "_preprocess" in data.files else None
    return Preprocess.from_json(stored, train) if stored is not None else Preprocess.fit(train, "channel")


def training_subsets(data: Optional[PathLike], weights, sizes: Sequence[int], seed: int = 0) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Disjoint, seeded subsets of the training split, normalised as ``weights`` expect: one
    ``(float32 images, labels)`` pair per entry of ``sizes`` (e.g. the greedy search's 10,000 held-out
    images for the NLL and 5,000 for impact estimation)."""
    train = load_dataset(data)["train"]
    if sum(sizes) > len(train):
        raise ValueError(f"training_subsets: {sum(sizes)} images requested, the training split has {len(train)}")
    preprocess = preprocess_for(weights, train)
    order = np.random.default_rng(seed).permutation(len(train))
    out, start = [], 0
    for n in sizes:
        idx = order[start:start + n]
        start += n
        out.append((preprocess(train.images[idx]), train.labels[idx]))
    return out
