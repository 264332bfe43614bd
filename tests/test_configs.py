"""Every experiment x method x scale composes and instantiates; bad names and values fail clearly."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from conftest import FAKE, ROOT, make_cfg
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from leapbench import registry
from leapbench.checks import build, method_node, validate
from leapbench.errors import ConfigError
from leapbench.methods.base import MetaLearner
from leapbench.runner import run

EXPERIMENTS = ["omniglot"]
METHODS = list(registry.methods())  # every config in conf/method/
SCALES = ["paper", "small", "smoke", "budget"]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_config_composes_and_instantiates(experiment, method, scale, fake_root, tmp_path):
    cfg = make_cfg(
        f"experiment={experiment}", f"method={method}", f"scale={scale}", *FAKE, tmp_path=tmp_path, data_root=fake_root
    )
    assert cfg.method.name == method and cfg.scale.name == scale
    assert cfg.run_dir.endswith(f"{experiment}/{method}/{scale}/n2-s0")
    data = build(cfg.data)
    inner = build(cfg.inner)
    learner = build(method_node(cfg))
    assert isinstance(learner, MetaLearner)
    learner.setup(build(cfg.model), inner, len(data.pretrain))
    build(cfg.val), build(cfg.eval)
    logger = build(cfg.logger)(run_dir=tmp_path / "r", run_name="x", config={})
    logger.close()


REFUSED = {("multicv", "finetune_single"), ("atari", "finetune"), ("atari", "finetune_single")}


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("experiment", ["omniglot", "multicv", "atari"])
def test_schema_accepts_every_composed_config(experiment, scale):
    """The YAML values fit the schema (types, choices, ranges) for every experiment x method x scale; the pairs
    a method cannot run with are refused by what the method needs and the experiment offers."""
    for method in METHODS:
        cfg = make_cfg(f"experiment={experiment}", f"method={method}", f"scale={scale}")
        if (experiment, method) in REFUSED:
            with pytest.raises(ConfigError, match=f"method={method} needs"):
                validate(cfg)
        else:
            validate(cfg)


@pytest.mark.parametrize(
    "overrides",
    [
        ["inner.optimizer._target_=torch.optim.Adagrad", "+inner.optimizer.lr_decay=0.01"],  # any torch.optim argument
        ["+inner.optimizer.momentum=0.9", "+method.meta_optimizer.weight_decay=1e-4"],
        ["tag=2"],
        ["threads=1", "device=cpu", "data.split_seed=0", "train.test_at=[4,8]", "logger=wandb"],
        ["experiment=multicv", "heldout=svhn"],
        ["experiment=atari", "data.pretrain=[pong,qbert]"],
    ],
)
def test_schema_accepts_valid_overrides(overrides):
    validate(make_cfg(*overrides))


def test_wandb_groups_a_cells_seeds():
    """W&B groups the runs of one cell (experiment / method / scale / cell): its UI shows a cell's mean over seeds."""
    groups = {make_cfg("logger=wandb", "scale=small", f"seed={s}").logger.group for s in (0, 1)}
    assert groups == {"omniglot/leap/small/n20"}
    assert (
        make_cfg("logger=wandb", "experiment=multicv", "method=finetune", "tag=-x").logger.group
        == "multicv/finetune/paper/cifar10-x"
    )


def test_paper_hyperparameters():
    """The values Appendix D states, and the authors' code defaults where it is silent."""
    leap = make_cfg("method=leap")
    assert (leap.method.norm, leap.method.loss, leap.method.stabilizer) == (True, True, True)
    assert leap.method.meta_optimizer.lr == 0.1 and leap.inner.optimizer.lr == 0.1
    assert (leap.inner.steps, leap.inner.batch_size, leap.train.meta_batch_size, leap.train.meta_steps) == (
        100,
        20,
        20,
        1000,
    )
    assert make_cfg("method=reptile").method.meta_optimizer.lr == 0.01
    assert make_cfg("method=fomaml").method.meta_optimizer.lr == 0.1
    for m in ("finetune", "finetune_single"):
        assert make_cfg(f"method={m}").inner.optimizer.lr == 0.01
    paper = make_cfg("method=leap_paper")
    assert paper.method.norm is False and paper.method.meta_optimizer.lr == 0.2
    assert make_cfg("method=leap", "inner.optimizer.lr=0.05").inner.optimizer.lr == 0.05  # CLI wins


def test_omniglot_grids_have_table_1_rows():
    """The paper grid sweeps exactly Table 1's rows, methods and 10 seeds; the reduced grid a subset of the rows."""
    rows = [
        int(line.split(",")[0]) for line in (ROOT / "results" / "paper" / "table1.csv").read_text().splitlines()[1:]
    ]
    methods = (ROOT / "results" / "paper" / "table1.csv").read_text().splitlines()[0].split(",")[1:]

    def params(name):
        return OmegaConf.load(ROOT / "conf" / "sweep" / f"{name}.yaml").hydra.sweeper.params

    paper, small = params("omniglot_paper"), params("omniglot_small")
    assert [int(n) for n in str(paper["data.num_pretrain"]).split(",")] == rows
    assert sorted(paper.method.split(",")) == sorted(methods) and paper.seed == "range(10)"
    assert set(int(n) for n in str(small["data.num_pretrain"]).split(",")) < set(rows)


def test_seed_is_the_split_unless_fixed():
    assert make_cfg("seed=3").data.split_seed == 3
    assert make_cfg("seed=3", "data.split_seed=0").data.split_seed == 0  # one fixed split for every seed
    assert make_cfg("seed=3", "data.legacy_split=true").data.split_seed == 3  # the reference: the seed is the split


def test_validation_can_adapt_as_the_test_does():
    """``val='${eval}'`` makes meta-training's validation use the test's rule (docs/reproduction.md)."""
    cfg = make_cfg("val=${eval}", "eval.stop_on=val")
    assert cfg.val.mode == "early_stop" and cfg.val.stop_on == "val" and cfg.val.max_steps == cfg.eval.max_steps


def test_data_root_from_environment(monkeypatch):
    monkeypatch.setenv("LEAP_DATA_DIR", "/some/where")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        assert compose("config").data.root == "/some/where"


def test_unknown_group_option_is_an_error():
    with pytest.raises(MissingConfigException):
        make_cfg("method=leep")


def test_cli_unknown_method_names_the_options_in_one_line():
    out = subprocess.run([sys.executable, "run.py", "method=leep"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "method=leep: no such option" in out.stderr and "reptile" in out.stderr and "did you mean leap" in out.stderr


def test_unknown_target_is_an_error():
    with pytest.raises(ConfigError, match="leapbench.methods.nope"):
        build(make_cfg("method=leap", "method._target_=leapbench.methods.nope.Nope").method)


@pytest.mark.parametrize(
    "override, match",
    [
        ("inner.optimizer.lr=-0.1", "inner.optimizer.lr"),
        ("method.meta_optimizer.lr=0", "meta_optimizer.lr"),
        ("train.meta_batch_size=0", "meta_batch_size"),
        ("inner.steps=0", "inner.steps"),
        ("data.num_pretrain=3", "num_pretrain"),  # the fake tree has 2 pretraining alphabets
        ("data.augment=flip", "data.augment"),
        ("eval.mode=forever", "eval.mode=forever is not allowed"),
        ("eval.max_steps=2", "eval.max_steps=2 must be >= steps=5"),
        ("train.val_metric=loss", "val_metric"),
        ("device=tpu", "device=tpu is not allowed; choose cpu, cuda or cuda:N"),
        ("device=cuda:x", "device=cuda:x is not allowed"),
        pytest.param(
            "device=cuda",
            "sees no CUDA GPU; run with device=cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here"),
        ),
    ],
)
def test_bad_values_fail_before_any_work(override, match, fake_root, tmp_path):
    cfg = make_cfg("method=leap", "scale=smoke", *FAKE, override, tmp_path=tmp_path, data_root=fake_root)
    with pytest.raises(ConfigError, match=match):
        run(cfg)
    assert not (tmp_path / "runs").exists()  # nothing half-written


def cli(*args: str, fake_root, runs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "run.py",
            "scale=smoke",
            *FAKE,
            *args,
            f"paths.data={fake_root}",
            f"paths.runs={runs}",
            f"paths.cache={runs}/../cache",
            "progress=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_cli_bad_value_exits_2_with_message(fake_root, tmp_path):
    out = cli("inner.optimizer.lr=-1", fake_root=fake_root, runs=tmp_path / "runs")
    assert out.returncode == 2 and "inner.optimizer.lr=-1" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # Hydra makes no job folder, and paths.runs is not created


def test_cli_refused_config_leaves_a_finished_run_untouched(fake_root, tmp_path):
    """A different config aimed at a finished run's folder: exit 2, and not one byte of that folder changes
    (Hydra writes no .hydra/ or run.log there)."""
    runs = tmp_path / "runs"
    assert cli("method=leap", fake_root=fake_root, runs=runs).returncode == 0
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    assert any(p.name == "summary.json" for p in before) and not any(p.name == "run.log" for p in before)
    assert not any(".hydra" in p.parts for p in before)
    out = cli("method=leap", "method.meta_optimizer.lr=0.05", fake_root=fake_root, runs=runs)
    assert out.returncode == 2 and "different config" in out.stderr and "Traceback" not in out.stderr
    assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == before


def test_instantiate_uses_targets_only():
    """No string-to-class switch: the method class comes from its _target_."""
    cfg = make_cfg("method=reptile")
    assert type(build(method_node(cfg))).__name__ == "Reptile"


def test_meta_optimizer_is_any_torch_optimizer(fake_root, tmp_path):
    """Adam (Multi-CV's meta-optimizer) in place of SGD, from the command line alone."""
    cfg = make_cfg(
        "method=leap",
        "scale=smoke",
        *FAKE,
        "method.meta_optimizer._target_=torch.optim.Adam",
        "method.meta_optimizer.lr=0.01",
        tmp_path=tmp_path,
        data_root=fake_root,
    )
    learner = build(method_node(cfg))
    inner = build(cfg.inner)
    learner.setup(build(cfg.model), inner, 2)
    assert type(learner.meta_opt).__name__ == "Adam"
    assert run(cfg)["status"] == "finished"


def test_targets_are_located_before_anything_is_built(tmp_path, monkeypatch):
    """A class that is not there gets the closest names; a module whose own import fails is named with its cause."""
    (tmp_path / "brokmod.py").write_text("import not_a_real_dependency\n\nclass X: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = [
        ("leapbench.models.ConvNett", "leapbench.models has no ConvNett; did you mean leapbench.models.ConvNet?"),
        ("nosuch.Opt", "no module nosuch is installed"),
        ("brokmod.X", "importing brokmod.X failed (No module named 'not_a_real_dependency')"),
    ]
    for target, message in cases:
        cfg = make_cfg("scale=smoke", f"model._target_={target}", tmp_path=tmp_path)
        with pytest.raises(ConfigError, match=re.escape(f"model._target_={target}: {message}")):
            validate(cfg)
