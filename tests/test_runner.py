"""The shared runner end to end: smoke runs of every method, run directories, logging."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import FAKE, ROOT, make_cfg

from leapbench import logging as runlog
from leapbench import registry
from leapbench.errors import ConfigError
from leapbench.runner import run

METHODS = list(registry.methods())  # every config in conf/method/


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def check_run(cfg, summary):
    run_dir = Path(cfg.run_dir)
    assert summary["status"] == "finished" and json.loads((run_dir / "summary.json").read_text()) == summary
    assert 0 <= summary["test"]["error"] <= 100 and 0 <= summary["test"]["auc"] <= 100
    assert summary["commit"] and summary["command"].startswith("python run.py")
    log = rows(run_dir)
    train = [r["meta_step"] for r in log if r["split"] == "train"]
    trains = cfg.method.name != "scratch"
    assert train == (list(range(1, cfg.train.meta_steps + 1)) if trains else [])
    vals = [r for r in log if r["split"] == "val"]
    assert (len(vals) > 0) == trains and all(len(r["curve"]) == cfg.val.steps for r in vals)
    (test,) = [r for r in log if r["split"] == "test"]
    assert len(test["curve"]) >= cfg.eval.steps
    per_task = json.loads((run_dir / "eval_test.json").read_text())["tasks"]
    assert len(per_task) == cfg.data.num_test


@pytest.mark.parametrize("method", METHODS)
def test_smoke_every_method_fake_data(method, fake_root, tmp_path):
    cfg = make_cfg(f"method={method}", "scale=smoke", *FAKE, tmp_path=tmp_path, data_root=fake_root)
    check_run(cfg, run(cfg))


@pytest.mark.data
@pytest.mark.parametrize("method", METHODS)
def test_smoke_every_method_real_omniglot(method, shared_cache, tmp_path):
    cfg = make_cfg(f"method={method}", "scale=smoke", tmp_path=tmp_path)
    cfg.paths.cache = str(shared_cache)
    summary = run(cfg)
    check_run(cfg, summary)
    assert summary["num_pretrain"] == 3 and len(summary["test"]["tasks"]) == 10


def test_a_summary_that_is_not_json_is_refused_untouched(fake_root, tmp_path):
    cfg = make_cfg("method=scratch", "scale=smoke", *FAKE, tmp_path=tmp_path, data_root=fake_root)
    summary = Path(cfg.run_dir) / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text('{"status": "finished", ')  # cut off by hand or by a full disk
    with pytest.raises(ConfigError, match="summary.json is not valid JSON .*overwrite=true"):
        run(cfg)
    assert summary.read_text() == '{"status": "finished", ' and [p.name for p in summary.parent.iterdir()] == [
        "summary.json"
    ]


def test_finished_run_is_skipped_not_overwritten(fake_root, tmp_path):
    cfg = make_cfg("method=reptile", "scale=smoke", *FAKE, tmp_path=tmp_path, data_root=fake_root)
    first = run(cfg)
    metrics = (Path(cfg.run_dir) / "metrics.jsonl").read_text()
    assert (
        run(make_cfg("method=reptile", "scale=smoke", *FAKE, "progress=true", tmp_path=tmp_path, data_root=fake_root))
        == first
    )  # same config (progress does not count): skipped
    moved = make_cfg(
        "method=reptile",
        "scale=smoke",
        *FAKE,
        f"paths.cache={tmp_path / 'elsewhere'}",
        f"paths.runs={tmp_path / 'runs'}",
        f"paths.data={fake_root}/.",
        "progress=false",
    )
    assert run(moved) == first  # where the data and caches live does not make it another run
    assert (Path(cfg.run_dir) / "metrics.jsonl").read_text() == metrics
    changed = make_cfg(
        "method=reptile", "scale=smoke", *FAKE, "inner.optimizer.lr=0.05", tmp_path=tmp_path, data_root=fake_root
    )
    with pytest.raises(ConfigError, match="tag=.*overwrite=true"):
        run(changed)
    assert json.loads((Path(cfg.run_dir) / "summary.json").read_text()) == first  # nothing lost
    tagged = make_cfg(
        "method=reptile",
        "scale=smoke",
        *FAKE,
        "inner.optimizer.lr=0.05",
        "tag=-lr05",
        tmp_path=tmp_path,
        data_root=fake_root,
    )
    assert run(tagged)["status"] == "finished" and tagged.run_dir.endswith("n2-s0-lr05")
    again = make_cfg(
        "method=reptile",
        "scale=smoke",
        *FAKE,
        "inner.optimizer.lr=0.05",
        "overwrite=true",
        tmp_path=tmp_path,
        data_root=fake_root,
    )
    assert run(again)["status"] == "finished"


def test_same_seed_same_result(fake_root, tmp_path):
    a = run(make_cfg("method=leap", "scale=smoke", *FAKE, tmp_path=tmp_path / "a", data_root=fake_root))
    b = run(make_cfg("method=leap", "scale=smoke", *FAKE, tmp_path=tmp_path / "b", data_root=fake_root))
    assert a["test"] == b["test"]


def test_crash_is_marked_in_summary(fake_root, tmp_path):
    from leapbench.inner import DivergenceError

    bad = ("inner.optimizer.lr=1e6", "train.val_every=null")
    cfg = make_cfg("method=leap", "scale=smoke", *FAKE, *bad, tmp_path=tmp_path, data_root=fake_root)
    with pytest.raises(DivergenceError, match="Meta-step 1: Non-finite loss .* on task 'Alphabet_"):
        run(cfg)
    assert json.loads((Path(cfg.run_dir) / "summary.json").read_text())["status"] == "crashed"
    cfg = make_cfg("method=leap", "scale=smoke", *FAKE, bad[0], tmp_path=tmp_path / "v", data_root=fake_root)
    with pytest.raises(DivergenceError, match="Validation at meta-step 0: Non-finite"):
        run(cfg)


def test_wandb_offline_mirror(fake_root, tmp_path, monkeypatch):
    """logger=wandb writes a real offline W&B run inside the run directory and finishes it."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("method=leap", "scale=smoke", "logger=wandb", *FAKE, tmp_path=tmp_path, data_root=fake_root)
    assert cfg.logger.mode == "offline"
    run(cfg)
    runs = list((Path(cfg.run_dir) / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    import wandb

    assert wandb.run is None  # finished


def test_wandb_plots_the_streamed_test_returns_against_frames(tmp_path, monkeypatch):
    """A long test's progress rows (Atari) reach W&B with the task's frames as their x-axis, defined once."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import sync_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = runlog.RunLogger(tmp_path / "run", "progress-test", config={}, wandb=True)
    with runlog.TestProgress(logger, step=3, show=False) as monitor:
        for frames, score in ((400, 1.0), (800, None), (1200, 2.5)):
            monitor("pong", frames, 1200, score)
            monitor("breakout", frames, 1200, score)
    logger.close()
    ((seg,),) = sync_wandb.segments(tmp_path).values()
    metrics = [r.metric for f in seg.glob("run-*.wandb") for r in sync_wandb.records(f) if r.HasField("metric")]
    axes = {m.name: m.step_metric for m in metrics if m.name.startswith("test_progress/")}
    assert axes == {f"test_progress/{g}/return": f"test_progress/{g}/frames" for g in ("pong", "breakout")}
    rows = [r for r in sync_wandb.history(seg) if "test_progress/pong/frames" in r]
    assert [(int(r["test_progress/pong/frames"]), float(r["test_progress/pong/return"])) for r in rows] == [
        (400, 1.0),
        (1200, 2.5),
    ]


def test_wandb_failure_falls_back_to_local(fake_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")  # no API key and no network: wandb.init fails fast
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = make_cfg("method=scratch", "scale=smoke", "logger=wandb", *FAKE, tmp_path=tmp_path, data_root=fake_root)
    with pytest.warns(UserWarning, match="W&B could not start"):
        summary = run(cfg)
    assert summary["status"] == "finished"


def test_test_at_schedule_tests_the_initialization_it_reached(fake_root, tmp_path):
    """``train.test_at``: the current initialization is tested after the listed meta-steps; without validation
    the final test tests the same initialization as a test-at entry at the last step, with the same result."""
    cfg = make_cfg(
        "method=reptile",
        "scale=smoke",
        *FAKE,
        "train.val_every=null",
        "train.meta_steps=3",
        "train.test_at=[3,1]",
        "seed=1",
        tmp_path=tmp_path,
        data_root=fake_root,
    )
    summary = run(cfg)
    assert [(t["meta_step"], t["budget"]) for t in summary["test_at"]] == [(1, 2), (3, 6)]  # budget: task trainings
    last = summary["test_at"][-1]
    assert {k: last[k] for k in ("error", "auc", "train_error")} == {
        k: summary["test"][k] for k in ("error", "auc", "train_error")
    }
    assert [r["meta_step"] for r in rows(Path(cfg.run_dir)) if r["split"] == "test_at"] == [1, 3]
    assert summary["val_tasks"] and summary["split_seed"] == 1  # the seed is the split


@pytest.mark.parametrize("value", ["[0]", "[4]", "5"])
def test_test_at_outside_the_run_is_refused(value, fake_root, tmp_path):
    cfg = make_cfg("scale=smoke", *FAKE, f"train.test_at={value}", tmp_path=tmp_path, data_root=fake_root)
    with pytest.raises(ConfigError, match="train.test_at"):
        run(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


@pytest.mark.parametrize(
    "folder",
    ["omniglot/small/runs/leap/n16-s0", "omniglot/small/runs/reptile/n6-s0", "multicv/small/runs/leap/cifar10-s1"],
)
def test_runs_recorded_by_earlier_versions_keep_their_identity(folder):
    """A finished run recorded before keys were added or renamed (data.seed, eval.stop_on, train.test_at, ...)
    is still the same run for today's config with the same command, so sweeps skip it instead of refusing."""
    from conftest import ROOT
    from omegaconf import OmegaConf

    from leapbench.rundir import result_config

    run_dir = ROOT / "results" / folder
    summary = json.loads((run_dir / "summary.json").read_text())
    new = make_cfg(  # the sweep file sets the scale and the launcher (whose keys do not change results)
        *[w for w in summary["command"].split()[2:] if not w.startswith("+sweep")],
        "scale=small",
        *(["experiment=multicv"] if folder.startswith("multicv") else []),
    )
    assert result_config(OmegaConf.load(run_dir / "config.yaml")) == result_config(new)
