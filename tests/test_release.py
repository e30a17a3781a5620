"""An installable release: every import declared, a version the CLI reports, and a wheel that
installs into a clean virtualenv and syncs the emulator with no checkout on its path."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import tap_stripe_connect

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=~!; ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


def imported_top_level(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_of_the_tap_is_a_declared_dependency():
    """A package the tap imports only through another's dependencies breaks when that one
    drops it: `click` and `jsonschema` came with singer-sdk, undeclared."""
    declared = requirement_names(PYPROJECT["project"]["dependencies"])
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module in sorted(imported_top_level(ROOT / "tap_stripe_connect")):
        if module in sys.stdlib_module_names or module == "tap_stripe_connect":
            continue
        owners = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not owners & declared:
            missing.append(f"{module} (from {', '.join(sorted(owners))})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    # singer_sdk.contrib.msgspec (the writer) needs singer-sdk's msgspec extra.
    (sdk,) = [r for r in PYPROJECT["project"]["dependencies"] if r.startswith("singer-sdk")]
    assert "[msgspec]" in sdk


def test_dev_tools_are_pinned_and_mypy_checks_the_oldest_python():
    dev = {r.split("==")[0]: r for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    for tool in ("ruff", "mypy"):
        assert re.fullmatch(rf"{tool}==[\d.]+", dev[tool]), dev[tool]
    oldest = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert PYPROJECT["tool"]["mypy"]["python_version"] == oldest
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + oldest.replace(".", "")


def test_the_version_is_one_figure_everywhere():
    version = tap_stripe_connect.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert importlib.metadata.version("tap-stripe-connect") == version
    cli = ROOT / ".venv" / "bin" / "tap-stripe-connect"
    out = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"tap-stripe-connect v{version},"), out.stdout
    about = subprocess.run([cli, "--about", "--format=json"], capture_output=True, text=True,
                           check=True)
    assert json.loads(about.stdout)["version"] == version
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(version)}\b", changelog, re.M), "CHANGELOG.md lacks it"
    assert set(PYPROJECT["project"]["urls"]) >= {"Homepage", "Documentation", "Changelog"}
