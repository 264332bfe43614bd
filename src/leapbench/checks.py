"""From config to objects, and every check before a run writes anything.

``validate(cfg)`` needs no data: the device, the schema's types and choices (``schema.check_types``), ranges (here
and in the constructors it calls) and the method x experiment pair. ``check_data(cfg, data)`` needs the tasks.
The runner calls both before it creates a run folder, a lock or ``config.yaml``.
"""

from __future__ import annotations

import os
import re
from typing import Any, cast

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from . import schema
from .errors import ConfigError, LeapError
from .evaluation import Adaptation, check_val_per_class
from .lockstep import check_stackable
from .loop import test_schedule
from .protocols import Benchmark
from .rundir import PRESENTATION_KEYS
from .tasks import Task

__all__ = ["MODEL_STUBS", "NEEDS", "build", "check_data", "check_device", "method_node", "validate"]

# What a model gets from its benchmark (``data.model_kwargs``), stubbed to check the model's own keys early.
MODEL_STUBS = {
    "leapbench.models.MultiHeadConvNet": {"heads": {"stub": 2}},
    "leapbench.rl.a2c.ActorCritic": {"heads": {"stub": 2}},
}
# What a method may need (``MetaLearner.requires``) and a learning process or benchmark may offer (``provides``).
NEEDS = {
    "labels": "labelled training batches (a supervised learning process)",
    "shared_head": "tasks that share one output layer",
    "fixed_length": "every task to train for exactly inner.steps updates (no inner.epochs, no inner.patience)",
    "plain_sgd": "a plain SGD inner optimizer (no momentum or weight decay)",
}


def build(node: DictConfig, key: str = "config", **kwargs):
    """``hydra.utils.instantiate`` that surfaces our own errors instead of Hydra's wrapper; ``key`` (the group,
    e.g. ``model``) names the node in any other failure."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, LeapError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        why = e.__cause__ or e  # the target's own error, in one line
        first = (str(why).splitlines() or [""])[0]
        raise ConfigError(
            f"{key}._target_={node.get('_target_')}: building it failed ({type(why).__name__}"
            + (f": {first})." if first else ").")
        ) from e


def check(cfg: DictConfig) -> None:
    t = cfg.train
    for key in ("seed", "data.split_seed"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, int) and not 0 <= value < 2**32:
            raise ConfigError(f"{key}={value} must be in 0..2**32-1.")
    if not str(cfg.paths.runs).strip():
        raise ConfigError("paths.runs is empty; name the folder for run directories (default: ./runs).")
    if not re.fullmatch(r"[\w.,=+-]*", str(cfg.tag)):
        raise ConfigError(
            f"tag={cfg.tag} becomes part of the run's folder name; use letters, digits and . , = + - _ only."
        )
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads={cfg.threads} must be at least 1 (or null: PyTorch's default).")
    if t.meta_steps < 0:
        raise ConfigError(f"train.meta_steps={t.meta_steps} must be >= 0.")
    if t.meta_batch_size < 1:
        raise ConfigError(f"train.meta_batch_size={t.meta_batch_size} must be at least 1.")
    if t.val_every is not None and t.val_every < 1:
        raise ConfigError(f"train.val_every={t.val_every} must be at least 1 (or null to never validate).")
    if t.patience is not None and t.patience < 1:
        raise ConfigError(f"train.patience={t.patience} must be at least 1 (or null: never stop early).")
    if t.ckpt_every is not None and t.ckpt_every < 1:
        raise ConfigError(f"train.ckpt_every={t.ckpt_every} must be at least 1 (or null for no checkpoints).")
    for s in test_schedule(cfg):
        if not 1 <= s <= t.meta_steps:
            raise ConfigError(
                f"train.test_at={list(t.test_at)} holds {s}; every entry must be a meta-step in "
                f"1..train.meta_steps={t.meta_steps}."
            )


def validate(cfg: DictConfig) -> tuple:
    """Every check that needs no data, before anything is written: the device, the schema's types and choices
    (``schema.check_types``), ranges (here and in the constructors) and the method x experiment pair.
    Returns the learning process, the method and the validation and test adaptations, built."""
    check_device(str(cfg.device))
    schema.check_types(cfg)
    check(cfg)
    inner, learner = build(cfg.inner, "inner"), build(method_node(cfg), "method")
    build(cfg.model, "model", **MODEL_STUBS.get(cfg.model._target_, {}))  # its ranges (the real one waits for data)
    test_adapt, val_adapt = (build_adaptation(cfg, group) for group in ("eval", "val"))
    if cfg.device != "cpu" and inner.cpu_only:
        raise ConfigError(f"experiment={cfg.experiment_name} runs on the CPU only; use device=cpu.")
    offered = inner.provides | cast(Benchmark, get_class(cfg.data._target_)).provides
    missing = sorted(learner.requires - offered)
    if missing:
        how, fix = (
            (" with method.batched=true", "set method.batched=false")
            if learner.batched
            else ("", "choose another method (README, Methods)")
        )
        raise ConfigError(
            f"method={learner.name}{how} needs {NEEDS[missing[0]]}, which experiment="
            f"{cfg.experiment_name} does not offer with this config; {fix}."
        )
    for group, adapt in (("eval", test_adapt), ("val", val_adapt)):
        if adapt.batched and not {"shared_head", "plain_sgd"} <= offered:
            raise ConfigError(
                f"{group}.batched=true adapts tasks side by side on one shared head with plain SGD, which "
                f"experiment={cfg.experiment_name} does not offer with this config; set {group}.batched=false."
            )
    if learner.batched and cfg.train.on_divergence == "skip":
        raise ConfigError("method.batched=true does not support train.on_divergence=skip; use one or the other.")
    return inner, learner, val_adapt, test_adapt


def check_data(cfg: DictConfig, data: Benchmark, learner: Any, adaptations: dict[str, Any]) -> None:
    """The checks that need the tasks: something to test, batches the training sets can fill, labels the model
    can output, validation images to take, tasks that stack side by side. Still before anything is written.
    ``adaptations``: the built ``val`` and ``eval`` adaptations."""
    if not data.test:
        raise ConfigError(f"experiment={cfg.experiment_name} has no test tasks with this config; name at least one.")
    if cfg.train.val_every is not None and not data.val and learner.trains:  # no pretraining validates nothing
        raise ConfigError(
            f"train.val_every={cfg.train.val_every} but experiment={cfg.experiment_name} has no validation tasks "
            "with this config; set train.val_every=null."
        )
    tasks = [t for t in [*data.pretrain, *data.val, *data.test] if isinstance(t, Task)]
    size = cfg.inner.get("batch_size")
    small = min(tasks, key=lambda t: len(t.y_train), default=None)
    if size is not None and small is not None and size > len(small.y_train):
        raise ConfigError(
            f"inner.batch_size={size} is larger than task {small.name}'s {len(small.y_train)} training images; "
            f"choose 1..{len(small.y_train)}."
        )
    channels = cfg.model.get("in_channels")
    if channels is not None and tasks and tasks[0].x_train.dim() == 4 and tasks[0].x_train.shape[1] != channels:
        raise ConfigError(
            f"model.in_channels={channels} but the images have {tasks[0].x_train.shape[1]} channel(s); "
            f"set model.in_channels={tasks[0].x_train.shape[1]}."
        )
    pretrain = [t for t in data.pretrain if isinstance(t, Task)]
    if learner.batched and pretrain:
        check_stackable(pretrain, "method.batched")
    used = {"eval": data.test, "val": data.val if cfg.train.val_every is not None else []}
    for group, own in ((g, [t for t in ts if isinstance(t, Task)]) for g, ts in used.items()):
        adapt = adaptations[group]
        if own and adapt.batched:
            check_stackable(own, f"{group}.batched")
        if isinstance(adapt, Adaptation) and adapt.mode == "early_stop" and adapt.stop_on == "val":
            for t in own:
                if t.x_val is None:  # its validation images come from its training images
                    check_val_per_class(t, adapt.val_per_class, f"{group}.val_per_class")
    outputs = cfg.model.get("num_classes")
    labels = max((int(t.y_train.max()) + 1 for t in tasks if t.head is None and len(t.y_train)), default=0)
    if outputs is not None and labels > outputs:
        raise ConfigError(
            f"model.num_classes={outputs} is smaller than the tasks' {labels} classes; set model.num_classes={labels}."
        )


def method_node(cfg: DictConfig) -> DictConfig:
    """``cfg.method`` without its presentation keys (label, colour): what the method's class is built from."""
    node = cast(dict, OmegaConf.to_container(cfg.method, resolve=True))  # resolved here: the copy has no parent config
    return OmegaConf.create({k: v for k, v in node.items() if k not in PRESENTATION_KEYS})


def build_adaptation(cfg: DictConfig, group: str):
    """``build(cfg.eval)`` or ``build(cfg.val)``, with the group named in a refusal (the class serves both)."""
    try:
        return build(cfg[group], group)
    except ConfigError as e:
        raise ConfigError(f"{group}.{e}" if re.match(r"\w+=", str(e)) else str(e)) from None


def check_device(name: str) -> int | None:
    """The GPU index that ``device`` names (None for the CPU); a ConfigError if it is malformed or not there."""
    if name == "cpu":
        return None
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"device={name} is not allowed; choose cpu, cuda or cuda:N.")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={name} but PyTorch sees no CUDA GPU; run with device=cpu, or install a CUDA "
            "build of PyTorch on a machine with a GPU."
        )
    index = int(os.environ.get("LOCAL_RANK", "0")) if name == "cuda" else int(name.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={name} asks for GPU {index}, but only {torch.cuda.device_count()} are visible.")
    return index
