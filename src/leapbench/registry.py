"""The list of methods: one config per method under ``conf/method/``, read by tables, figures, sweeps and tests.

A method's config names its class (``_target_``) and carries its ``label`` and ``color`` for tables and figures.
Adding a method is adding its file (and its class): nothing here lists methods by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from omegaconf import OmegaConf

_HERE = Path(__file__).resolve().parent
# The config tree: the checkout's top-level conf/ when the package runs from a checkout (editable install), else
# the copy the wheel carries (leapbench/conf, see pyproject.toml).
CONF = _HERE.parents[1] / "conf" if _HERE.parents[1] / "src" / "leapbench" == _HERE else _HERE / "conf"
# Matplotlib's tab10 order, for a method whose config gives no colour.
FALLBACK_COLORS = ("tab:gray", "tab:pink", "tab:cyan", "tab:olive", "tab:brown", "tab:purple")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    label: str
    color: str


def _method_node(path: Path) -> dict:
    """The ``method`` keys of one method config, with those of the configs it extends (its ``defaults``) beneath."""
    raw = cast(dict, OmegaConf.to_container(OmegaConf.load(path)))
    node: dict = {}
    for parent in raw.get("defaults", []):
        if isinstance(parent, str) and parent != "_self_":
            node |= _method_node(path.parent / f"{parent}.yaml")
    return node | raw.get("method", {})


def methods(*conf_dirs: Path) -> dict[str, MethodInfo]:
    """Every method config in ``conf/`` and in ``conf_dirs`` (later folders win), by method name, sorted."""
    found: dict[str, MethodInfo] = {}
    for conf in (CONF, *conf_dirs):
        for path in sorted(Path(conf).glob("method/*.yaml")):
            node = _method_node(path)
            name = str(node.get("name", path.stem))
            found[name] = MethodInfo(name, str(node.get("label", name)), str(node.get("color", "")))
    return dict(sorted(found.items()))


def info(name: str, known: dict[str, MethodInfo], label: str | None = None, color: str | None = None) -> MethodInfo:
    """What tables show for method ``name``: its config's label and colour, else those its run recorded, else its
    name and a fallback colour (a method no config knows is still shown)."""
    k = known.get(name)
    fallback = FALLBACK_COLORS[sum(map(ord, name)) % len(FALLBACK_COLORS)]
    return MethodInfo(name, (k.label if k else None) or label or name, (k.color if k else None) or color or fallback)
