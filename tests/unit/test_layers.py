"""The layers import only what their opening docstrings allow (issue 12): a change that makes
the engine reach for the network, or the network for presentation, fails here, as
import-linter's layer contracts would fail it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "probe"
VOCABULARY = {"probe", "probe.record", "probe.seq", "probe.errors", "probe.outcome"}

# Each layer: the modules (or packages, with every module under them) it may import.
ALLOWED = {
    "probe.record": {"probe"},
    "probe.seq": {"probe"},
    "probe.errors": {"probe"},
    "probe.outcome": {"probe", "probe.engine.model"},
    "probe.engine": {"probe", "probe.record", "probe.seq", "probe.engine"},
    "probe.protocol": {"probe", "probe.record", "probe.seq", "probe.errors", "probe.engine.model", "probe.protocol"},
    "probe.network": VOCABULARY | {"probe.protocol", "probe.engine", "probe.network"},
    "probe.files": VOCABULARY | {"probe.engine", "probe.files"},
    "probe.render": VOCABULARY | {"probe.engine.model", "probe.protocol", "probe.render"},
    "probe.jobs": VOCABULARY | {"probe.engine", "probe.protocol", "probe.network", "probe.render", "probe.jobs"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every probe module the file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "probe":
            for alias in node.names:  # `from probe.files import flows` imports probe.files.flows
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists()
                          else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "probe")
    return found


def _layer(module: str) -> str | None:
    return next((layer for layer in sorted(ALLOWED, key=len, reverse=True)
                 if module == layer or module.startswith(layer + ".")), None)


def _within(imported: str, allowed: set[str]) -> bool:
    """`probe` itself (for `__version__`) allows only `probe`, not everything under it."""
    return any(imported == a or (a != "probe" and imported.startswith(a + ".")) for a in allowed)


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(_module_name(p)))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_a_module_imports_only_what_its_layer_allows(path):
    module = _module_name(path)
    allowed = ALLOWED[_layer(module)]
    assert sorted(i for i in _imports(path) if not _within(i, allowed)) == []


def test_every_module_but_the_commands_belongs_to_a_layer():
    """A module dropped flat into probe/ (the layout issue 12 retired) has no layer and fails."""
    loose = [_module_name(p) for p in PACKAGE.rglob("*.py")
             if not _layer(_module_name(p)) and not _module_name(p).startswith(("probe.commands", "probe.schema"))]
    assert sorted(loose) == ["probe", "probe.__main__", "probe.cli"]


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The test above can fail: an engine module that imports the network is caught."""
    bad = tmp_path / "probe" / "engine" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from probe.network.wire import random_u32\n")
    assert not _within("probe.network.wire", ALLOWED["probe.engine"])
    assert "probe.network.wire" in _imports(bad)
