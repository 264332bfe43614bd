"""The one aggregation (leapbench.tables): runs.csv, cell statistics and paired differences against hand-computed
values, a method known only from a config folder outside the suite, misfit runs reported, committed outputs that
regenerate byte for byte."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, script

from leapbench import registry, tables

SPEC = tables.SPECS["omniglot"]


def fake_run(base: Path, method: str, n: int, seed: int, error: float, auc: float, **extra) -> None:
    d = base / "runs" / method / f"n{n}-s{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(
        json.dumps(
            {
                "experiment": "omniglot",
                "method": method,
                "scale": "smoke",
                "cell": f"n{n}",
                "num_pretrain": n,
                "seed": seed,
                "split_seed": seed,
                "status": "finished",
                "wall_time_s": 1.0,
                "commit": "abc",
                "command": f"python run.py method={method} data.num_pretrain={n} seed={seed}",
                "val_best": None,
                "meta_steps_done": 2,
                "stopped_early": False,
                "mean_adapt_steps": 10.0,
                "test": {
                    "error": error,
                    "auc": auc,
                    "train_error": error / 2,
                    "error_per_task": [error],
                    "tasks": ["a"],
                },
                **extra,
            }
        )
    )
    (d / "config.yaml").write_text(f"train: {{meta_steps: 2, meta_batch_size: 1}}\ndata: {{num_pretrain: {n}}}\n")


def make_table(results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/make_table.py", "omniglot", "--scale", "smoke", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    (root / "paper").mkdir(parents=True)
    shutil.copy(ROOT / "results" / "paper" / "table1.csv", root / "paper")
    return root


def test_t_interval_and_bootstrap_against_hand_computed_values():
    d = np.array([-3.0, -1.0, -2.0])  # mean -2, sd 1, t(0.975, 2) = 4.302653
    r = tables.interval(d)
    assert r["diff_mean"] == -2.0 and r["n_pairs"] == 3
    assert r["t_low"] == pytest.approx(-2 - 4.302653 / np.sqrt(3), abs=1e-5)
    assert r["t_high"] == pytest.approx(-2 + 4.302653 / np.sqrt(3), abs=1e-5) and np.isnan(r["boot_low"])
    ten = np.arange(10, dtype=float)  # from 10 pairs: a bootstrap interval, the same on every call
    b = tables.interval(ten)
    assert b["boot_low"] < 4.5 < b["boot_high"] and b == tables.interval(ten)
    assert 2.5 < b["boot_low"] and b["boot_high"] < 6.5  # the mean of 10 draws of 0..9 (sd 0.91) stays near 4.5
    one = tables.interval(np.array([1.5]))
    assert one["diff_mean"] == 1.5 and np.isnan(one["t_low"])


def test_cells_and_pairs_from_runs_csv(results):
    base = results / "omniglot" / "smoke"
    for seed, (leap, scratch) in enumerate([(10.0, 14.0), (12.0, 13.0), (11.0, 15.0)]):
        fake_run(base, "leap", 1, seed, leap, 50.0 + seed)
        command = f"leapbench eval.patience=7 seed={seed}"  # the console command: one word before the overrides
        fake_run(base, "scratch", 1, seed, scratch, 60.0, command=command)
    script("scripts/make_table.py", "omniglot", "--scale", "smoke", "--results", str(results))
    runs = pd.read_csv(base / "runs.csv")
    assert len(runs) == 6 and list(runs.columns[:9]) == tables.RUN_COLUMNS and "eval.patience" in runs.columns
    assert set(runs["label"]) == {"Leap", "No pretraining"} and "train.meta_steps" in runs.columns
    cells = pd.read_csv(base / "table1.csv").set_index("method")
    assert cells.loc["leap", "test_error_mean"] == pytest.approx(11.0) and cells.loc["leap", "n_seeds"] == 3
    assert cells.loc["leap", "test_error_std"] == pytest.approx(1.0) and cells.loc["leap", "paper_test_error"] == 8.7
    pairs = pd.read_csv(base / "table1_paired.csv")
    err = pairs[pairs["score"] == "test_error"].iloc[0]  # leap - scratch: -4, -1, -4
    d = np.array([-4.0, -1.0, -4.0])
    half = 4.302653 * d.std(ddof=1) / np.sqrt(3)
    assert err["method"] == "scratch" and err["diff_mean"] == pytest.approx(-3.0)
    assert err["t_low"] == pytest.approx(-3.0 - half, abs=1e-3) and not err["excludes_zero"]
    auc = pairs[pairs["score"] == "auc"].iloc[0]  # -10, -9, -8: excludes zero
    assert auc["excludes_zero"] and auc["diff_mean"] == pytest.approx(-9.0)
    md = (base / "table1.md").read_text()
    assert "11.0 ± 1.0 (8.7)" in md and f"-3.0 [{-3.0 - half:+.1f}, {-3.0 + half:+.1f}] / -9.0 [" in md


def test_a_new_method_config_appears_with_its_label_and_no_script_edited(results, tmp_path):
    """A method config in a folder of its own (as a user's would be) and a few runs of it: the table shows it
    with the config's label, after the paper's methods; a run no config knows is shown too, under its name."""
    conf = tmp_path / "myconf"
    (conf / "method").mkdir(parents=True)
    (conf / "method" / "mymeta.yaml").write_text(
        "# @package _global_\nmethod:\n  _target_: my.Meta\n  name: mymeta\n  label: My meta-learner\n  color: black\n"
    )
    assert registry.methods(conf)["mymeta"] == registry.MethodInfo("mymeta", "My meta-learner", "black")
    base = results / "omniglot" / "smoke"
    for seed in (0, 1):
        fake_run(base, "leap", 2, seed, 10.0 + seed, 50.0)
        fake_run(base, "mymeta", 2, seed, 20.0 + 2 * seed, 70.0)
        fake_run(base, "unlisted", 2, seed, 30.0, 80.0)
    text = script(
        "scripts/make_table.py", "omniglot", "--scale", "smoke", "--results", str(results), "--conf", str(conf)
    )
    header = next(line for line in text.splitlines() if line.startswith("| tasks"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["tasks", "Leap", "My meta-learner", "unlisted"]
    assert "21.0 ± 1.4" in text  # mymeta's cell: 20 and 22
    runs = pd.read_csv(base / "runs.csv")
    assert set(runs.loc[runs["method"] == "mymeta", "color"]) == {"black"}


def test_runs_that_do_not_fit_are_reported_by_name(results, tmp_path):
    base = results / "omniglot" / "smoke"
    fake_run(base, "leap", 1, 0, 10.0, 50.0)
    fake_run(base, "scratch", 1, 0, 12.0, 60.0)
    dup = base / "runs" / "scratch" / "n1-s0-copy"  # a second scratch run of the same cell and seed
    shutil.copytree(base / "runs" / "scratch" / "n1-s0", dup)
    other = base / "runs" / "leap" / "atari-run"
    shutil.copytree(base / "runs" / "leap" / "n1-s0", other)
    s = json.loads((other / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps(s | {"experiment": "atari"}))
    crashed = base / "runs" / "leap" / "n1-s1"
    crashed.mkdir()
    (crashed / "summary.json").write_text(json.dumps({"status": "crashed", "error": "RuntimeError: boom"}))
    old = base / "runs" / "scratch" / "n1-s0"  # an older summary without split_seed: read from its config.yaml
    s = json.loads((old / "summary.json").read_text())
    del s["split_seed"]
    (old / "summary.json").write_text(json.dumps(s))
    (old / "config.yaml").write_text("data: {num_pretrain: 1, split_seed: 7}\n")
    out = make_table(results)
    assert out.returncode == 0, out.stderr
    assert "runs/scratch/n1-s0-copy" in out.stderr and "atari-run" in out.stderr
    assert "runs/leap/n1-s1 (status crashed)" in out.stderr
    runs = pd.read_csv(base / "runs.csv")
    assert runs.set_index("method").loc["scratch", "split_seed"] == 7
    assert len(runs) == 2 and len(pd.read_csv(base / "table1.csv")) == 2  # misfits left out


def test_committed_tables_regenerate_byte_for_byte(tmp_path):
    """`make table1 table2 fig3 budget` on a copy of the committed results rewrites the committed text files."""
    copy = tmp_path / "results"
    shutil.copytree(ROOT / "results", copy, ignore=shutil.ignore_patterns("*.png", "*.pdf"))
    for exp, name in (("omniglot", "table1"), ("multicv", "table2"), ("atari", "fig3")):
        script("scripts/make_table.py", exp, "--scale", "small", "--results", str(copy))
        for f in ("runs.csv", f"{name}.csv", f"{name}_paired.csv", f"{name}.md"):
            committed = ROOT / "results" / exp / "small" / f
            assert (copy / exp / "small" / f).read_bytes() == committed.read_bytes(), f"{exp}/small/{f} changed"
    script("scripts/budget_study.py", "--out", str(copy / "omniglot" / "budget"))
    for f in ("budget.csv", "budget.md"):
        assert (copy / "omniglot" / "budget" / f).read_bytes() == (
            ROOT / "results" / "omniglot" / "budget" / f
        ).read_bytes()


def test_a_cell_that_averages_different_configs_is_named(results):
    """Seeds of one cell whose configs differ (a varied key, or a key only one run's command set) are averaged as
    one config: the table says so by key and run; every run records the key from its own config."""
    base = results / "omniglot" / "smoke"
    for seed, steps, lr in ((0, 2, 0.1), (1, 4, 0.05)):
        fake_run(base, "leap", 1, seed, 10.0 + seed, 50.0)
        d = base / "runs" / "leap" / f"n1-s{seed}"
        (d / "config.yaml").write_text(
            f"train: {{meta_steps: {steps}, meta_batch_size: 1}}\ndata: {{num_pretrain: 1, split_seed: {seed}}}\n"
            f"inner: {{optimizer: {{lr: {lr}}}}}\n"
        )
    s1 = base / "runs" / "leap" / "n1-s1" / "summary.json"
    s = json.loads(s1.read_text())
    s1.write_text(json.dumps(s | {"command": s["command"] + " inner.optimizer.lr=0.05"}))
    fake_run(base, "scratch", 1, 0, 12.0, 60.0)
    fake_run(base, "scratch", 1, 1, 13.0, 61.0)
    out = make_table(results)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, out.stderr  # leap differs in two keys; scratch (and the split seed) does not count
    assert any("train.meta_steps (2, 4)" in w and "runs/leap/n1-s0, runs/leap/n1-s1" in w for w in warnings)
    assert any("inner.optimizer.lr (0.05, 0.1)" in w for w in warnings)
    runs = pd.read_csv(base / "runs.csv").set_index(["method", "seed"])
    assert runs.loc[("leap", 0), "inner.optimizer.lr"] == 0.1  # from its config, though its command omits it
    assert runs.loc[("scratch", 0), "inner.optimizer.lr"] != runs.loc[("scratch", 0), "inner.optimizer.lr"]  # NaN
