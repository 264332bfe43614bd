"""The side-by-side paths against one task at a time, on real Omniglot alphabets with their augmentations.

Float64 and the contiguous layout on both sides, so the only difference left is the path itself: evaluation must
agree exactly (every score, stopping point and curve), meta-training up to float rounding. The CUDA-graph replay
cannot run here; its control flow runs with a stand-in recording that replays the recorded step's Python.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch
from conftest import DATA

from leapbench.data.omniglot import Omniglot
from leapbench.evaluation import Adaptation, evaluate
from leapbench.inner import Inner
from leapbench.methods import batched
from leapbench.methods.flat import flat_params
from leapbench.methods.fomaml import FOMAML
from leapbench.methods.leap import Leap
from leapbench.methods.reptile import Reptile
from leapbench.models import ConvNet

SGD = partial(torch.optim.SGD, lr=0.1)


@pytest.fixture(scope="module", params=["rotate36", "reference"])
def alphabets(request, shared_cache):
    """Five alphabets of one split in float64, with the augmentation under test (reference also augments held-out
    images, drawn between batches from the same generator)."""
    data = Omniglot(str(DATA), 4, split_seed=1, augment=request.param, cache_dir=str(shared_cache), download=False)
    return [
        dataclasses.replace(t, x_train=t.x_train.double(), x_heldout=t.x_heldout.double())
        for t in data.pretrain + data.test[:1]
    ]


def model() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(filters=8, channels_last=False).double()


@pytest.mark.data
@pytest.mark.parametrize(
    "rule",
    [
        dict(mode="fixed", steps=30),
        dict(mode="early_stop", steps=20, max_steps=90, eval_every=10, patience=2),
        dict(mode="early_stop", steps=20, max_steps=95, eval_every=10, patience=2, stop_on="val"),
    ],
    ids=["fixed", "heldout", "val"],
)
def test_side_by_side_evaluation_equals_one_task_at_a_time(alphabets, rule):
    inner = Inner(SGD, steps=100, batch_size=20)
    init = model()
    one, side = (evaluate(init, alphabets, inner, Adaptation(**rule, batched=b), seed=5) for b in (False, True))
    assert side["tasks"] == one["tasks"]  # every score, stopping point and curve, exactly
    assert side["error"] == one["error"] and side["curve"] == one["curve"]
    if rule["mode"] == "early_stop":
        assert len({t["steps"] for t in one["tasks"]}) > 1  # the tasks stopped at different points
        assert all(t["steps"] >= rule["steps"] for t in one["tasks"])


@pytest.mark.data
@pytest.mark.parametrize(
    "make",
    [
        lambda b: Leap("leap", SGD, batched=b),
        lambda b: Leap("leap", SGD, norm=False, stabilizer=False, batched=b),
        lambda b: Reptile("reptile", SGD, batched=b),
        lambda b: FOMAML("fomaml", SGD, batched=b),
    ],
    ids=["leap", "leap-energy", "reptile", "fomaml"],
)
def test_batched_meta_step_equals_the_sequential_one_with_augmentation(alphabets, make):
    """The batches drawn ahead of time and augmented side by side on stacked tasks give the sequential step."""
    inner = Inner(SGD, steps=7, batch_size=20)
    out = []
    for b in (False, True):
        learner = make(b)
        learner.setup(model(), inner, len(alphabets))
        row = learner.meta_step(alphabets, torch.Generator().manual_seed(3))
        out.append((flat_params(learner.params), row))
    (seq, seq_row), (bat, bat_row) = out
    assert not torch.equal(seq, flat_params(list(model().parameters())))
    torch.testing.assert_close(bat, seq, rtol=1e-10, atol=1e-12)
    assert bat_row["error"] == seq_row["error"] and bat_row["loss"] == pytest.approx(seq_row["loss"], rel=1e-12)


class Replay:
    """A stand-in for a recorded CUDA graph: replaying reruns the recorded step's Python with the recorded index."""

    def __init__(self, step, index):
        self.step, self.index, self.replays = step, index, 0

    def replay(self) -> None:
        self.replays += 1
        self.step(self.index, False)


@pytest.mark.parametrize("make", [lambda: Leap("leap", SGD, batched=True), lambda: Reptile("r", SGD, batched=True)])
def test_replaying_one_recorded_step_gives_the_eager_meta_step(monkeypatch, make):
    """With graphs the middle steps replay the step recorded at index EAGER_FIRST, so a capturable method must
    keep its state in place and read nothing from the index there: the replayed step equals the eager one."""
    tasks = [_toy(s) for s in (1, 2, 3)]
    inner = Inner(SGD, steps=6, batch_size=8)
    results, recorded = [], []

    def record(step, first):  # as batched._record: the first steps run, then step ``first`` is recorded
        for i in range(first):
            step(i, False)
        recorded.append(Replay(step, first))
        return recorded[-1]

    for graphs in (False, True):
        monkeypatch.setattr(batched, "_record", record)
        learner = make()
        learner.setup(_net(), inner, len(tasks))
        if graphs:  # what train_in_lockstep decides on CUDA for a capturable method
            monkeypatch.setattr(batched, "run_steps", partial(_run_graphs, batched.run_steps))
        learner.meta_step(tasks, torch.Generator().manual_seed(7))
        results.append(flat_params(learner.params))
    assert recorded and recorded[0].replays == inner.steps - batched.EAGER_FIRST - 1
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)


def _run_graphs(run_steps, step, steps, graphs):
    return run_steps(step, steps, True)


def _toy(seed: int):
    from test_methods import toy_task

    return toy_task(seed)


def _net() -> ConvNet:
    from test_methods import net

    return net()


@pytest.mark.parametrize(
    "make",
    [lambda: Leap("leap", SGD), lambda: Reptile("r", SGD), lambda: FOMAML("f", SGD)],
    ids=["leap", "reptile", "fomaml"],
)
def test_capturable_hooks_write_their_state_in_place(make):
    """A replayed graph reads and writes the addresses it was recorded with: a capturable method's row hooks must
    never rebind or reallocate a tensor of their state (and must change it, or the recording would be empty)."""
    learner = make()
    assert learner.capturable
    theta0 = torch.randn(10, dtype=torch.float64)
    state = learner.begin_rows(theta0, 3)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    before = {k: (v.data_ptr(), v.clone()) for k, v in tensors.items()}
    for index, last in ((0, False), (1, False), (2, False), (3, True)):
        learner.observe_rows(
            state,
            index,
            last,
            torch.rand(3, dtype=torch.float64),
            torch.randn(3, 10).double(),
            torch.randn(3, 10).double(),
        )
    assert {k: v.data_ptr() for k, v in state.items() if isinstance(v, torch.Tensor)} == {
        k: p for k, (p, _) in before.items()
    }
    assert any(not torch.equal(state[k], old) for k, (_, old) in before.items())
