"""The installable package: the wheel carries every module and every config, and its console command runs a
smoke experiment from outside the checkout, with provenance from the package's metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import FAKE, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("leapbench-*.whl"))


def test_wheel_holds_every_module_and_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        f"leapbench/{p.relative_to(ROOT / 'src' / 'leapbench').as_posix()}"
        for p in (ROOT / "src" / "leapbench").rglob("*.py")
    }
    configs = {f"leapbench/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert modules and configs and not (modules | configs) - names  # a new subpackage must join pyproject's list
    assert any(
        n.endswith("entry_points.txt") and b"leapbench = leapbench.cli:cli" in zipfile.ZipFile(wheel).read(n)
        for n in names
    )


def test_console_command_runs_outside_the_checkout(wheel, fake_root, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = os.environ | {"PYTHONPATH": str(site)}  # ahead of the checkout's editable install
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run(
        [
            str(site / "bin" / "leapbench"),
            "method=scratch",
            "scale=smoke",
            *FAKE,
            f"paths.data={fake_root}",
            "paths.runs=runs",
            "paths.cache=cache",
            "progress=false",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(next((work / "runs").rglob("summary.json")).read_text())
    assert summary["status"] == "finished" and summary["command"].startswith("leapbench method=scratch")
    assert summary["commit"] == f"leapbench {summary['version']}"  # no git here: the installed version
    assert {"torch", "torchvision", "numpy", "hydra-core", "wandb", "gymnasium", "ale-py"} <= set(summary["libraries"])
    assert all(v != "not installed" for v in summary["libraries"].values())
    bad = subprocess.run(
        [str(site / "bin" / "leapbench"), "method=leep"], cwd=work, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "did you mean leap" in bad.stderr  # the same command line as run.py
