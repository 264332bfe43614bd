"""The studies' scripts end to end on tiny runs: the budget study (test-at schedule -> exported runs -> budget.csv,
table and figure), scripts/retest.py and the protocol study across splits."""

from __future__ import annotations

import csv
import hashlib

import pytest
from conftest import FAKE, make_cfg, script

from leapbench.runner import run

BUDGET = [
    "scale=smoke",
    "scale.name=budget",
    *FAKE,
    "data.num_heldout=3",
    "train.val_every=null",
    "train.meta_steps=3",
    "train.test_at=[1,2]",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory, fake_root):
    tmp = tmp_path_factory.mktemp("budget")
    for method in ("leap", "reptile", "scratch"):
        for seed in (0, 1, 2):
            run(make_cfg(f"method={method}", f"seed={seed}", *BUDGET, tmp_path=tmp, data_root=fake_root))
    out = tmp / "results"
    run(make_cfg("method=leap", "seed=0", *BUDGET, "tag=-other", tmp_path=tmp, data_root=fake_root))  # an arm
    run(make_cfg("method=leap", "seed=0", *BUDGET, "tag=-debug", tmp_path=tmp, data_root=fake_root))  # not an arm
    script(
        "scripts/budget_study.py", "--collect", str(tmp / "runs"), "--out", str(out), "--row", "2", "--arms", "other"
    )
    return out


@pytest.fixture(scope="module")
def runs(study):
    return study.parent / "runs"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_row_per_method_budget_and_seed(study):
    rows = list(csv.DictReader((study / "budget.csv").open()))
    got = sorted((r["method"], int(r["budget"]), int(r["seed"])) for r in rows)
    want = sorted(
        [(m, b, s) for m in ("leap", "reptile") for b in (2, 4, 6) for s in (0, 1, 2)]
        + [("scratch", 0, s) for s in (0, 1, 2)]
        + [("leap-other", b, 0) for b in (2, 4, 6)]
    )
    assert got == want  # meta-batch 2: budgets 2, 4 (test_at) and 6 (the final test); -other an arm, -debug out
    assert all(r["split_seed"] == r["seed"] and r["commit"] and r["command"].startswith("python run.py") for r in rows)
    assert {(r["tag"], r["label"]) for r in rows if r["method"] == "leap-other"} == {("-other", "Leap [other]")}
    assert {r["tag"] for r in rows if r["method"] != "leap-other"} == {""}
    assert len(list((study / "runs").glob("*/summary.json"))) == 10


def test_table_has_paired_differences_and_regenerates_byte_for_byte(study):
    md = (study / "budget.md").read_text()
    assert "| 6 " in md and "## Paired differences" in md and "| paper (20,000) |" in md
    assert "(2 pretraining alphabets)" in md and "| Leap | " in md.split("## Trend")[1]
    assert "| Leap [other] " in md.split("## Paired")[1].split("\n")[2]  # the arm's own column, paired with Leap
    assert "| Leap [other] | " in md.split("## Trend")[1] and "[1]" in md  # one seed: its count is marked
    header = md.split("## Test error")[1].splitlines()[2]
    assert [c.strip() for c in header.split("|")[1:4]] == ["budget", "Leap", "Leap [other]"]  # after its method
    before = {p.name: digest(p) for p in (study / "budget.md", study / "budget.png", study / "budget.pdf")}
    script("scripts/budget_study.py", "--out", str(study))  # from the CSV alone, as `make budget` does
    assert {p.name: digest(p) for p in (study / "budget.md", study / "budget.png", study / "budget.pdf")} == before


def test_retest_reproduces_a_run_and_changes_only_what_it_is_told(runs, tmp_path):
    """scripts/retest.py: the recorded test again with the run's own rule, bit for bit; another rule differs."""
    leap = runs / "omniglot" / "leap" / "budget" / "n2-s1"
    script("scripts/retest.py", str(leap), "--set", "eval.stop_on=heldout", "--out", str(tmp_path / "same.csv"))
    (same,) = csv.DictReader((tmp_path / "same.csv").open())
    assert (same["error"], same["auc"], same["steps"]) == (
        same["recorded_error"],
        same["recorded_auc"],
        same["recorded_steps"],
    )
    assert same["run"] == "omniglot/leap/budget/n2-s1"  # no machine paths in the output
    script(
        "scripts/retest.py",
        str(leap),
        "--set",
        "eval.stop_on=val",
        "--set",
        "eval.val_per_class=1",
        "--out",
        str(tmp_path / "val.csv"),
    )
    (val,) = csv.DictReader((tmp_path / "val.csv").open())
    assert (
        val["overrides"] == "eval.stop_on=val eval.val_per_class=1" and val["auc"] != same["auc"]
    )  # fewer training images


@pytest.mark.slow
def test_protocol_study_across_splits(tmp_path, fake_root):
    """scripts/protocol_study.py on tiny runs: every rule x augmentation x split, the bias table, and a rerun that
    finds every cell exported and runs nothing."""
    tiny = [
        f"paths.data={fake_root}",
        f"paths.cache={tmp_path / 'cache'}",
        *FAKE,
        "data.num_heldout=3",
        "model.filters=4",
        "eval.steps=5",
        "eval.max_steps=20",
        "eval.eval_every=5",
        "eval.patience=1",
        "eval.val_per_class=1",
    ]
    args = [
        "scripts/protocol_study.py",
        "--seeds",
        "0,1",
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
    ]
    script(*args, *tiny)
    rows = list(csv.DictReader((tmp_path / "out" / "protocol.csv").open()))
    assert len(rows) == 3 * 3 * 2 and {r["split_seed"] for r in rows} == {"0", "1"}
    md = (tmp_path / "out" / "protocol.md").read_text()
    assert "| early stopping on validation | rotate36 |" in md and "| rotate36 | " in md.split("Stopping-rule bias")[1]
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").rglob("summary.json")}
    import shutil

    shutil.rmtree(tmp_path / "runs")  # a new session: only the exported results are left
    script(*args, *tiny)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("summary.json"))  # nothing reran
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").rglob("summary.json")} == before
