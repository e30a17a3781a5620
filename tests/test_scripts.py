"""The shell scripts a newcomer runs first work where newcomers are: an old Python is one
clear line, and macOS's bash 3.2 (no empty arrays under `set -u`) runs them."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.conftest import ROOT


def test_quickstart_with_an_old_python_says_so_in_one_line(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("quickstart.sh", "lib.sh"):
        shutil.copy(ROOT / "scripts" / name, checkout / "scripts" / name)
    old = tmp_path / "python3.9"
    # Answers as Python 3.9 does to the script's two questions (its version; >= 3.10?).
    old.write_text('#!/bin/sh\ncase "$2" in *print*) echo 3.9 ;; *) exit 1 ;; esac\n')
    old.chmod(0o755)
    run = subprocess.run(
        ["bash", "scripts/quickstart.sh"], cwd=checkout, env={"PATH": "/usr/bin:/bin",
                                                               "PYTHON": str(old)},
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )
    assert run.returncode == 1
    assert run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert "needs Python 3.10 or later" in line
    assert f"{old} is 3.9" in line
    assert not (checkout / ".venv").exists(), "nothing installed"


def test_no_script_expands_an_array_bash_3_2_may_call_unbound():
    """bash before 4.4 (macOS ships 3.2) fails `"${a[@]}"` of an empty array under `set -u`:
    the scripts keep optional words in strings instead."""
    for path in [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]:
        text = path.read_text()
        arrays = set(re.findall(r"^\s*(?:local\s+)?(\w+)=\(", text, re.M))
        arrays |= set(re.findall(r"\$\{(\w+)\[[@*]\]", text)) - {"PIPESTATUS", "BASH_SOURCE"}
        assert not arrays, f"{path.name} uses arrays {sorted(arrays)}"


def test_what_the_local_tries_write_is_git_ignored():
    """The README's and Getting started's local tries write these into the checkout."""
    for name in ("records.jsonl", "emulator-connect.json", "warehouse-emulator.duckdb",
                 "warehouse.duckdb", "site/index.html", "dist/x.whl"):
        run = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, check=False)
        assert run.returncode == 0, f"{name} is not git-ignored"
