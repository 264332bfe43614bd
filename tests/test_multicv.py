"""Multi-CV benchmark: configs, the leave-one-out data, per-task heads, epoch-capped training, runs, Table 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DATA, ROOT, make_cfg, notebook_outputs, script
from torch import nn

from leapbench.checks import build, method_node
from leapbench.data.multicv import MultiCV
from leapbench.errors import ConfigError, DataError
from leapbench.evaluation import Adaptation, adapt, auc, thin
from leapbench.inner import Inner
from leapbench.models import MultiHeadConvNet
from leapbench.runner import run
from leapbench.tasks import Task

METHODS = ["leap", "finetune", "scratch"]
SMOKE = ("experiment=multicv", "scale=smoke")
needs_data = pytest.mark.skipif(
    not (DATA / "MNIST").is_dir() or not (DATA / "facescrub").is_dir(),
    reason="needs the shared Multi-CV copies under LEAP_DATA_DIR",
)


def sgd(lr: float):
    return build({"_target_": "torch.optim.SGD", "_partial_": True, "lr": lr})


def synthetic(n: int = 64, val: int | None = 16, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    xv, yv = (torch.randn(val, 3, 4, 4, generator=g), torch.randint(0, 3, (val,), generator=g)) if val else (None, None)
    return Task("syn", x, y, x[:8], y[:8], x_val=xv, y_val=yv)


def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 3))


# ----------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("scale", ["paper", "small", "smoke"])
@pytest.mark.parametrize("method", METHODS)
def test_config_composes(method, scale, tmp_path):
    cfg = make_cfg("experiment=multicv", f"method={method}", f"scale={scale}", "heldout=mnist", tmp_path=tmp_path)
    assert cfg.run_dir.endswith(f"multicv/{method}/{scale}/mnist-s0") and cfg.data.heldout == "mnist"
    inner, learner = build(cfg.inner), build(method_node(cfg))
    build(cfg.eval), build(cfg.val)
    assert inner.epochs and inner.batch_size == 32 and cfg.inner.optimizer.lr == 0.1  # App. E, every method
    if scale == "paper":
        assert len(cfg.data.datasets) == 8 and cfg.data.max_train is None and cfg.model.filters == 64
        assert inner.steps == 10 and inner.patience == 1 and cfg.train.meta_batch_size == 10
        assert cfg.eval.max_steps == 100 and cfg.eval.epochs and cfg.eval.auc_all and cfg.eval.patience == 1
    assert build(cfg.eval).stop_on == build(cfg.val).stop_on == "val"  # stop on validation images, report test
    if method == "leap":  # Adam 0.01 on the shared body
        assert learner.scope == "body." and learner.meta_optimizer.func is torch.optim.Adam
        assert learner.meta_optimizer.keywords == {"lr": 0.01}


def test_omniglot_keeps_its_own_method_values(tmp_path):
    """The Multi-CV method settings apply to Multi-CV only."""
    cfg = make_cfg("experiment=omniglot", "method=leap", tmp_path=tmp_path)
    assert cfg.method.scope is None and cfg.method.meta_optimizer._target_ == "torch.optim.SGD"
    assert make_cfg("method=finetune", tmp_path=tmp_path).inner.optimizer.lr == 0.01


@pytest.mark.parametrize(
    "override, match",
    [
        ("heldout=svhnx", "Unknown Multi-CV dataset 'svhnx'"),
        ("heldout=svhn", "not among data.datasets"),  # the smoke preset has four datasets
        ("data.val_fraction=1.5", "val_fraction"),
    ],
)
def test_bad_data_values(override, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        build(make_cfg(*SMOKE, override, tmp_path=tmp_path).data)


@needs_data
def test_missing_dataset_names_it(tmp_path):
    """SVHN is not in the shared copy: the paper-scale config says what is missing and where to put it."""
    cfg = make_cfg("experiment=multicv", "heldout=svhn", "data.download=false", tmp_path=tmp_path)
    with pytest.raises(DataError, match="svhn"):
        build(cfg.data)


@needs_data
@pytest.mark.parametrize("method", ["reptile", "fomaml"])
def test_reptile_and_fomaml_run_with_tasks_that_stop_early(method, tmp_path):
    """Multi-CV's pretraining tasks stop on validation (variable K): the last step is the last one taken."""
    cfg = make_cfg(*SMOKE, f"method={method}", tmp_path=tmp_path)
    summary = run(cfg)
    assert summary["status"] == "finished" and 0 <= summary["test"]["error"] <= 100
    rows = [json.loads(x) for x in open(f"{cfg.run_dir}/metrics.jsonl")]
    assert sum(r["split"] == "train" for r in rows) == cfg.train.meta_steps


@needs_data
@pytest.mark.parametrize(
    "method, match",
    [
        ("reptile method.batched=true", "with method.batched=true needs every task to train for exactly inner.steps"),
        ("finetune_single", "needs tasks that share one output layer"),
    ],
)
def test_methods_that_do_not_fit_refuse(method, match, tmp_path):
    cfg = make_cfg(*SMOKE, *f"method={method}".split(), tmp_path=tmp_path)
    with pytest.raises(ConfigError, match=match):
        run(cfg)
    assert not (tmp_path / "runs").exists()  # refused before the run folder exists


# ----------------------------------------------------------------------------------------------- data
@needs_data
def test_leave_one_out_split():
    data = MultiCV(str(DATA), heldout="mnist", datasets=["facescrub", "mnist", "gtsrb"], max_train=300, max_test=100)
    assert [t.name for t in data.pretrain] == ["facescrub", "gtsrb"] and [t.head for t in data.pretrain] == [
        "facescrub",
        "gtsrb",
    ]
    (test,) = data.test
    assert test.name == test.head == "mnist" and data.val == []
    assert data.model_kwargs == {"heads": {"facescrub": 20, "mnist": 10, "gtsrb": 43}}
    for t in data.pretrain + data.test:
        assert t.x_train.shape[1:] == (3, 32, 32) and len(t.x_train) == 270 and len(t.x_val) == 30
        assert len(t.x_heldout) == 100
        train = {r.numpy().tobytes() for r in t.x_train}
        assert not train & {r.numpy().tobytes() for r in t.x_val}  # validation images are not trained on
    # The same split for every run seed, and a bigger max_train keeps a superset of classes' images.
    again = MultiCV(str(DATA), heldout="mnist", datasets=["facescrub", "mnist", "gtsrb"], max_train=300, max_test=100)
    assert torch.equal(again.test[0].x_val, test.x_val)


# ----------------------------------------------------------------------------------------------- heads
def fresh_heads(model: MultiHeadConvNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.heads.state_dict().items()}


@needs_data
def test_leap_meta_learns_the_body_and_never_shares_a_head(tmp_path):
    cfg = make_cfg(*SMOKE, "method=leap", tmp_path=tmp_path)
    data, inner, learner = build(cfg.data), build(cfg.inner), build(method_node(cfg))
    model = build(cfg.model, **data.model_kwargs)
    heads0, body0 = fresh_heads(model), [p.detach().clone() for p in model.body.parameters()]
    learner.setup(model, inner, len(data.pretrain))
    learner.meta_step(data.pretrain[:2], torch.Generator().manual_seed(0))
    assert all(torch.equal(heads0[k], v) for k, v in fresh_heads(learner.model).items())  # heads: not meta-learned
    assert any(not torch.equal(a, b) for a, b in zip(body0, learner.model.body.parameters()))
    # The last task trained moved its own head and no other.
    last = data.pretrain[1].head
    moved = {k.split(".")[0] for k, v in fresh_heads(learner.work).items() if not torch.equal(v, heads0[k])}
    assert moved == {last}


@needs_data
def test_finetune_trains_each_task_head_and_hands_over_a_fresh_one(tmp_path):
    cfg = make_cfg(*SMOKE, "method=finetune", tmp_path=tmp_path)
    data, inner, learner = build(cfg.data), build(cfg.inner), build(method_node(cfg))
    model = build(cfg.model, **data.model_kwargs)
    heads0 = fresh_heads(model)
    learner.setup(model, inner, len(data.pretrain))
    learner.meta_step(data.pretrain, torch.Generator().manual_seed(0))
    after = fresh_heads(learner.initialization())
    moved = {k.split(".")[0] for k, v in after.items() if not torch.equal(v, heads0[k])}
    assert moved == {t.head for t in data.pretrain}  # every pretraining head trained, on its own task
    heldout = data.test[0].head
    assert heldout not in moved and torch.equal(after[f"{heldout}.weight"], heads0[f"{heldout}.weight"])
    # Adapting to the held-out task trains its head only.
    init = learner.initialization()
    adapt(init, data.test[0], inner, Adaptation(steps=3, mode="fixed"), torch.Generator().manual_seed(0))
    moved = {k.split(".")[0] for k, v in fresh_heads(init).items() if not torch.equal(v, after[k])}
    assert moved == {heldout} and init.active == heldout


# ----------------------------------------------------------------------------------------------- epochs, stopping
def test_epoch_cap_and_validation_early_stopping():
    task = synthetic(n=64, val=16)  # 64 images, batch 32: 2 steps per epoch
    inner = Inner(sgd(0.1), steps=5, batch_size=32, epochs=True)
    assert inner.steps_for(task) == 10 and len(inner.train(linear(), task, torch.Generator())) == 10
    # A learning rate too small to change any prediction: validation never improves after the first epoch,
    # so patience 1 stops at the end of the second epoch and patience 2 at the end of the third.
    for patience, epochs in ((1, 2), (2, 3)):
        inner = Inner(sgd(1e-12), steps=5, batch_size=32, epochs=True, patience=patience)
        assert len(inner.train(linear(), task, torch.Generator())) == 2 * epochs
    # Without validation images the held-out images are watched; in evaluation (explicit steps) the cap alone applies.
    assert len(inner.train(linear(), synthetic(val=None), torch.Generator())) == 2 * 3
    assert len(inner.train(linear(), task, torch.Generator(), steps=7)) == 7
    # Counted in updates (Omniglot): checks after updates 3, 6, 9; patience 2 stops after the third.
    by_steps = Inner(sgd(1e-12), steps=50, batch_size=32, patience=2, check_every=3)
    assert by_steps.fixed_steps is None and len(by_steps.train(linear(), task, torch.Generator())) == 9
    assert len(Inner(sgd(1e-12), steps=5, batch_size=32, patience=9).train(linear(), task, torch.Generator())) == 5
    with pytest.raises(ConfigError, match="check_every"):
        Inner(sgd(0.1), steps=5, batch_size=32, patience=1, check_every=0)


def test_adaptation_in_epochs_with_auc_over_the_whole_curve():
    task = synthetic(n=64, val=16)
    run_ = adapt(
        linear(),
        task,
        Inner(sgd(0.1), 1, 32),
        Adaptation(
            mode="early_stop", epochs=True, steps=1, max_steps=4, eval_every=1, patience=99, auc_all=True, stop_on="val"
        ),
        torch.Generator(),
    )
    assert run_["steps"] == 8 and run_["auc"] == pytest.approx(auc(run_["curve"]), abs=0.01)
    first = adapt(
        linear(),
        task,
        Inner(sgd(0.1), 1, 32),
        Adaptation(mode="early_stop", epochs=True, steps=1, max_steps=4, eval_every=1, patience=99, stop_on="val"),
        torch.Generator(),
    )
    assert first["auc"] == pytest.approx(auc(first["curve"][:2]), abs=0.01)  # default: the first `steps` only


def test_thin_keeps_short_curves_and_bins_long_ones():
    short = [0.5, 0.25]
    assert thin(short) == short
    long = list(np.linspace(1, 0, 2500))
    out = thin(long)
    assert len(out) == 834 and out[0] == pytest.approx(np.mean(long[:3]), abs=1e-4)
    assert np.mean(out[:-1]) == pytest.approx(np.mean(long[:2499]), abs=1e-3)


@needs_data
def test_training_from_scratch_learns_mnist():
    """The whole pipeline (loader, padding, normalization, head, inner loop) beats chance (90 %) by far."""
    data = MultiCV(str(DATA), heldout="mnist", datasets=["mnist", "notmnist"], max_train=1000, max_test=500)
    torch.manual_seed(0)
    model = MultiHeadConvNet(data.heads, filters=8)
    res = adapt(
        model,
        data.test[0],
        Inner(sgd(0.1), 1, 32),
        Adaptation(mode="early_stop", epochs=True, steps=1, max_steps=3, eval_every=1, patience=3, stop_on="val"),
        torch.Generator().manual_seed(0),
    )
    assert res["error"] < 30 and res["best_step"] > 0 and res["oracle_error"] <= res["error"]


# ----------------------------------------------------------------------------------------------- runs, Table 2
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not (DATA / "MNIST").is_dir():
        pytest.skip("needs the shared Multi-CV copies under LEAP_DATA_DIR")
    tmp = tmp_path_factory.mktemp("mcv")
    for method in METHODS:
        for heldout in ("cifar10", "mnist"):
            run(make_cfg(*SMOKE, f"method={method}", f"heldout={heldout}", tmp_path=tmp))
    run(make_cfg(*SMOKE, "method=leap", "heldout=mnist", "seed=1", tmp_path=tmp))
    run(make_cfg(*SMOKE, "method=leap", "heldout=mnist", "tag=-variant", "inner.optimizer.lr=0.05", tmp_path=tmp))
    return tmp / "runs"


@pytest.mark.data
def test_smoke_run_of_every_method(runs):
    for method in METHODS:
        d = runs / "multicv" / method / "smoke" / "cifar10-s0"
        s = json.loads((d / "summary.json").read_text())
        assert s["status"] == "finished" and s["cell"] == "cifar10" and s["test"]["tasks"] == ["cifar10"]
        assert s["num_pretrain"] == 3 and 0 <= s["test"]["error"] <= 100 and 0 <= s["test"]["auc"] <= 100
        assert (d / "init.pt").exists() and json.loads((d / "eval_test.json").read_text())["tasks"][0]["best_step"] >= 0


@pytest.mark.data
def test_table2_and_notebook(runs, tmp_path, monkeypatch):
    results = tmp_path / "results"
    (results / "paper").mkdir(parents=True)
    (results / "paper" / "table2.csv").write_text((ROOT / "results" / "paper" / "table2.csv").read_text())
    text = script(
        "scripts/make_table.py", "multicv", "--scale", "smoke", "--collect", str(runs), "--results", str(results)
    )
    base = results / "multicv" / "smoke"
    assert len(list(base.glob("runs/*/*/summary.json"))) == 7  # 3 methods x 2 held-out + seed 1; no tagged variant
    cells = pd.read_csv(base / "table2.csv").set_index(["heldout", "method"])
    leap = cells.loc[("mnist", "leap")]
    errors = [
        json.loads((base / "runs" / "leap" / f"mnist-s{s}" / "summary.json").read_text())["test"]["error"]
        for s in (0, 1)
    ]
    assert leap["test_error_mean"] == pytest.approx(np.mean(errors), abs=1e-3) and leap["n_seeds"] == 2
    assert leap["paper_test_error"] == 0.7 and cells.loc[("cifar10", "scratch"), "paper_auc"] == 23.0
    assert "| MNIST " in text and "(0.7)" in text and "[1]" in text  # a cell with fewer seeds is marked
    pairs = pd.read_csv(base / "table2_paired.csv")
    assert set(pairs["method"]) == {"finetune", "scratch"} and "The paper's claims on these runs" in text

    outputs = notebook_outputs("multicv_table2.ipynb", results, "smoke", monkeypatch)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("(0.7)" in o.get("data", {}).get("text/markdown", "") for o in outputs)
