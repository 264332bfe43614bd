"""The command line: ``python run.py experiment=omniglot method=leap [scale=small] [key=value ...]``, or the
installed console command ``leapbench experiment=omniglot method=leap``; both call :func:`cli`.

Task-parallel: ``torchrun --nproc_per_node=N run.py ...`` runs the same experiment on N processes.

The only module that talks to Hydra's command line: it composes the config (from ``registry.CONF``, the
checkout's ``conf/`` or the copy packaged in the wheel) and hands it to ``leapbench.runner.run``.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import cast

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import distributed, rundir, schema
from .errors import LeapError
from .registry import CONF
from .runner import run


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> None:
    overrides = cast(list, OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False))
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        s = run(cfg, overrides=overrides)
        if distributed.is_main():
            scores = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in s["test"].items() if isinstance(v, float))
            print(
                f"[leapbench] {s['method']}: test {scores} on {len(s['test']['tasks'])} test tasks "
                f"-> {cfg.run_dir}/summary.json"
            )
    except (LeapError, OmegaConfBaseException) as e:  # a refused config, missing data, a diverged run, a bad write
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = schema.as_set(cfg, str(e)) if isinstance(e, LeapError) else schema.omegaconf_message(e)
        print(f"error: {'[' + ' '.join(overrides) + '] ' if multirun else ''}{message}", file=sys.stderr)
        if multirun:  # the launcher records the job as failed and goes on with the others
            raise JobFailed(f"job [{' '.join(overrides)}] failed: {message}") from None
        sys.exit(2)


class JobFailed(CompactHydraException):
    """A multirun job stopped by a LeapError: Hydra reports only this line, and the sweep exits 2."""

    seen = False

    def __init__(self, *args) -> None:  # also runs where a launcher unpickles a job's result
        super().__init__(*args)
        JobFailed.seen = True


def preflight(args: list[str]) -> None:
    """Compose the command once before Hydra does, so that a misspelt key or group option costs one line
    (exit 2) instead of Hydra's report and search path. In a multirun each swept group option is composed once.
    Hydra's own flags (--help, --cfg, ...) and ``HYDRA_FULL_ERROR=1`` (the full story) skip this."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(
        a.startswith("-") and a not in ("-m", "--multirun") for a in args
    ):
        return
    overrides = [a for a in args if not a.startswith("-")]
    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_override(o)
        except HydraException as e:
            fail(
                f"cannot read {o!r} ({str(e).strip().splitlines()[0]}); write key=value, e.g. seed=1 or "
                "train.test_at=[16,40]."
            )
    parsed = parser.parse_overrides(overrides)
    try:  # each swept value as an override of its own (glob() and interval() sweeps cannot be listed here)
        values = [
            [str(o.input_line)]
            if not o.is_sweep_override()
            else [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
            for o in parsed
        ]
    except (HydraException, ValueError):
        return
    for override, vs in zip(parsed, values):
        group = override.key_or_group
        if group in OPTIONAL_GROUPS:  # Hydra skips a missing option of an optional group without a word
            for name in (v.partition("=")[2] for v in vs):
                if name != "null" and not (CONF / group / f"{name}.yaml").is_file():
                    fail(explain(f"{group}={name}", OmegaConf.create(), ValueError()))
    sweep = next((o.input_line for o in parsed if o.is_sweep_override()), None)
    first = [str(v[0]) for v in values]
    jobs: list[list[str]] = [first] + [
        [*first[:i], v, *first[i + 1 :]]
        for i, (o, vs) in enumerate(zip(parsed, values))
        if (CONF / o.key_or_group).is_dir()
        for v in vs[1:]
    ]  # only a group's options can fail here
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for job in jobs:
            problem = composition_problem(job) or preset_problem(job)
            if problem:
                fail(problem)
        if (
            sweep
            and not multirun
            and compose("config", overrides=first, return_hydra_config=True).hydra.mode != RunMode.MULTIRUN
        ):  # a sweep config (+sweep=...) sets the mode itself
            fail(f"{sweep} lists several values; add -m to sweep over them.")


OPTIONAL_GROUPS = ("preset", "method_setting")  # chosen by experiment, scale and method (conf/config.yaml)
COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, ValueError)


def composition_problem(overrides: list[str]) -> str | None:
    """None if ``overrides`` compose; else one line naming the override at fault and the closest valid names."""
    try:
        compose("config", overrides=overrides)
        return None
    except COMPOSE_ERRORS as e:
        error = e
    for i in range(len(overrides)):  # the first override that breaks it, and the config just before it
        try:
            compose("config", overrides=overrides[: i + 1])
        except COMPOSE_ERRORS as e:
            return explain(overrides[i], compose("config", overrides=overrides[:i]), e)
    return str(error).strip().splitlines()[0]


def preset_problem(overrides: list[str]) -> str | None:
    """A preset (``<experiment>_<scale>``) named for another experiment than the one composed, else None."""
    chosen = [o.partition("=")[2].strip("'\"") for o in overrides if o.lstrip("+").partition("=")[0] == "preset"]
    if not chosen or chosen[-1] in ("", "null"):
        return None
    experiment = compose("config", overrides=overrides).experiment_name
    if chosen[-1].startswith(f"{experiment}_"):
        return None
    mine = sorted(p.stem for p in (CONF / "preset").glob(f"{experiment}_*.yaml"))
    return (
        f"preset={chosen[-1]} is not a preset of experiment={experiment}; choose one of {', '.join(mine)} "
        "(or scale=<name>, which picks preset <experiment>_<name>)."
    )


def explain(override: str, base: DictConfig, error: Exception) -> str:
    key, _, value = override.lstrip("+~").partition("=")
    if override.startswith("~") or key.startswith("hydra"):  # deletions, Hydra's own groups and keys
        return f"{override}: {str(error).strip().splitlines()[0]}"
    group = CONF / key
    if group.is_dir():
        options = sorted(p.stem for p in group.glob("*.yaml"))
        close = difflib.get_close_matches(value, options, n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return f"{key}={value}: no such option; choose one of {', '.join(options)}{hint}."
    container = cast(dict, OmegaConf.to_container(base, resolve=False))
    keys = list(dotted_keys(container))
    if key in keys and override.startswith("+") and not override.startswith("++"):
        return f"{override}: {key} exists already; drop the + to change it."
    parent, _, name = key.rpartition(".")
    known = schema.keys_at(container, parent)
    if name in known:  # a key the schema knows that this config's YAML leaves out
        return f"{key}: not set in this config; write +{override} to set it."
    siblings = sorted(set(known) | {k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent})
    return schema.no_such_key(parent, name, siblings)


def dotted_keys(node, prefix: str = ""):
    for k, v in node.items() if isinstance(node, dict) else ():
        yield prefix + str(k)
        yield from dotted_keys(v, f"{prefix}{k}.")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def cli() -> None:
    """``python run.py ...`` and ``leapbench ...``: refuse a bad command in one line, else run it with Hydra."""
    preflight(sys.argv[1:])
    try:
        main()
    except SystemExit as e:
        if e.code:
            rundir.restore_sweep_folder()  # a multirun whose every job was refused leaves paths.runs as it was
        sys.exit(2 if JobFailed.seen and e.code == 1 else e.code)
