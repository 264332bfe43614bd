"""Entry point: ``python run.py experiment=omniglot method=leap [scale=small] [key=value ...]``.

The only module that talks to Hydra: it composes the config and hands it to ``leapbench.runner.run``.
"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from leapbench.errors import LeapError
from leapbench.runner import run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, overrides=list(HydraConfig.get().overrides.task))
    except LeapError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
