"""Methods on the real inner loop: streamed Leap equals eq. 8 over a stored trajectory; fine-tuning heads."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from leapbench.errors import ConfigError
from leapbench.inner import Inner
from leapbench.methods.base import task_seeds
from leapbench.methods.finetune import Finetune
from leapbench.methods.flat import flat_grads, flat_params, is_channels_last, set_grads
from leapbench.methods.fomaml import FOMAML
from leapbench.methods.leap import Leap
from leapbench.methods.reptile import Reptile
from leapbench.methods.scratch import Scratch
from leapbench.models import ConvNet, MultiHeadConvNet
from leapbench.protocols import Step
from leapbench.tasks import Task


def toy_task(seed: int, task_id: int = 0, n: int = 40) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 12, 12, generator=g)
    y = torch.arange(n) % 4
    x[:, :, :3, :3] += y.view(-1, 1, 1, 1) * 0.5  # learnable
    return Task(f"toy{seed}", x[:30], y[:30], x[30:], y[30:], task_id=task_id)


def net() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(num_classes=4, filters=4, layers=2, image_size=12)


def test_streamed_leap_equals_stored_trajectory():
    """The on-the-fly accumulator equals eq. 8 computed after the fact from every (psi^i, f_i, g_i)."""
    inner = Inner(partial(torch.optim.SGD, lr=0.3), steps=6, batch_size=8)
    tasks = [toy_task(1), toy_task(2)]
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1))
    leap.setup(net(), inner, 2)
    theta0 = flat_params(list(leap.model.parameters()))
    leap.meta_step(tasks, torch.Generator().manual_seed(7))

    # Independent path: replay the same learning processes and store the whole trajectory.
    seeds, ref = task_seeds(len(tasks), torch.Generator().manual_seed(7)), torch.zeros_like(theta0)
    for task, seed in zip(tasks, seeds):
        model, traj = net(), []
        inner.train(
            model,
            task,
            torch.Generator().manual_seed(seed),
            hook=lambda i, loss, m: traj.append(
                (flat_params(list(m.parameters())), loss, flat_grads(list(m.parameters())))
            ),
        )
        for (p0, f0, g0), (p1, f1, _) in zip(traj, traj[1:]):
            dp, df = p1 - p0, -abs(f1 - f0)
            ref += (-dp - df * g0) / torch.sqrt(dp @ dp + df**2)
    expected = theta0 - 0.1 * ref / len(tasks)
    torch.testing.assert_close(flat_params(list(leap.model.parameters())), expected, rtol=1e-5, atol=1e-6)


def test_leap_restarts_every_task_from_theta0_with_fresh_batchnorm():
    inner = Inner(partial(torch.optim.SGD, lr=0.3), steps=4, batch_size=8)
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1))
    leap.setup(net(), inner, 1)
    buffers0 = {k: v.clone() for k, v in leap.model.state_dict().items() if "running" in k}
    seen = []
    leap.begin_task = lambda theta0: (
        seen.append(copy.deepcopy(leap.work.state_dict())),
        Leap.begin_task(leap, theta0),
    )[1]
    leap.meta_step([toy_task(1), toy_task(2)], torch.Generator().manual_seed(0))
    for state in seen:  # each task starts at theta^0 (pre-update) with initial running statistics
        for k, v in buffers0.items():
            torch.testing.assert_close(state[k], v)
    torch.testing.assert_close(seen[0]["body.0.weight"], seen[1]["body.0.weight"])
    assert not torch.equal(leap.model.body[0].weight, seen[0]["body.0.weight"])  # theta^0 moved after the step


def test_finetune_one_step_is_sgd_on_interleaved_batches():
    """A fine-tuning meta-step is plain SGD over the tasks' batches in a shuffled order, a head per task."""
    inner = Inner(partial(torch.optim.SGD, lr=0.05), steps=3, batch_size=8)
    tasks = [toy_task(1, 0), toy_task(2, 1)]
    ft = Finetune("finetune", multi_head=True)
    torch.manual_seed(1)
    ft.setup(net(), inner, num_tasks=3)
    start = copy.deepcopy(ft)
    ft.meta_step(tasks, torch.Generator().manual_seed(3))

    # Reference: draw the same batches and order, then take SGD steps by hand.
    g = torch.Generator().manual_seed(3)
    streams = [iter(t.batches(3, 8, g)) for t in tasks]
    order = torch.arange(2).repeat_interleave(3)
    order = order[torch.randperm(6, generator=g)]
    model, heads = start.model, start.heads
    for k in order.tolist():
        x, y = next(streams[k])
        params = list(model.body.parameters()) + list(heads[k].parameters())
        loss = F.cross_entropy(heads[k](model.embed(x)), y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, gr in zip(params, grads):
                p -= 0.05 * gr
    for a, b in zip(ft.model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(ft.heads[0].weight, heads[0].weight)
    torch.testing.assert_close(ft.heads[2].weight, start.heads[2].weight)  # task 2 not sampled: untouched
    assert not torch.equal(ft.heads[0].weight, ft.heads[1].weight)  # a head is never shared
    init = ft.initialization()
    torch.testing.assert_close(init.head.weight, ft.fresh_head.weight)  # evaluation gets a fresh head
    torch.testing.assert_close(ft.model.head.weight, start.model.head.weight)  # the unused default head


def test_single_head_finetune_trains_the_one_head():
    inner = Inner(partial(torch.optim.SGD, lr=0.05), steps=3, batch_size=8)
    ft = Finetune("finetune_single", multi_head=False)
    ft.setup(net(), inner, num_tasks=2)
    head0 = ft.model.head.weight.clone()
    ft.meta_step([toy_task(1, 0), toy_task(2, 1)], torch.Generator().manual_seed(3))
    assert len(ft.heads) == 0 and not torch.equal(ft.model.head.weight, head0)
    assert ft.initialization() is ft.model


def test_scratch_hands_over_the_random_init():
    model = net()
    s = Scratch("scratch")
    s.setup(model, Inner(partial(torch.optim.SGD, lr=0.1), 3, 8), 0)
    assert not s.trains and s.initialization() is model


def test_flat_vectors_line_up_on_channels_last_weights():
    """Parameters and gradients flatten in the same (memory) order, and set_grads inverts flat_grads."""
    torch.manual_seed(0)
    model = ConvNet(num_classes=4, filters=4, layers=2, image_size=12, channels_last=True)
    params = list(model.parameters())
    conv2 = model.body[4].weight  # 4 -> 4 channels: channels-last memory differs from NCHW
    assert conv2.is_contiguous(memory_format=torch.channels_last) and not conv2.is_contiguous()
    for p in params:
        p.grad = p.detach().clone() * 3  # a gradient equal to 3 x its parameter, element by element
    assert torch.equal(flat_grads(params), 3 * flat_params(params))
    start = sum(p.numel() for p in params[:4])  # conv1 weight and bias, BatchNorm weight and bias come first
    assert params[4] is conv2
    segment = flat_params(params)[start : start + conv2.numel()]
    assert torch.equal(segment, conv2.detach().permute(0, 2, 3, 1).reshape(-1))  # NHWC: its memory order
    flat = torch.randn(flat_params(params).numel())
    set_grads(params, flat)
    assert torch.equal(flat_grads(params), flat)
    assert conv2.grad.is_contiguous(memory_format=torch.channels_last) and not conv2.grad.is_contiguous()


@pytest.mark.parametrize("kw", [{}, {"norm": False}, {"loss": False}, {"stabilizer": False}])
def test_leap_sgd_shortcut_equals_the_general_path(kw, monkeypatch):
    """Under plain SGD, the increment built from the kept gradient tensors (no copies) equals the one built
    from flat copies of psi^i, on channels-last convs, with heads that get no gradient (a head per task)."""
    inner = Inner(partial(torch.optim.SGD, lr=0.3), steps=6, batch_size=8)
    a, b = toy_task(1), toy_task(2)
    a.head, b.head = "a", "b"
    grads = []
    for shortcut in (True, False):
        monkeypatch.setattr(Leap, "shortcut", shortcut)
        torch.manual_seed(0)
        model = MultiHeadConvNet({"a": 4, "b": 4, "c": 4}, in_channels=1, filters=4, layers=2, image_size=12)
        leap = Leap("leap", partial(torch.optim.SGD, lr=0.1), **kw)
        leap.setup(model, inner, 2)
        assert (leap.sgd_lr == 0.3) if shortcut else (leap.sgd_lr is None)
        assert leap.clears_gradients == shortcut  # declared: the engine hands it the clearing of the gradients
        leap.meta_step([a, b], torch.Generator().manual_seed(7))
        grads.append(flat_grads(leap.params))  # the mean meta-gradient the meta-optimizer stepped with
        if shortcut:  # the last g_i, read through the .grad views in flat_params order, is Leap's vector
            assert any(is_channels_last(p) for p in leap.work_params)
            assert leap.grads.abs().sum() > 0 and torch.equal(flat_grads(leap.work_params), leap.grads)
    assert grads[0].abs().max() > 0
    n_head = model.heads["c"].weight.numel() + 4
    assert torch.equal(grads[0][-n_head:], torch.zeros(n_head))  # no task trained head c: no meta-gradient
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_leap_sgd_shortcut_is_off_where_the_segment_is_not_minus_lr_grad():
    for opt in (
        partial(torch.optim.SGD, lr=0.3, momentum=0.9),
        partial(torch.optim.SGD, lr=0.3, weight_decay=1e-4),
        partial(torch.optim.Adam, lr=0.3),
    ):
        leap = Leap("leap", partial(torch.optim.SGD, lr=0.1))
        leap.setup(net(), Inner(opt, steps=2, batch_size=8), 1)
        assert leap.sgd_lr is None
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1), batched=True)  # observe() sees stacked rows there
    leap.setup(net(), Inner(partial(torch.optim.SGD, lr=0.3), steps=2, batch_size=8), 1)
    assert leap.sgd_lr is None
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1), scope="body.")  # gradients outside the scope
    leap.setup(net(), Inner(partial(torch.optim.SGD, lr=0.3), steps=2, batch_size=8), 1)
    assert leap.params and leap.sgd_lr is None


def test_leap_sgd_shortcut_refuses_an_inner_loop_that_replaces_its_gradients():
    """The shortcut reads g_i from its own vector; a learning process that released the gradients instead of
    calling Leap's before_backward would leave that vector stale, so it stops instead of returning a wrong
    meta-gradient."""
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1))
    leap.setup(net(), Inner(partial(torch.optim.SGD, lr=0.3), steps=2, batch_size=8), 1)
    state = leap.begin_task(flat_params(leap.params))
    with pytest.raises(RuntimeError, match="before_backward"):
        leap.inner.train(
            leap.work,
            toy_task(1),
            torch.Generator(),  # no zero_grad: the process releases them
            hook=lambda step, loss, m: leap.observe(state, Step(step, loss, None, None, None)),
        )


def test_inner_zero_grad_sees_the_loss_and_the_previous_gradient():
    """``zero_grad(step, loss)`` runs after the forward pass and before backward: it gets this step's loss while
    .grad still holds the previous step's gradient; clearing in place trains exactly like releasing."""
    inner = Inner(partial(torch.optim.SGD, lr=0.3), steps=4, batch_size=8)
    seen, hooked = [], []

    def zero_grad(step: int, loss: float) -> None:
        seen.append((step, loss, flat_grads(params) if params[0].grad is not None else None))
        for p in params:
            if p.grad is not None:
                p.grad.zero_()

    model = net()
    params = list(model.parameters())
    inner.train(
        model,
        toy_task(1),
        torch.Generator().manual_seed(3),
        zero_grad=zero_grad,
        hook=lambda step, loss, m: hooked.append((step, loss, flat_grads(params))),
    )
    assert [s[0] for s in seen] == [h[0] for h in hooked] == [0, 1, 2, 3]
    assert [s[1] for s in seen] == [h[1] for h in hooked]
    assert seen[0][2] is None
    for (_, _, before), (_, _, after) in zip(seen[1:], hooked):
        assert torch.equal(before, after) and after.abs().sum() > 0
    released = net()
    inner.train(released, toy_task(1), torch.Generator().manual_seed(3))
    assert torch.equal(flat_params(params), flat_params(list(released.parameters())))


@pytest.mark.parametrize(
    "make",
    [
        lambda b: Leap("leap", partial(torch.optim.SGD, lr=0.1), batched=b),
        lambda b: Leap("leap", partial(torch.optim.SGD, lr=0.1), norm=False, batched=b),
        lambda b: Reptile("reptile", partial(torch.optim.SGD, lr=0.1), batched=b),
        lambda b: Reptile("reptile", partial(torch.optim.SGD, lr=0.1), last_step=True, batched=b),
        lambda b: FOMAML("fomaml", partial(torch.optim.SGD, lr=0.1), batched=b),
    ],
)
def test_batched_tasks_equal_the_sequential_loop(make):
    """method.batched=true (torch.func.vmap over stacked per-task parameters) gives the sequential meta-step."""
    inner = Inner(partial(torch.optim.SGD, lr=0.3), steps=6, batch_size=8)
    tasks = [toy_task(1), toy_task(2), toy_task(3)]
    results = []
    for batched in (False, True):
        learner = make(batched)
        learner.setup(net(), inner, len(tasks))
        row = learner.meta_step(tasks, torch.Generator().manual_seed(7))
        results.append((flat_params(learner.params), row))
    (seq, seq_row), (bat, bat_row) = results
    assert not torch.equal(seq, flat_params(list(net().parameters())))  # the step moved theta^0
    torch.testing.assert_close(bat, seq, rtol=1e-5, atol=1e-6)
    assert bat_row["error"] == seq_row["error"] and bat_row["loss"] == pytest.approx(seq_row["loss"], rel=1e-6)


def test_batched_needs_plain_sgd():
    learner = Leap("leap", partial(torch.optim.SGD, lr=0.1), batched=True)
    learner.setup(net(), Inner(partial(torch.optim.SGD, lr=0.3, momentum=0.9), steps=2, batch_size=8), 1)
    with pytest.raises(ConfigError, match="plain SGD"):
        learner.meta_step([toy_task(1)], torch.Generator())


def test_each_task_trains_only_its_own_head_and_heldout_starts_fresh():
    """Multi-head model (Multi-CV): a head is never shared across tasks; the held-out task's head is untouched."""
    torch.manual_seed(0)
    model = MultiHeadConvNet({"a": 4, "b": 4, "heldout": 4}, in_channels=1, filters=4, layers=2, image_size=12)
    init = copy.deepcopy(model.state_dict())
    a, b = toy_task(1), toy_task(2)
    a.head, b.head = "a", "b"
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1), scope="body.")
    leap.setup(model, Inner(partial(torch.optim.SGD, lr=0.3), steps=4, batch_size=8), 2)
    leap.work.load_state_dict(leap.model.state_dict())
    leap.inner.train(leap.work, a, torch.Generator().manual_seed(0))
    trained = leap.work.state_dict()
    assert not torch.equal(trained["heads.a.weight"], init["heads.a.weight"])  # task a trained its head
    for name in ("b", "heldout"):
        assert torch.equal(trained[f"heads.{name}.weight"], init[f"heads.{name}.weight"])  # and no other
    leap.meta_step([a, b], torch.Generator().manual_seed(0))
    after = leap.model.state_dict()
    assert not torch.equal(after["body.0.weight"], init["body.0.weight"])  # the shared body is meta-learned
    assert all(torch.equal(after[k], init[k]) for k in init if k.startswith("heads."))  # heads are not
    with pytest.raises(KeyError, match="No head for task 'c'"):
        model.select("c")


def test_early_stopping_on_validation_reports_test_error_at_the_best_point():
    """A task with validation images (Multi-CV): stop on validation, report the held-out error scored where
    validation was best, i.e. what a fixed run of that many updates scores."""
    from leapbench.evaluation import Adaptation, adapt

    task = toy_task(3, n=60)
    task.x_val, task.y_val = task.x_train[:12] + 0.3, task.y_train[:12]  # shifted: differs from the test images
    inner = Inner(partial(torch.optim.SGD, lr=0.3), steps=4, batch_size=8)
    early = Adaptation(mode="early_stop", steps=4, max_steps=60, eval_every=2, patience=3, stop_on="val")
    import leapbench.evaluation as evaluation

    watched, real = [], evaluation.error_on
    evaluation.error_on = lambda m, x, y: (watched.append(x is task.x_val), real(m, x, y))[1]
    try:
        res = adapt(net(), task, inner, early, torch.Generator().manual_seed(5))
    finally:
        evaluation.error_on = real
    checks = res["steps"] // 2 + 1  # one every eval_every=2 updates, and one at the end
    assert watched.count(True) == checks  # early stopping looked at the validation images only
    assert 0 < res["best_step"] <= res["steps"]
    fixed = Adaptation(mode="fixed", steps=res["best_step"])
    again = adapt(net(), task, inner, fixed, torch.Generator().manual_seed(5))
    assert res["error"] == again["error"]


def test_meta_optimizer_state_survives_a_checkpoint():
    """Resuming restores Adam's moments: the next meta-step equals the uninterrupted one, bitwise."""
    inner = Inner(partial(torch.optim.SGD, lr=0.3), steps=3, batch_size=8)
    tasks = [toy_task(1), toy_task(2)]

    def learner():
        leap = Leap("leap", partial(torch.optim.Adam, lr=0.01))
        leap.setup(net(), inner, 2)
        return leap

    a = learner()
    a.meta_step(tasks, torch.Generator().manual_seed(0))
    saved = copy.deepcopy(a.state_dict())
    assert saved["meta_opt"]["state"]  # Adam's moments are in the checkpoint
    b = learner()
    b.load_state_dict(saved)
    for m in (a, b):
        m.meta_step(tasks, torch.Generator().manual_seed(1))
    assert torch.equal(flat_params(a.params), flat_params(b.params))


class Stopping(Inner):
    """An inner loop whose tasks stop early (``patience``) after exactly ``k`` updates: a variable-length process."""

    def __init__(self, k: int) -> None:
        super().__init__(partial(torch.optim.SGD, lr=0.3), steps=50, batch_size=8, patience=1)
        self.k = k

    def _early_stop(self, model, task):
        return lambda i: i + 1 >= self.k


@pytest.mark.parametrize(
    "make",
    [
        lambda: Reptile("reptile", partial(torch.optim.SGD, lr=0.5)),
        lambda: Reptile("reptile", partial(torch.optim.SGD, lr=0.5), last_step=True),
        lambda: FOMAML("fomaml", partial(torch.optim.SGD, lr=0.5)),
        lambda: Leap("leap", partial(torch.optim.SGD, lr=0.5)),
    ],
)
def test_tasks_that_stop_early_give_the_meta_gradient_of_their_length(make):
    """Reptile's and FOMAML's last step is the last one taken: a task that stops after K updates yields the
    meta-gradient of a fixed K-update task (float64, same batches)."""
    tasks = [toy_task(1), toy_task(2)]
    results = []
    for inner in (Inner(partial(torch.optim.SGD, lr=0.3), steps=7, batch_size=8), Stopping(7)):
        learner = make()
        learner.setup(net().double(), inner, 2)
        assert inner.fixed_steps == (7 if inner.patience is None else None)
        learner.meta_step(
            [Task(t.name, t.x_train.double(), t.y_train, t.x_heldout.double(), t.y_heldout) for t in tasks],
            torch.Generator().manual_seed(3),
        )
        results.append(flat_params(list(learner.model.parameters())))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-12)


def test_batched_tasks_refuse_tasks_that_stop_early():
    with pytest.raises(ConfigError, match="inner.patience"):
        Reptile("reptile", partial(torch.optim.SGD, lr=0.5), batched=True).setup(net(), Stopping(3), 1)


def test_stopping_on_validation_carved_from_the_training_images():
    """stop_on=val on a task without validation images: the last images of every class leave the training set,
    the stopping point is chosen on them, and the reported held-out error is the one scored at that point."""
    from leapbench.evaluation import Adaptation, adapt, with_validation

    task = toy_task(4, n=60)  # 30 training images, classes 0-3
    carved = with_validation(task, 2)
    assert torch.bincount(carved.y_val).tolist() == [2, 2, 2, 2] and len(carved.y_train) == 30 - 8
    rows = {tuple(x.flatten().tolist()) for x in task.x_train}
    kept, val = [{tuple(x.flatten().tolist()) for x in xs} for xs in (carved.x_train, carved.x_val)]
    assert not kept & val and kept | val == rows  # a partition of the training images
    with pytest.raises(ConfigError, match="val_per_class"):
        with_validation(task, 7)  # class 3 has only 7 training images

    inner = Inner(partial(torch.optim.SGD, lr=0.3), steps=4, batch_size=8)
    on_val = Adaptation(
        mode="early_stop", steps=4, max_steps=60, eval_every=2, patience=3, stop_on="val", val_per_class=2
    )
    res = adapt(net(), task, inner, on_val, torch.Generator().manual_seed(5))
    again = adapt(
        net(), carved, inner, Adaptation(mode="fixed", steps=res["best_step"]), torch.Generator().manual_seed(5)
    )
    assert res["error"] == again["error"]
    # The paper's rule reports the best held-out error it saw: never above the error at any of its checks.
    on_heldout = adapt(
        net(),
        task,
        inner,
        Adaptation(mode="early_stop", steps=4, max_steps=60, eval_every=2, patience=3),
        torch.Generator().manual_seed(5),
    )
    for k in range(2, on_heldout["steps"] + 1, 2):
        fixed = adapt(net(), task, inner, Adaptation(mode="fixed", steps=k), torch.Generator().manual_seed(5))
        assert on_heldout["error"] <= fixed["error"]
    with pytest.raises(ConfigError, match="stop_on"):
        Adaptation(mode="early_stop", stop_on="test")
