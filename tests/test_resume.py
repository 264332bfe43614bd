"""Checkpoint and resume: a run killed with SIGKILL at a random meta-step and restarted ends bitwise identical
to an uninterrupted run, with every metrics row exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAKE, ROOT, make_cfg

from leapbench.errors import ConfigError
from leapbench.runner import run

ARGS = ["scale=smoke", *FAKE, "train.meta_steps=8", "train.val_every=3", "inner.steps=20", "train.test_at=[2,5,7]"]


def command(method: str, runs: Path, fake_root: Path) -> list[str]:
    return [
        sys.executable,
        "run.py",
        f"method={method}",
        *ARGS,
        f"paths.data={fake_root}",
        f"paths.runs={runs}",
        f"paths.cache={runs.parent / 'cache'}",
        "progress=false",
    ]


def train_steps(run_dir: Path) -> list[int]:
    return [
        json.loads(x)["meta_step"]
        for x in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["split"] == "train"
    ]


@pytest.mark.parametrize("method", ["leap", "finetune"])
def test_sigkill_then_resume_is_bitwise_identical(method, tmp_path, fake_root):
    ref_runs, cut_runs = tmp_path / "ref" / "runs", tmp_path / "cut" / "runs"
    subprocess.run(command(method, ref_runs, fake_root), cwd=ROOT, check=True, capture_output=True)
    kill_at = random.Random().randint(2, 6)  # a random meta-step, as the issue asks
    proc = subprocess.Popen(
        command(method, cut_runs, fake_root),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    run_dir = cut_runs / "omniglot" / method / "smoke" / "n2-s0"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.jsonl").exists() and max(train_steps(run_dir), default=0) >= kill_at:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists()

    out = subprocess.run(command(method, cut_runs, fake_root), cwd=ROOT, check=True, capture_output=True, text=True)
    assert "resuming" in out.stdout
    ref_dir = ref_runs / "omniglot" / method / "smoke" / "n2-s0"
    a, b = torch.load(ref_dir / "init.pt"), torch.load(run_dir / "init.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    ref, cut = (json.loads((d / "summary.json").read_text()) for d in (ref_dir, run_dir))
    assert ref["test"] == cut["test"] and ref["val_best"] == cut["val_best"]
    assert ref["test_at"] == cut["test_at"] and [t["meta_step"] for t in cut["test_at"]] == (
        [2, 5, 7] if method != "scratch" else []
    )
    assert train_steps(run_dir) == list(range(1, 9))  # no duplicated or missing steps
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows == ref_rows
    assert not (run_dir / "ckpt.pt").exists()  # a finished run keeps its summary, not its checkpoint


def test_checkpoint_from_another_config_is_refused(tmp_path, fake_root):
    cfg = make_cfg("method=leap", *ARGS, tmp_path=tmp_path, data_root=fake_root)
    run(
        make_cfg(
            "method=leap",
            *ARGS,
            "train.meta_steps=2",
            "train.test_at=[2]",
            "train.ckpt_every=1",
            tmp_path=tmp_path,
            data_root=fake_root,
        )
    )
    run_dir = Path(cfg.run_dir)
    (run_dir / "summary.json").unlink()  # pretend it was killed after its last checkpoint
    torch.save({"config_hash": "something-else"}, run_dir / "ckpt.pt")
    with pytest.raises(ConfigError, match="different config.*overwrite=true"):
        run(cfg)
    (run_dir / "ckpt.pt").write_bytes(b"\x00truncated")
    with pytest.raises(ConfigError, match="unreadable"):
        run(cfg)
    assert (
        run(make_cfg("method=leap", *ARGS, "overwrite=true", tmp_path=tmp_path, data_root=fake_root))["status"]
        == "finished"
    )


def test_resume_refuses_a_cut_history_and_clears_stale_temporary_files(tmp_path, fake_root):
    """A metrics.jsonl that lost rows since the checkpoint (cut mid-line, or deleted) is refused, not resumed
    with a gap; once restored the run resumes, and a temporary file a SIGKILL left behind is gone."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        command("leap", runs, fake_root),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    run_dir = runs / "omniglot" / "leap" / "smoke" / "n2-s0"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.jsonl").exists() and max(train_steps(run_dir), default=0) >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    metrics = run_dir / "metrics.jsonl"
    whole = metrics.read_bytes()
    (run_dir / ".ckpt.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # what a kill during a write leaves
    for cut in (whole[: whole.index(b"\n") + 5], b""):  # cut in the second row; emptied
        metrics.write_bytes(cut)
        out = subprocess.run(command("leap", runs, fake_root), cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "complete rows, but the checkpoint was written after" in out.stderr
        assert metrics.read_bytes() == cut  # refused before anything was written
    metrics.write_bytes(whole)
    subprocess.run(command("leap", runs, fake_root), cwd=ROOT, check=True, capture_output=True)
    assert train_steps(run_dir) == list(range(1, 9)) and not list(run_dir.glob(".*.tmp"))


def test_a_finished_run_with_a_broken_summary_or_config_is_named(tmp_path, fake_root):
    cfg = make_cfg("method=scratch", *ARGS, tmp_path=tmp_path, data_root=fake_root)
    run(cfg)
    run_dir = Path(cfg.run_dir)
    summary, config = (run_dir / "summary.json").read_text(), (run_dir / "config.yaml").read_text()
    for text in ("{{{: bad: [", "- a", ""):
        (run_dir / "config.yaml").write_text(text)
        with pytest.raises(ConfigError, match="config.yaml of a finished run is unreadable or empty"):
            run(cfg)
    (run_dir / "config.yaml").write_text(config)
    (run_dir / "summary.json").write_text("[]")
    with pytest.raises(ConfigError, match="summary.json holds no run summary"):
        run(cfg)
    (run_dir / "summary.json").write_text(summary)
    assert run(cfg)["status"] == "finished"  # restored: the finished run is found again, and skipped
