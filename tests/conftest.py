"""Shared fixtures: config composition, the real datasets, and a small synthetic Omniglot tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

os.environ.setdefault("WANDB_MODE", "disabled")  # tests never talk to W&B unless a test asks for offline mode
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LEAP_DATA_DIR", ROOT.parent / "shared" / "datasets"))
HAVE_OMNIGLOT = (DATA / "omniglot" / "images_background").is_dir()
ENABLE = "set LEAP_DATA_DIR to a folder holding omniglot/images_background (CI: ../shared/datasets)"


def pytest_collection_modifyitems(config, items):
    """Real-data tests skip without the data, unless LEAP_REQUIRE_DATA=1 (CI), where they must run."""
    if HAVE_OMNIGLOT:
        return
    if os.environ.get("LEAP_REQUIRE_DATA") == "1":
        raise pytest.UsageError(f"LEAP_REQUIRE_DATA=1 but no Omniglot under {DATA}: {ENABLE}")
    for item in items:
        if "data" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"needs the real Omniglot images: {ENABLE}"))


FAKE = ("data.num_test=1", "data.num_val=1", "data.num_pretrain=2")  # splits that fit the 4-alphabet fake tree


def make_cfg(*overrides: str, tmp_path: Path | None = None, data_root: Path | None = None):
    """Compose the run config exactly as ``python run.py <overrides>`` would."""
    extra = []
    if tmp_path is not None:
        extra += [f"paths.runs={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}", "progress=false"]
    extra.append(f"paths.data={data_root or DATA}")
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("config", overrides=[*overrides, *extra])


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One decoded-image cache for the whole session (the first real-data load takes ~15 s)."""
    return Path(os.environ.get("LEAP_CACHE_DIR", tmp_path_factory.mktemp("cache")))


def write_fake_omniglot(root: Path, alphabets: int = 4, chars: int = 20, drawers: int = 6, seed: int = 0) -> Path:
    """An Omniglot-shaped tree of 1-bit 105x105 PNGs: each character is a random blob of strokes."""
    rng = np.random.default_rng(seed)
    for a in range(alphabets):
        s = "images_background" if a % 2 == 0 else "images_evaluation"
        for c in range(chars):
            proto = rng.random((105, 105)) < 0.5
            d = root / "omniglot" / s / f"Alphabet_{a}" / f"character{c + 1:02d}"
            d.mkdir(parents=True)
            for k in range(drawers):
                img = proto ^ (rng.random((105, 105)) < 0.05)
                Image.fromarray(img).convert("1").save(d / f"{a:02d}{c:02d}_{k + 1:02d}.png")
    return root


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> Path:
    return write_fake_omniglot(tmp_path_factory.mktemp("fake"))


def script(*args: str) -> str:
    """Run a repository script as a user would; fail the test with its stderr if it fails."""
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def notebook_outputs(name: str, results: Path, scale: str, monkeypatch) -> list:
    """Execute ``notebooks/<name>`` top to bottom on ``results`` at ``scale``; return every cell output."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    monkeypatch.setenv("LEAP_RESULTS", str(results))
    monkeypatch.setenv("LEAP_SCALE", scale)
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs
