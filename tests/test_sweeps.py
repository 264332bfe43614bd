"""Hydra multirun sweeps through the real launchers (joblib, submitit's local executor), on the synthetic tree."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

# The sweep config with its grid narrowed on the command line (command-line sweeps replace the config's).
SMALL_GRID = [
    "+sweep=omniglot_small",
    "scale=smoke",
    "method=leap,scratch",
    "data.num_pretrain=1,2",
    "seed=0",
    "data.num_test=1",
    "data.num_val=1",
]


def cli(*args, tmp_path, fake_root):
    out = subprocess.run(
        [
            sys.executable,
            "run.py",
            *args,
            f"paths.data={fake_root}",
            f"paths.runs={tmp_path / 'runs'}",
            f"paths.cache={tmp_path / 'cache'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def summaries(tmp_path):
    return {p.parent.relative_to(tmp_path / "runs").as_posix(): p for p in (tmp_path / "runs").rglob("summary.json")}


@pytest.mark.slow
def test_joblib_sweep_runs_every_job_once_and_resumes(tmp_path, fake_root):
    cli(*SMALL_GRID, tmp_path=tmp_path, fake_root=fake_root)
    found = summaries(tmp_path)
    assert sorted(found) == [f"omniglot/{m}/smoke/n{n}-s0" for m in ("leap", "scratch") for n in (1, 2)]
    for p in found.values():
        s = json.loads(p.read_text())
        assert s["status"] == "finished" and s["threads"] == 1  # one torch thread per joblib worker
    stamps = {k: p.stat().st_mtime_ns for k, p in found.items()}
    (tmp_path / "runs" / "omniglot" / "leap" / "smoke" / "n2-s0" / "summary.json").unlink()  # an interrupted job
    cli(*SMALL_GRID, tmp_path=tmp_path, fake_root=fake_root)
    again = summaries(tmp_path)
    redone = {k for k, p in again.items() if p.stat().st_mtime_ns != stamps.get(k)}
    assert redone == {"omniglot/leap/smoke/n2-s0"}  # finished jobs were skipped, the missing one reran


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path, fake_root):
    """The SLURM launcher's code path, with submitit's local executor."""
    cli(
        "-m",
        "launcher=submitit_local",
        "method=reptile,scratch",
        "scale=smoke",
        "data.num_test=1",
        "data.num_val=1",
        "data.num_pretrain=2",
        tmp_path=tmp_path,
        fake_root=fake_root,
    )
    found = summaries(tmp_path)
    assert sorted(found) == ["omniglot/reptile/smoke/n2-s0", "omniglot/scratch/smoke/n2-s0"]
    assert all(json.loads(p.read_text())["status"] == "finished" for p in found.values())
    assert list((tmp_path / "runs" / ".submitit").iterdir())  # submitit's job folders
