"""Real pipelines: `meltano run tap-stripe-connect <loader>` into DuckDB and PostgreSQL.

Each test loads the emulator's data through Meltano and a real loader, compares the
tables with the emulator's objects (row counts per table, and the values of every row),
changes data in the emulator, runs again incrementally, and checks that changed rows were
updated in place on the primary key and deleted objects removed (DuckDB: `hard_delete`)
or marked with `_sdc_deleted_at` (PostgreSQL). State goes through Meltano's state backend
(the systemdb in .meltano) under a state ID of its own per test.

Meltano and the plugins are installed once per session by scripts/install_meltano.sh
(.venv-meltano and .meltano). PostgreSQL is the server named by the PG* variables, which
.ci/run sets (scripts/start_postgres.sh); without them the PostgreSQL tests skip locally
and fail in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.catalogs import EMULATOR_STREAMS
from tests.conftest import ROOT
from tests.emulator import Emulator
from tests.warehouse import truth

MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
PLUGIN_PYTHON = {
    "target-duckdb": ROOT / ".meltano/loaders/target-duckdb/venv/bin/python",
    "target-postgres": ROOT / ".meltano/loaders/target-postgres/venv/bin/python",
}
# Every stream the tap and the emulator both have.
PIPELINE_STREAMS = EMULATOR_STREAMS
CORE = ("charges", "customers", "invoices", "subscriptions")
# The streams `mutate` changes, compared again after the incremental run.
MUTATED = (*CORE, "invoice_line_items", "subscription_items")
OBJECTS = 50
# Without these the PostgreSQL tests cannot run (CI=true: they fail instead of skipping).
PG_VARIABLES = ("PGHOST", "PGPORT", "PGUSER")

# Rows of every table of one schema as JSON, run by the loader's own Python (which has
# duckdb or psycopg): times as RFC 3339 UTC, numbers as JSON numbers.
DUMP_COMMON = """
import datetime, decimal, json, sys

def plain(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)

def dump(cursor, schema):
    cursor.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s" % PARAM,
        [schema],
    )
    tables = {}
    for (table,) in cursor.fetchall():
        cursor.execute('SELECT * FROM "%s"."%s"' % (schema, table))
        columns = [d[0] for d in cursor.description]
        tables[table] = [dict(zip(columns, row)) for row in cursor.fetchall()]
    json.dump(tables, sys.stdout, default=plain)
"""
DUMP_DUCKDB = (
    DUMP_COMMON
    + """
import duckdb
PARAM = "?"
dump(duckdb.connect(sys.argv[1], read_only=True).cursor(), sys.argv[2])
"""
)
DUMP_POSTGRES = (
    DUMP_COMMON
    + """
import psycopg
PARAM = "%s"
with psycopg.connect(autocommit=True) as conn:
    if len(sys.argv) > 2 and sys.argv[2] == "--drop":
        conn.execute('DROP SCHEMA IF EXISTS "%s" CASCADE' % sys.argv[1])
    else:
        dump(conn.cursor(), sys.argv[1])
"""
)


def clean_env() -> dict[str, str]:
    """This process's environment without settings meant for other runs."""
    prefixes = ("TAP_STRIPE_CONNECT_", "TARGET_", "MELTANO_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@pytest.fixture(scope="session")
def meltano() -> Path:
    """Meltano and the project's plugins, installed once per session."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_meltano.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, f"installing Meltano failed:\n{proc.stderr[-5000:]}"
    for path in (MELTANO, *PLUGIN_PYTHON.values()):
        assert path.exists(), f"{path} is missing after scripts/install_meltano.sh"
    return MELTANO


@pytest.fixture(scope="session")
def postgres() -> dict[str, str]:
    """Connection settings of the PostgreSQL server the PG* variables name."""
    missing = [name for name in PG_VARIABLES if not os.environ.get(name)]
    if missing:
        message = (
            f"PostgreSQL not configured ({', '.join(missing)} unset): start one with "
            '`eval "$(bash scripts/start_postgres.sh)"` (.ci/run does).'
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return {
        "TARGET_POSTGRES_HOST": os.environ["PGHOST"],
        "TARGET_POSTGRES_PORT": os.environ["PGPORT"],
        "TARGET_POSTGRES_USER": os.environ["PGUSER"],
        "TARGET_POSTGRES_PASSWORD": os.environ.get("PGPASSWORD", ""),
        "TARGET_POSTGRES_DATABASE": os.environ.get("PGDATABASE", "postgres"),
    }


class Pipeline:
    """`meltano run tap-stripe-connect <loader>` against one emulator, one state ID."""

    def __init__(
        self, meltano: Path, loader: str, emu: Emulator, env: dict[str, str], logs: Path
    ) -> None:
        self.meltano = meltano
        self.loader = loader
        self.emu = emu
        self.suffix = f"test-{uuid.uuid4().hex[:12]}"
        self.state_id = f"dev:tap-stripe-connect-to-{loader}:{self.suffix}"
        self.logs = logs
        self.runs = 0
        self.env = {
            **clean_env(),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "TAP_STRIPE_CONNECT_API_KEY": emu.api_key,
            "TAP_STRIPE_CONNECT_API_URL": emu.url,
            "TAP_STRIPE_CONNECT_MAX_RETRY_SECONDS": "10",
            "TAP_STRIPE_CONNECT__SELECT": json.dumps([f"{s}.*" for s in PIPELINE_STREAMS]),
            **env,
        }

    def meltano_cmd(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.meltano), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def run(self, *extra: str) -> str:
        """One `meltano run`; returns its log (stderr), kept under the test's tmp_path."""
        self.runs += 1
        proc = self.meltano_cmd(
            "run", "--state-id-suffix", self.suffix, *extra, "tap-stripe-connect", self.loader
        )
        log = self.logs / f"meltano-run-{self.runs}.log"
        log.write_text(proc.stdout + proc.stderr)
        assert proc.returncode == 0, f"meltano run failed (log {log}):\n{proc.stderr[-6000:]}"
        return proc.stderr

    def state(self) -> dict:
        proc = self.meltano_cmd("state", "get", self.state_id)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout[proc.stdout.index("{") :])

    def clear_state(self) -> None:
        self.meltano_cmd("state", "clear", "--force", self.state_id)


def dump_tables(loader: str, *args: str, env: dict[str, str] | None = None) -> dict:
    script = DUMP_DUCKDB if loader == "target-duckdb" else DUMP_POSTGRES
    proc = subprocess.run(
        [str(PLUGIN_PYTHON[loader]), "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def same(expected: object, got: object) -> bool:
    """A value as the tap emits it, and as a loader stored it."""
    if isinstance(expected, (dict, list)):
        if isinstance(got, str):
            got = json.loads(got)
        return expected == got
    if expected in ("", None):
        # target-duckdb stores empty strings as NULL.
        return got in ("", None)
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected == got and type(expected) is type(got)
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        return float(expected) == float(got)
    return expected == got


def assert_tables_equal_emulator(
    tables: dict[str, list[dict]], emu: Emulator, *, live, streams=PIPELINE_STREAMS
) -> None:
    """Row counts per table and every value of every row equal the emulator's objects.

    `live(row)` says whether a row stands for an existing object (PostgreSQL keeps
    deleted ones, marked).
    """
    assert set(streams) <= set(tables), f"tables: {sorted(tables)}"
    for stream in streams:
        rows = tables[stream]
        ids = [row["id"] for row in rows]
        assert len(ids) == len(set(ids)), f"{stream}: a primary key appears twice"
        expected = truth(emu, stream)
        got = {row["id"]: row for row in rows if live(row)}
        assert len(got) == len(expected), (
            f"{stream}: {len(got)} rows, the emulator has {len(expected)} objects "
            f"(missing {sorted(expected.keys() - got.keys())[:3]}, "
            f"extra {sorted(got.keys() - expected.keys())[:3]})"
        )
        assert got.keys() == expected.keys(), stream
        # `metadata` (free-form keys) stays one object column: no stray flattened columns.
        columns = set(rows[0]) if rows else set()
        assert not [c for c in columns if c.startswith("metadata_")], sorted(columns)
        checked = 0
        for key, obj in expected.items():
            row = got[key]
            for field, value in obj.items():
                if field not in row:
                    continue
                checked += 1
                assert same(value, row[field]), (
                    f"{stream} {key}.{field}: loaded {row[field]!r}, Stripe has {value!r}"
                )
            assert "metadata" not in obj or "metadata" in row, f"{stream}: no metadata column"
        assert checked >= len(expected) * 5, f"{stream}: too few values compared ({checked})"


def mutate(emu: Emulator) -> dict[str, set[str]]:
    """Updates, creations and deletions; returns the ids changed per kind."""
    updated: set[str] = set()
    for stream in CORE:
        for obj in emu.objects(stream)[:4]:
            emu.update(stream, obj["id"], {"metadata": {"pipeline": "updated"}})
            updated.add(obj["id"])
    created = {emu.create(stream)["id"] for stream in CORE for _ in range(3)}
    deleted = set()
    for customer in emu.objects("customers")[10:13]:
        emu.delete("customers", customer["id"])
        deleted.add(customer["id"])
    drafts = [
        o
        for o in emu.objects("invoices")
        if o["status"] == "draft"
        and not o["lines"]["has_more"]
        and o["id"] not in updated | created
    ]
    for invoice in drafts[:2]:
        emu.delete("invoices", invoice["id"])
        deleted.add(invoice["id"])
    assert deleted, "the emulator's data has nothing to delete"
    return {"updated": updated - deleted, "created": created, "deleted": deleted}


def assert_incremental(emu: Emulator, log: str) -> None:
    """The second run read events, not the lists again."""
    paths = [r.path for r in emu.requests]
    assert "/v1/events" in paths, "the second run did not read events: state was not used"
    relisted = [p for p in paths if p in ("/v1/charges", "/v1/customers", "/v1/invoices")]
    assert not relisted, f"the second run listed again: {relisted}"
    assert "Sync finished" in log


def assert_state_kept(pipeline: Pipeline) -> None:
    state = pipeline.state()
    bookmarks = state.get("singer_state", state).get("bookmarks", {})
    assert set(CORE) <= set(bookmarks), f"state in Meltano's systemdb: {state}"


def test_target_duckdb_runs_on_duckdb_1_2(meltano):
    """target-duckdb 0.8.0 on duckdb >= 1.3 drops the first row of every load."""
    proc = subprocess.run(
        [str(PLUGIN_PYTHON["target-duckdb"]), "-c", "import duckdb; print(duckdb.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip().startswith("1.2."), proc.stdout


@pytest.fixture
def emu():
    with Emulator(objects=OBJECTS, seed=31) as emulator:
        yield emulator


def test_duckdb_full_then_incremental_upserts_and_deletes(meltano, emu, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    pipeline = Pipeline(
        meltano, "target-duckdb", emu, {"TARGET_DUCKDB_PATH": str(database)}, tmp_path
    )
    try:
        first = pipeline.run()
        tables = dump_tables("target-duckdb", str(database), "stripe")
        # target-duckdb 0.8.0 with duckdb >= 1.3 loses one row per load: exact counts.
        assert_tables_equal_emulator(tables, emu, live=lambda row: True)
        assert f"Sync finished: {sum(len(tables[s]) for s in PIPELINE_STREAMS):,} records" in first
        assert_state_kept(pipeline)

        changes = mutate(emu)
        emu.clear_requests()
        second = pipeline.run()
        assert_incremental(emu, second)
        tables = dump_tables("target-duckdb", str(database), "stripe")
        assert_tables_equal_emulator(tables, emu, live=lambda row: True, streams=MUTATED)
        ids = {row["id"] for stream in CORE for row in tables[stream]}
        assert changes["created"] <= ids
        assert not changes["deleted"] & ids, "deleted objects are still in DuckDB"
        updated = [
            row for stream in CORE for row in tables[stream] if row["id"] in changes["updated"]
        ]
        assert len(updated) == len(changes["updated"])
        assert all(json.loads(row["metadata"]) == {"pipeline": "updated"} for row in updated)
        assert_state_kept(pipeline)
    finally:
        pipeline.clear_state()


def test_postgres_full_then_incremental_upserts_and_marks_deletes(meltano, postgres, emu, tmp_path):
    schema = f"stripe_{uuid.uuid4().hex[:10]}"
    pipeline = Pipeline(
        meltano,
        "target-postgres",
        emu,
        {**postgres, "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema},
        tmp_path,
    )
    try:
        pipeline.run()
        tables = dump_tables("target-postgres", schema)
        assert_tables_equal_emulator(tables, emu, live=lambda row: True)
        assert all(row["_sdc_table_version"] for s in CORE for row in tables[s])
        assert_state_kept(pipeline)

        changes = mutate(emu)
        emu.clear_requests()
        second = pipeline.run()
        assert_incremental(emu, second)
        tables = dump_tables("target-postgres", schema)
        assert_tables_equal_emulator(
            tables, emu, live=lambda row: row["_sdc_deleted_at"] is None, streams=MUTATED
        )
        rows = {row["id"]: row for stream in CORE for row in tables[stream]}
        assert changes["created"] <= rows.keys()
        for deleted in changes["deleted"]:
            assert rows[deleted]["_sdc_deleted_at"], f"{deleted} is not marked deleted"
        for updated in changes["updated"]:
            assert rows[updated]["metadata"] == {"pipeline": "updated"}
            assert rows[updated]["_sdc_deleted_at"] is None
        assert_state_kept(pipeline)

        # A complete listing again: its ACTIVATE_VERSION removes (hard_delete) every row
        # the listing did not contain, the deleted objects' marked rows included.
        pipeline.run("--full-refresh")
        tables = dump_tables("target-postgres", schema)
        assert_tables_equal_emulator(tables, emu, live=lambda row: True, streams=MUTATED)
        remaining = {row["id"] for stream in CORE for row in tables[stream]}
        assert not changes["deleted"] & remaining
    finally:
        pipeline.clear_state()
        dump_tables("target-postgres", schema, "--drop")
