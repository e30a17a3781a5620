"""The Dagster code location (orchestration/dagster/): one partition per shard of the accounts.

Every partition ("1/3", "2/3", "3/3") is materialised with Dagster's multiprocess executor,
as the docs say (`dg launch ... --partition k/N`), each running the real
Meltano pipeline (`meltano run --state-id-suffix shard-k-of-3 tap-stripe-connect
target-jsonl`) against the Connect emulator's platform, into a folder per shard. The union
of the shards' records must equal one unsharded run's, with no account in two shards, and
Dagster must hold a materialisation of every partition with its shard's own state ID.

Needs the `dagster` extra in .venv (scripts/test.sh installs it) and Meltano with
target-jsonl (the `meltano` fixture, scripts/install_meltano.sh).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests import readme
from tests.conftest import ROOT
from tests.emulator.connect import ConnectPlatform
from tests.test_pipelines import clean_env, meltano  # noqa: F401 (the session fixture)

STREAMS = ("charges", "customers", "invoices", "subscriptions")
SHARDS = 3
#: Five accounts of seed 100 fall in shards 3, 1, 2, 1, 2: no shard is empty.
ACCOUNTS = 5
OBJECTS = 4
TIMEOUT = 900
DAGSTER = Path(sys.executable).parent / "dagster"


def needs_dagster() -> None:
    if DAGSTER.exists():
        return
    message = "Dagster is not in .venv: pip install -e '.[dagster]' (scripts/test.sh does)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A README command as written, in the checkout; its output (both streams) returned."""
    return subprocess.run(
        command, shell=True, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
        check=False,
    )


def records(folder: Path) -> dict[str, set[tuple[str, str]]]:
    """(account_id, id) of every record target-jsonl wrote, per stream."""
    found = {}
    for stream in STREAMS:
        path = folder / f"{stream}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        pairs = [(row["account_id"], row["id"]) for row in rows]
        assert len(pairs) == len(set(pairs)), f"{path}: a record written twice"
        found[stream] = set(pairs)
    return found


@pytest.fixture
def platform():
    with ConnectPlatform(accounts=ACCOUNTS, objects=OBJECTS) as running:
        yield running


@pytest.fixture
def env(platform, tmp_path) -> dict[str, str]:
    """The environment a user sets for the code location: the tap's settings for the
    platform, the shard count and loader, a Dagster instance and a state backend of the
    test's own (the checkout's .meltano keeps no state of these runs)."""
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **clean_env(),
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_STATE_BACKEND_URI": f"file://{tmp_path}/state",
        "DAGSTER_HOME": str(tmp_path / "dagster-home"),
        "STRIPE_CONNECT_SHARDS": str(SHARDS),
        "STRIPE_CONNECT_LOADER": "target-jsonl",
        "TAP_STRIPE_CONNECT_API_KEY": platform.platform_key,
        "TAP_STRIPE_CONNECT_API_URL": platform.url,
        "TAP_STRIPE_CONNECT_ACCOUNT_IDS": '["*"]',
        "TAP_STRIPE_CONNECT_MAX_RETRY_SECONDS": "10",
        "TAP_STRIPE_CONNECT__SELECT": json.dumps([f"{s}.*" for s in STREAMS]),
    }


def suffix(shard: str) -> str:
    return f"shard-{shard.partition('/')[0]}-of-{SHARDS}"


def materialize(shard: str, env: dict[str, str], **meltano_config: object):
    """The docs' `dg launch` for one shard, the resource configured."""
    command = readme.command(".venv/bin/dg launch")
    assert command.endswith("--partition 1/4"), command
    command = command.removesuffix("1/4") + shard
    run_config = {"resources": {"meltano": {"config": meltano_config}}}
    run = shell(f"{command} --config-json '{json.dumps(run_config)}'", env)
    # `dagster asset materialize` printed a SupersessionWarning: the current command does not.
    assert "SupersessionWarning" not in run.stdout
    return run


def test_every_shard_partition_materialised_equals_one_unsharded_run(
    meltano, platform, env, tmp_path, monkeypatch  # noqa: F811
):
    needs_dagster()
    installed = shell(readme.command(".venv/bin/pip install -e '.[dagster]'"), env)
    assert installed.returncode == 0, installed.stdout[-3000:]
    out = tmp_path / "shards"
    shards = [f"{k}/{SHARDS}" for k in range(1, SHARDS + 1)]
    # The instance's SQLite storage, created once before runs share it (at once, each run
    # would create it, and Alembic's migrations collide).
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

    DagsterInstance.get().dispose()
    # Every partition at once, as a backfill launches them: each run's step in a process
    # of its own (the multiprocess executor), each shard's Meltano state its own.
    with ThreadPoolExecutor(SHARDS) as pool:
        runs = list(pool.map(
            lambda shard: materialize(
                shard, env, shard_env={"TARGET_JSONL_DESTINATION_PATH": f"{out}/{{suffix}}"}
            ),
            shards,
        ))
    for shard, run in zip(shards, runs, strict=True):
        assert run.returncode == 0, f"shard {shard}:\n{run.stdout[-6000:]}"
        assert "multiprocess executor" in run.stdout, run.stdout[-3000:]
        # Meltano's log streamed into Dagster's, the tap's own lines included.
        assert "] tap-stripe-connect Sync finished: " in run.stdout
        assert f"--state-id-suffix {suffix(shard)}" in run.stdout

    # One Meltano state per shard, in the state backend all of them share.
    listed = subprocess.run(
        [str(meltano), "state", "list"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=True,
    ).stdout.split()
    assert sorted(listed) == [f"dev:tap-stripe-connect-to-target-jsonl:{suffix(s)}" for s in shards]

    unsharded = tmp_path / "unsharded"
    proc = subprocess.run(
        [str(meltano), "run", "--state-id-suffix", "unsharded", "tap-stripe-connect",
         "target-jsonl"],
        cwd=ROOT, env={**env, "TARGET_JSONL_DESTINATION_PATH": str(unsharded)},
        capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    everything = records(unsharded)
    for stream in STREAMS:
        assert {a for a, _ in everything[stream]} == set(platform.account_ids), stream
        assert len(everything[stream]) == OBJECTS * ACCOUNTS, stream

    by_shard = {shard: records(out / suffix(shard)) for shard in shards}
    owners: dict[str, set[str]] = collections.defaultdict(set)
    for shard, found in by_shard.items():
        for stream in STREAMS:
            for account, _ in found[stream]:
                owners[account].add(shard)
    assert {a: len(s) for a, s in owners.items()} == dict.fromkeys(platform.account_ids, 1), (
        f"accounts per shard: {dict(owners)}"
    )
    assert all(any(found.values()) for found in by_shard.values()), "a shard synced nothing"
    for stream in STREAMS:
        union = set().union(*(found[stream] for found in by_shard.values()))
        assert union == everything[stream], stream

    # Dagster's instance: every partition materialised, each with its shard's state ID.
    with DagsterInstance.get() as instance:
        key = AssetKey("stripe_connect")
        assert instance.get_materialized_partitions(key) == set(shards)
        for shard in shards:
            (record,) = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, asset_partitions=[shard]), limit=5
            ).records
            materialization = record.asset_materialization
            assert materialization is not None
            metadata = materialization.metadata
            assert metadata["state_id_suffix"].value == suffix(shard)
            # Read from the tap's summary line as it streamed through Dagster's log.
            written = sum(len(pairs) for pairs in by_shard[shard].values())
            assert metadata["records"].value == written, shard


def test_a_failing_meltano_run_fails_its_partition(meltano, env):  # noqa: F811
    needs_dagster()
    run = materialize("2/3", env, loader="target-that-is-not-in-meltano-yml")
    assert run.returncode != 0
    assert "`meltano run` exited with 1" in run.stdout, run.stdout[-4000:]
    # Meltano's own words reach Dagster's log.
    assert "target-that-is-not-in-meltano-yml" in run.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dagster_dev_serves_the_shard_partitions(env):
    """The README's `dagster dev`: the UI's GraphQL lists the asset with one partition
    per shard."""
    needs_dagster()
    port = free_port()
    command = f"{readme.command('.venv/bin/dagster dev')} -p {port}"
    server = subprocess.Popen(
        command, shell=True, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    query = {"query": "{ assetNodes { assetKey { path } partitionKeys } }"}
    nodes = None
    try:
        deadline = time.monotonic() + 180
        while nodes is None and time.monotonic() < deadline and server.poll() is None:
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/graphql", json=query, timeout=10)
                nodes = answer.json()["data"]["assetNodes"] or None
            except (requests.RequestException, KeyError, ValueError):  # still starting
                time.sleep(1)
    finally:
        # `dagster dev` runs the webserver, the daemon and code servers in its process
        # group; they outlive a SIGTERM to `dagster dev` by many seconds.
        os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=15)
    assert nodes, f"dagster dev served no asset:\n{server.stderr.read()[-4000:]}"  # type: ignore[union-attr]
    assert nodes == [
        {"assetKey": {"path": ["stripe_connect"]}, "partitionKeys": ["1/3", "2/3", "3/3"]}
    ]


def test_the_code_location_settings(monkeypatch, tmp_path):
    """Shard keys, state IDs, the command and environment of a shard, and clear errors."""
    needs_dagster()
    from orchestration.dagster import definitions

    assert definitions.shard_keys(3) == ["1/3", "2/3", "3/3"]
    assert definitions.state_id_suffix("3/16") == "shard-3-of-16"
    (tmp_path / ".meltano" / "extractors").mkdir(parents=True)
    project = definitions.MeltanoProject(
        project_root=str(tmp_path), meltano="meltano", loader="target-duckdb",
        environment="prod",
        shard_env={"TARGET_DUCKDB_PATH": "w-{suffix}-{k}-{n}.duckdb", "X": '{"shard": "{k}"}'},
    )
    assert project.command("2/4") == [
        "meltano", "--environment", "prod", "run", "--state-id-suffix", "shard-2-of-4",
        "tap-stripe-connect", "target-duckdb",
    ]
    monkeypatch.delenv("MELTANO_SYS_DIR_ROOT", raising=False)
    env = project.env("2/4")
    assert env["TAP_STRIPE_CONNECT_ACCOUNT_SHARD"] == "2/4"
    assert env["TARGET_DUCKDB_PATH"] == "w-shard-2-of-4-2-4.duckdb"
    assert env["X"] == '{"shard": "2"}'
    # A .meltano of the shard's own: its run/ apart, the rest the project's.
    own = Path(env["MELTANO_SYS_DIR_ROOT"])
    assert own == tmp_path / ".meltano" / "shards" / "shard-2-of-4"
    assert (own / "extractors").resolve() == tmp_path / ".meltano" / "extractors"
    assert (own / "meltano.db").is_symlink()
    assert not (own / "run").exists()

    monkeypatch.setenv("STRIPE_CONNECT_SHARDS", "0")
    with pytest.raises(ValueError, match="STRIPE_CONNECT_SHARDS must be a whole number >= 1"):
        definitions.shard_count()
    monkeypatch.setenv("STRIPE_CONNECT_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="STRIPE_CONNECT_EXECUTOR must be multiprocess, k8s"):
        definitions.executor()


# -- what a shard's pipeline gets, and what reaches Dagster's log -------------------------------

SECRETS = {
    "TAP_STRIPE_CONNECT_API_KEY": "sk_test_dagsterShardKey4711",  # the tap's: passed on
    "TARGET_POSTGRES_PASSWORD": "loaderPassw0rd-99",  # the loader's: passed on
    "DAGSTER_PG_PASSWORD": "dagstersOwnPassw0rd",  # Dagster's own: not the pipeline's
    "AWS_SECRET_ACCESS_KEY": "awsSecretOfAnotherJob",  # another job's: passed on if asked
}


def fake_meltano(tmp_path: Path, status: int) -> Path:
    """A `meltano` that writes the environment it got, reads the project's `.env` (as
    Meltano does) and logs the secrets it has, as a careless plugin's debug line would;
    then exits with `status`."""
    script = tmp_path / "meltano"
    script.write_text(
        "#!/bin/sh\n"
        f"env > '{tmp_path}/env.txt'\n"
        ". ./.env\n"  # as Meltano reads the project's .env
        'echo "tap: key $TAP_STRIPE_CONNECT_API_KEY, refresh $TAP_STRIPE_CONNECT_REFRESH_TOKEN"\n'
        'echo "target: connecting with password=$TARGET_POSTGRES_PASSWORD" >&2\n'
        'echo "aws: $AWS_SECRET_ACCESS_KEY"\n'
        f"exit {status}\n"
    )
    script.chmod(0o755)
    return script


def materialize_in_process(tmp_path: Path, monkeypatch, status: int, **config):
    """Partition 2/4 materialised in this process, with `fake_meltano`: the environment
    the pipeline got, and every entry of the run's event log as text."""
    needs_dagster()
    import dagster as dg

    from orchestration.dagster import definitions

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("UNRELATED_SETTING", "not-for-meltano")
    monkeypatch.delenv("MELTANO_SYS_DIR_ROOT", raising=False)
    (tmp_path / ".meltano").mkdir()
    # The refresh token only in the project's .env, as `meltano config set` may keep it.
    (tmp_path / ".env").write_text("TAP_STRIPE_CONNECT_REFRESH_TOKEN='rt_fromTheDotEnvFile'\n")
    project = definitions.MeltanoProject(
        project_root=str(tmp_path),
        meltano=str(fake_meltano(tmp_path, status)),
        loader="target-postgres",
        **config,
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [definitions.stripe_connect],
        partition_key="2/4",
        resources={"meltano": project},
        instance=instance,
        raise_on_error=False,
    )
    lines = (tmp_path / "env.txt").read_text().splitlines()
    got = dict(line.split("=", 1) for line in lines if "=" in line)
    log = "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))
    return result, got, log


def test_a_shard_pipeline_gets_only_the_variables_it_needs(tmp_path, monkeypatch):
    result, got, _ = materialize_in_process(tmp_path, monkeypatch, 0)
    assert result.success
    assert got["TAP_STRIPE_CONNECT_API_KEY"] == SECRETS["TAP_STRIPE_CONNECT_API_KEY"]
    assert got["TARGET_POSTGRES_PASSWORD"] == SECRETS["TARGET_POSTGRES_PASSWORD"]
    assert got["TAP_STRIPE_CONNECT_ACCOUNT_SHARD"] == "2/4"
    assert got["PATH"] == os.environ["PATH"]
    for name in ("DAGSTER_PG_PASSWORD", "AWS_SECRET_ACCESS_KEY", "UNRELATED_SETTING"):
        assert name not in got, name


def test_pass_env_adds_named_variables(tmp_path, monkeypatch):
    _, got, _ = materialize_in_process(tmp_path, monkeypatch, 0, pass_env=["AWS_*"])
    assert got["AWS_SECRET_ACCESS_KEY"] == SECRETS["AWS_SECRET_ACCESS_KEY"]
    assert "DAGSTER_PG_PASSWORD" not in got


@pytest.mark.parametrize("status", [0, 3])
def test_secrets_never_reach_dagsters_log(tmp_path, monkeypatch, status):
    """Neither in the lines copied as they come nor in a failure's last lines."""
    result, _, log = materialize_in_process(
        tmp_path, monkeypatch, status, pass_env=["AWS_*"], secret_env=["AWS_SECRET_ACCESS_KEY"]
    )
    assert result.success == (status == 0)
    assert "tap: key [redacted], refresh [redacted]" in log
    assert "password=[redacted]" in log
    assert "aws: [redacted]" in log
    if status:
        assert "exited with 3" in log
    for name, value in [*SECRETS.items(), ("refresh", "rt_fromTheDotEnvFile")]:
        assert value not in log, name
