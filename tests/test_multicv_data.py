"""Multi-CV loaders: the shared real copies, tiny fixtures in the original on-disk formats, errors, normalize."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets
from conftest import DATA
from PIL import Image

from leapbench.data import multicv
from leapbench.data.multicv import DATASETS, NORM, load_arrays, normalize
from leapbench.errors import ConfigError, DataError

# name: (train, test, classes, channels, a file that must exist) for the shared copies (see their README)
REAL = {
    "mnist": (60000, 10000, 10, 1, "MNIST/raw/train-images-idx3-ubyte.gz"),
    "fashionmnist": (60000, 10000, 10, 1, "FashionMNIST/raw/train-images-idx3-ubyte.gz"),
    "notmnist": (8000, 2000, 10, 1, "notMNIST/t10k-images-idx3-ubyte.gz"),
    "cifar10": (20000, 10000, 10, 3, "cifar10/cifar10_subset.npz"),
    "gtsrb": (10003, 5001, 43, 3, "gtsrb/gtsrb32_subset.npz"),
    "facescrub": (580, 145, 20, 3, "facescrub/facescrub_hat_test_subsets.npz"),
}
_cache: dict[str, multicv.Arrays] = {}


def real(name: str) -> multicv.Arrays:
    if not (DATA / REAL[name][4]).is_file():
        if os.environ.get("LEAP_REQUIRE_DATA") == "1":
            pytest.fail(f"LEAP_REQUIRE_DATA=1 but {DATA / REAL[name][4]} is missing")
        pytest.skip(f"needs the shared {name} copy under LEAP_DATA_DIR")
    if name not in _cache:
        _cache[name] = load_arrays(name, DATA)
    return _cache[name]


def rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x}


# ----------------------------------------------------------------------------------------------- real data
@pytest.mark.data
@pytest.mark.parametrize("name", list(REAL))
def test_real_shapes_counts_labels(name):
    a = real(name)
    n_train, n_test, k, c = REAL[name][:4]
    assert (a.name, a.num_classes) == (name, k)
    assert a.x_train.shape == (n_train, 32, 32, c) and a.x_test.shape == (n_test, 32, 32, c)
    assert a.x_train.dtype == a.x_test.dtype == np.uint8
    assert a.y_train.dtype == a.y_test.dtype == np.int64
    assert a.y_train.shape == (n_train,) and a.y_test.shape == (n_test,)
    assert np.array_equal(np.unique(a.y_train), np.arange(k))  # contiguous, every class in train
    assert np.array_equal(np.unique(a.y_test), np.arange(k))
    b = load_arrays(name, DATA)  # deterministic
    for f in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, f), getattr(b, f))


@pytest.mark.data
@pytest.mark.parametrize("name", ["mnist", "fashionmnist", "notmnist"])
def test_real_padding(name):
    a = real(name)
    for x in (a.x_train, a.x_test):
        assert x[:, :2].max() == x[:, -2:].max() == x[:, :, :2].max() == x[:, :, -2:].max() == 0
        assert x[:, 2:-2, 2:-2].max() == 255


@pytest.mark.data
def test_real_mnist_matches_raw_files():
    a = real("mnist")
    raw = DATA / "MNIST" / "raw"
    x = np.frombuffer(gzip.open(raw / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 28, 28)
    y = np.frombuffer(gzip.open(raw / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    assert np.array_equal(a.x_test[:, 2:-2, 2:-2, 0], x) and np.array_equal(a.y_test, y)
    assert np.bincount(a.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.mark.data
def test_real_notmnist_split_is_disjoint_and_complete():
    a = real("notmnist")
    assert not rows(a.x_test) & rows(a.x_train)  # no picture on both sides (duplicates stay in train)
    assert np.bincount(a.y_test).tolist() == [200] * 10 and np.bincount(a.y_train).tolist() == [800] * 10
    raw = np.frombuffer(gzip.open(DATA / "notMNIST/t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    raw = np.pad(raw.reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2)))[..., None]
    key = lambda x: np.sort(np.frombuffer(b"".join(sorted(r.tobytes() for r in x)), np.uint8))  # noqa: E731
    assert np.array_equal(key(np.concatenate([a.x_train, a.x_test])), key(raw))  # nothing lost or added


@pytest.mark.data
def test_real_facescrub_union_split():
    a = real("facescrub")
    assert not rows(a.x_test) & rows(a.x_train)
    assert len(rows(a.x_train)) + len(rows(a.x_test)) == 725  # 502 + 260 - 36 shared - 1 repeated in top10
    with np.load(DATA / REAL["facescrub"][4]) as z:
        assert rows(z["x_top20"]) | rows(z["x_top10"]) == rows(a.x_train) | rows(a.x_test)


@pytest.mark.data
def test_real_gtsrb_and_cifar_match_npz():
    for name in ("gtsrb", "cifar10"):
        a = real(name)
        with np.load(DATA / REAL[name][4]) as z:
            assert np.array_equal(a.x_train, z["x_train"]) and np.array_equal(a.y_test, z["y_test"])
    assert np.bincount(real("cifar10").y_train).tolist() == [2000] * 10
    assert np.bincount(real("gtsrb").y_train).min() == 54 and np.bincount(real("gtsrb").y_test).min() == 24


@pytest.mark.data
@pytest.mark.parametrize("name", list(REAL))
def test_real_normalize_statistics(name):
    """Per-channel mean/std of the normalized training images equal a direct computation and are ~0/~1."""
    a = real(name)
    s1 = s2 = 0.0
    for i in range(0, len(a.x_train), 10000):  # chunks keep memory small (full MNIST would be 740 MB)
        z = normalize(a.x_train[i : i + 10000], name).double()
        s1, s2 = s1 + z.sum((0, 2, 3)), s2 + (z * z).sum((0, 2, 3))
    n = a.x_train.size / a.x_train.shape[-1]
    mean, std = s1 / n, (s2 / n - (s1 / n) ** 2).sqrt()
    m, s = (torch.tensor(v, dtype=torch.float64) for v in NORM[name])
    h = torch.from_numpy(np.stack([np.bincount(a.x_train[..., c].ravel(), minlength=256) for c in range(len(m))]))
    v = torch.arange(256, dtype=torch.float64) / 255  # exact pixel statistics from per-channel histograms
    px_mean = (h * v).sum(1) / n
    px_std = ((h * v * v).sum(1) / n - px_mean**2).sqrt()
    want_mean, want_std = ((px_mean - m) / s).expand(3), (px_std / s).expand(3)
    assert torch.allclose(mean, want_mean, atol=1e-4) and torch.allclose(std, want_std, atol=1e-4)
    assert mean.abs().max() < 0.03 and (std - 1).abs().max() < 0.03  # the constants fit these images


# ----------------------------------------------------------------------------------------------- fixtures
def write_idx(path, arr: np.ndarray) -> None:
    data = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def mnist_tree(root, folder="MNIST/raw", n=(30, 20), seed=0, gz=(True, False), prefixes=("train", "t10k")):
    rng, out = np.random.default_rng(seed), {}
    for prefix, count, z in zip(prefixes, n, gz):
        x, y = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), rng.integers(0, 10, count).astype(np.uint8)
        ext = ".gz" if z else ""
        write_idx(root / folder / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(root / folder / f"{prefix}-labels-idx1-ubyte{ext}", y)
        out[prefix] = (x, y)
    return out


def pad(x: np.ndarray) -> np.ndarray:
    return np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None]


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST/raw"), ("fashionmnist", "FashionMNIST/raw")])
def test_idx_round_trip_gz_and_raw(tmp_path, name, folder):
    src = mnist_tree(tmp_path, folder)  # train gzipped, t10k uncompressed
    a = load_arrays(name, tmp_path)
    assert np.array_equal(a.x_train, pad(src["train"][0])) and np.array_equal(a.y_train, src["train"][1])
    assert np.array_equal(a.x_test, pad(src["t10k"][0])) and np.array_equal(a.y_test, src["t10k"][1])
    assert a.x_train.shape[1:] == (32, 32, 1) and a.num_classes == 10


def test_notmnist_split_fixture(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(10, dtype=np.uint8), 5)
    x[1] = x[2] = x[3] = x[0]  # an image present four times (class 0)
    write_idx(tmp_path / "notMNIST/t10k-images-idx3-ubyte.gz", x)
    write_idx(tmp_path / "notMNIST/t10k-labels-idx1-ubyte.gz", y)
    a = load_arrays("notmnist", tmp_path)
    assert np.bincount(a.y_test).tolist() == [1] * 10 and len(a.y_train) == 40
    assert not rows(a.x_test) & rows(a.x_train) and (a.x_test[a.y_test == 0] == pad(x[4:5])).all()
    # with train-* present, the given split is used as is
    src = mnist_tree(tmp_path, "notMNIST", n=(12,), prefixes=("train",))
    b = load_arrays("notmnist", tmp_path)
    assert np.array_equal(b.x_train, pad(src["train"][0])) and np.array_equal(b.x_test, pad(x))


def cifar_pickles(folder, names, label_key, k, n, seed=0):
    rng, out = np.random.default_rng(seed), []
    folder.mkdir(parents=True)
    for name in names:
        data, labels = rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, k, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", label_key: labels, b"data": data, b"filenames": [b"a"] * n}, f)
        out.append((data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.array(labels)))
    return out


def test_cifar100_pickles(tmp_path):
    (xtr, ytr), (xte, yte) = cifar_pickles(tmp_path / "cifar-100-python", ["train", "test"], b"fine_labels", 100, 20)
    a = load_arrays("cifar100", tmp_path)
    assert a.num_classes == 100 and a.x_train.shape == (20, 32, 32, 3) and a.x_test.shape == (20, 32, 32, 3)
    assert np.array_equal(a.x_train, xtr) and np.array_equal(a.y_train, ytr)
    assert np.array_equal(a.x_test, xte) and np.array_equal(a.y_test, yte)


def test_cifar10_pickles_preferred_over_npz(tmp_path):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    parts = cifar_pickles(tmp_path / "cifar-10-batches-py", names, b"labels", 10, 4)
    z = np.zeros((3, 32, 32, 3), np.uint8)
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10/cifar10_subset.npz", x_train=z, y_train=z[:, 0, 0, 0], x_test=z, y_test=z[:, 0, 0, 0])
    a = load_arrays("cifar10", tmp_path)
    assert np.array_equal(a.x_train, np.concatenate([p[0] for p in parts[:5]]))
    assert np.array_equal(a.y_train, np.concatenate([p[1] for p in parts[:5]]))
    assert np.array_equal(a.x_test, parts[5][0]) and np.array_equal(a.y_test, parts[5][1])
    (tmp_path / "cifar-10-batches-py/data_batch_3").unlink()  # an incomplete folder is an error, not a fallback
    with pytest.raises(DataError, match="data_batch_3"):
        load_arrays("cifar10", tmp_path)


def test_svhn_mat_files(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "svhn").mkdir()
    want = {}
    for s, n in (("train", 12), ("test", 7)):
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0] = 10
        scipy.io.savemat(tmp_path / f"svhn/{s}_32x32.mat", {"X": X, "y": y})
        want[s] = (X.transpose(3, 0, 1, 2), np.where(y.ravel() == 10, 0, y.ravel()))
    a = load_arrays("svhn", tmp_path)
    assert np.array_equal(a.x_train, want["train"][0]) and np.array_equal(a.y_train, want["train"][1])
    assert np.array_equal(a.x_test, want["test"][0]) and np.array_equal(a.y_test, want["test"][1])
    assert a.y_train[0] == 0 and a.y_train.max() <= 9 and a.num_classes == 10


def test_gtsrb_folder_layout(tmp_path):
    base, colours = tmp_path / "gtsrb" / "GTSRB", {0: (255, 0, 0), 42: (10, 200, 30)}
    for c, rgb in colours.items():
        d = base / "Training" / f"{c:05d}"
        d.mkdir(parents=True)
        for i, size in enumerate([(40, 45), (29, 31)]):
            Image.new("RGB", size, rgb).save(d / f"00000_{i:05d}.ppm")
        (d / f"GT-{c:05d}.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
    (base / "Final_Test" / "Images").mkdir(parents=True)
    Image.new("RGB", (50, 52), colours[42]).save(base / "Final_Test/Images/00000.ppm")
    (tmp_path / "gtsrb/GT-final_test.csv").write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n00000.ppm;50;52;5;5;45;47;42\n"
    )
    a = load_arrays("gtsrb", tmp_path)
    assert a.num_classes == 43 and a.x_train.shape == (4, 32, 32, 3) and a.x_test.shape == (1, 32, 32, 3)
    assert a.y_train.tolist() == [0, 0, 42, 42] and a.y_test.tolist() == [42]
    assert (a.x_train[:2] == colours[0]).all() and (a.x_train[2:] == colours[42]).all()
    assert (a.x_test == colours[42]).all()


def test_facescrub_npz_merge_and_hat_pickles(tmp_path):
    rng = np.random.default_rng(3)
    x20, y20 = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(20, dtype=np.uint8), 2)
    x10, y10 = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(10, dtype=np.uint8), 2)
    to20 = [0, 1, 2, 5, 8, 9, 13, 16, 17, 19]
    for k in range(10):  # one shared image per top-10 person reveals its top-20 id
        x10[2 * k] = x20[2 * to20[k]]
    (tmp_path / "facescrub").mkdir()
    np.savez(tmp_path / "facescrub/facescrub_hat_test_subsets.npz", x_top20=x20, y_top20=y20, x_top10=x10, y_top10=y10)
    a = load_arrays("facescrub", tmp_path)
    x, y = np.concatenate([a.x_train, a.x_test]), np.concatenate([a.y_train, a.y_test])
    assert a.num_classes == 20 and len(x) == 50 and len(rows(x)) == 50
    for k in range(10):  # the unshared top-10 image is filed under the person's top-20 id
        assert y[[i for i, r in enumerate(x) if r.tobytes() == x10[2 * k + 1].tobytes()]].tolist() == [to20[k]]
    # HAT's own pickles (features stored as an HWC image reshaped to (3, 32, 32), ints; labels any ids)
    imgs = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    for s, sl in (("train", slice(0, 4)), ("test", slice(4, 6))):
        feats = imgs[sl].reshape(-1, 3, 32, 32).astype(np.int32)
        with open(tmp_path / f"facescrub/facescrub_{s}_100.pkl", "wb") as f:
            pickle.dump({"features": feats, "labels": np.array([3, 7, 3, 9][: len(feats)], np.uint8)}, f, protocol=2)
    b = load_arrays("facescrub", tmp_path)
    assert np.array_equal(b.x_train, imgs[:4]) and np.array_equal(b.x_test, imgs[4:])
    assert b.y_train.tolist() == [0, 1, 0, 2] and b.y_test.tolist() == [0, 1] and b.num_classes == 3


def test_download_uses_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeMNIST:  # stands in for torchvision: writes the raw files, as its download does
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            if len(calls) == 1:
                mnist_tree(tmp_path, gz=(False, False))

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    with pytest.raises(DataError):
        load_arrays("mnist", tmp_path)  # download=False never calls torchvision
    assert not calls
    assert load_arrays("mnist", tmp_path, download=True).x_train.shape == (30, 32, 32, 1)
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DataError, match="download failed.*network unreachable"):
        load_arrays("cifar100", tmp_path, download=True)


# ----------------------------------------------------------------------------------------------- errors
def test_unknown_name():
    with pytest.raises(ConfigError) as e:
        load_arrays("imagenet", "/nonexistent")
    assert all(n in str(e.value) for n in DATASETS)
    with pytest.raises(ConfigError):
        normalize(np.zeros((1, 32, 32, 3), np.uint8), "imagenet")


EXPECTED = {
    "mnist": "MNIST/raw/train-images-idx3-ubyte.gz",
    "fashionmnist": "FashionMNIST/raw/t10k-labels-idx1-ubyte.gz",
    "notmnist": "notMNIST/t10k-images-idx3-ubyte.gz",
    "cifar10": "cifar-10-batches-py/data_batch_1",
    "cifar100": "cifar-100-python/train",
    "svhn": "svhn/train_32x32.mat",
    "gtsrb": "gtsrb/gtsrb32_subset.npz",
    "facescrub": "facescrub/facescrub_hat_test_subsets.npz",
}


@pytest.mark.parametrize("name", DATASETS)
def test_missing_dataset_message(tmp_path, name):
    with pytest.raises(DataError) as e:
        load_arrays(name, tmp_path)
    msg = str(e.value)
    assert str(tmp_path / EXPECTED[name]) in msg and "data.root" in msg and "LEAP_DATA_DIR" in msg
    assert ("data.download=true" in msg) == (name not in ("notmnist", "facescrub"))
    if name == "cifar10":
        assert str(tmp_path / "cifar10/cifar10_subset.npz") in msg
    if name == "facescrub":
        assert "nkundiushuti/facescrub_subset" in msg


def test_missing_message_names_only_missing_files(tmp_path):
    mnist_tree(tmp_path, n=(5,), prefixes=("t10k",))
    msg = str(pytest.raises(DataError, load_arrays, "mnist", tmp_path).value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg and "t10k" not in msg


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx(tmp_path, gz):
    mnist_tree(tmp_path, gz=(gz, gz))
    p = tmp_path / "MNIST/raw" / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_arrays("mnist", tmp_path)


def test_bad_idx_magic(tmp_path):
    mnist_tree(tmp_path, gz=(False, False))
    p = tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte"
    p.write_bytes(b"\0\0\x09\x01" + p.read_bytes()[4:])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*magic"):
        load_arrays("mnist", tmp_path)


def test_truncated_npz(tmp_path):
    (tmp_path / "gtsrb").mkdir()
    p = tmp_path / "gtsrb/gtsrb32_subset.npz"
    x = np.zeros((10, 32, 32, 3), np.uint8)
    np.savez_compressed(p, x_train=x, y_train=x[:, 0, 0, 0], x_test=x, y_test=x[:, 0, 0, 0])
    assert load_arrays("gtsrb", tmp_path).x_train.shape == (10, 32, 32, 3)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(DataError, match="gtsrb32_subset.npz"):
        load_arrays("gtsrb", tmp_path)


def test_corrupt_pickle_and_mat(tmp_path):
    cifar_pickles(tmp_path / "cifar-100-python", ["train", "test"], b"fine_labels", 100, 3)
    p = tmp_path / "cifar-100-python/test"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(DataError, match="cifar-100-python.test"):
        load_arrays("cifar100", tmp_path)
    (tmp_path / "svhn").mkdir()
    for s in ("train", "test"):
        (tmp_path / f"svhn/{s}_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x07" * 50)
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_arrays("svhn", tmp_path)


# ----------------------------------------------------------------------------------------------- normalize
def test_normalize_grey_and_colour():
    rng = np.random.default_rng(4)
    g = rng.integers(0, 256, (5, 32, 32, 1), dtype=np.uint8)
    z = normalize(g, "mnist")
    assert z.shape == (5, 3, 32, 32) and z.dtype == torch.float32 and z.is_contiguous()
    assert torch.equal(z[:, 0], z[:, 1]) and torch.equal(z[:, 0], z[:, 2])
    assert torch.allclose(z[:, 0], (torch.from_numpy(g[..., 0]).float() / 255 - 0.1) / 0.2752, atol=1e-6)
    c = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    z = normalize(c, "svhn")
    want = (
        torch.from_numpy(c).float().permute(0, 3, 1, 2) / 255 - torch.tensor([0.4377, 0.4438, 0.4728]).view(1, 3, 1, 1)
    ) / torch.tensor([0.198, 0.201, 0.197]).view(1, 3, 1, 1)
    assert z.shape == (4, 3, 32, 32) and torch.allclose(z, want, atol=1e-6)
    for name in DATASETS:  # every dataset has constants of the right width
        x = np.zeros((1, 32, 32, 1 if name in ("mnist", "fashionmnist", "notmnist") else 3), np.uint8)
        assert normalize(x, name).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError):
        normalize(c, "mnist")  # 3-channel images for a grey dataset
