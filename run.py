"""Entry point: ``python run.py experiment=omniglot method=leap [scale=small] [key=value ...]``.

Task-parallel: ``torchrun --nproc_per_node=N run.py ...``. After ``pip install .`` the same command is
``leapbench experiment=omniglot method=leap``. The command line itself is ``leapbench.cli``.
"""

from leapbench.cli import cli

if __name__ == "__main__":
    cli()
