"""The package's layout holds: imports point one way and form no cycle.

    tap (tap, cli, connect, inputs) -> streams -> sync / state / output -> api
                                     -> settings, errors, logs, resources, sdk_compat, versions

Every import counts, also those under `TYPE_CHECKING` and inside functions: a cycle
hidden behind `TYPE_CHECKING` is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
import importlib.util
import re
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
    "stop": 0,
    "api": 1,
    "state": 2,
    "output": 2,
    "sync": 2,
    "streams": 3,
    "inputs": 4,
    "tap": 4,
    "connect": 4,
    "connections": 4,
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


def layout_section() -> str:
    """The "How the code is organised" section, from README.md or a docs/ page."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if path.is_file():
            text = path.read_text()
            found = re.search(
                r"^(#+) How the code is organi[sz]ed\n(.*?)(?=^\1 |\Z)", text, re.M | re.S
            )
            if found:
                return found.group(2)
    raise AssertionError("no 'How the code is organised' section in README.md or docs/")


def documented_layers(section: str) -> dict[str, int]:
    """The layers the section's diagram draws: the groups of its first line, left to
    right (highest first), then the group "all of them" import (the lowest)."""
    diagram = re.search(r"```\n(.*?)```", section, re.S)
    assert diagram, "no diagram in the layout section"
    first, base = diagram.group(1).strip().splitlines()[:2]
    groups = [re.findall(r"([a-z_]+)(?:\.py|/)", part) for part in first.split("->")]
    groups.append(re.findall(r"([a-z_]+)\.py", base.split("->")[1]))
    return {name: len(groups) - 1 - i for i, group in enumerate(groups) for name in group}


def test_the_documented_layout_is_the_enforced_one():
    """The diagram a newcomer reads is the layering these tests enforce, every part of
    the package is described, and every file the section names exists."""
    section = layout_section()
    enforced = {name: level for name, level in LAYERS.items() if not name.startswith("__")}
    assert documented_layers(section) == enforced
    parts = {
        path.stem if path.suffix == ".py" else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").is_file())
        and not path.name.startswith("__")
    }
    described = set(re.findall(r"`([a-z_]+)(?:\.py|/)`", section))
    assert parts - described == set(), "parts of the package the section does not describe"
    named = set(re.findall(r"`([a-z_]+\.py)`", section))
    on_disk = {path.name for path in PACKAGE.rglob("*.py")}
    assert named - on_disk == set(), "files the section names that do not exist"


def test_the_layout_reader_sees_a_wrong_diagram():
    wrong = "```\ntap.py -> sync/ -> streams.py -> api/\nall of them -> settings.py\n```\n"
    assert documented_layers(wrong) == {"tap": 4, "sync": 3, "streams": 2, "api": 1, "settings": 0}


def private_names_defined(root: Path, but: str = "") -> set[str]:
    """`_name`s a package defines (in its files but `but`): functions, classes and
    attributes it assigns."""
    names = set()
    for path in root.rglob("*.py"):
        if path.name == but:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


SDK_ROOT = Path(importlib.util.find_spec("singer_sdk").origin).parent
#: Private names only the SDK defines: using one reaches into its insides.
#: (sdk_compat.py sets some of the SDK's own: they stay the SDK's.)
SDK_ONLY_PRIVATE = private_names_defined(SDK_ROOT) - private_names_defined(PACKAGE, "sdk_compat.py")


def private_sdk_uses(path: Path) -> set[str]:
    """Private SDK modules and names `path` imports, and SDK-only `_names` it reads."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("singer_sdk"):
            parts = [*(node.module or "").split("."), *(a.name for a in node.names)]
            found |= {p for p in parts if p.startswith("_")}
        elif isinstance(node, ast.Import):
            found |= {
                a.name for a in node.names if a.name.startswith("singer_sdk.") and "._" in a.name
            }
        elif isinstance(node, ast.Attribute) and node.attr in SDK_ONLY_PRIVATE:
            found.add(node.attr)
    return found


def test_no_private_sdk_name_outside_sdk_compat():
    uses = {
        str(path.relative_to(PACKAGE)): sorted(names)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "sdk_compat.py" and (names := private_sdk_uses(path))
    }
    assert uses == {}
    # The check sees them where they are.
    assert {"_catalog", "_state", "_typing", "_tap_state", "_stream_version"} <= private_sdk_uses(
        PACKAGE / "sdk_compat.py"
    )


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
