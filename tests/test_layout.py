"""The package's layout holds: imports point one way and form no cycle.

    tap (tap, cli, connect, inputs) -> streams -> sync / state / output -> api
                                     -> settings, errors, logs, resources, sdk_compat, versions

Every import counts, also those under `TYPE_CHECKING` and inside functions: a cycle
hidden behind `TYPE_CHECKING` is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tap_stripe_connect"
NAME = "tap_stripe_connect"

#: Layers, lowest first; a module imports only from its own layer or lower ones.
LAYERS: dict[str, int] = {
    "settings": 0,
    "errors": 0,
    "logs": 0,
    "money": 0,
    "resources": 0,
    "sdk_compat": 0,
    "versions": 0,
    "api": 1,
    "state": 2,
    "output": 2,
    "sync": 2,
    "streams": 3,
    "inputs": 4,
    "tap": 4,
    "connect": 4,
    "cli": 4,
    "__main__": 4,
    "__init__": 4,
}
#: Within the middle layer: sync uses state and output; output uses the run lock (state);
#: state uses neither.
MIDDLE_ORDER = {"state": 0, "output": 1, "sync": 2}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def imports_of(module: str, path: Path) -> set[str]:
    """The package's modules `module` imports, anywhere in its source."""
    targets: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.startswith(NAME)}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            if not base.startswith(NAME):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in MODULES else base)
    return {t for t in targets if t in MODULES and t != module}


GRAPH = {module: imports_of(module, path) for module, path in MODULES.items()}


def layer(module: str) -> tuple[int, int]:
    top = module.split(".")[1] if "." in module else "__init__"
    return LAYERS[top], MIDDLE_ORDER.get(top, 0)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_layer_of_the_package_is_known():
    assert {m.split(".")[1] for m in MODULES if "." in m} <= set(LAYERS)


def test_no_import_cycle_not_even_under_type_checking():
    assert find_cycle(GRAPH) is None


def test_the_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    # A package's __init__ re-exports its own modules (api/__init__ -> api.client).
    upward = [
        target
        for target in sorted(GRAPH[module])
        if layer(target) > layer(module) and not target.startswith(f"{module}.")
    ]
    assert upward == []


def test_api_imports_no_stream_sync_state_output_or_tap():
    for module, targets in GRAPH.items():
        if module.startswith(f"{NAME}.api"):
            assert all(layer(t)[0] <= 1 for t in targets), (module, targets)


def test_the_layout_matches_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert "## How the code is organised" in readme
    for folder in ("api/", "sync/", "state/", "output/", "streams.py", "sdk_compat.py"):
        assert folder in readme.split("## How the code is organised")[1], folder


#: Lines a class may span: a class past this holds more than one idea (issue 13).
MAX_CLASS_LINES = 300


def test_no_class_is_longer_than_a_reader_can_hold():
    sizes = {
        f"{module}.{node.name}": node.end_lineno - node.lineno + 1
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None
    }
    assert sizes
    assert {name: n for name, n in sizes.items() if n > MAX_CLASS_LINES} == {}


def test_each_module_imports_on_its_own():
    """Imported first, in a fresh interpreter state, each module loads (no module needs
    another to have been imported before it)."""
    script = (
        "import importlib, sys\n"
        # (`__main__` runs the CLI when imported.)
        f"for name in {sorted(m for m in MODULES if not m.endswith('__main__'))!r}:\n"
        f"    for loaded in [m for m in sys.modules if m.startswith({NAME!r})]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
