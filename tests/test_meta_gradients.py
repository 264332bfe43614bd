"""Meta-gradients of every method against values computed by hand.

The hand-computed cases use a 1-parameter quadratic task f(w) = (w - c)^2 / 2 trained by SGD from w0 = 0, so
every iterate, loss and gradient is a short decimal (worked out in the comments). ``QuadraticInner`` drives
the real method classes through the same hook protocol as the supervised inner loop.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from leapbench.checks import build, method_node
from leapbench.methods.fomaml import FOMAML
from leapbench.methods.leap import Leap, increment
from leapbench.methods.reptile import Reptile


class Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))


class QuadraticInner:
    """SGD on f(w) = (w - c)^2 / 2, where the task is the target c; calls hooks like ``Inner.train``."""

    def __init__(self, lr: float, steps: int) -> None:
        self.lr, self.steps = lr, steps
        self.fixed_steps = steps  # every task takes exactly `steps` updates
        self.sgd_lr = lr  # plain SGD: Leap may use its shortcut (see below)

    def train(self, model, task, generator, hook=None, zero_grad=None):
        opt = torch.optim.SGD(model.parameters(), lr=self.lr)
        for i in range(self.steps):
            loss = 0.5 * (model.w - task).pow(2).sum()
            if zero_grad is None:  # cleared after the forward pass, as in inner.train_step
                opt.zero_grad(set_to_none=True)
            else:
                zero_grad(i, loss.item())
            loss.backward()
            if hook is not None:
                hook(i, loss.item(), model)
            opt.step()
        return [0.0] * self.steps


def meta_step(learner, tasks, lr=0.5, steps=3):
    learner.setup(Scalar(), QuadraticInner(lr, steps), len(tasks))
    learner.meta_step([torch.tensor([c]) for c in tasks], torch.Generator())
    return learner.model.w.item()


SGD = partial(torch.optim.SGD, lr=0.1)


@pytest.fixture(autouse=True, params=[True, False], ids=["sgd-shortcut", "general"])
def leap_path(request, monkeypatch):
    """Every hand-computed case pins both of Leap's paths: the plain-SGD shortcut (its own gradient vector)
    and flat copies of psi^i."""
    monkeypatch.setattr(Leap, "shortcut", request.param)


# lr 0.5, c = 1: w = 0, .5, .75 (.875 after the 3rd step); f = .5, .125, .03125; g = -1, -.5, -.25
# lr 0.5, c = 2: w = 0, 1, 1.5 (1.75);                     f = 2, .5, .125;       g = -2, -1, -.5
# Leap (energy, loss, stabilizer), segments i = 0, 1:  -(dw) + |df| g
#   c = 1: (-.5 + .375 * -1) + (-.25 + .09375 * -.5) = -.875 - .296875 = -1.171875
#   c = 2: (-1 + 1.5 * -2) + (-.5 + .375 * -1) = -4 - .875 = -4.875
#   mean -3.0234375; theta0' = 0 - 0.1 * mean = 0.30234375


def test_leap_energy_by_hand():
    assert meta_step(Leap("leap", SGD, norm=False), [1.0, 2.0]) == pytest.approx(0.30234375)


def test_leap_length_by_hand():
    # norm=True divides each segment by sqrt(dw^2 + df^2)
    c1 = -0.875 / math.sqrt(0.5**2 + 0.375**2) + -0.296875 / math.sqrt(0.25**2 + 0.09375**2)
    c2 = -4.0 / math.sqrt(1**2 + 1.5**2) + -0.875 / math.sqrt(0.5**2 + 0.375**2)
    assert c1 == pytest.approx(-1.4 - 1.1118909, abs=1e-6)  # the same numbers, evaluated
    assert meta_step(Leap("leap", SGD, norm=True), [1.0, 2.0]) == pytest.approx(-0.1 * (c1 + c2) / 2)


def test_leap_stabilizer_flips_loss_increases():
    # lr 2.5 overshoots: w = 0, 2.5, -1.25; f = .5, 1.125, 2.53125 (both steps increase the loss); g = -1, 1.5
    # with mu:    (-2.5 + .625 * -1) + (3.75 + 1.40625 * 1.5) = -3.125 + 5.859375 = 2.734375
    # without mu: (-2.5 - .625 * -1) + (3.75 - 1.40625 * 1.5) = -1.875 + 1.640625 = -0.234375
    assert meta_step(Leap("leap", SGD, norm=False, stabilizer=True), [1.0], lr=2.5) == pytest.approx(-0.2734375)
    assert meta_step(Leap("leap", SGD, norm=False, stabilizer=False), [1.0], lr=2.5) == pytest.approx(0.0234375)


def test_leap_without_loss_term_is_reptile_before_last_step():
    # loss=False, norm=False: the increments telescope to -(psi^{K-1} - theta0), Reptile's reference meta-gradient
    leap = meta_step(Leap("leap", SGD, norm=False, loss=False), [1.0, 2.0])
    reptile = meta_step(Reptile("reptile", SGD), [1.0, 2.0])
    assert leap == pytest.approx(reptile) and leap == pytest.approx(0.1 * (0.75 + 1.5) / 2)


def test_reptile_by_hand():
    # theta0 - psi: psi^{K-1} = .75, 1.5 (reference); psi^K = .875, 1.75 (Nichol et al.)
    assert meta_step(Reptile("r", SGD), [1.0, 2.0]) == pytest.approx(0.1 * 1.125)
    assert meta_step(Reptile("r", SGD, last_step=True), [1.0, 2.0]) == pytest.approx(0.1 * 1.3125)


def test_fomaml_by_hand():
    # gradient at psi^{K-1}: .75 - 1 = -.25 and 1.5 - 2 = -.5; mean -.375
    assert meta_step(FOMAML("f", SGD), [1.0, 2.0]) == pytest.approx(0.0375)


def test_increment_vector_case():
    prev, curr, g = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])
    # step (0, -2), df = 2 - 3 = -1: -(step) - df * g = (1, 2); length sqrt(4 + 1)
    torch.testing.assert_close(increment(prev, curr, 3.0, 2.0, g, norm=False), torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(increment(prev, curr, 3.0, 2.0, g), torch.tensor([1.0, 2.0]) / math.sqrt(5))
    torch.testing.assert_close(increment(prev, curr, 3.0, 2.0, g, loss=False), torch.tensor([0.0, 1.0]))
    # a loss increase (df = +1): the stabilizer makes it -1, the same as a decrease; without it the sign flips
    torch.testing.assert_close(increment(prev, curr, 2.0, 3.0, g, norm=False), torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(
        increment(prev, curr, 2.0, 3.0, g, norm=False, stabilizer=False), torch.tensor([-1.0, 2.0])
    )
    # no movement and no loss change: a zero increment, not NaN
    assert torch.equal(increment(prev, prev, 1.0, 1.0, g), torch.zeros(2))


def test_leap_paper_config_is_eq8_with_its_factor_two():
    """method=leap_paper: energy (no normalisation) and lr 0.2 = the paper's beta 0.1 times eq. 8's factor 2."""

    from conftest import make_cfg

    learner = build(method_node(make_cfg("method=leap_paper")))
    # eq. 8: 2 * mean(-1.171875, -4.875) = -6.046875; Alg. 1 line 12 with beta 0.1: 0 - 0.1 * -6.046875
    assert meta_step(learner, [1.0, 2.0]) == pytest.approx(0.6046875)
