"""README's recipe "add a meta-learner", followed from outside the suite: one file with the class, one config in a
folder of the user's own on Hydra's search path, and the real command line on smoke Omniglot. No file of the
suite is edited, and the new method's meta-gradient is checked against its definition on a run of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from functools import partial

import pytest
import torch
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.data]

LEARNER = '''
"""Average gradient: the meta-gradient is the mean of a task's step gradients (a first-order method)."""
import torch

from leapbench.methods.base import InitializationLearner


class AverageGradient(InitializationLearner):
    def begin_task(self, theta0):
        return {"sum": torch.zeros_like(theta0), "steps": 0}

    def observe(self, state, step):
        state["sum"] += step.grads()
        state["steps"] += 1

    def end_task(self, state, final):
        return state["sum"] / state["steps"]
'''

CONFIG = """
# @package _global_
method:
  _target_: mylearners.AverageGradient
  name: avggrad
  label: "Avg. gradient"
  color: "tab:olive"
  scope: null
  batched: false
  meta_optimizer: {_target_: torch.optim.SGD, _partial_: true, lr: 0.1}
"""


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "mylearners.py").write_text(textwrap.dedent(LEARNER))
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "avggrad.yaml").write_text(CONFIG.lstrip())
    return tmp_path


def test_a_new_meta_learner_runs_end_to_end_without_editing_the_suite(user_dir, tmp_path):
    before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    env = os.environ | {"PYTHONPATH": str(user_dir)}
    out = subprocess.run(
        [sys.executable, "run.py", "experiment=omniglot", "method=avggrad", "scale=smoke", "progress=false",
         f"hydra.searchpath=[file://{user_dir / 'conf'}]", f"paths.runs={tmp_path / 'runs'}"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    assert summary["status"] == "finished" and summary["method"] == "avggrad" and summary["label"] == "Avg. gradient"
    assert 0 <= summary["test"]["error"] <= 100 and summary["meta_steps_done"] >= 1
    rows = [json.loads(x) for x in next((tmp_path / "runs").rglob("metrics.jsonl")).read_text().splitlines()]
    assert any(r["split"] == "train" for r in rows) and any(r["split"] == "test" for r in rows)
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == before  # nothing of the suite was touched


def test_the_new_meta_learner_steps_with_its_own_meta_gradient(user_dir, monkeypatch):
    """The same class through the real sequential engine: theta^0 moves by -lr times the mean step gradient."""
    from leapbench.inner import Inner
    from leapbench.methods.flat import flat_grads, flat_params
    from leapbench.models import ConvNet
    from leapbench.tasks import Task

    monkeypatch.syspath_prepend(str(user_dir))
    from mylearners import AverageGradient

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 12, 12, generator=g), torch.arange(40) % 4
    task = Task("toy", x[:30], y[:30], x[30:], y[30:])
    inner = Inner(partial(torch.optim.SGD, lr=0.3), steps=5, batch_size=8)

    def net() -> ConvNet:
        torch.manual_seed(0)
        return ConvNet(num_classes=4, filters=4, layers=2, image_size=12)

    learner = AverageGradient("avggrad", partial(torch.optim.SGD, lr=0.1))
    learner.setup(net(), inner, 1)
    theta0 = flat_params(learner.params)
    from leapbench.methods.base import task_seeds

    seed = task_seeds(1, torch.Generator().manual_seed(4))[0]
    learner.meta_step([task], torch.Generator().manual_seed(4))
    grads: list[torch.Tensor] = []
    model = net()
    inner.train(model, task, torch.Generator().manual_seed(seed),
                hook=lambda i, loss, m: grads.append(flat_grads(list(m.parameters()))))  # fmt: skip
    expected = theta0 - 0.1 * torch.stack(grads).mean(0)
    torch.testing.assert_close(flat_params(learner.params), expected, rtol=1e-5, atol=1e-6)
