"""The benchmark scripts run end to end (tiny settings: this checks that they work, not how fast anything is)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, out: Path, *args: str) -> dict:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args, "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return json.loads(out.read_text())


def test_bench_leap_runs_and_its_paths_agree(tmp_path):
    res = bench(
        "bench_leap.py", tmp_path / "leap.json", "--steps", "6", "--reps", "2", "--tasks", "2", "--batched-steps", "3"
    )
    o = res["overhead"]
    assert res["commit"] and o["reps"] == 2
    for key in ("plain_task_steps_per_s", "flat_task_steps_per_s", "leap_task_steps_per_s", "own_time_pct"):
        assert math.isfinite(o[key]) and o[key] > 0
    assert 0 < o["own_time_pct"] < 100 and res["reference"]["speedup"] > 0
    assert res["batched_relative_difference_float64"] < 1e-10  # batched and sequential meta-steps agree


def test_bench_distributed_runs_ranks_and_independent_processes(tmp_path):
    res = bench(
        "bench_distributed.py",
        tmp_path / "dist.json",
        "--ranks",
        "2",
        "--tasks",
        "2",
        "--steps",
        "3",
        "--meta-steps",
        "1",
        "--rounds",
        "1",
    )
    for key in ("one_process_1_thread", "2_ranks_1_thread", "2_independent_processes_1_thread"):
        assert res[key]["task_steps_per_s"] > 0 and res[key]["rounds"] == 1
    assert res["scaling_vs_best_single_2_ranks"] > 0 and res["ceiling_vs_best_single_2_processes"] > 0


@pytest.mark.data
def test_gpu_paper_cell_runs_end_to_end_in_its_cpu_form(tmp_path):
    """scripts/gpu_paper_cell.sh --smoke: the device checks pass on the CPU, both runs finish with every fast path
    on and are exported, and the report has what the GPU run must report."""
    out, results = tmp_path / "cell.json", tmp_path / "results"
    subprocess.run(
        ["bash", "scripts/gpu_paper_cell.sh", "--smoke", "--runs", str(tmp_path / "runs"), "--results", str(results),
         "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=600, env={**os.environ, "PY": sys.executable},
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert res["finished"] and all(res["checks"][k]["ok"] for k in ("meta_step", "meta_step_graphs", "evaluation"))
    assert res["paths"] == {"method.batched": True, "method.cuda_graphs": True, "eval.batched": True}
    assert res["checks"]["meta_step"]["relative_difference"] < 1e-10
    assert len(set(res["checks"]["evaluation"]["heldout"]["steps"])) > 1  # alphabets stopped at different points
    assert all(v > 0 for v in res["throughput"]["task_steps_per_s"].values())
    for key in ("wall_s", "commit", "torch", "device"):
        assert res[key]
    assert set(res["leap"]["seconds"]) == {"data", "meta_train", "validation", "test_at", "test"}
    assert 0 <= res["leap"]["test_error"] <= 100 and 0 <= res["scratch"]["test_error"] <= 100
    assert res["leap"]["meta_task_steps_per_s"] > 0
    for method in ("leap", "scratch"):
        summary = json.loads((results / "runs" / method / "n3-s0" / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["seconds"]["test"] > 0
    cfg = (results / "runs" / "leap" / "n3-s0" / "config.yaml").read_text()
    assert "batched: true" in cfg and "cuda_graphs: true" in cfg


def test_gpu_paper_cell_stops_at_its_budget_reports_and_resumes(tmp_path):
    """A window that closes early: the runs are stopped (Ctrl-C) at the budget, the report says how far they got,
    and the next call keeps the first call's fast paths and finishes the cell."""
    out, runs = tmp_path / "cell.json", tmp_path / "runs"
    args = ["bash", "scripts/gpu_paper_cell.sh", "--smoke", "--runs", str(runs), "--results", str(tmp_path / "r")]
    env = {**os.environ, "PY": sys.executable}
    subprocess.run([*args, "--out", str(out), "--budget", "0", "--reserve", "0"], cwd=ROOT, check=True,
                   capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    cut = json.loads(out.read_text())
    assert not cut["finished"] and not cut["leap"]["finished"] and cut["leap"]["exit_code"] != 0
    assert cut["leap"]["meta_steps_done"] >= 0 and cut["checks"]["meta_step"]["ok"]
    kept = json.loads((runs / "gpu_paper_cell_paths.json").read_text())
    assert kept == cut["paths"]
    subprocess.run([*args, "--out", str(out)], cwd=ROOT, check=True, capture_output=True, text=True, timeout=600,
                   env=env)  # fmt: skip
    done = json.loads(out.read_text())
    assert done["finished"] and done["paths"] == kept and done["leap"]["meta_steps_done"] == 3
