"""The eight Multi-CV datasets (paper App. E; the vision mixture of Serrà et al. 2018, "HAT") as uint8 arrays.

Every dataset comes back as 32x32 channels-last uint8 images with int64 labels. Files are read from
``data.root`` in the layouts below (``root`` = data.root); ``download=True`` lets torchvision fetch the
datasets it knows (MNIST, FashionMNIST, CIFAR-10/100, SVHN, GTSRB).

* mnist / fashionmnist: ``MNIST/raw/`` / ``FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``;
  the official train/test split. 28x28 images are zero-padded to 32x32 (2 pixels on each side), as in HAT.
* notmnist: ``notMNIST/{train,t10k}-*-ubyte[.gz]`` (the MNIST-format release); padded like MNIST. With both
  ``train-*`` and ``t10k-*`` the given split is used. With only ``t10k-*`` (the shared copy: 10,000 images)
  it is split by :func:`split`: per class 20 % of the images go to test, drawn with
  ``numpy.random.RandomState(0)`` among images that occur exactly once; pixel-identical copies (in the
  shared file 253 images showing 57 distinct pictures, one of them 141 times) always stay in train, so no
  picture is on both sides. The shared copy gives 8,000 train / 2,000 test (800 / 200 per letter).
* cifar10: torchvision's ``cifar-10-batches-py/`` pickles, else the shared ``cifar10/cifar10_subset.npz``.
* cifar100: torchvision's ``cifar-100-python/{train,test}`` pickles, fine labels (100 classes).
* svhn: ``svhn/{train,test}_32x32.mat`` (torchvision's files); label 10 means digit 0 and becomes 0.
* gtsrb: torchvision's folder layout (``gtsrb/GTSRB/Training/<class>/*.ppm``, or the official
  ``gtsrb/GTSRB/Final_Training/Images/<class>/``, plus ``gtsrb/GTSRB/Final_Test/Images/*.ppm`` with
  ``gtsrb/GT-final_test.csv``), whole images resized to 32x32 with bilinear filtering, the official split;
  else the shared ``gtsrb/gtsrb32_subset.npz`` (already 32x32, its own train/test subsets).
* facescrub: HAT's ``facescrub/facescrub_{train,test}_100.pkl`` (from ``facescrub_100.zip``, 100 people),
  else the shared ``facescrub/facescrub_hat_test_subsets.npz``. That file holds HAT's top-20 and top-10
  *test* splits (10 % of each person's crops); the top-10 labels are mapped onto the top-20 ids through
  the images both files hold, the union is kept once per distinct image (725 images, 20 people) and split
  by :func:`split` as for notMNIST (580 train / 145 test). Labels of arbitrary ids are remapped to 0..K-1 in
  sorted order.

Normalization (:func:`normalize`) uses HAT's per-dataset constants where they describe the images we
feed (``NORM``). Grey datasets are normalized with their 1-channel constants and then repeated to 3
identical channels, exactly as HAT does (``image.expand(1, 3, H, W)`` after ``Normalize``), so one conv
body sees 3x32x32 for every dataset.
"""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..tasks import Task
from . import undone_on_failure

DATASETS = ("facescrub", "notmnist", "mnist", "fashionmnist", "cifar10", "svhn", "cifar100", "gtsrb")
NUM_CLASSES = {
    "notmnist": 10,
    "mnist": 10,
    "fashionmnist": 10,
    "cifar10": 10,
    "svhn": 10,
    "cifar100": 100,
    "gtsrb": 43,
}  # facescrub: however many people the file holds
SPLIT_SEED, TEST_FRACTION = 0, 0.2
_CIFAR = ([x / 255 for x in (125.3, 123.0, 113.9)], [x / 255 for x in (63.0, 62.1, 66.7)])
# (mean, std) per channel on [0, 1] pixels. From HAT, github.com/joansj/hat src/dataloaders/mixture.py:
# CIFAR-10 (also used there for CIFAR-100), MNIST and FashionMNIST "including the padding", SVHN, and
# traffic signs (computed by HAT on the 32x32 Udacity GTSRB pickles; the shared subset gives
# 0.342/0.314/0.323 and 0.277/0.267/0.273, close enough to keep HAT's). Computed here instead:
# notMNIST, because HAT's (0.4254,)/(0.4501,) are for its unpadded 32x32 pickles while we pad 28x28 glyphs,
# and FaceScrub, because HAT's channel stats were taken on its scrambled reshape(3, 32, 32) arrays (they
# mix all colours; the true RGB means differ). Both are the training split of the shared copy (split below).
NORM: dict[str, tuple[list[float], list[float]]] = {
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "mnist": ([0.1], [0.2752]),
    "fashionmnist": ([0.2190], [0.3318]),
    "svhn": ([0.4377, 0.4438, 0.4728], [0.198, 0.201, 0.197]),
    "gtsrb": ([0.3398, 0.3117, 0.3210], [0.2755, 0.2647, 0.2712]),
    "notmnist": ([0.3278], [0.4409]),
    "facescrub": ([0.6515, 0.4870, 0.4116], [0.2366, 0.2027, 0.1943]),
}


@dataclass
class Arrays:
    """One dataset in memory: uint8 images (N, 32, 32, C) channels-last with C in {1, 3}, int64 labels in
    [0, num_classes)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def check_known(name: str) -> None:
    if name not in DATASETS:
        raise ConfigError(f"Unknown Multi-CV dataset {name!r}; valid names: {', '.join(DATASETS)}")


def load_arrays(name: str, root: str | os.PathLike, download: bool = False) -> Arrays:
    """Read one Multi-CV dataset from ``root`` (see the module docstring for layouts and splits)."""
    check_known(name)
    root = Path(os.path.expanduser(str(root)))
    xtr, ytr, xte, yte = _LOADERS[name](name, root, download)
    if name == "facescrub":
        classes, y = np.unique(np.concatenate([ytr, yte]), return_inverse=True)
        ytr, yte, k = y[: len(ytr)], y[len(ytr) :], len(classes)
    else:
        k = NUM_CLASSES[name]
    ytr, yte = np.asarray(ytr, np.int64).ravel(), np.asarray(yte, np.int64).ravel()
    for x, y in ((xtr, ytr), (xte, yte)):
        if x.ndim != 4 or x.shape[1:3] != (32, 32) or len(x) != len(y) or x.dtype != np.uint8:
            raise DataError(f"{name} under {root}: unexpected image array {x.shape} {x.dtype} for {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DataError(f"{name} under {root}: labels outside 0..{k - 1} (found {y.min()}..{y.max()})")
    return Arrays(name, np.ascontiguousarray(xtr), ytr, np.ascontiguousarray(xte), yte, k)


def normalize(arrays_x: np.ndarray, name: str) -> torch.Tensor:
    """uint8 (N, 32, 32, C) -> float32 (N, 3, 32, 32) with ``NORM[name]``; 1-channel images are repeated to 3."""
    check_known(name)
    mean, std = NORM[name]
    if arrays_x.ndim != 4 or arrays_x.shape[-1] != len(mean) or arrays_x.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 (N, H, W, {len(mean)}), got {arrays_x.dtype} {arrays_x.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arrays_x)).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x.contiguous()


def split(x: np.ndarray, y: np.ndarray, seed: int = SPLIT_SEED, frac: float = TEST_FRACTION):
    """Stratified train/test split: ``round(frac * n_c)`` test images per class, drawn (RandomState(seed))
    among images that occur once (fewer if a class lacks them); duplicated pictures stay in train.
    Returns ``x_tr, y_tr, x_te, y_te``."""
    _, inv, cnt = np.unique(x.reshape(len(x), -1), axis=0, return_inverse=True, return_counts=True)
    single = cnt[inv.reshape(-1)] == 1
    rng, test = np.random.RandomState(seed), np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        cand = idx[single[idx]]
        test[rng.permutation(cand)[: min(len(cand), int(round(frac * len(idx))))]] = True
    return x[~test], y[~test], x[test], y[test]


# ----------------------------------------------------------------------------------------------- readers
def _bad(path: Path, e: Exception) -> DataError:
    return DataError(
        f"Cannot read {path} ({type(e).__name__}: {e}); the file is truncated or corrupt. "
        "Replace it with an intact copy."
    )


def _missing(name: str, root: Path, paths: list[Path], how: str) -> DataError:
    listed = "\n".join(f"  {p}" for p in paths)
    return DataError(
        f"{name} not found under data.root={root}. Missing:\n{listed}\n{how} "
        "Or point data.root / LEAP_DATA_DIR at a folder that holds a copy in this layout."
    )


_TV_HOW = "Or set data.download=true on a machine with network access (torchvision downloads it)."


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX file (gzip-compressed when it ends in .gz)."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise _bad(path, e) from e
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\0\0\x08" or raw[3] != ndim:
        raise DataError(f"{path} is not a {ndim}-d unsigned-byte IDX file (magic {raw[:4].hex()!r}); replace it.")
    dims = [int(d) for d in np.frombuffer(raw, ">u4", ndim, 4)]
    n, head = int(np.prod(dims)), 4 + 4 * ndim
    if len(raw) != head + n:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {dims} ({n} bytes of data) but it "
            f"holds {len(raw) - head}. Replace it with an intact copy."
        )
    return np.frombuffer(raw, np.uint8, n, head).reshape(dims)


def _idx_files(folder: Path, prefix: str) -> tuple[Path | None, Path | None]:
    def find(stem: str) -> Path | None:
        return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)

    return find(f"{prefix}-images-idx3-ubyte"), find(f"{prefix}-labels-idx1-ubyte")


def _idx_pair(img: Path | None, lab: Path | None) -> tuple[np.ndarray, np.ndarray]:
    assert img is not None and lab is not None, "the caller reports missing files first"
    x, y = read_idx(img, 3), read_idx(lab, 1)
    if len(x) != len(y):
        raise DataError(f"{img} holds {len(x)} images but {lab} holds {len(y)} labels; replace the mismatched file.")
    return np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None], y  # 28x28 -> 32x32, zero border


def _want(folder: Path, prefixes: tuple[str, ...]) -> list[Path]:
    return [folder / f"{p}-{k}-ubyte.gz" for p in prefixes for k in ("images-idx3", "labels-idx1")]


def _mnist(name: str, root: Path, download: bool):
    folder = root / {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}[name] / "raw"
    files = [*_idx_files(folder, "train"), *_idx_files(folder, "t10k")]
    if None in files and download:
        import torchvision.datasets as tvd

        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        _torchvision(name, root, lambda: [cls(str(root), train=t, download=True) for t in (True, False)])
        files = [*_idx_files(folder, "train"), *_idx_files(folder, "t10k")]
    if None in files:
        wanted = _want(folder, ("train", "t10k"))
        raise _missing(
            name,
            root,
            [w for w, f in zip(wanted, files) if f is None],
            f"Put the four official files there (gzipped or not). {_TV_HOW}",
        )
    return (*_idx_pair(files[0], files[1]), *_idx_pair(files[2], files[3]))


def _notmnist(name: str, root: Path, download: bool):
    folder = root / "notMNIST"
    train, test = _idx_files(folder, "train"), _idx_files(folder, "t10k")
    pre = ("t10k",) if train == (None, None) else ("train", "t10k")  # train-* is optional, but not half of it
    missing = [w for w, f in zip(_want(folder, pre), (*train, *test)[-2 * len(pre) :]) if f is None]
    if missing:
        raise _missing(
            name,
            root,
            missing,
            "Get the MNIST-format release (github.com/davidflanagan/notMNIST-to-MNIST; "
            "t10k-* alone is enough, it is then split 80/20) and put the files there; there is no "
            "automatic download.",
        )
    if train == (None, None):
        return split(*_idx_pair(*test))
    return (*_idx_pair(*train), *_idx_pair(*test))


def _npz(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    try:
        with np.load(path) as z:
            absent = [k for k in keys if k not in z.files]
            out = [z[k] for k in keys if k in z.files]
    except Exception as e:  # noqa: BLE001 - zip, zlib and format errors all mean a damaged file
        raise _bad(path, e) from e
    if absent:
        raise DataError(f"{path} lacks the arrays {absent} (has {keys}?); replace it with the intended file.")
    return out


def _pickle(path: Path, keys: tuple, encoding: str = "bytes") -> list:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding=encoding)
        return [d[k] for k in keys]
    except Exception as e:  # noqa: BLE001 - unpickling errors, truncation, missing keys: a damaged file
        raise _bad(path, e) from e


def _cifar_batches(paths: list[Path], label_key: bytes):
    parts = [_pickle(p, (b"data", label_key)) for p in paths]
    x = np.concatenate([np.asarray(d, np.uint8).reshape(-1, 3, 32, 32) for d, _ in parts]).transpose(0, 2, 3, 1)
    return x, np.concatenate([np.asarray(y, np.int64) for _, y in parts])


def _cifar(name: str, root: Path, download: bool):
    folder, label, tv = (
        (root / "cifar-10-batches-py", b"labels", "CIFAR10")
        if name == "cifar10"
        else (root / "cifar-100-python", b"fine_labels", "CIFAR100")
    )
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"] if name == "cifar10" else ["train", "test"]
    npz = root / "cifar10" / "cifar10_subset.npz"
    if not folder.is_dir() and name == "cifar10" and npz.is_file():
        return _npz(npz, ("x_train", "y_train", "x_test", "y_test"))
    if not folder.is_dir() and download:
        import torchvision.datasets as tvd

        _torchvision(name, root, lambda: [getattr(tvd, tv)(str(root), train=t, download=True) for t in (True, False)])
    missing = [folder / n for n in names if not (folder / n).is_file()]
    if missing:
        alt = f" (or, for a CIFAR-10 subset, the arrays file {npz})" if name == "cifar10" else ""
        raise _missing(name, root, missing, f"Put the extracted python-version pickles there{alt}. {_TV_HOW}")
    return (*_cifar_batches([folder / n for n in names[:-1]], label), *_cifar_batches([folder / names[-1]], label))


def _svhn(name: str, root: Path, download: bool):
    from scipy.io import loadmat

    folder, out = root / "svhn", []
    for s in ("train", "test"):
        path = folder / f"{s}_32x32.mat"
        if not path.is_file() and download:
            from torchvision.datasets import SVHN

            _torchvision(name, root, lambda: SVHN(str(folder), split=s, download=True))  # noqa: B023
        if not path.is_file():
            raise _missing(
                name,
                root,
                [p for p in (folder / "train_32x32.mat", folder / "test_32x32.mat") if not p.is_file()],
                f"Put torchvision's SVHN files there. {_TV_HOW}",
            )
        try:
            m = loadmat(path, variable_names=["X", "y"])
            x, y = np.asarray(m["X"], np.uint8).transpose(3, 0, 1, 2), np.asarray(m["y"], np.int64).ravel()
        except Exception as e:  # noqa: BLE001 - scipy raises many types for damaged .mat files
            raise _bad(path, e) from e
        out += [x, np.where(y == 10, 0, y)]
    return out


def _gtsrb(name: str, root: Path, download: bool):
    base = root / "gtsrb"
    npz = base / "gtsrb32_subset.npz"
    train_dirs = [base / "GTSRB" / "Training", base / "GTSRB" / "Final_Training" / "Images"]
    test_dir, csvs = base / "GTSRB" / "Final_Test" / "Images", [base / "GT-final_test.csv", base / "GT-Final_Test.csv"]
    have_folder = lambda: any(d.is_dir() for d in train_dirs) or test_dir.is_dir()  # noqa: E731
    if not have_folder() and npz.is_file():
        return _npz(npz, ("x_train", "y_train", "x_test", "y_test"))
    if not have_folder() and download:
        from torchvision.datasets import GTSRB

        _torchvision(name, root, lambda: [GTSRB(str(root), split=s, download=True) for s in ("train", "test")])
    train_dir = next((d for d in train_dirs if d.is_dir()), None)
    csv_path = next((c for c in csvs if c.is_file()), None)
    missing = [
        p for p, ok in ((train_dirs[0], train_dir), (test_dir, test_dir.is_dir()), (csvs[0], csv_path)) if not ok
    ]
    if missing:
        raise _missing(
            name,
            root,
            missing + ([] if have_folder() else [npz]),
            f"Either put the shared 32x32 arrays file at {npz}, or torchvision's GTSRB folders at the "
            f"other paths (whole images, resized to 32x32 when read). {_TV_HOW}",
        )
    assert train_dir is not None and csv_path is not None  # else reported missing above
    train = sorted((p, int(d.name)) for d in train_dir.iterdir() if d.is_dir() for p in d.glob("*.ppm"))
    try:
        with open(csv_path, newline="") as f:
            test = [(test_dir / r["Filename"], int(r["ClassId"])) for r in csv.DictReader(f, delimiter=";")]
    except (OSError, KeyError, ValueError) as e:
        raise _bad(csv_path, e) from e
    return (*_ppms(train), *_ppms(test))


def _ppms(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    x = np.empty((len(items), 32, 32, 3), np.uint8)
    for i, (p, _) in enumerate(items):
        try:
            with Image.open(p) as im:
                x[i] = np.asarray(im.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
        except Exception as e:  # noqa: BLE001 - missing or undecodable image
            raise _bad(p, e) from e
    return x, np.array([c for _, c in items], np.int64)


def _facescrub(name: str, root: Path, download: bool):
    folder = root / "facescrub"
    hat, npz = [folder / f"facescrub_{s}_100.pkl" for s in ("train", "test")], folder / "facescrub_hat_test_subsets.npz"
    if all(p.is_file() for p in hat):  # HAT stored imresize(img).reshape(3, 32, 32): the bytes are HWC
        parts = [_pickle(p, ("features", "labels"), "latin1") for p in hat]
        return [a for f, y in parts for a in (np.asarray(f).astype(np.uint8).reshape(-1, 32, 32, 3), np.asarray(y))]
    if not npz.is_file():
        raise _missing(
            name,
            root,
            [npz, *hat],
            (
                "Put either the shared arrays file (facescrub_hat_test_subsets.npz, made from the HAT co-author's "
                "github.com/nkundiushuti/facescrub_subset data/facescrub_test_{10,20}.pkl) or the two pickles of "
                "that repository's data/facescrub_100.zip there; there is no automatic download."
            ),
        )
    x20, y20, x10, y10 = _npz(npz, ("x_top20", "y_top20", "x_top10", "y_top10"))
    where = {img.tobytes(): int(c) for img, c in zip(x20, y20)}
    pairs = {(int(c), where[img.tobytes()]) for img, c in zip(x10, y10) if img.tobytes() in where}
    to20 = dict(pairs)
    if len(to20) != len(pairs) or set(to20) != set(np.unique(y10).tolist()):
        raise DataError(f"{npz}: the top-10 people cannot be matched to the top-20 ids through shared images.")
    x = np.concatenate([x20, x10])
    y = np.concatenate([y20, [to20[int(c)] for c in y10]]).astype(np.int64)
    keep = np.sort(np.unique(x.reshape(len(x), -1), axis=0, return_index=True)[1])  # each picture once
    return split(x[keep], y[keep])


def _torchvision(name: str, root: Path, fetch) -> None:
    try:
        with undone_on_failure(root):
            fetch()
    except Exception as e:  # noqa: BLE001 - any network/IO failure gets the same advice
        raise DataError(
            f"{name} is not under data.root={root} and the torchvision download failed "
            f"({type(e).__name__}: {e}). Download it elsewhere and copy it into {root}."
        ) from e


_LOADERS = {
    "mnist": _mnist,
    "fashionmnist": _mnist,
    "notmnist": _notmnist,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "svhn": _svhn,
    "gtsrb": _gtsrb,
    "facescrub": _facescrub,
}


# ----------------------------------------------------------------------------------------------- benchmark
class MultiCV:
    """Leave-one-dataset-out Multi-CV (paper App. E): every dataset but ``heldout`` is a pretraining task.

    Each task is a whole dataset with its own head (``Task.head`` = its name) on the shared body; ``heads``
    maps every dataset to its class count, for ``models.MultiHeadConvNet``. A task's validation images are
    ``val_fraction`` of its training split (drawn with ``split_seed``): pretraining tasks stop early on them,
    and so does the held-out task, whose reported error is on its official test split.

    ``max_train``/``max_test`` keep a random subset of each split (drawn before the validation split; the
    ``small`` preset), ``None`` keeps everything. No augmentation.
    """

    provides: frozenset[str] = frozenset()  # every dataset has its own head (checks.NEEDS)

    def __init__(
        self,
        root: str,
        heldout: str,
        datasets: list[str] | tuple[str, ...] = DATASETS,
        val_fraction: float = 0.1,
        max_train: int | None = None,
        max_test: int | None = None,
        split_seed: int = 0,
        download: bool = False,
    ) -> None:
        datasets = list(datasets)
        for key, value in (("max_train", max_train), ("max_test", max_test)):
            if value is not None and value < 1:
                raise ConfigError(f"data.{key}={value} must be at least 1 (or null: every image).")
        for name in datasets + [heldout]:
            check_known(name)
        if heldout not in datasets:
            raise ConfigError(f"data.heldout={heldout} is not among data.datasets ({', '.join(datasets)}).")
        twice = sorted({d for d in datasets if datasets.count(d) > 1})
        if twice:
            raise ConfigError(f"data.datasets={datasets} names {', '.join(twice)} more than once; list each once.")
        if len(datasets) < 2:
            raise ConfigError(f"data.datasets={datasets} must name at least two distinct datasets.")
        if not 0 < val_fraction < 1:
            raise ConfigError(f"data.val_fraction={val_fraction} must lie strictly between 0 and 1.")
        arrays = {d: load_arrays(d, root, download) for d in datasets}  # every one, or a clear error now
        self.heads = {d: a.num_classes for d, a in arrays.items()}
        self.heldout = heldout
        self.pretrain = [
            self._task(arrays[d], i, val_fraction, max_train, max_test, split_seed)
            for i, d in enumerate(d for d in datasets if d != heldout)
        ]
        self.val: list[Task] = []  # no validation datasets: leave-one-out uses all of them
        self.test = [self._task(arrays[heldout], -1, val_fraction, max_train, max_test, split_seed)]

    @property
    def model_kwargs(self) -> dict:
        """What the model needs from the data: one head per dataset (the runner passes it on)."""
        return {"heads": dict(self.heads)}

    def to(self, device: torch.device) -> None:
        """Keep every task's images on ``device`` (``protocols.Benchmark``): batches and augmentation run there."""
        self.pretrain, self.val, self.test = ([t.to(device) for t in ts] for ts in (self.pretrain, self.val, self.test))

    @staticmethod
    def _task(
        a: Arrays, task_id: int, val_fraction: float, max_train: int | None, max_test: int | None, seed: int
    ) -> Task:
        rng = np.random.RandomState(seed)
        tr = rng.permutation(len(a.y_train))[:max_train]
        te = np.sort(rng.permutation(len(a.y_test))[:max_test])
        n_val = max(1, int(round(val_fraction * len(tr))))
        val, tr = np.sort(tr[:n_val]), np.sort(tr[n_val:])
        x, y = lambda arr, idx: normalize(arr[idx], a.name), lambda arr, idx: torch.from_numpy(arr[idx])
        return Task(
            name=a.name,
            x_train=x(a.x_train, tr),
            y_train=y(a.y_train, tr),
            x_heldout=x(a.x_test, te),
            y_heldout=y(a.y_test, te),
            task_id=task_id,
            head=a.name,
            x_val=x(a.x_train, val),
            y_val=y(a.y_train, val),
        )
