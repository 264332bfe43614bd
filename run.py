"""Entry point: ``python run.py experiment=omniglot method=leap [scale=small] [key=value ...]``.

Task-parallel: ``torchrun --nproc_per_node=N run.py ...`` runs the same experiment on N processes.

The only module that talks to Hydra: it composes the config and hands it to ``leapbench.runner.run``.
"""
import difflib
import os
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from leapbench import distributed
from leapbench.errors import LeapError
from leapbench.runner import run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        s = run(cfg, overrides=list(HydraConfig.get().overrides.task))
        if distributed.is_main():
            scores = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in s["test"].items() if isinstance(v, float))
            print(f"[leapbench] {s['method']}: test {scores} on {len(s['test']['tasks'])} test tasks "
                  f"-> {cfg.run_dir}/summary.json")
    except LeapError as e:  # a refused config, missing data, a diverged run, a failed write: one message
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # the launcher records the job as failed, runs the others
            raise JobFailed(f"job {' '.join(HydraConfig.get().overrides.task)} failed (error: above); "
                            "the sweep's other jobs ran.") from None
        sys.exit(2)


class JobFailed(CompactHydraException):
    """A multirun job stopped by a LeapError: Hydra reports only this line, and the sweep exits 2."""

    seen = False

    def __init__(self, *args) -> None:  # also runs where a launcher unpickles a job's result
        super().__init__(*args)
        JobFailed.seen = True


CONF = Path(__file__).resolve().parent / "conf"


def preflight(args: list[str]) -> None:
    """Compose the command's configs once before Hydra does, so that a misspelt key or group option costs one
    line (exit 2) instead of Hydra's report and search path. In a multirun every swept value is composed once.
    Hydra's own flags (--help, --cfg, ...) and ``HYDRA_FULL_ERROR=1`` (the full story) skip this."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a.startswith("-") and a not in ("-m", "--multirun")
                                                        for a in args):
        return
    overrides = [a for a in args if not a.startswith("-")]
    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_override(o)
        except HydraException as e:
            fail(f"cannot read {o!r} ({str(e).strip().splitlines()[0]}); write key=value, e.g. seed=1 or "
                 "train.test_at=[16,40].")
    parsed = parser.parse_overrides(overrides)
    first = [o.input_line if not o.is_sweep_override() else f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
             for o in parsed]
    jobs = [first]
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            jobs += [[*first[:i], f"{o.get_key_element()}={v}", *first[i + 1:]] for v in o.sweep_string_iterator()]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for job in dict.fromkeys(map(tuple, jobs)):
            problem = composition_problem(list(job))
            if problem:
                fail(problem)


def composition_problem(overrides: list[str]) -> str | None:
    """None if ``overrides`` compose; else one line naming the override at fault and the closest valid names."""
    try:
        compose("config", overrides=overrides)
        return None
    except HydraException as e:
        error = e
    for i in range(len(overrides)):  # the first override that breaks it, and the config just before it
        try:
            base = compose("config", overrides=overrides[:i + 1])
        except HydraException:
            return explain(overrides[i], compose("config", overrides=overrides[:i]))
    return str(error).strip().splitlines()[0]


def explain(override: str, base: DictConfig) -> str:
    key, _, value = override.lstrip("+~").partition("=")
    group = CONF / key
    if group.is_dir():
        options = sorted(p.stem for p in group.glob("*.yaml"))
        close = difflib.get_close_matches(value, options, n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return f"{key}={value}: no such option; choose one of {', '.join(options)}{hint}."
    keys = list(dotted_keys(OmegaConf.to_container(base, resolve=False)))
    if key in keys and override.startswith("+") and not override.startswith("++"):
        return f"{override}: {key} exists already; drop the + to change it."
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.7)
    hint = f"did you mean {' or '.join(close)}?" if close else f"to add a new key, write +{key}=..."
    return f"{key}: no such key; {hint}"


def dotted_keys(node, prefix: str = ""):
    for k, v in node.items() if isinstance(node, dict) else ():
        yield prefix + str(k)
        yield from dotted_keys(v, f"{prefix}{k}.")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    preflight(sys.argv[1:])
    try:
        main()
    except SystemExit as e:
        sys.exit(2 if JobFailed.seen and e.code == 1 else e.code)
