"""From runs to committed results to Table 1 and Fig. 2: export, aggregate, draw (scripts run as a user would)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, make_cfg, notebook_outputs, script

from leapbench.results import format_interval, mean_std
from leapbench.runner import run

SPLIT = ("data.num_test=1", "data.num_val=1")


@pytest.fixture(scope="module")
def runs(fake_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    for method in ("leap", "reptile", "scratch"):
        for n in (1, 2):
            for seed in (0, 1):
                run(
                    make_cfg(
                        f"method={method}",
                        "scale=smoke",
                        *SPLIT,
                        f"data.num_pretrain={n}",
                        f"seed={seed}",
                        tmp_path=tmp,
                        data_root=fake_root,
                    )
                )
    run(
        make_cfg(
            "method=leap",
            "scale=smoke",
            *SPLIT,
            "data.num_pretrain=1",
            "tag=-variant",
            "inner.optimizer.lr=0.05",
            tmp_path=tmp,
            data_root=fake_root,
        )
    )
    return tmp / "runs"


def test_aggregate_and_figures(runs, tmp_path):
    results = tmp_path / "results"
    (results / "paper").mkdir(parents=True)
    (results / "paper" / "table1.csv").write_text((ROOT / "results" / "paper" / "table1.csv").read_text())
    text = script(
        "scripts/make_table.py", "omniglot", "--scale", "smoke", "--collect", str(runs), "--results", str(results)
    )
    base = results / "omniglot" / "smoke"
    exported = sorted(p.parent.relative_to(base / "runs").as_posix() for p in base.glob("runs/*/*/summary.json"))
    assert len(exported) == 12 and "leap/n1-s0-variant" not in exported  # tagged variants are not cells
    summary = json.loads((base / "runs" / "leap" / "n1-s0" / "summary.json").read_text())
    assert "paths." not in summary["command"] and summary["seed"] == 0 and summary["commit"]
    assert str(runs) not in (base / "runs" / "leap" / "n1-s0" / "config.yaml").read_text()  # no machine paths

    runs_csv = pd.read_csv(base / "runs.csv")
    assert len(runs_csv) == 12 and set(runs_csv["label"]) == {"Leap", "Reptile", "No pretraining"}
    cell = pd.read_csv(base / "table1.csv").query("method == 'leap' and num_pretrain == 1").iloc[0]
    errors = [
        json.loads((base / "runs" / "leap" / f"n1-s{s}" / "summary.json").read_text())["test"]["error"] for s in (0, 1)
    ]
    mu, sd = mean_std(errors)
    assert cell["test_error_mean"] == pytest.approx(mu, abs=1e-3) and cell["test_error_std"] == pytest.approx(
        sd, abs=1e-3
    )
    assert cell["n_seeds"] == 2 and cell["paper_test_error"] == 8.7  # the paper's 1-task Leap cell beside ours
    assert "| 1 " in text and "(8.7)" in text and "Fig. 2 (right)" in text
    leap, scratch = (
        [json.loads((base / "runs" / m / f"n1-s{s}" / "summary.json").read_text())["test"]["error"] for s in (0, 1)]
        for m in ("leap", "scratch")
    )
    assert format_interval([a - b for a, b in zip(leap, scratch)]) in text  # Leap - scratch, paired by seed
    assert (
        pd.read_csv(base / "table1_paired.csv")
        .query("method == 'scratch' and num_pretrain == 1 and score == 'test_error'")["n_pairs"]
        .item()
        == 2
    )

    script("scripts/make_figures_omniglot.py", "--scale", "smoke", "--results", str(results))
    for name in ("fig2_left", "fig2_right"):
        for ext in ("png", "pdf"):
            assert (base / "figures" / f"{name}.{ext}").stat().st_size > 1000
    before = {p: p.read_bytes() for p in base.rglob("*") if p.is_file()}
    script("scripts/make_table.py", "omniglot", "--scale", "smoke", "--results", str(results))
    script("scripts/make_figures_omniglot.py", "--scale", "smoke", "--results", str(results))
    assert {p: p.read_bytes() for p in base.rglob("*") if p.is_file()} == before  # reruns rewrite the same bytes


def test_notebook_runs_on_fixture(runs, tmp_path, monkeypatch):
    """The Table 1 / Fig. 2 notebook executes top to bottom against a results folder of smoke runs."""
    results = tmp_path / "results"
    (results / "paper").mkdir(parents=True)
    (results / "paper" / "table1.csv").write_text((ROOT / "results" / "paper" / "table1.csv").read_text())
    script("scripts/make_table.py", "omniglot", "--scale", "smoke", "--collect", str(runs), "--results", str(results))
    outputs = notebook_outputs("omniglot_table1_fig2.ipynb", results, "smoke", monkeypatch)
    assert any("image/png" in o.get("data", {}) for o in outputs)  # Fig. 2 drawn
    markdown = [o.get("data", {}).get("text/markdown", "") for o in outputs]
    assert any("(8.7)" in m for m in markdown)  # Table 1 beside the paper
    assert any("No pretraining" in m and "[" in m for m in markdown)  # Leap's paired differences with intervals


def test_paired_runs_prints_the_paired_difference_and_exports(runs, tmp_path):
    a = [runs / "omniglot" / "leap" / "smoke" / f"n1-s{s}" for s in (0, 1)]
    b = [runs / "omniglot" / "scratch" / "smoke" / f"n1-s{s}" for s in (0, 1)]
    out = tmp_path / "paired"
    text = script("scripts/paired_runs.py", "--a", *map(str, a), "--b", *map(str, b), "--export", str(out))
    error = {d: json.loads((d / "summary.json").read_text())["test"]["error"] for d in a + b}
    assert f"test error: {format_interval([error[x] - error[y] for x, y in zip(a, b)])} points" in text
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*/summary.json")) == [
        "leap/n1-s0/summary.json",
        "leap/n1-s1/summary.json",
        "scratch/n1-s0/summary.json",
        "scratch/n1-s1/summary.json",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["scripts/make_table.py", "omniglot", "--scale", "nope", "--results", "EMPTY"], "No finished omniglot runs"),
        (["scripts/make_table.py", "omniglot", "--conf", "EMPTY/nonexist"], "holds no method/ folder"),
        (["scripts/make_table.py", "omniglot", "--collect", "EMPTY/nonexist"], "is not a folder"),
        (["scripts/make_figures_omniglot.py", "--scale", "nope", "--results", "EMPTY"], "runs.csv is missing"),
        (["scripts/budget_study.py", "--out", "EMPTY"], "budget.csv; run the study"),
        (["scripts/budget_study.py", "--out", "BROKEN"], "(an input file is missing or malformed)"),
        (["scripts/paired_runs.py", "--a", "EMPTY/nonexist", "--b", "EMPTY"], "holds no finished run"),
        (["scripts/retest.py", "EMPTY/nonexist", "--set", "eval.steps=3", "--out", "EMPTY/x.csv"], "holds no run"),
        (["scripts/retest.py", "EMPTY", "--set", "nosuch", "--out", "EMPTY/x.csv"], "--set nosuch is not KEY=VALUE"),
        (["scripts/sync_wandb.py", "EMPTY/nonexist"], "is not a folder"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]),
)
def test_scripts_refuse_bad_input_in_one_line(args, message, tmp_path):
    """The scripts' own refusals and a malformed input file: one ``error:`` line, exit 2, no traceback."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "budget.csv").write_text("x,y\n1,2\n")  # a CSV without the study's columns
    args = [a.replace("EMPTY", str(tmp_path)).replace("BROKEN", str(tmp_path / "broken")) for a in args]
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: ") and message in out.stderr, out.stderr
