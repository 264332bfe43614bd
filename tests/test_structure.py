"""The package's import graph: no module imports one that imports it back, counting imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "leapbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in its body (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from . import checkpoint` names a module
    return {m for m in found if m in modules and m != name}


def test_no_module_imports_one_that_imports_it_back():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: imports(p, set(files)) for m, p in files.items()}
    assert graph["leapbench.runner"] >= {"leapbench.checks", "leapbench.loop"}  # the parser sees relative imports
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        for n in sorted(graph[m]):
            if n in path:
                cycles.append(path[path.index(n) :] + [n])
            elif n not in done:
                visit(n, path + [n])
        done.add(m)

    done: set[str] = set()
    for m in sorted(graph):
        if not m.endswith("__init__") and m not in done:
            visit(m, [m])
    packages = {m for m, p in files.items() if p.name == "__init__.py"}
    cycles = [c for c in cycles if not set(c) & packages]  # a package's __init__ re-exporting its modules is fine
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)
