"""Bad input through the real CLI, as a new user types it: every refusal is one short message that names the
key, exit code 2, no traceback, and nothing new under ``paths.runs`` (docs/reliability.md, Bad input)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, FAKE, ROOT

OMNIGLOT, MULTICV, ATARI = "experiment=omniglot", "experiment=multicv", "experiment=atari"
# (experiment, bad overrides, what the message must say)
CATALOGUE = [
    # wrong types
    (OMNIGLOT, ["seed=notanumber"], "seed=notanumber must be an integer"),
    (OMNIGLOT, ["train.meta_steps=abc"], "train.meta_steps=abc must be an integer"),
    (OMNIGLOT, ["train.meta_steps=2.5"], "train.meta_steps=2.5 must be an integer"),
    (OMNIGLOT, ["method.norm=maybe"], "method.norm=maybe must be true or false"),
    (OMNIGLOT, ["overwrite=1"], "overwrite=1 must be true or false"),
    (OMNIGLOT, ["threads=two"], "threads=two must be an integer"),
    (OMNIGLOT, ["inner.optimizer.lr=fast"], "inner.optimizer.lr=fast must be a number"),
    (OMNIGLOT, ["train.test_at=5"], "train.test_at=5 must be a list"),
    (ATARI, ["inner.updates=1.5"], "inner.updates=1.5 must be an integer"),
    (OMNIGLOT, ["seed=${nope}"], "seed: Interpolation key 'nope' not found"),
    (OMNIGLOT, ["paths.runs=${nope}"], "paths.runs: Interpolation key 'nope' not found"),
    # values outside a closed set
    (
        OMNIGLOT,
        ["eval.stop_on=vall"],
        "eval.stop_on=vall is not allowed; choose one of heldout, val (did you mean val?)",
    ),
    (OMNIGLOT, ["eval.mode=forever"], "eval.mode=forever is not allowed"),
    (OMNIGLOT, ["data.augment=rotate"], "data.augment=rotate is not allowed; choose one of reference, rotate36, none"),
    (OMNIGLOT, ["data.resample=bicubic"], "data.resample=bicubic is not allowed"),
    (OMNIGLOT, ["train.val_metric=loss"], "train.val_metric=loss is not allowed; choose one of error, auc"),
    (OMNIGLOT, ["train.on_divergence=ignore"], "train.on_divergence=ignore is not allowed; choose one of stop, skip"),
    (OMNIGLOT, ["logger=wandb", "logger.mode=sometimes"], "logger.mode=sometimes is not allowed"),
    (OMNIGLOT, ["device=tpu"], "device=tpu is not allowed; choose cpu, cuda or cuda:N"),
    # ranges and rules across keys
    (OMNIGLOT, ["inner.optimizer.lr=-1"], "inner.optimizer.lr=-1 must be a positive finite number"),
    (OMNIGLOT, ["inner.optimizer.lr=inf"], "inner.optimizer.lr=inf must be a positive finite number"),
    (OMNIGLOT, ["+inner.optimizer.momentum=-1"], "inner.optimizer.momentum=-1 (Invalid momentum value: -1"),
    (ATARI, ["inner.optimizer.eps=-1"], "(Invalid epsilon value: -1"),
    (
        OMNIGLOT,
        ["inner.optimizer._target_=torch.optim.Adam", "+inner.optimizer.betas=5"],
        "torch.optim.adam.Adam refused inner.optimizer.lr=",
    ),
    (OMNIGLOT, ["inner.optimizer._target_=torch.optim.LBFGS"], "torch.optim.LBFGS needs a closure in step()"),
    (
        MULTICV,
        ["method.meta_optimizer._target_=torch.optim.lr_scheduler.StepLR"],
        "method.meta_optimizer._target_=torch.optim.lr_scheduler.StepLR is not a torch.optim.Optimizer",
    ),
    (OMNIGLOT, ["train.patience=0"], "train.patience=0 must be at least 1"),
    (ATARI, ["inner.max_grad_norm=-1"], "inner.max_grad_norm=-1 must be a positive number"),
    (ATARI, ["inner.value_cost=-1"], "inner.value_cost=-1 must be a finite number >= 0"),
    (OMNIGLOT, ["data.image_size=2000"], "data.image_size=2000: Omniglot's images are 105x105; choose 1..105"),
    (OMNIGLOT, ["eval.eval_every=2000"], "eval.eval_every=2000 is more than max_steps"),
    (ATARI, ["train.val_every=1"], "train.val_every=1 but experiment=atari has no validation tasks"),
    (OMNIGLOT, ["data.num_val=0"], "train.val_every=2 but experiment=omniglot has no validation tasks"),
    (ATARI, ["data.pretrain=[]"], "method=leap needs pretraining tasks; name games in data.pretrain"),
    (MULTICV, ["data.datasets=[mnist,mnist,cifar10]"], "names mnist more than once; list each once"),
    (OMNIGLOT, ["seed=99999999999999999999"], "seed=99999999999999999999 must be in 0..2**32-1"),
    (OMNIGLOT, ["tag=a/b"], "tag=a/b becomes part of the run's folder name"),
    (OMNIGLOT, ["data.num_test=0"], "data.num_test=0 must be at least 1"),
    (OMNIGLOT, ["data.num_heldout=0"], "data.num_heldout=0 must be at least 1"),
    (MULTICV, ["data.max_test=0"], "data.max_test=0 must be at least 1"),
    (ATARI, ["data.test=[]"], "data.test lists no games"),
    (OMNIGLOT, ["train.meta_batch_size=0"], "train.meta_batch_size=0 must be at least 1"),
    (OMNIGLOT, ["eval.max_steps=2"], "eval.max_steps=2 must be >= steps=5"),
    (OMNIGLOT, ["inner.patience=0"], "inner.patience=0 must be at least 1"),
    (OMNIGLOT, ["threads=-1"], "threads=-1 must be at least 1"),
    (OMNIGLOT, ["model.filters=0"], "model.filters=0 must be at least 1"),
    (MULTICV, ["model.image_size=3"], "model.image_size=3 is too small for model.layers=4"),
    (OMNIGLOT, ["data.image_size=8"], "data.image_size=8 is too small for model.layers=4"),  # the key typed
    (OMNIGLOT, ["data.num_classes=999"], "data.num_classes=999 is more characters than any alphabet has"),
    (OMNIGLOT, ["data.num_test=40"], "data.num_test=40 + data.num_val=1 leave no alphabets for pretraining"),
    (MULTICV, ["heldout=null"], "heldout=null is not allowed"),
    (OMNIGLOT, ["eval.stop_on=val", "eval.val_per_class=99"], "eval.val_per_class=99 must leave a training image"),
    (
        OMNIGLOT,
        ["val.mode=early_stop", "+val.stop_on=val", "+val.val_per_class=99"],
        "val.val_per_class=99 must leave a training image",
    ),
    (OMNIGLOT, ["model._target_=leapbench.models.ConvNett"], "leapbench.models has no ConvNett; did you mean"),
    (ATARI, ["inner.optimizer._target_=nosuch.Opt"], "inner.optimizer._target_=nosuch.Opt: no module nosuch"),
    (OMNIGLOT, ["train.test_at=[999]"], "train.test_at=[999] holds 999"),
    (OMNIGLOT, ["data.num_pretrain=99"], "data.num_pretrain=99 is out of range"),
    (ATARI, ["inner.gamma=2"], "inner.gamma=2 must be in [0, 1]"),
    (ATARI, ["eval.frames=0"], "eval.frames=0 must be at least 1"),
    (MULTICV, ["data.val_fraction=1.5"], "data.val_fraction=1.5 must lie strictly between 0 and 1"),
    # groups replaced or removed
    (OMNIGLOT, ["model=null"], "model=null must be a group of keys"),
    (OMNIGLOT, ["eval=5"], "eval=5 must be a group of keys"),
    (OMNIGLOT, ["~model"], "model is missing: the experiment sets it"),
    (OMNIGLOT, ["model._target_=torch.nn.Linear"], "model._target_=torch.nn.Linear: building it failed (TypeError"),
    (OMNIGLOT, ["preset=atari_smoke"], "preset=atari_smoke is not a preset of experiment=omniglot"),
    # misspelt keys and options
    (OMNIGLOT, ["train.meta_stepz=3"], "train.meta_stepz: no such key; did you mean train.meta_steps"),
    (OMNIGLOT, ["+train.meta_stepz=3"], "train.meta_stepz: no such key; did you mean train.meta_steps"),
    (OMNIGLOT, ["+seed=3"], "+seed=3: seed exists already; drop the +"),
    (
        OMNIGLOT,
        ["inner.optimizer.momentu=0.9"],
        "inner.optimizer.momentu: no such key; did you mean inner.optimizer.momentum?",
    ),
    (OMNIGLOT, ["inner.optimizer.momentum=0.9"], "write +inner.optimizer.momentum=0.9 to set it"),
    (OMNIGLOT, ["seed=1,2"], "seed=1,2 lists several values; add -m"),
    (OMNIGLOT, ["method=leep"], "method=leep: no such option; choose one of"),
    (OMNIGLOT, ["scale=huge"], "scale=huge: no such option; choose one of budget, paper, small, smoke"),
    (OMNIGLOT, ["experiment=omniglott"], "experiment=omniglott: no such option"),
    (OMNIGLOT, ["seed=["], "cannot read 'seed=['"),
    (OMNIGLOT, ["preset=omniglot_smol"], "preset=omniglot_smol: no such option"),  # an optional group: not skipped
    # impossible method x experiment pairs
    (OMNIGLOT, ["method.scope=nosuch"], "method.scope='nosuch' selects no parameters of the model"),
    (OMNIGLOT, ["inner.batch_size=100000"], "inner.batch_size=100000 is larger than task"),
    (OMNIGLOT, ["model.in_channels=3"], "model.in_channels=3 but the images have 1 channel(s)"),
    (MULTICV, ["method=finetune_single"], "method=finetune_single needs tasks that share one output layer"),
    (ATARI, ["method=finetune"], "method=finetune needs labelled training batches"),
    (
        OMNIGLOT,
        ["method.batched=true", "inner.patience=5"],
        "method=leap with method.batched=true needs every task to train for exactly inner.steps updates",
    ),
    (
        OMNIGLOT,
        ["method.batched=true", "train.on_divergence=skip"],
        "method.batched=true does not support train.on_divergence=skip",
    ),
    (MULTICV, ["eval.batched=true"], "eval.batched=true counts updates, but this adaptation counts epochs"),
    (
        OMNIGLOT,
        ["val.batched=true", "+inner.optimizer.momentum=0.9"],
        "val.batched=true adapts tasks side by side on one shared head with plain SGD",
    ),
    (OMNIGLOT, ["eval.batched=yes"], "eval.batched=yes must be true or false"),
    (OMNIGLOT, ["method.cuda_graphs=1"], "method.cuda_graphs=1 must be true or false"),
    # unknown games and datasets, missing data
    (ATARI, ["data.test=[pong,pongg]"], "data.test: unknown Atari game 'pongg'"),
    (ATARI, ["data.heldout=[SpaceInvaders]"], "data.heldout: unknown Atari game 'SpaceInvaders'"),
    (MULTICV, ["heldout=cifar11"], "heldout=cifar11 is not allowed"),
    (MULTICV, ["data.datasets=[mnist,svhm]"], "data.datasets[1]=svhm is not allowed"),
    (MULTICV, ["paths.data=EMPTY", "data.download=false"], "not found under data.root="),
]


def cli(
    experiment: str, *args: str, runs: Path, fake_root: Path, env: dict | None = None
) -> subprocess.CompletedProcess:
    data = [*FAKE, f"paths.data={fake_root}"] if experiment == OMNIGLOT else [f"paths.data={DATA}"]
    return subprocess.run(
        [
            sys.executable,
            "run.py",
            *(["-m"] if "-m" in args else []),  # Hydra's flag before the overrides
            experiment,
            "scale=smoke",
            *data,
            f"paths.runs={runs}",
            f"paths.cache={runs.parent / 'cache'}",
            "progress=false",
            *(a for a in args if a != "-m"),  # last: an input may override the paths too
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )


def refused(out: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2 with one short message (a missing dataset also lists its missing files) that says ``message``."""
    assert out.returncode == 2, out.stderr[-2000:]
    assert not re.search("Traceback|search path|Warning", out.stderr), out.stderr
    assert out.stderr.startswith("error: ") and len(out.stderr.splitlines()) <= 5, out.stderr
    assert message in out.stderr, out.stderr


@pytest.mark.data
@pytest.mark.parametrize("experiment, overrides, message", CATALOGUE, ids=[" ".join(c[1]) for c in CATALOGUE])
def test_bad_input_is_refused_in_one_message(experiment, overrides, message, fake_root, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "earlier.txt").write_text("an earlier result")
    empty = tmp_path / "empty"
    empty.mkdir()
    overrides = [o.replace("EMPTY", str(empty)) for o in overrides]
    refused(cli(experiment, *overrides, runs=runs, fake_root=fake_root), message)
    assert sorted(p.name for p in runs.rglob("*")) == ["earlier.txt"]  # nothing new, nothing lost


def test_the_catalogue_is_at_least_25_inputs_across_the_three_experiments():
    assert len(CATALOGUE) >= 25 and {c[0] for c in CATALOGUE} == {OMNIGLOT, MULTICV, ATARI}


def test_a_missing_runs_folder_is_not_created_by_a_refusal(fake_root, tmp_path):
    refused(cli(OMNIGLOT, "seed=x", runs=tmp_path / "new" / "runs", fake_root=fake_root), "seed=x")
    assert not (tmp_path / "new").exists()


def test_bad_value_aimed_at_a_finished_run_names_the_value_and_changes_nothing(fake_root, tmp_path):
    """The bad value is named (not "holds a finished run with a different config"); the folder keeps every byte."""
    runs = tmp_path / "runs"
    assert cli(OMNIGLOT, "method=scratch", runs=runs, fake_root=fake_root).returncode == 0
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    for bad, message in (
        (["inner.optimizer.lr=-1"], "inner.optimizer.lr=-1 must be a positive finite number"),
        (["eval.stop_on=vall"], "eval.stop_on=vall is not allowed"),
        (["eval.patience=0"], "eval.patience=0 must be at least 1"),
        (["inner.batch_size=100000"], "inner.batch_size=100000 is larger than task"),  # a check that needs the data
        (["overwrite=true", "data.num_heldout=0"], "data.num_heldout=0 must be at least 1"),  # nothing removed first
        (["overwrite=true", "inner.batch_size=100000"], "inner.batch_size=100000 is larger than task"),
    ):
        refused(cli(OMNIGLOT, "method=scratch", *bad, runs=runs, fake_root=fake_root), message)
    assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == before


def test_a_multirun_reports_the_bad_job_and_runs_the_others(fake_root, tmp_path):
    runs = tmp_path / "runs"
    out = subprocess.run(
        [
            sys.executable,
            "run.py",
            "-m",
            "method=scratch",
            "seed=abc,1",
            "scale=smoke",
            *FAKE,
            f"paths.data={fake_root}",
            f"paths.runs={runs}",
            f"paths.cache={tmp_path / 'cache'}",
            "progress=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert re.search(r"error: \[method=scratch seed=abc .*\] seed=abc must be an integer", out.stderr)  # the job's line
    assert "failed: seed=abc must be an integer." in out.stderr  # Hydra's last line
    assert [p.parent.name for p in runs.rglob("summary.json")] == ["n2-s1"]  # the good job ran
    assert (runs / "multirun.yaml").is_file()  # the sweeper's record of the sweep that wrote there


def test_a_multirun_of_refused_jobs_leaves_the_runs_folder_as_it_was(fake_root, tmp_path):
    """Hydra's sweeper writes multirun.yaml before any job starts; when every job is refused it is undone."""

    def sweep(runs: Path, *args: str) -> subprocess.CompletedProcess:
        out = cli(
            OMNIGLOT, "-m", "method=scratch", *args, f"paths.cache={tmp_path / 'cache'}", runs=runs, fake_root=fake_root
        )
        assert "Traceback" not in out.stderr, out.stderr
        return out

    def state(runs: Path) -> dict:
        return {p: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns) for p in runs.rglob("*")}

    assert sweep(tmp_path / "new" / "runs", "launcher=joblib", "seed=x,y").returncode == 2  # jobs in workers
    assert not (tmp_path / "new").exists()
    runs = tmp_path / "runs"
    assert sweep(runs, "seed=1").returncode == 0
    before = state(runs)
    out = sweep(runs, "train.patience=0,-1")
    assert out.returncode == 2 and "error: [" in out.stderr and "train.patience=-1 must be at least 1" in out.stderr
    assert state(runs) == before  # the earlier sweep's multirun.yaml is back, byte for byte


def test_a_misspelt_sweep_value_is_refused_before_any_job_runs(fake_root, tmp_path):
    out = subprocess.run(
        [sys.executable, "run.py", "-m", "method=scratch,leep", "scale=smoke", f"paths.runs={tmp_path / 'runs'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    refused(out, "method=leep: no such option")
    assert not (tmp_path / "runs").exists()


def test_help_is_the_suites_own_page():
    out = subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for text in (
        "Leap",
        "python run.py experiment=omniglot method=leap scale=small",
        "+sweep=omniglot_small",
        "torchrun",
        "device=cuda",
        "method: finetune, finetune_single, fomaml, leap",
        "docs/reproduction.md",
    ):
        assert text in out.stdout, text


@pytest.mark.skipif(shutil.which("srun") is not None, reason="SLURM is installed here")
def test_a_slurm_sweep_without_slurm_is_refused_before_anything_is_written(fake_root, tmp_path):
    out = cli(OMNIGLOT, "-m", "launcher=slurm", "seed=0,1", runs=tmp_path / "runs", fake_root=fake_root)
    refused(out, "launcher=slurm submits jobs through SLURM (sbatch, srun), which this machine does not have")
    assert not (tmp_path / "runs").exists()


def test_world_size_without_torchrun_is_refused(fake_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK"))}
    env |= {"WORLD_SIZE": "2", "RANK": "0"}
    out = cli(OMNIGLOT, runs=tmp_path / "runs", fake_root=fake_root, env=env)
    refused(out, "WORLD_SIZE=2 is set but MASTER_ADDR, MASTER_PORT not: start several processes with torchrun")
    assert not (tmp_path / "runs").exists()
