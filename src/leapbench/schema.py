"""The config's schema: the type of every key, checked before a run touches anything.

Values live in the YAML files under ``conf/``; these dataclasses say what each key may hold. A node with a
``_target_`` is checked against the schema of that target (``TARGETS``), so a new method or benchmark brings
its own; a target this module does not know is left to its constructor. :func:`check_types` walks the
composed config and raises one :class:`ConfigError` for the first key whose value does not fit: it names the
key, the value and what is allowed, and for a misspelt key the closest names. Booleans take only ``true`` or
``false``, closed sets are ``Literal`` choices, integers refuse fractions and strings. Ranges and rules across
keys are checked where the objects are built (``checks.validate``), still before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, cast

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .data.multicv import DATASETS
from .data.omniglot import AUGMENTATIONS, RESAMPLING
from .errors import ConfigError
from .evaluation import MODES, STOP_ON

UNIONS = (Union, types.UnionType)  # Optional[X] and X | None


class Node:
    """A group checked against the schema of its ``_target_`` (``TARGETS``); an unknown target is not checked."""


@dataclass
class Optimizer:
    """A ``torch.optim`` class with ``_partial_: true`` (the model's parameters come later); its other keys are
    the class's own arguments (checked against its signature, not typed here)."""

    _target_: str
    _partial_: bool
    lr: float


@dataclass
class Paths:
    data: str
    runs: str
    cache: str


@dataclass
class Scale:
    name: str


@dataclass
class Logger:
    _target_: str
    _partial_: bool
    wandb: bool
    mode: Literal["offline", "online", "disabled", "shared", "dryrun", "run"]
    project: str
    entity: str | None
    group: str | None
    job_type: str | None
    tags: list[str] | None


@dataclass
class Train:
    meta_steps: int
    meta_batch_size: int
    val_every: int | None
    val_metric: Literal["error", "auc"]
    early_stopping: bool
    patience: int | None
    ckpt_every: int | None
    on_divergence: Literal["stop", "skip"]
    test_at: list[int]


@dataclass
class Run:
    """The top level, for every experiment."""

    experiment_name: Literal["omniglot", "multicv", "atari"]
    cell: str
    heldout: Literal[DATASETS] | None  # Multi-CV's held-out dataset
    seed: int
    tag: str
    overwrite: bool
    threads: int | None
    device: str  # cpu, cuda or cuda:N (checks.check_device)
    batched: bool  # the default of method.batched, val.batched and eval.batched (the groups' own keys decide)
    progress: bool
    paths: Paths
    run_name: str
    run_dir: str
    scale: Scale
    logger: Logger
    train: Train
    data: Node
    model: Node
    inner: Node
    method: Node
    val: Node
    eval: Node


# Benchmarks (data), models, learning processes and evaluations.


@dataclass
class Omniglot:
    _target_: str
    root: str
    num_pretrain: int
    split_seed: int
    legacy_split: bool
    num_test: int
    num_val: int
    num_classes: int
    num_heldout: int
    image_size: int
    augment: Literal[AUGMENTATIONS]
    resample: Literal[RESAMPLING]
    download: bool
    cache_dir: str | None


@dataclass
class MultiCV:
    _target_: str
    root: str
    heldout: Literal[DATASETS]
    datasets: list[Literal[DATASETS]]
    val_fraction: float
    max_train: int | None
    max_test: int | None
    split_seed: int
    download: bool


@dataclass
class AtariGames:
    _target_: str
    pool: list[str]  # ale-py ROM ids, checked against ale-py when the games are built
    heldout: list[str]
    pretrain: list[str] | None
    test: list[str]


@dataclass
class ConvNet:
    _target_: str
    in_channels: int
    num_classes: int
    filters: int
    layers: int
    image_size: int
    channels_last: bool


@dataclass
class MultiHeadConvNet:
    _target_: str
    in_channels: int
    filters: int
    layers: int
    image_size: int
    channels_last: bool


@dataclass
class ActorCritic:
    _target_: str
    in_channels: int
    channels_last: bool


@dataclass
class Inner:
    _target_: str
    optimizer: Optimizer
    steps: int
    batch_size: int
    epochs: bool
    patience: int | None
    check_every: int


@dataclass
class A2C:
    _target_: str
    optimizer: Optimizer
    updates: int
    num_envs: int
    unroll: int
    gamma: float
    entropy_cost: float
    value_cost: float
    reward_clip: float
    max_grad_norm: float | None
    env_threads: int
    episode_frames: int


@dataclass
class Adaptation:
    _target_: str
    mode: Literal[MODES]
    steps: int
    max_steps: int
    eval_every: int
    patience: int
    epochs: bool
    auc_all: bool
    stop_on: Literal[STOP_ON]
    val_per_class: int
    batched: bool


@dataclass
class Training:
    _target_: str
    frames: int
    window: int
    points: int


# Methods: every one has a name, and a label and colour for tables and figures (not passed to its class).


@dataclass
class Method:
    _target_: str
    name: str
    label: str
    color: str


@dataclass
class Leap(Method):
    norm: bool
    loss: bool
    stabilizer: bool
    scope: str | None
    batched: bool
    cuda_graphs: bool
    meta_optimizer: Optimizer


@dataclass
class Reptile(Method):
    last_step: bool
    scope: str | None
    batched: bool
    cuda_graphs: bool
    meta_optimizer: Optimizer


@dataclass
class FOMAML(Method):
    scope: str | None
    batched: bool
    cuda_graphs: bool
    meta_optimizer: Optimizer


@dataclass
class Finetune(Method):
    multi_head: bool


@dataclass
class Scratch(Method):
    pass


TARGETS: dict[str, type] = {
    "leapbench.data.omniglot.Omniglot": Omniglot,
    "leapbench.data.multicv.MultiCV": MultiCV,
    "leapbench.data.atari.AtariGames": AtariGames,
    "leapbench.models.ConvNet": ConvNet,
    "leapbench.models.MultiHeadConvNet": MultiHeadConvNet,
    "leapbench.rl.a2c.ActorCritic": ActorCritic,
    "leapbench.inner.Inner": Inner,
    "leapbench.rl.a2c.A2C": A2C,
    "leapbench.evaluation.Adaptation": Adaptation,
    "leapbench.rl.a2c.Training": Training,
    "leapbench.methods.leap.Leap": Leap,
    "leapbench.methods.reptile.Reptile": Reptile,
    "leapbench.methods.fomaml.FOMAML": FOMAML,
    "leapbench.methods.finetune.Finetune": Finetune,
    "leapbench.methods.scratch.Scratch": Scratch,
}


def check_types(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first key of ``cfg`` (the composed run config) that the schema refuses."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(omegaconf_message(e)) from None
    _check_targets(container, "")
    _check_node(container, Run, "")


def _check_targets(node: Any, path: str) -> None:
    """Every ``_target_`` names something importable (a misspelt class gets the closest names in its module)."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_targets(item, f"{path}[{i}]")
    if not isinstance(node, dict):
        return
    target = node.get("_target_")
    if isinstance(target, str):
        _locate(target, f"{path}._target_" if path else "_target_")
    for key, value in node.items():
        _check_targets(value, f"{path}.{key}" if path else str(key))


def _locate(target: str, where: str) -> None:
    parts = target.split(".")
    for i in range(len(parts), 0, -1):  # the longest prefix that imports, then attributes
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
            break
        except ModuleNotFoundError as e:
            if e.name is None or not f"{module}.".startswith(f"{e.name}."):  # it is there; one of its imports is not
                raise ConfigError(f"{where}={target}: importing {module} failed ({e}).") from None
    else:
        raise ConfigError(f"{where}={target}: no module {parts[0]} is installed; give an importable class.")
    for j, name in enumerate(parts[i:], start=i):
        if not hasattr(obj, name):
            close = difflib.get_close_matches(name, [n for n in dir(obj) if not n.startswith("_")], n=3)
            hint = f"; did you mean {' or '.join('.'.join([*parts[:j], c]) for c in close)}?" if close else "."
            raise ConfigError(f"{where}={target}: {'.'.join(parts[:j])} has no {name}{hint}")
        obj = getattr(obj, name)


def as_set(cfg: DictConfig, message: str) -> str:
    """``message`` naming the key the user sets: a refusal of ``model.image_size=0`` names ``data.image_size=0``
    where the YAML says ``model.image_size: ${data.image_size}`` (interpolations followed to their source)."""
    match = re.match(r"([\w.]+)=", message)
    if match is None:
        return message
    key, seen = match.group(1), set()
    while key not in seen:
        seen.add(key)
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        raw = (
            cast(dict, OmegaConf.to_container(node, resolve=False)).get(leaf) if isinstance(node, DictConfig) else None
        )
        source = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
        if source is None:
            break
        key = source.group(1)
    return key + message[len(match.group(1)) :]


def keys_at(container: dict, path: str) -> list[str]:
    """The keys the schema allows under the dotted ``path`` ("" for the top level) of a composed config,
    including those its YAML leaves out."""
    node, schema = container, Run
    for part in path.split(".") if path else []:
        kind = _fields(node, schema).get(part)
        node = node.get(part) if isinstance(node, dict) else None  # type: ignore[assignment]
        if typing.get_origin(kind) in UNIONS:  # X | None
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if kind is Node:
            kind = TARGETS.get(str(node.get("_target_"))) if isinstance(node, dict) else None
        schema = kind  # type: ignore[assignment]
    return list(_fields(node, schema))


def _fields(node: Any, schema: Any) -> dict[str, Any]:
    """The keys ``schema`` allows in ``node`` and their types; an optimizer's are its class's arguments."""
    if not dataclasses.is_dataclass(schema):
        return {}
    fields = typing.get_type_hints(schema)
    if schema is Optimizer:
        try:
            params = inspect.signature(get_class(node["_target_"])).parameters
        except Exception:  # not importable: building it will say so
            params = {}  # type: ignore[assignment]
        fields = {name: Any for name in params if name != "params"} | fields  # lr stays a number
    return fields


def _check_node(node: Any, schema: type, path: str) -> None:
    if not isinstance(node, dict):
        raise ConfigError(f"{path}={_show(node)} must be a group of keys ({schema.__name__}).")
    fields = _fields(node, schema)
    for key, value in node.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            raise ConfigError(no_such_key(path, key, sorted(fields)))
        _check_value(value, fields[key], where)
    removed = next((k for k, kind in fields.items() if kind is Node and k not in node), None)  # e.g. ~model
    if removed is not None:
        raise ConfigError(
            f"{path + '.' if path else ''}{removed} is missing: the experiment sets it; change its keys "
            f"({removed}.<key>=...) rather than removing it."
        )
    if schema is Optimizer:
        if "_target_" not in node:
            raise ConfigError(f"{path}._target_ is missing; name an optimizer class, e.g. torch.optim.SGD.")
        _check_optimizer_class(node["_target_"], path)


def _check_optimizer_class(target: str, path: str) -> None:
    """An optimizer is a ``torch.optim.Optimizer`` whose ``step()`` needs no closure (the loops call ``step()``)."""
    try:
        cls = get_class(target)
    except ValueError:  # importable (checked first) but not a class: a function, a module attribute
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"{path}._target_={target} is not a torch.optim.Optimizer; give one, e.g. torch.optim.SGD.")
    closure = inspect.signature(cls.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise ConfigError(
            f"{path}._target_={target} needs a closure in step(), which this suite's loops do not pass; "
            "choose an optimizer without one (torch.optim.SGD, Adam, RMSprop, ...)."
        )


def no_such_key(parent: str, name: str, keys: list[str]) -> str:
    """``parent.name: no such key; did you mean ...?`` (or the keys ``parent`` has)."""
    close = difflib.get_close_matches(name, keys, n=3, cutoff=0.6)
    hint = (
        f"did you mean {' or '.join(f'{parent}.{c}' if parent else c for c in close)}?"
        if close
        else f"{parent or 'the top level'} has {', '.join(keys)}."
    )
    return f"{parent + '.' if parent else ''}{name}: no such key; {hint}"


def omegaconf_message(e: OmegaConfBaseException) -> str:
    """An OmegaConf error in one line, with the key it is about."""
    return f"{e.full_key or 'config'}: {str(e.msg).splitlines()[0]}"


def _check_value(value: Any, kind: Any, where: str) -> None:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return
    if kind is Node:
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}={_show(value)} must be a group of keys (with a _target_); the experiment sets it: "
                f"change its keys ({where}.<key>=...) instead."
            )
        if value.get("_target_") not in TARGETS:
            return  # a target this suite does not know: its constructor checks its arguments
        return _check_node(value, TARGETS[value["_target_"]], where)
    if origin in UNIONS:  # X | None
        if value is None:
            return
        return _check_value(value, next(a for a in args if a is not type(None)), where)
    if value is None:
        raise ConfigError(f"{where}=null is not allowed; give {_describe(kind)}.")
    if dataclasses.is_dataclass(kind):
        return _check_node(value, kind, where)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"{where}={_show(value)} is not allowed; choose one of {', '.join(map(str, args))}{hint}."
            )
        return
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}={_show(value)} must be a list ({_describe(args[0])} each), e.g. {where}=[...].")
        for i, item in enumerate(value):
            _check_value(item, args[0], f"{where}[{i}]")
        return
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
    }[kind]  # tag=2 is a name
    if not ok(value):
        raise ConfigError(f"{where}={_show(value)} must be {_describe(kind)}.")


def _describe(kind: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(kind)))
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
