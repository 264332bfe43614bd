"""Task-parallel meta-training: torchrun with 2 ranks (gloo) ends where 1 process does.

With 2 tasks per meta-batch on 2 ranks the meta-gradient sum has the same two operands in either case, so
everything is bitwise equal; with 3 tasks (rank 0 trains two, rank 1 one) the summation order differs and one
meta-step agrees to float rounding. (Over several meta-steps a tiny network amplifies rounding chaotically,
so the uneven case is compared after one step.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAKE, ROOT, make_cfg

from leapbench.checks import build

# No early stopping: init.pt is the last meta-step's initialization.
ARGS = ["scale=smoke", *FAKE, "train.early_stopping=false", "inner.steps=8", "progress=false", "threads=1"]


def launch(ranks: int, method: str, runs: Path, fake_root: Path, *extra: str) -> Path:
    """``ranks=0``: a plain ``python run.py``; otherwise torchrun with ``ranks`` processes."""
    prefix = (
        [sys.executable]
        if ranks == 0
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    )
    out = subprocess.run(
        [
            *prefix,
            "run.py",
            f"method={method}",
            *ARGS,
            *extra,
            f"paths.data={fake_root}",
            f"paths.runs={runs}",
            f"paths.cache={runs.parent / 'cache'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("test error") == 1  # rank 0 alone reports
    return runs / "omniglot" / method / "smoke" / "n2-s0"


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["leap", "reptile", "fomaml"])
def test_two_ranks_equal_one_process(method, tmp_path, fake_root):
    even = ("train.meta_steps=4", "train.meta_batch_size=2", "train.val_every=2")
    plain = launch(0, method, tmp_path / "plain" / "runs", fake_root, *even)
    one = launch(1, method, tmp_path / "one" / "runs", fake_root, *even)
    two = launch(2, method, tmp_path / "two" / "runs", fake_root, *even)
    a, b, c = (torch.load(d / "init.pt") for d in (plain, one, two))
    assert all(torch.equal(a[k], b[k]) for k in a)  # torchrun with one rank is the plain path
    assert all(torch.equal(a[k], c[k]) for k in a)  # two ranks: the same two-operand sums
    torch.manual_seed(0)
    start = build(make_cfg(f"method={method}", *ARGS, *even, data_root=fake_root).model).state_dict()
    assert any(not torch.equal(start[k], c[k]) for k in a)  # meta-training moved the initialization
    r1, r2 = rows(plain), rows(two)
    assert [(r["meta_step"], r["split"]) for r in r1] == [(r["meta_step"], r["split"]) for r in r2]
    for x, y in zip(r1, r2):  # validation and test rows: gathered from both ranks, in task order
        assert x.get("curve") == y.get("curve") and x["error"] == pytest.approx(y["error"], rel=1e-9)
    s = json.loads((two / "summary.json").read_text())
    assert s["world_size"] == 2 and s["status"] == "finished"

    uneven = ("train.meta_steps=1", "train.meta_batch_size=3", "train.val_every=null")
    a = torch.load(launch(0, method, tmp_path / "plain3" / "runs", fake_root, *uneven) / "init.pt")
    c = torch.load(launch(2, method, tmp_path / "two3" / "runs", fake_root, *uneven) / "init.pt")
    for k in a:
        torch.testing.assert_close(c[k], a[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_finetune_refuses_task_parallel(tmp_path, fake_root):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "run.py",
            "method=finetune",
            *ARGS,
            f"paths.data={fake_root}",
            f"paths.runs={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode != 0 and "no task-parallel mode" in out.stderr
    assert not [p for p in tmp_path.rglob("*") if p.name in ("metrics.jsonl", "summary.json", ".lock")]
