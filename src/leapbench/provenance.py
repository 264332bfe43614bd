"""Where a result comes from: the command, the code (git commit or installed version) and the libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

# The checkout this module runs from, if it runs from one (an editable install or PYTHONPATH=src).
CHECKOUT = Path(__file__).resolve().parents[2]
CODE = ("src", "conf", "run.py", "pyproject.toml")
LIBRARIES = ("torch", "torchvision", "numpy", "hydra-core", "omegaconf", "wandb", "gymnasium", "ale-py", "pandas")


def version(package: str = "leapbench") -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def libraries() -> dict[str, str]:
    """The installed versions of the libraries a result depends on."""
    return {name: version(name) for name in LIBRARIES}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=CHECKOUT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def in_checkout() -> bool:
    """Whether this package runs from the source tree of a git checkout (not from an installed wheel)."""
    return (CHECKOUT / "src" / "leapbench").is_dir() and _git("rev-parse", "--show-toplevel") == str(CHECKOUT)


def installed_commit() -> str:
    """The commit pip recorded when it installed the package from git (``direct_url.json``), else ''."""
    try:
        text = metadata.distribution("leapbench").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return ""
    return str(json.loads(text).get("vcs_info", {}).get("commit_id", "")) if text else ""


def commit(code: tuple[str, ...] = CODE) -> str:
    """The code behind a result: the checkout's commit (``-dirty``: uncommitted changes under ``code``; docs do
    not count), else the commit pip installed from, else ``leapbench <version>`` of the installed package."""
    if in_checkout():
        head = _git("rev-parse", "HEAD")
        if head and _git("status", "--porcelain", "--untracked-files=no", "--", *code):
            head += "-dirty"
        if head:
            return head
    return installed_commit() or f"leapbench {version()}"


def provenance(overrides: list[str] | None, code: tuple[str, ...] = CODE) -> dict:
    """The command, code and library versions behind a run (recorded in its summary)."""
    program = "leapbench" if Path(sys.argv[0]).name == "leapbench" else "python run.py"  # the console command or run.py
    return {
        "command": " ".join([program, *(overrides or [])]),
        "commit": commit(code),
        "version": version(),
        "torch": torch.__version__,
        "libraries": libraries(),
        "threads": torch.get_num_threads(),
    }


def bench_commit() -> str:
    """The commit a benchmark ran at (``-dirty`` with uncommitted changes to the code or the scripts)."""
    return commit(CODE + ("scripts",))
