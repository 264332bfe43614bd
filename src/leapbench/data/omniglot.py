"""Omniglot alphabets as 20-way tasks, read from the original ``images_background``/``images_evaluation`` folders.

Protocol (paper App. D, reference code ``src/omniglot/data.py``): every alphabet with at least 20 characters
is a task; 20 characters are drawn per alphabet; per character the first 5 images (sorted file names) are
held out and the other 15 are for training; images are resized to 28x28.

Two splits, both drawn from ``split_seed`` (the run seed by default, as in the reference code, so the
paper's seeds are different splits):

* nested (default): the 10 test and ``num_val`` validation alphabets, the order of the remaining pretraining
  pool and the 20 characters of every alphabet are drawn from ``split_seed`` alone; the pretraining tasks are
  a prefix of the pool, so nothing but the pretraining set moves with ``num_pretrain`` (and nothing with the
  method): within one seed every method and task count is tested on the same alphabets.
* legacy (``legacy_split=True``): the reference code's split, where one shuffle of all alphabets gives
  pretraining the first ``num_pretrain``, test the next 10 and validation the rest (test moves with
  ``num_pretrain``).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import socket
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DataError, WriteError
from ..logging import atomic_open
from ..tasks import Augment, Task
from . import undone_on_failure

SETS = ("images_background", "images_evaluation")
NATIVE_SIZE = 105  # every Omniglot image is 105 x 105 pixels
AUGMENTATIONS = ("reference", "rotate36", "none")
RESAMPLING = ("reference", "antialias")


# ----------------------------------------------------------------------------------------------- files
def locate(root: str | os.PathLike, download: bool = False) -> Path:
    """Find the folder holding ``images_background/`` and ``images_evaluation/`` under ``root``.

    ``root`` itself, ``root/omniglot`` and torchvision's ``root/omniglot-py`` are searched. When nothing is
    found and ``download`` is set, torchvision downloads the data into ``root/omniglot-py``.
    """
    root = Path(os.path.expanduser(str(root)))
    for cand in (root, root / "omniglot", root / "omniglot-py"):
        if all((cand / s).is_dir() for s in SETS):
            return cand
    if download:
        return _download(root)
    raise DataError(
        f"Omniglot not found under data.root={root}. Put the extracted folders there as "
        f"{root}/omniglot/images_background/ and {root}/omniglot/images_evaluation/ (from the official "
        "images_background.zip and images_evaluation.zip), or set LEAP_DATA_DIR / data.root to a folder "
        "that holds them, or allow data.download=true on a machine with network access."
    )


def _download(root: Path) -> Path:
    from torchvision.datasets import Omniglot as TVOmniglot

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        with undone_on_failure(root, root / "omniglot-py"):  # where torchvision puts it
            for background in (True, False):
                TVOmniglot(str(root), background=background, download=True)
    except Exception as e:  # noqa: BLE001 - any network/IO failure gets the same advice
        raise DataError(
            f"Omniglot is not under data.root={root} and downloading it failed ({type(e).__name__}: {e}). "
            f"Download images_background.zip and images_evaluation.zip from github.com/brendenlake/omniglot, "
            f"extract them into {root}/omniglot/, and run again (or point data.root / LEAP_DATA_DIR at your copy)."
        ) from e
    finally:
        socket.setdefaulttimeout(old)
    return root / "omniglot-py"


def list_alphabets(folder: Path) -> dict[str, dict[str, list[Path]]]:
    """``{alphabet: {character: [image paths]}}``, every level sorted by name."""
    out: dict[str, dict[str, list[Path]]] = {}
    for s in SETS:
        for a in sorted(p for p in (folder / s).iterdir() if p.is_dir()):
            chars = {c.name: sorted(c.glob("*.png")) for c in sorted(p for p in a.iterdir() if p.is_dir())}
            out[a.name] = chars
    return dict(sorted(out.items()))


def _read(path: Path, size: int, resample: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if resample == "antialias":  # a true LANCZOS resize of the grey image
                grey = im.convert("L").resize((size, size), Image.Resampling.LANCZOS)
                return np.asarray(grey, dtype=np.uint8)
            # The reference resizes the 1-bit PNG with LANCZOS, which Pillow performs as NEAREST for mode "1".
            small = im.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(small.convert("L"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"Cannot read Omniglot image {path}: {e}. Replace the file with an intact copy.") from e


def load_images(folder: Path, listing: dict, size: int, resample: str, cache_dir: str | None) -> dict[str, np.ndarray]:
    """All images as ``{"alphabet/character": uint8 (n, size, size)}``, cached as one ``.npz``."""
    keys = [f"{a}/{c}" for a, chars in listing.items() for c in chars]
    files = [p for chars in listing.values() for paths in chars.values() for p in paths]
    digest = hashlib.sha1("\n".join(str(p.relative_to(folder)) for p in files).encode()).hexdigest()[:12]
    cache = None
    if cache_dir:
        cache = Path(os.path.expanduser(cache_dir)) / f"omniglot-{size}-{resample}-{digest}.npz"
        if cache.exists():
            try:
                with np.load(cache) as z:
                    return {k: z[f"a{i}"] for i, k in enumerate(keys)}
            except (OSError, ValueError, KeyError):
                cache.unlink(missing_ok=True)  # a corrupt cache is rebuilt, never trusted
    images = {k: np.stack([_read(p, size, resample) for p in listing[k.split("/")[0]][k.split("/")[1]]]) for k in keys}
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(cache, "wb") as f:
                np.savez(f, **{f"a{i}": images[k] for i, k in enumerate(keys)})  # type: ignore[arg-type]
        except (OSError, WriteError) as e:  # a cache is an optimization: go on without it
            warnings.warn(
                f"Image cache not written ({e}); set paths.cache / LEAP_CACHE_DIR to a writable folder "
                "to load faster next time.",
                stacklevel=2,
            )
    return images


# ---------------------------------------------------------------------------------------- augmentation
def make_augment(mode: str, size: int = 28) -> tuple[Augment | None, bool]:
    """The augmentation for ``mode`` and whether it also applies to held-out images.

    * ``reference``: the authors' ``RandomAffine(degrees=(0, 360), translate=(0.2, 0.2), scale=(0.8, 1.2))``
      with nearest interpolation and fill 0, applied to training *and* held-out images.
    * ``rotate36``: the paper's "36 random rotations": each training image is rotated by a multiple of
      10 degrees drawn uniformly; the background fills the corners; held-out images are left as they are.
    * ``none``.
    """
    if mode == "none":
        return None, False
    if mode == "reference":
        return ReferenceAffine(size), True
    if mode == "rotate36":
        return Rotate36(size), False
    raise ConfigError(f"Unknown data.augment={mode!r}; choose one of {', '.join(AUGMENTATIONS)}.")


def _affine(x: torch.Tensor, params: torch.Tensor, fill: float | torch.Tensor) -> torch.Tensor:
    """Rotate, scale and shift each image about its centre; ``params`` rows are (angle in radians, scale,
    shift x, shift y in normalized units); ``x`` is ``(*lead, C, H, W)`` and ``params`` ``(*lead, 4)``."""
    shape = x.shape
    x, params = x.reshape(-1, *shape[-3:]), params.reshape(-1, 4).to(x.dtype)
    angle, scale, shift = params[:, 0], params[:, 1], params[:, 2:]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    a = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # inverse map
    theta = torch.cat([a, -(a @ shift.unsqueeze(-1))], -1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if isinstance(fill, torch.Tensor):  # one fill per batch: repeat it for the batch's images
        fill = fill.expand(*shape[:-3], 1, 1, 1).reshape(-1, 1, 1, 1)
    out = F.grid_sample(x - fill, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return (out + fill).reshape(shape)


class ReferenceAffine:
    """The authors' ``RandomAffine(degrees=(0, 360), translate=(0.2, 0.2), scale=(0.8, 1.2))``, fill 0."""

    def __init__(self, size: int = 28) -> None:
        self.size = size

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        angle = torch.rand(n, generator=generator) * 2 * math.pi
        scale = 0.8 + 0.4 * torch.rand(n, generator=generator)
        # torchvision draws integer pixel shifts in [-0.2 W, 0.2 W]; 2/W converts pixels to normalized units
        # (Omniglot's 28 pixels: the size is fixed here, so the draws need no images).
        shift = torch.round((torch.rand(n, 2, generator=generator) * 2 - 1) * 0.2 * self.size) * (2.0 / self.size)
        return torch.cat([angle[:, None], scale[:, None], shift], 1)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return _affine(x, params, fill=0.0)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[-4], generator))


class Rotate36(ReferenceAffine):
    """The paper's "36 random rotations": a multiple of 10 degrees per image; the batch's brightest value (the
    background) fills the corners."""

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        angle = torch.randint(0, 36, (n,), generator=generator).float() * (2 * math.pi / 36)
        return torch.cat([angle[:, None], torch.ones(n, 1), torch.zeros(n, 2)], 1)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return _affine(x, params, fill=x.amax(dim=(-4, -3, -2, -1), keepdim=True))


# ----------------------------------------------------------------------------------------------- split
class Omniglot:
    """The Omniglot benchmark: lists of pretraining, validation and test tasks (alphabets)."""

    provides = frozenset({"shared_head"})  # 20-way tasks on one output layer (checks.NEEDS)

    def __init__(
        self,
        root: str,
        num_pretrain: int,
        split_seed: int = 0,
        legacy_split: bool = False,
        num_test: int = 10,
        num_val: int = 6,
        num_classes: int = 20,
        num_heldout: int = 5,
        image_size: int = 28,
        augment: str = "reference",
        resample: str = "reference",
        download: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        if resample not in RESAMPLING:
            raise ConfigError(f"Unknown data.resample={resample!r}; choose one of {', '.join(RESAMPLING)}.")
        for key, value, low in (("num_test", num_test, 1), ("num_val", num_val, 0), ("num_classes", num_classes, 2)):
            if value < low:
                raise ConfigError(f"data.{key}={value} must be at least {low}.")
        if num_heldout < 1:
            raise ConfigError(f"data.num_heldout={num_heldout} must be at least 1 (the images each test is scored on).")
        if not 1 <= image_size <= NATIVE_SIZE:
            raise ConfigError(
                f"data.image_size={image_size}: Omniglot's images are {NATIVE_SIZE}x{NATIVE_SIZE}; choose "
                f"1..{NATIVE_SIZE} (the paper: 28)."
            )
        augment_fn, augment_heldout = make_augment(augment, image_size)
        folder = locate(root, download)
        listing = list_alphabets(folder)
        eligible = [a for a, chars in listing.items() if len(chars) >= num_classes]
        most = max(len(chars) for chars in listing.values())
        if num_classes > most:
            raise ConfigError(
                f"data.num_classes={num_classes} is more characters than any alphabet has; choose 2..{most}."
            )
        if legacy_split:
            pretrain, test, val, chars = _legacy_split(
                listing, eligible, num_pretrain, num_test, num_classes, split_seed
            )
        else:
            pretrain, test, val, chars = _nested_split(
                listing, eligible, num_pretrain, num_test, num_val, num_classes, split_seed
            )
        images = load_images(folder, listing, image_size, resample, cache_dir)

        def task(name: str, task_id: int) -> Task:
            xs = np.stack([images[f"{name}/{c}"] for c in chars[name]])  # (classes, drawers, H, W)
            if xs.shape[1] <= num_heldout:
                raise ConfigError(
                    f"data.num_heldout={num_heldout} leaves no training images: alphabet {name} has "
                    f"{xs.shape[1]} images per character; choose 1..{xs.shape[1] - 1}."
                )
            x = torch.from_numpy(xs).float().div_(255.0).unsqueeze(2)  # (classes, drawers, 1, H, W)
            y = torch.arange(len(xs)).unsqueeze(1)
            tr, ho = x[:, num_heldout:], x[:, :num_heldout]
            return Task(
                name=name,
                x_train=tr.reshape(-1, *x.shape[2:]).contiguous(),
                y_train=y.expand(-1, tr.shape[1]).reshape(-1).clone(),
                x_heldout=ho.reshape(-1, *x.shape[2:]).contiguous(),
                y_heldout=y.expand(-1, ho.shape[1]).reshape(-1).clone(),
                task_id=task_id,
                augment=augment_fn,
                augment_heldout=augment_heldout,
            )

        self.pretrain = [task(a, i) for i, a in enumerate(pretrain)]
        self.val = [task(a, -1) for a in val]
        self.test = [task(a, -1) for a in test]

    @property
    def model_kwargs(self) -> dict:
        """Nothing: every alphabet shares the model's one 20-way head (``protocols.Benchmark``)."""
        return {}

    def to(self, device: torch.device) -> None:
        """Keep every task's images on ``device`` (``protocols.Benchmark``): batches and augmentation run there."""
        self.pretrain, self.val, self.test = ([t.to(device) for t in ts] for ts in (self.pretrain, self.val, self.test))


def _pick_pretrain(pool: list[str], num_pretrain: int) -> list[str]:
    if not 0 <= num_pretrain <= len(pool):
        raise ConfigError(
            f"data.num_pretrain={num_pretrain} is out of range: this split has {len(pool)} pretraining alphabets "
            f"available; choose 0..{len(pool)}."
        )
    return pool[:num_pretrain]


def _nested_split(listing, eligible, num_pretrain, num_test, num_val, num_classes, split_seed):
    if num_test + num_val >= len(eligible):
        raise ConfigError(
            f"data.num_test={num_test} + data.num_val={num_val} leave no alphabets for pretraining: "
            f"{len(eligible)} alphabets have data.num_classes={num_classes} characters or more."
        )
    order = list(eligible)
    random.Random(split_seed).shuffle(order)
    test, val, pool = order[:num_test], order[num_test : num_test + num_val], order[num_test + num_val :]
    chars = {a: random.Random(f"{split_seed}:{a}").sample(sorted(listing[a]), num_classes) for a in eligible}
    return _pick_pretrain(pool, num_pretrain), test, val, chars


def _legacy_split(listing, eligible, num_pretrain, num_test, num_classes, seed):
    """The reference split: one RNG seeded with ``seed`` (the run seed there) shuffles alphabets, then characters.

    Departs from the reference only in listing folders sorted (the reference uses unsorted ``os.listdir``).
    """
    rng = random.Random(seed)
    order = list(eligible)
    rng.shuffle(order)
    pretrain = _pick_pretrain(order[: len(order) - num_test], num_pretrain)
    test = order[num_pretrain : num_pretrain + num_test]
    val = order[num_pretrain + num_test :]
    chars = {}
    for a in pretrain + test + val:
        names = sorted(listing[a])
        rng.shuffle(names)
        chars[a] = names[:num_classes]
    return pretrain, test, val, chars
