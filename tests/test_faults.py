"""Injected faults: a diverging task under the skip policy, failed writes, two jobs in one directory, and a
SLURM-style requeue through submitit's local executor. Each test fails without the behaviour it names."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import FAKE, ROOT, make_cfg
from test_methods import net, toy_task
from test_resume import train_steps

from leapbench.errors import ConfigError, WriteError
from leapbench.inner import DivergenceError, Inner
from leapbench.methods.flat import flat_params
from leapbench.methods.leap import Leap
from leapbench.rundir import LOCK
from leapbench.runner import run


def poisoned(task):
    """The same task with a NaN in every training image: its first loss is non-finite."""
    task.x_train = task.x_train.clone()
    task.x_train[:, :, 0, 0] = float("nan")
    return task


def leap_after_one_step(tasks, skip: bool) -> torch.Tensor:
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1))
    leap.skip_diverging = skip
    leap.setup(net(), Inner(partial(torch.optim.SGD, lr=0.3), steps=5, batch_size=8), len(tasks))
    out = leap.meta_step(tasks, torch.Generator().manual_seed(3))
    return flat_params(leap.params), out


def test_skip_policy_drops_only_the_diverging_task():
    good = [toy_task(1), toy_task(2)]
    with pytest.raises(DivergenceError, match="toy9"):  # default: stop, naming the task
        leap_after_one_step([*good, poisoned(toy_task(9))], skip=False)
    with pytest.warns(UserWarning, match="Skipped a diverging task .*toy9"):
        skipped, row = leap_after_one_step([*good, poisoned(toy_task(9))], skip=True)
    clean, clean_row = leap_after_one_step(good, skip=False)
    assert torch.equal(skipped, clean)  # the mean runs over the two good tasks only
    assert row == clean_row | {"skipped": 1}
    with pytest.raises(DivergenceError, match="every task of the meta-batch .* diverged"), pytest.warns(UserWarning):
        leap_after_one_step([poisoned(toy_task(8)), poisoned(toy_task(9))], skip=True)


def test_skip_policy_through_the_runner(fake_root, tmp_path, monkeypatch):
    """train.on_divergence=skip reaches the learner: the run finishes and its rows count the skipped tasks."""
    real_train = Inner.train
    bad = []  # the first pretraining task seen diverges whenever it is trained

    def diverge_on_one_task(self, model, task, generator, **kw):
        if kw.get("hook") is not None:  # meta-training only
            bad[:] = bad or [task.name]
            if task.name == bad[0]:
                raise DivergenceError(f"Non-finite loss (nan) on task {task.name!r} at inner step 0.")
        return real_train(self, model, task, generator, **kw)

    monkeypatch.setattr(Inner, "train", diverge_on_one_task)
    args = ("method=leap", "scale=smoke", *FAKE, "train.meta_steps=3", "train.meta_batch_size=2")
    with pytest.raises(DivergenceError, match="Meta-step 1: .*Alphabet_"):
        run(make_cfg(*args, tmp_path=tmp_path / "stop", data_root=fake_root))
    cfg = make_cfg(*args, "train.on_divergence=skip", tmp_path=tmp_path / "skip", data_root=fake_root)
    with pytest.warns(UserWarning, match="Skipped a diverging task"):
        assert run(cfg)["status"] == "finished"
    train = [json.loads(x) for x in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    skipped = [r.get("skipped", 0) for r in train if r["split"] == "train"]
    assert len(skipped) == 3 and all(s == 1 for s in skipped)  # the bad task is in every 2-of-2 meta-batch
    with pytest.raises(ConfigError, match="on_divergence"):
        run(make_cfg(*args, "train.on_divergence=ignore", tmp_path=tmp_path / "bad", data_root=fake_root))


def test_disk_full_at_the_summary_keeps_everything_and_resumes(fake_root, tmp_path, monkeypatch):
    """ENOSPC while writing summary.json: a clear WriteError, no partial or temporary file, the checkpoint and
    metrics kept; once there is space again, the same command resumes and ends as an unfaulted run."""
    args = ("method=leap", "scale=smoke", *FAKE, "train.meta_steps=3")
    reference = run(make_cfg(*args, tmp_path=tmp_path / "ref", data_root=fake_root))
    cfg = make_cfg(*args, tmp_path=tmp_path / "cut", data_root=fake_root)
    run_dir = Path(cfg.run_dir)
    real_fsync = os.fsync

    def full_disk_for_summaries(fd):
        if ".summary.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_for_summaries)
    with pytest.raises(WriteError, match=r"summary\.json \(No space left on device\).*run the same command again"):
        run(cfg)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not (run_dir / "summary.json").exists()  # neither the final nor a half-written one
    assert not list(run_dir.glob(".*.tmp"))
    assert (run_dir / "ckpt.pt").exists() and (run_dir / "metrics.jsonl").stat().st_size > 0
    resumed = run(cfg)
    assert resumed["test"] == reference["test"] and resumed["meta_steps_done"] == 3


def test_failed_write_never_replaces_an_earlier_result(tmp_path, monkeypatch):
    """The atomic writer: on a failed write the old file keeps its content."""
    from leapbench.logging import write_json

    target = tmp_path / "summary.json"
    write_json(target, {"status": "finished", "error": 12.5})
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    with pytest.raises(WriteError, match="Read-only file system"):
        write_json(target, {"status": "crashed"})
    assert json.loads(target.read_text()) == {"status": "finished", "error": 12.5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_unwritable_runs_folder_exits_2_with_the_fix(fake_root, tmp_path):
    """paths.runs under a regular file (as unwritable as a read-only mount, even for root): exit 2, one message."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    out = subprocess.run(
        [
            sys.executable,
            "run.py",
            "method=scratch",
            "scale=smoke",
            *FAKE,
            f"paths.data={fake_root}",
            f"paths.runs={blocker / 'runs'}",
            f"paths.cache={tmp_path / 'cache'}",
            "progress=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: Could not write" in out.stderr and "paths.runs" in out.stderr


def test_second_job_in_the_same_directory_is_refused(fake_root, tmp_path):
    """A job holding the run directory's lock (here: this test) makes a second job fail at once, writing nothing."""
    cfg = make_cfg("method=scratch", "scale=smoke", *FAKE, tmp_path=tmp_path, data_root=fake_root)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    with open(run_dir / LOCK, "w") as held:
        held.write("pid 4242 on node7\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="in use by pid 4242 on node7.*tag=<name>"):
            run(cfg)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK]
    assert run(cfg)["status"] == "finished"  # lock released: the run goes ahead


def test_concurrent_sweep_jobs_aimed_at_one_directory(fake_root, tmp_path):
    """A real joblib sweep over a key the run name omits: one job runs, the other stops with the lock message."""
    out = subprocess.run(
        [
            sys.executable,
            "run.py",
            "-m",
            "launcher=joblib",
            "method=scratch",
            "scale=smoke",
            *FAKE,
            "eval.max_steps=400",
            "inner.optimizer.lr=0.1,0.11",
            f"paths.data={fake_root}",
            f"paths.runs={tmp_path / 'runs'}",
            f"paths.cache={tmp_path / 'cache'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode != 0  # the refused job fails the sweep, after the other job finished
    # Normally the lock refuses the second job; if the first had already finished, its config check does.
    assert "is in use by pid" in out.stderr or "holds a finished run with a different config" in out.stderr
    summaries = list((tmp_path / "runs").rglob("summary.json"))
    assert len(summaries) == 1 and json.loads(summaries[0].read_text())["status"] == "finished"


@pytest.mark.slow
def test_submitit_requeue_resumes_from_the_checkpoint(fake_root, tmp_path):
    """A preempted submitit job (the SLURM path on the local executor: SIGUSR2, checkpoint, requeue) resumes its
    run from the checkpoint; the result equals an uninterrupted run's, bitwise, with every metrics row once."""
    args = [
        "method=leap",
        "scale=smoke",
        *FAKE,
        "train.meta_steps=12",
        "train.val_every=4",
        "inner.steps=20",
        f"paths.data={fake_root}",
        f"paths.cache={tmp_path / 'cache'}",
        "progress=false",
        "threads=1",
    ]
    subprocess.run(
        [sys.executable, "run.py", *args, f"paths.runs={tmp_path / 'ref'}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    sweep = subprocess.Popen(
        [sys.executable, "run.py", "-m", "launcher=submitit_local", *args, f"paths.runs={tmp_path / 'runs'}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run_dir = tmp_path / "runs" / "omniglot" / "leap" / "smoke" / "n2-s0"
    preempt_at, deadline = random.Random().randint(2, 8), time.time() + 300
    while time.time() < deadline and sweep.poll() is None:
        if (run_dir / "metrics.jsonl").exists() and max(train_steps(run_dir), default=0) >= preempt_at:
            break
        time.sleep(0.02)
    job = int((run_dir / LOCK).read_text().split()[1])  # the lock names the process that runs the job
    os.kill(job, signal.SIGUSR2)  # what SLURM sends before preempting (submitit's default signal)
    out, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, out[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "runs" / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in logs and "resuming" in logs  # preempted, requeued, picked up its checkpoint
    ref_dir = tmp_path / "ref" / "omniglot" / "leap" / "smoke" / "n2-s0"
    a, b = torch.load(ref_dir / "init.pt"), torch.load(run_dir / "init.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref, got = (json.loads((d / "summary.json").read_text()) for d in (ref_dir, run_dir))
    assert got["status"] == "finished" and got["test"] == ref["test"]
    assert train_steps(run_dir) == list(range(1, 13))
    assert (run_dir / "metrics.jsonl").read_text() == (ref_dir / "metrics.jsonl").read_text()


def test_resumed_run_continues_the_same_wandb_run(fake_root, tmp_path, monkeypatch):
    """A crashed run resumed from its checkpoint logs to the same W&B run id (offline), never a second run."""
    import hashlib

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg(
        "method=leap",
        "scale=smoke",
        "logger=wandb",
        *FAKE,
        "train.meta_steps=4",
        "train.val_every=null",
        tmp_path=tmp_path,
        data_root=fake_root,
    )
    real_train, calls = Inner.train, []

    def crash_in_meta_step_3(self, model, task, generator, **kw):
        calls.append(1)
        if len(calls) == 5:  # 2 tasks per meta-step: the first task of meta-step 3
            raise DivergenceError("Non-finite loss (nan) injected")
        return real_train(self, model, task, generator, **kw)

    monkeypatch.setattr(Inner, "train", crash_in_meta_step_3)
    with pytest.raises(DivergenceError):
        run(cfg)
    monkeypatch.setattr(Inner, "train", real_train)
    assert run(cfg)["status"] == "finished"
    files = list((Path(cfg.run_dir) / "wandb").glob("offline-run-*/run-*.wandb"))
    ids = {f.stem.removeprefix("run-") for f in files}
    assert len(files) == 2 and ids == {hashlib.sha1(cfg.run_name.encode()).hexdigest()[:16]}


def test_synced_history_of_a_crashed_and_resumed_run_holds_every_step_once(fake_root, tmp_path, monkeypatch):
    """Offline W&B, a crash after a checkpoint with a row logged since, then a resume: the segments in the order
    `make sync-wandb` syncs them hold every metrics row once, in order (read from the offline files, no
    network); the curves table and the tested initialization (a model artifact) come once, at the end."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import sync_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg(
        "method=leap",
        "scale=smoke",
        "logger=wandb",
        *FAKE,
        "train.meta_steps=4",
        "train.val_every=2",
        "train.ckpt_every=2",
        "eval.steps=5",
        tmp_path=tmp_path,
        data_root=fake_root,
    )
    real_step, calls = Leap.meta_step, []

    def crash_in_meta_step_4(self, tasks, generator):
        calls.append(1)
        if len(calls) == 4:  # after the checkpoint at 2 and the row of meta-step 3
            raise DivergenceError("Non-finite loss (nan) injected")
        return real_step(self, tasks, generator)

    monkeypatch.setattr(Leap, "meta_step", crash_in_meta_step_4)
    with pytest.raises(DivergenceError):
        run(cfg)
    monkeypatch.setattr(Leap, "meta_step", real_step)
    assert run(cfg)["status"] == "finished"
    ((run_dir, segs),) = sync_wandb.segments(tmp_path).items()
    assert run_dir == Path(cfg.run_dir) and len(segs) == 2
    first = sync_wandb.history(segs[0])
    assert [int(r["meta_step"]) for r in first] == [0, 1, 2, 2]  # val 0, train 1-2, val 2: not train 3
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    synced = first + sync_wandb.history(segs[1])
    assert [int(r["_step"]) for r in synced] == list(range(len(rows) + 1))  # every row once, then the curves table
    assert [int(r["meta_step"]) for r in synced[:-1]] == [r["meta_step"] for r in rows]
    table = [any(k.startswith("curves/") for k in r) for r in synced]
    assert table == [False] * len(rows) + [True]
    artifacts = [
        (r.artifact.type, r.artifact.name)
        for seg in segs
        for f in seg.glob("run-*.wandb")
        for r in sync_wandb.records(f)
        if r.WhichOneof("record_type") == "artifact"
    ]
    assert [a for a in artifacts if a[0] == "model"] == [("model", f"init-{segs[0].name.split('-')[-1]}")]
    assert len(artifacts) <= 2  # the model and, at most, the one curves table
    out = subprocess.run(
        [sys.executable, "scripts/sync_wandb.py", str(tmp_path), "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.index(segs[0].name) < out.index(segs[1].name)
