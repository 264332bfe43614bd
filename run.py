"""Entry point: ``python run.py experiment=omniglot method=leap [scale=small] [key=value ...]``.

Task-parallel: ``torchrun --nproc_per_node=N run.py ...`` runs the same experiment on N processes.

The only module that talks to Hydra: it composes the config and hands it to ``leapbench.runner.run``.
"""
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

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
    except LeapError as e:
        print(f"error: {e}", file=sys.stderr)
        remove_empty_job_folder(Path(HydraConfig.get().runtime.output_dir), Path(cfg.paths.runs))
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the launcher records this job as failed and runs the others; the sweep then exits non-zero
        sys.exit(2)


def remove_empty_job_folder(folder: Path, runs: Path) -> None:
    """Hydra creates the job's folder before ``run`` starts; a run refused at once leaves it empty, so remove it
    and its empty parents below ``paths.runs`` (a folder with anything in it is left as it is)."""
    folder, runs = folder.resolve(), runs.resolve()
    while folder != runs and runs in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone under another rank)
            return
        folder = folder.parent


if __name__ == "__main__":
    main()
