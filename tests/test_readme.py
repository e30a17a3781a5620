"""The README is true: its settings section is the tap's `--about` output, and every command
it shows (and every next step the quick start prints) runs as written in some test."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
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


def test_readme_settings_equal_the_taps_about_output():
    _head, block, _tail = update_readme_settings.split((ROOT / "README.md").read_text())
    assert block == update_readme_settings.about_markdown(), (
        "README.md's settings block is stale: run "
        ".venv/bin/python scripts/update_readme_settings.py"
    )


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
        "test_readme.py::test_quickstart_with_a_key_then_the_readme_query",
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
    ".venv/bin/dagster asset materialize":
        "test_dagster.py::test_every_shard_partition_materialised_equals_one_unsharded_run",
    ".venv/bin/dagster dev": "test_dagster.py::test_dagster_dev_serves_the_shard_partitions",
}


def runner(command: str) -> str:
    """The test of a README command: the longest RUN_BY start it begins with."""
    starts = [s for s in RUN_BY if command.startswith(s)]
    assert starts, f"README command run by no test (add it to RUN_BY): {command}"
    return RUN_BY[max(starts, key=len)]


def test_every_readme_command_is_run_by_a_test():
    commands = readme.commands()
    assert len(commands) >= 30, commands
    used = set()
    for command in commands:
        test = runner(command)
        used.add(test)
        module, _, name = test.partition("::")
        source = (ROOT / "tests" / module).read_text()
        assert f"def {name}(" in source, f"{test} (for {command!r}) does not exist"
    assert used == set(RUN_BY.values()), "RUN_BY names a test no README command needs"


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
    assert "the 29 streams selected by default" in out  # the 2 report streams included
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
    assert len(out.splitlines()) < 110, out
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
        # The README's query, in the folder that holds warehouse.duckdb.
        query = readme.command(".meltano/loaders/target-duckdb/venv/bin/python -c")
        result = shell(query.replace(".meltano/", f"{ROOT}/.meltano/", 1), tmp_path)
        statuses = {o["status"] for o in emu.objects("charges")}
        for status in statuses:
            assert status in result.stdout
        assert "count_star()" in result.stdout


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
        assert len(catalog["streams"]) == 30  # 28 resources and 2 of Stripe's reports
        sync = readme.command(".venv/bin/tap-stripe-connect --config config.json --catalog")
        shell(sync.replace("target-...", "cat > records.jsonl"), tmp_path)
        records = (tmp_path / "records.jsonl").read_text()
        charges = {o["id"] for o in emu.objects("charges")}
        assert all(f'"id":"{c}"' in records.replace(" ", "") for c in charges)
        env_run = readme.command("TAP_STRIPE_CONNECT_API_KEY=rk_live_... .venv/bin/tap-stripe")
        result = shell(env_run.replace("rk_live_...", emu.api_key), tmp_path,
                       {"TAP_STRIPE_CONNECT_API_URL": emu.url})
        assert all(c in result.stdout for c in charges)


def test_the_test_script_runs_pytest():
    for start in ("bash scripts/test.sh", "bash scripts/test.sh tests/"):
        command = [c for c in readme.commands() if c.startswith(start)]
        assert command, start
    run = shell(readme.command("bash scripts/test.sh tests/") + " --collect-only -q", ROOT)
    assert "tests collected" in run.stdout or "collected" in run.stdout
    whole = [c for c in readme.commands() if c == "bash scripts/test.sh"]
    run = shell(whole[0] + " --collect-only -q tests/test_core.py", ROOT)
    assert "test_core.py" in run.stdout


def test_the_development_scripts():
    folder = ROOT / "tap_stripe_connect/schemas"
    schemas = {p: p.read_bytes() for p in folder.rglob("*.json")}
    shell(readme.command(".venv/bin/python scripts/generate_schemas.py"), ROOT)
    after = {p: p.read_bytes() for p in folder.rglob("*.json")}
    assert after == schemas, "the committed schemas differ from the vendored spec's"
    shell(readme.command(".venv/bin/ruff check . && .venv/bin/mypy"), ROOT)
    # These rewrite a committed file: --check says whether they would change it.
    shell(readme.command(".venv/bin/python scripts/update_readme_settings.py") + " --check",
          ROOT)
    shell(readme.command(".venv/bin/python scripts/update_plugin_definition.py") + " --check",
          ROOT)


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


def test_the_postgres_command(tmp_path):
    script = "\n".join([
        "set -e",
        readme.command('eval "$(bash scripts/start_postgres.sh)"'),
        'psql -tAc "SELECT 40 + 2"',
        'bash scripts/start_postgres.sh stop "$TAP_STRIPE_CONNECT_TEST_PGDATA"',
    ])
    # A server of its own, even when CI's is running (its PG* variables are not passed on).
    run = subprocess.run(
        script, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env={k: v for k, v in user_env().items() if not k.startswith("PG")},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "42"
