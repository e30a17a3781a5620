"""An installable release: every import declared, a version the CLI reports, and a wheel that
installs into a clean virtualenv and syncs the emulator with no checkout on its path."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import tap_stripe_connect

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib
from tests import readme
from tests.conftest import ROOT
from tests.emulator import Emulator

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
    # How to pin this release, where people read it.
    pin = f"tap_stripe_connect-{version}-py3-none-any.whl"
    assert pin in (ROOT / "docs" / "getting-started.md").read_text()
    assert pin in (ROOT / "tap-stripe-connect.yml").read_text()


def test_the_wheel_installs_and_syncs(tmp_path):
    """Getting started's build command makes an sdist and a wheel; the wheel, installed into a
    clean virtualenv and run outside the checkout, reports its version and syncs the emulator."""
    version = tap_stripe_connect.__version__
    dist = ROOT / "dist"
    for old in dist.glob("tap_stripe_connect-*"):
        old.unlink()
    build = subprocess.run(
        readme.command(".venv/bin/python -m pip install build"), shell=True, cwd=ROOT,
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel = dist / f"tap_stripe_connect-{version}-py3-none-any.whl"
    assert wheel.exists(), sorted(p.name for p in dist.iterdir())
    with tarfile.open(dist / f"tap_stripe_connect-{version}.tar.gz") as sdist:
        names = sdist.getnames()
    assert f"tap_stripe_connect-{version}/tap_stripe_connect/schemas/charges.json" in names
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
    assert "tap_stripe_connect/schemas/2026-10-28.endive/charges.json" in files
    assert not [f for f in files if f.startswith("tests/")], "the emulator is not shipped"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "TAP_STRIPE_CONNECT_", "VIRTUAL_ENV"))}
    pip = subprocess.run([venv / "bin/python", "-m", "pip", "install", "--quiet", wheel],
                         capture_output=True, text=True, timeout=900, env=env, check=False)
    assert pip.returncode == 0, pip.stderr[-3000:]
    home = tmp_path / "elsewhere"  # no checkout on the path: not the cwd, not PYTHONPATH
    home.mkdir()

    def tap(*args: str) -> subprocess.CompletedProcess:
        run = subprocess.run([venv / "bin/tap-stripe-connect", *args], cwd=home, env=env,
                             capture_output=True, text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        return run

    where = subprocess.run(
        [venv / "bin/python", "-c", "import tap_stripe_connect as t; print(t.__file__)"],
        cwd=home, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(venv)), where.stdout
    assert tap("--version").stdout.startswith(f"tap-stripe-connect v{version},")
    assert json.loads(tap("--about", "--format=json").stdout)["version"] == version
    with Emulator(objects=10, seed=83) as emu:
        (home / "config.json").write_text(json.dumps({"api_key": emu.api_key,
                                                      "api_url": emu.url}))
        out = tap("--config", "config.json").stdout
        records = [json.loads(line) for line in out.splitlines() if '"RECORD"' in line]
        charges = {r["record"]["id"] for r in records if r["stream"] == "charges"}
        assert charges == {o["id"] for o in emu.objects("charges")}
