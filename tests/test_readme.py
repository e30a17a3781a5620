"""The README is true: its settings section is the tap's `--about` output, and every command
it shows (and every next step the quick start prints) runs as written in some test."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import requests
import yaml

from tests import readme
from tests.conftest import ROOT
from tests.emulator import Emulator

spec = importlib.util.spec_from_file_location(
    "update_readme_settings", ROOT / "scripts" / "update_readme_settings.py"
)
assert spec is not None
assert spec.loader is not None
update_readme_settings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_readme_settings)


def test_the_settings_page_equals_the_taps_about_output():
    _head, block, _tail = update_readme_settings.split(update_readme_settings.README.read_text())
    assert block == update_readme_settings.about_markdown(), (
        "docs/settings.md's settings block is stale: run "
        ".venv/bin/python scripts/update_readme_settings.py"
    )


def test_the_readmes_settings_are_the_taps():
    """The README's table of the ten settings people set names settings the tap has."""
    settings = json.loads(update_readme_settings.about("json"))["settings"]["properties"]
    text = (ROOT / "README.md").read_text()
    table = text.split("## The settings people set", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert len(named) == 10, named
    assert set(named) <= set(settings), set(named) - set(settings)


def test_update_script_rewrites_only_the_block(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    start, end = update_readme_settings.START, update_readme_settings.END
    readme.write_text(f"# Title\n\nBefore.\n\n{start}\nold text\n{end}\n\nAfter.\n")
    monkeypatch.setattr(update_readme_settings, "README", readme)
    monkeypatch.setattr(update_readme_settings, "about_markdown", lambda: "| new | table |")
    assert update_readme_settings.main(["--check"]) == 1
    assert update_readme_settings.main([]) == 0
    assert readme.read_text() == (
        f"# Title\n\nBefore.\n\n{start}\n| new | table |\n\n{end}\n\nAfter.\n"
    )
    assert update_readme_settings.main(["--check"]) == 0


def test_meltano_yml_declares_every_setting_of_the_tap():
    settings = json.loads(update_readme_settings.about("json"))["settings"]["properties"]
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    (extractor,) = [
        p for p in project["plugins"]["extractors"] if p["name"] == "tap-stripe-connect"
    ]
    declared = {s["name"]: s for s in extractor["settings"]}
    assert set(declared) == set(settings), "meltano.yml and --about list different settings"
    for name, setting in settings.items():
        assert bool(declared[name].get("sensitive")) == bool(setting.get("secret")), name
        if "default" in setting:
            assert declared[name].get("value") == setting["default"], name
        if "enum" in setting:  # `api_version`: Meltano offers the same choices
            assert declared[name]["kind"] == "options", name
            assert [o["value"] for o in declared[name]["options"]] == setting["enum"], name
    # Meltano selects every stream unless told: the tap's own default selection.
    from tap_stripe_connect.resources import RESOURCES

    optional = [f"!{r.name}.*" for r in RESOURCES if not r.selected_by_default]
    assert extractor["select"] == ["*.*", *optional]
    assert extractor["commands"]["connect"]["args"] == "connect --config ENV"


# -- every command of the README is run by a test ------------------------------------------

#: README command (its start) -> the test that runs it as written.
RUN_BY: dict[str, str] = {
    "bash scripts/quickstart.sh": "test_readme.py::test_quickstart_with_the_emulator",
    "bash scripts/test.sh": "test_readme.py::test_the_test_script_runs_pytest",
    "TAP_STRIPE_CONNECT_API_KEY=rk_live_... bash scripts/quickstart.sh":
        "test_readme.py::test_quickstart_with_a_key_then_the_readme_query",
    ".meltano/loaders/target-duckdb/venv/bin/python -c":
        "test_readme.py::test_quickstart_with_the_emulator",
    "TAP_STRIPE_CONNECT_API_KEY=sk_test_emulator TAP_STRIPE_CONNECT_API_URL=":
        "test_readme.py::test_the_tap_without_meltano",
    ".venv/bin/python -m pip install build": "test_release.py::test_the_wheel_installs_and_syncs",
    "bash scripts/docs.sh build": "test_docs.py::test_the_site_builds_strictly",
    ".venv/bin/tap-stripe-connect --about": "test_readme.py::test_the_tap_without_meltano",
    ".venv/bin/tap-stripe-connect --config config.json":
        "test_readme.py::test_the_tap_without_meltano",
    "TAP_STRIPE_CONNECT_API_KEY=rk_live_... .venv/bin/tap-stripe-connect --config ENV":
        "test_readme.py::test_the_tap_without_meltano",
    "meltano ": "test_meltano_project.py::"
        "test_a_new_meltano_project_adds_the_plugin_and_syncs_then_connects",
    'echo "TAP_STRIPE_CONNECT_PIP_URL=': "test_meltano_project.py::"
        "test_a_new_meltano_project_adds_the_plugin_and_syncs_then_connects",
    "export TAP_STRIPE_CONNECT_CLIENT_": "test_meltano_project.py::"
        "test_a_new_meltano_project_adds_the_plugin_and_syncs_then_connects",
    ".venv/bin/tap-stripe-connect connect --config ENV": "test_meltano_project.py::"
        "test_a_new_meltano_project_adds_the_plugin_and_syncs_then_connects",
    ".venv/bin/python -m tests.emulator --connect":
        "test_connect_browser.py::test_readme_local_connect_flow_in_a_real_browser",
    ".venv/bin/tap-stripe-connect connect --config emulator-connect.json":
        "test_connect_browser.py::test_readme_local_connect_flow_in_a_real_browser",
    ".venv/bin/tap-stripe-connect --config emulator-connect.json":
        "test_connect_browser.py::test_readme_local_connect_flow_in_a_real_browser",
    ".venv/bin/python scripts/": "test_readme.py::test_the_development_scripts",
    ".venv/bin/ruff check . && .venv/bin/mypy": "test_readme.py::test_the_development_scripts",
    ".venv/bin/python -m tests.emulator --port": "test_readme.py::test_the_emulator_command",
    'eval "$(bash scripts/start_postgres.sh)"': "test_readme.py::test_the_postgres_command",
    ".venv-meltano/bin/meltano run tap-stripe-connect target-":
        "test_analytics.py::test_models_match_python_figures_then_move_with_changes",
    "DBT_POSTGRES_HOST=...":
        "test_analytics.py::test_models_match_python_figures_then_move_with_changes",
    ".venv/bin/pip install -e '.[dagster]'":
        "test_dagster.py::test_every_shard_partition_materialised_equals_one_unsharded_run",
    ".venv/bin/dg launch":
        "test_dagster.py::test_every_shard_partition_materialised_equals_one_unsharded_run",
    ".venv/bin/dagster dev": "test_dagster.py::test_dagster_dev_serves_the_shard_partitions",
}


def runner(command: str) -> str:
    """The test of a README command: the longest RUN_BY start it begins with."""
    starts = [s for s in RUN_BY if command.startswith(s)]
    assert starts, f"README command run by no test (add it to RUN_BY): {command}"
    return RUN_BY[max(starts, key=len)]


def _prefix(node: ast.expr) -> str | None:
    """The text a string argument surely starts with: a constant, or an f-string's head."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        head = ""
        for part in node.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            head += part.value
        return head
    return None


def commands_run_by(module: str, test: str) -> set[str]:
    """The starts a test passes to `readme.command(...)` (or compares `readme.commands()`
    lines with, by `startswith`), in its own body and in every function, method or fixture
    of its module it calls or takes, followed call by call."""
    tree = ast.parse((ROOT / "tests" / module).read_text())
    functions: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions.setdefault(node.name, []).append(node)
    assert test in functions, f"{module}::{test} does not exist"
    seen, todo, starts = set(), [test], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for function in functions[name]:
            assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
            todo += [a.arg for a in function.args.args if a.arg in functions]  # fixtures
            lists_commands = False
            compared = set()
            for node in ast.walk(function):
                if not isinstance(node, ast.Call):
                    continue
                callee = node.func
                called = (callee.id if isinstance(callee, ast.Name)
                          else callee.attr if isinstance(callee, ast.Attribute) else None)
                on_readme = (isinstance(callee, ast.Attribute)
                             and isinstance(callee.value, ast.Name)
                             and callee.value.id == "readme")
                if on_readme and called == "command" and node.args:
                    head = _prefix(node.args[0])
                    if head:
                        starts.add(head)
                elif on_readme and called == "commands":
                    lists_commands = True
                elif called == "startswith" and node.args:
                    head = _prefix(node.args[0])
                    if head:
                        compared.add(head)
                elif called in functions:
                    todo.append(called)
            if lists_commands:
                starts |= compared
    return starts


def test_every_readme_command_is_run_by_a_test():
    """Each command of README.md and docs/ is run by the test RUN_BY names: that test (or a
    helper or fixture of its module it uses) asks `readme.command()` for a start of it."""
    commands = readme.commands()
    assert len(commands) >= 30, commands
    used = set()
    unrun = []
    for command in commands:
        test = runner(command)
        used.add(test)
        module, _, name = test.partition("::")
        starts = commands_run_by(module, name)
        # A start of a few characters ("meltano ") would match any command: 12 at least.
        if not any(command.startswith(s) and len(s) >= 12 for s in starts):
            unrun.append(f"{command!r}: {test} runs none of it (it runs {sorted(starts)})")
    assert not unrun, "\n".join(unrun)
    assert used == set(RUN_BY.values()), "RUN_BY names a test no README command needs"


def test_the_run_by_check_follows_helpers_and_sees_a_test_that_runs_nothing(tmp_path):
    """The check above can fail: a test that never asks for the command is caught."""
    starts = commands_run_by("test_readme.py", "test_the_tap_without_meltano")
    assert ".venv/bin/tap-stripe-connect --about" in starts
    assert commands_run_by("test_readme.py", "test_update_script_rewrites_only_the_block") == set()
    # Through a helper and a fixture: the Dagster test's `materialize` helper.
    dagster = commands_run_by("test_dagster.py",
                              "test_every_shard_partition_materialised_equals_one_unsharded_run")
    assert ".venv/bin/dg launch" in dagster, dagster


def shell(command: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 900):
    proc = subprocess.run(
        command, shell=True, cwd=cwd, env={**user_env(), **(env or {})},
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def user_env() -> dict[str, str]:
    prefixes = ("TAP_STRIPE_CONNECT_", "TARGET_", "MELTANO_", "EMULATOR_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return {**env, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false", "PYTHONPATH": str(ROOT)}


def test_quickstart_with_the_emulator():
    """No key: the emulator, said so; a short view of the run; the printed query works."""
    run = shell(readme.command("bash scripts/quickstart.sh"), ROOT, {"EMULATOR_OBJECTS": "40"})
    out = run.stdout
    assert "LOCAL STRIPE EMULATOR" in out
    assert "the 30 streams selected by default" in out  # the 3 report streams included
    for chatter in ("CREATE TABLE", "METRIC", "Pagination stopped", "not resumable", "DELETE",
                    "Beginning sync"):
        assert chatter not in out + run.stderr, chatter
    assert "Sync finished: " in out
    assert re.search(r"^\s+total\s+[\d,]+\s+0\s+\d+\s+0\s+[\d.]+s$", out, re.M), out
    counts = dict(re.findall(r"^  ([a-z_]+)\s+([\d,]+)$", out, re.M))
    assert int(counts["charges"].replace(",", "")) == 40
    assert "payment_methods" not in counts, "payment_methods is not selected by default"
    assert "dbt build: PASS=" in out
    assert "MRR by month" in out
    assert "Chart: " in out
    # Installs, a line per table twice (the summary, the row counts), 12 months of MRR: no chatter.
    # Progress lines come once an interval, so a slower machine prints more: not counted.
    steady = [line for line in out.splitlines() if not line.strip().startswith("Progress ")]
    assert len(steady) < 112, out
    log = (ROOT / ".meltano" / "quickstart-run.log").read_text()
    assert "CREATE TABLE" in log, "the whole log is kept in the file"
    assert "Stream is assumed to be unsorted" not in log
    # The next step the quick start prints: a DuckDB query, run as printed.
    # It ends with the warehouse reconciled with Stripe's balance reports (the emulator's).
    assert re.fullmatch(r"Reconciled with Stripe's balance reports: \d+ months, 0 differences",
                        out.strip().splitlines()[-1]), out[-500:]
    query = out.split("Query it with DuckDB, e.g.:\n", 1)[1].strip().splitlines()[0]
    result = shell(query, ROOT)
    assert "status" in result.stdout
    assert len(re.findall(r"\bch_\w+", result.stdout)) == 5
    # What the README says the output shows: the emulator's clock, its 12 connected accounts.
    assert "clock starts at 2026-01-01" in out
    assert int(counts["accounts"]) == 12
    assert "accounts                     12 " in (ROOT / "README.md").read_text()
    # The README's query of the emulator's file, as written, in the checkout.
    readme_query = shell(readme.command(".meltano/loaders/target-duckdb/venv/bin/python -c"), ROOT)
    assert "count_star()" in readme_query.stdout
    assert "succeeded" in readme_query.stdout


def test_quickstart_with_a_key_then_the_readme_query(tmp_path):
    """With a key: that account into warehouse.duckdb, incrementally the second time."""
    with Emulator(objects=30, seed=61) as emu:
        env = {
            "TAP_STRIPE_CONNECT_API_URL": emu.url,  # the emulator plays api.stripe.com
            "TARGET_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
            "MELTANO_STATE_BACKEND_URI": f"file://{tmp_path}/state",
        }
        command = readme.command(
            "TAP_STRIPE_CONNECT_API_KEY=rk_live_... bash scripts/quickstart.sh"
        )
        command = command.replace("rk_live_...", emu.api_key)
        first = shell(command, ROOT, env)
        assert "EMULATOR" not in first.stdout
        assert "Reading YOUR STRIPE ACCOUNT (test mode" in first.stdout
        assert emu.api_key not in first.stdout + first.stderr
        assert "Sync finished: " in first.stdout
        emu.update("charges", emu.objects("charges")[0]["id"], {"description": "changed"})
        emu.clear_requests()
        shell(command, ROOT, env)
        paths = [r.path for r in emu.requests]
        assert "/v1/events" in paths
        assert "/v1/charges" not in paths, "the second run listed charges again"
        # The query the quick start prints last: of the file it loaded, warehouse.duckdb.
        second = shell(command, ROOT, env)
        query = second.stdout.split("Query it with DuckDB, e.g.:\n", 1)[1].strip().splitlines()[0]
        assert "/warehouse.duckdb'" in query
        result = shell(query, ROOT)
        charges = {o["id"] for o in emu.objects("charges")}
        assert set(re.findall(r"\bch_\w+", result.stdout)) <= charges
        assert len(re.findall(r"\bch_\w+", result.stdout)) == 5


def test_the_tap_without_meltano(tmp_path):
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    with Emulator(objects=15, seed=62) as emu:
        (tmp_path / "config.json").write_text(
            json.dumps({"api_key": emu.api_key, "api_url": emu.url})
        )
        (tmp_path / "state.json").write_text("{}")
        about = shell(readme.command(".venv/bin/tap-stripe-connect --about"), tmp_path)
        assert "api_key" in about.stdout
        shell(readme.command(".venv/bin/tap-stripe-connect --config config.json --discover"),
              tmp_path)
        catalog = json.loads((tmp_path / "catalog.json").read_text())
        assert len(catalog["streams"]) == 31  # 28 resources and 3 of Stripe's reports
        sync = readme.command(".venv/bin/tap-stripe-connect --config config.json --catalog")
        shell(sync.replace("target-...", "cat > records.jsonl"), tmp_path)
        records = (tmp_path / "records.jsonl").read_text()
        charges = {o["id"] for o in emu.objects("charges")}
        assert all(f'"id":"{c}"' in records.replace(" ", "") for c in charges)
        env_run = readme.command("TAP_STRIPE_CONNECT_API_KEY=rk_live_... .venv/bin/tap-stripe")
        result = shell(env_run.replace("rk_live_...", emu.api_key), tmp_path,
                       {"TAP_STRIPE_CONNECT_API_URL": emu.url})
        assert all(c in result.stdout for c in charges)
        # Getting started: the tap pointed at the emulator (its port chosen here).
        (tmp_path / "records.jsonl").unlink()
        on_emulator = readme.command(
            "TAP_STRIPE_CONNECT_API_KEY=sk_test_emulator TAP_STRIPE_CONNECT_API_URL=")
        shell(on_emulator.replace("http://127.0.0.1:12111", emu.url), tmp_path)
        records = (tmp_path / "records.jsonl").read_text().replace(" ", "")
        assert all(f'"id":"{c}"' in records for c in charges)


def test_the_test_script_runs_pytest():
    run = shell(readme.command("bash scripts/test.sh tests/") + " --collect-only -q", ROOT)
    assert "tests collected" in run.stdout or "collected" in run.stdout
    (whole,) = [c for c in readme.commands() if c.startswith("bash scripts/test.sh")
                and c == "bash scripts/test.sh"]
    run = shell(whole + " --collect-only -q tests/test_core.py", ROOT)
    assert "test_core.py" in run.stdout


def test_the_development_scripts():
    folder = ROOT / "tap_stripe_connect/schemas"
    schemas = {p: p.read_bytes() for p in folder.rglob("*.json")}
    shell(readme.command(".venv/bin/python scripts/generate_schemas.py"), ROOT)
    after = {p: p.read_bytes() for p in folder.rglob("*.json")}
    assert after == schemas, "the committed schemas differ from the vendored spec's"
    shell(readme.command(".venv/bin/python scripts/extract_stripe_python.py --check"), ROOT)
    shell(readme.command(".venv/bin/ruff check . && .venv/bin/mypy"), ROOT)
    # These rewrite a committed file: --check says whether they would change it.
    shell(readme.command(".venv/bin/python scripts/update_readme_settings.py") + " --check",
          ROOT)
    shell(readme.command(".venv/bin/python scripts/update_plugin_definition.py") + " --check",
          ROOT)
    shell(readme.command(".venv/bin/python scripts/generate_docs.py") + " --check", ROOT)


def test_the_emulator_command():
    # `exec`: the signal goes to the emulator, not to the shell around it.
    command = "exec " + readme.command(".venv/bin/python -m tests.emulator --port") + " --port 0"
    proc = subprocess.Popen(
        command, shell=True, cwd=ROOT, env=user_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"listening on (http\S+) \(key (\S+)\)", line)
        assert url, line
        response = requests.get(
            f"{url[1]}/v1/charges?limit=100",
            headers={"Authorization": f"Bearer {url[2]}"}, timeout=30,
        )
        assert response.status_code == 200
        assert len(response.json()["data"]) == 100  # --objects 500
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0


def test_the_postgres_command(request):
    script = "\n".join([
        "set -e",
        readme.command('eval "$(bash scripts/start_postgres.sh)"'),
        'psql -tAc "SELECT 40 + 2"',
        'bash scripts/start_postgres.sh stop "$TAP_STRIPE_CONNECT_TEST_PGDATA"',
    ])
    # A server of its own, even when CI's is running (its PG* variables are not passed on),
    # under a TMPDIR with a space: the printed paths are shell-quoted for `eval`.
    # (in the system's temporary folder: as root the server runs as `postgres`, which may
    # not enter pytest's private tmp_path)
    tmpdir = Path(tempfile.mkdtemp(prefix="start_postgres test "))
    tmpdir.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(tmpdir, ignore_errors=True))
    run = subprocess.run(
        script, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env={**{k: v for k, v in user_env().items() if not k.startswith("PG")},
             "TMPDIR": str(tmpdir)},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "42"
    assert list(tmpdir.iterdir()) == [], "stop removes the folder it created"


def test_postgres_stop_deletes_only_a_folder_the_script_created(tmp_path):
    """`stop DATADIR` removes DATADIR's parent: never one it did not create."""
    mine = tmp_path / "project" / "data"
    mine.mkdir(parents=True)
    (mine.parent / "keep.txt").write_text("precious")
    run = subprocess.run(
        ["bash", "scripts/start_postgres.sh", "stop", str(mine)], cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert run.returncode == 1
    assert "not a data folder this script created" in run.stderr
    assert (mine.parent / "keep.txt").read_text() == "precious"
