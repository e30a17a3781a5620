"""Dagster code location: one partition per shard of a platform's connected accounts.

    dagster dev -m orchestration.dagster.definitions
    dg launch -m orchestration.dagster.definitions --assets stripe_connect --partition 1/4

The partitions of the asset `stripe_connect` are the shards "1/N" .. "N/N" (N from
`STRIPE_CONNECT_SHARDS`, default 4). Materialising partition "k/N" runs the project's
Meltano pipeline, `meltano run --state-id-suffix shard-k-of-N tap-stripe-connect <loader>`,
with `TAP_STRIPE_CONNECT_ACCOUNT_SHARD=k/N`: the tap syncs only the accounts whose id hashes
to shard k, and each shard keeps its own state in Meltano's state backend. Meltano's log
streams into the run's log; a non-zero exit fails the partition, a cancelled sync's too
(the tap exits 143 on SIGTERM); a cancelled Dagster run stops the shard's pipeline with
SIGTERM.

The Meltano project, its loader and any per-shard variables are the `meltano` resource's
config (see `MeltanoProject`); how the executors spread shards over machines is in
orchestration/dagster/README.md.
"""

# No `from __future__ import annotations`: Dagster reads the asset's annotations as types.
import contextlib
import os
import re
import signal
import subprocess
import time
from collections import deque
from pathlib import Path

import dagster as dg

#: The checkout holding meltano.yml (this file is orchestration/dagster/definitions.py).
CHECKOUT = Path(__file__).resolve().parents[2]
#: Shards when `STRIPE_CONNECT_SHARDS` is unset: more than one machine's worth of accounts
#: is the reason to shard at all; change N only with care (see the README: accounts move).
DEFAULT_SHARDS = 4
#: Lines of Meltano's log a failure quotes.
TAIL_LINES = 40
#: The tap's summary at the end of a run, its `total` row: records, deletes, requests.
_SUMMARY = re.compile(r"\btotal\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)")
#: Variables of Dagster's environment every process needs; a shard's pipeline gets these,
#: Meltano's own (`MELTANO_*`), its plugins' settings (`TAP_STRIPE_CONNECT_*`, `TARGET_..._*`,
#: the plugin's name as Meltano spells its variables) and `pass_env`, nothing else: not the
#: webserver's, the daemon's or other code locations' secrets.
BASE_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "LC_*", "MELTANO_*",
)
#: A variable whose name says it holds a secret: its value never reaches Dagster's log.
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|AUTH", re.I)
#: Values shorter than this are not redacted (`true`, a port): they would blank out words.
MIN_SECRET_LENGTH = 8
REDACTED = "[redacted]"


def plugin_prefix(name: str) -> str:
    """`target-postgres` -> `TARGET_POSTGRES_*`: the variables Meltano reads its settings from."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_*"


def wanted(name: str, patterns: list[str]) -> bool:
    return any(
        name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns
    )


def secrets_in(env: dict[str, str], names: list[str]) -> list[str]:
    """The values of `env` that are secrets: named in `names`, or by a name that says so;
    longest first, so that one secret holding another is redacted whole."""
    values = {
        value
        for name, value in env.items()
        if (name in names or _SECRET_NAME.search(name)) and len(value) >= MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def dotenv(project_root: str) -> dict[str, str]:
    """The project's `.env` (Meltano reads its settings' values from it too)."""
    path = Path(project_root) / ".env"
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text(errors="replace").splitlines():
        name, sep, value = line.removeprefix("export ").partition("=")
        if sep and not name.lstrip().startswith("#"):
            found[name.strip()] = value.strip().strip("'\"")
    return found


def redact(line: str, secrets: list[str]) -> str:
    for secret in secrets:
        line = line.replace(secret, REDACTED)
    return line


def shard_count() -> int:
    raw = os.environ.get("STRIPE_CONNECT_SHARDS", str(DEFAULT_SHARDS))
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"STRIPE_CONNECT_SHARDS must be a whole number >= 1, not {raw!r}")
    return count


def shard_keys(count: int) -> list[str]:
    """The partition keys: "1/N" .. "N/N", the tap's `account_shard` values."""
    return [f"{k}/{count}" for k in range(1, count + 1)]


def state_id_suffix(shard: str) -> str:
    """`3/16` -> `shard-3-of-16`: one Meltano state ID per shard."""
    k, _, n = shard.partition("/")
    return f"shard-{k}-of-{n}"


SHARDS = dg.StaticPartitionsDefinition(shard_keys(shard_count()))


def _default_meltano() -> str:
    local = Path(os.environ.get("MELTANO_PROJECT_ROOT", CHECKOUT)) / ".venv-meltano/bin/meltano"
    return str(local) if local.exists() else "meltano"


class MeltanoProject(dg.ConfigurableResource):
    """The Meltano project a shard runs in, and how.

    `shard_env` adds variables per shard; `{k}`, `{n}` and `{suffix}` in a value are the
    shard's number, the shard count and `shard-k-of-n`, e.g. one DuckDB file per shard
    (DuckDB takes one writer at a time): `TARGET_DUCKDB_PATH: warehouse-{suffix}.duckdb`.

    Of Dagster's own environment the pipeline gets only what it needs (`BASE_ENV`, the
    extractor's and loader's settings); `pass_env` names more (a `*` at the end: a
    prefix), e.g. `AWS_*` for a Meltano state backend on S3. `secret_env` names variables
    whose values are secrets besides those whose names say so (`..._KEY`, `..._PASSWORD`,
    ...): none reaches the run's log.
    """

    project_root: str = os.environ.get("MELTANO_PROJECT_ROOT", str(CHECKOUT))
    meltano: str = _default_meltano()
    extractor: str = "tap-stripe-connect"
    loader: str = os.environ.get("STRIPE_CONNECT_LOADER", "target-postgres")
    environment: str | None = None
    shard_env: dict[str, str] | None = None
    pass_env: list[str] | None = None
    secret_env: list[str] | None = None

    def command(self, shard: str) -> list[str]:
        argv = [self.meltano]
        if self.environment:
            argv += ["--environment", self.environment]
        return [*argv, "run", "--state-id-suffix", state_id_suffix(shard),
                self.extractor, self.loader]

    def env(self, shard: str) -> dict[str, str]:
        k, _, n = shard.partition("/")
        # Plain replacements, not str.format: a value may hold JSON's braces.
        fields = {"{k}": k, "{n}": n, "{suffix}": state_id_suffix(shard)}
        extra = {}
        for name, template in (self.shard_env or {}).items():
            value = template
            for field, text in fields.items():
                value = value.replace(field, text)
            extra[name] = value
        patterns = [
            *BASE_ENV,
            plugin_prefix(self.extractor),
            plugin_prefix(self.loader),
            *(self.pass_env or []),
        ]
        return {
            **{name: value for name, value in os.environ.items() if wanted(name, patterns)},
            **extra,
            "TAP_STRIPE_CONNECT_ACCOUNT_SHARD": shard,
            "MELTANO_PROJECT_ROOT": self.project_root,
            "MELTANO_SYS_DIR_ROOT": str(self.system_dir(shard)),
        }

    def system_dir(self, shard: str) -> Path:
        """A `.meltano` of the shard's own, everything in it but `run/` linked to the
        project's: `meltano run` writes the plugins' config and catalog to
        `.meltano/run/<plugin>/` and deletes them at the end, so two shards running at once
        in one project would remove each other's files. Installed plugins, logs and the
        system database (state, unless a `state_backend` is set) stay the project's."""
        shared = Path(
            os.environ.get("MELTANO_SYS_DIR_ROOT") or Path(self.project_root) / ".meltano"
        ).resolve()
        own = shared / "shards" / state_id_suffix(shard)
        own.mkdir(parents=True, exist_ok=True)
        # The system database linked even before it exists: state lands in the project's.
        names = {entry.name for entry in shared.iterdir()} | {"meltano.db"}
        for name in sorted(names - {"run", "shards"}):
            link = own / name
            if not link.is_symlink():
                link.symlink_to(shared / name)
        return own


@dg.asset(
    partitions_def=SHARDS,
    description="A platform's connected Stripe accounts, one shard of them per partition, "
    "synced by `meltano run` into the project's loader (one Meltano state per shard).",
    kinds={"meltano", "stripe"},
    # One pool for every shard's step, whatever run it is in: its limit (none unless set)
    # caps the shards syncing at once, e.g. to keep a platform's requests under a figure.
    pool="stripe_connect_shards",
)
def stripe_connect(
    context: dg.AssetExecutionContext, meltano: MeltanoProject
) -> dg.MaterializeResult:
    shard = context.partition_key
    argv = meltano.command(shard)
    env = meltano.env(shard)
    secrets = secrets_in({**dotenv(meltano.project_root), **env}, meltano.secret_env or [])
    context.log.info(f"shard {shard}: {' '.join(argv)} (in {meltano.project_root})")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    summary = None
    started = time.monotonic()
    # Meltano logs to stderr, the tap's and the loader's lines included: one stream, line
    # by line into the run's log, as it comes.
    # A session of its own: a cancelled step stops the whole pipeline (see `stop_pipeline`).
    with subprocess.Popen(
        argv, cwd=meltano.project_root, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        bufsize=1, start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = redact(raw.rstrip(), secrets)
                if not line:
                    continue
                context.log.info(line)
                tail.append(line)
                summary = _SUMMARY.search(line) or summary
        except BaseException:
            # Dagster interrupts a step whose run is cancelled: the sync stops too.
            stop_pipeline(proc)
            raise
        status = proc.wait()
    seconds = round(time.monotonic() - started, 1)
    if status != 0:
        why = cancelled(status)
        raise dg.Failure(
            description=f"shard {shard}: `meltano run` exited with {status} after {seconds}s"
            + (f" ({why}: the shard's sync was cancelled, not complete)" if why else ""),
            metadata={"meltano log (last lines)": dg.MetadataValue.md(
                "```\n" + "\n".join(tail) + "\n```")},
            allow_retries=True,
        )
    metadata: dict[str, dg.RawMetadataValue] = {
        "state_id_suffix": state_id_suffix(shard),
        "loader": meltano.loader,
        "seconds": seconds,
    }
    if summary:
        records, _deletes, requests = (int(g.replace(",", "")) for g in summary.groups())
        metadata.update(records=records, requests=requests)
    return dg.MaterializeResult(metadata=metadata)


#: Seconds a cancelled pipeline has to write its last STATE before it is killed.
STOP_GRACE_SECONDS = 30


def cancelled(status: int) -> str | None:
    """The signal that stopped the pipeline, from its exit code (the tap exits 143 on
    SIGTERM and 130 on SIGINT; a process the signal ended shows as -15 or -2)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        if status in (128 + sig, -sig):
            return sig.name
    return None


def stop_pipeline(proc: subprocess.Popen) -> None:
    """Stop a shard's pipeline the way its tap expects: SIGTERM to the tap, which starts
    no new page, writes its records and the last STATE and exits 143; Meltano then ends
    the run as for any failed extractor, the loader having written what it received.
    Still running `STOP_GRACE_SECONDS` later: SIGTERM to every process of the pipeline,
    then SIGKILL. (Where the tap cannot be found, as off Linux: SIGTERM to all at once.)"""
    taps = tap_processes(proc.pid)
    for pid in taps:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if not taps:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGKILL) if taps else (signal.SIGKILL,):
        try:
            proc.wait(timeout=STOP_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
    proc.wait()


def tap_processes(session: int) -> list[int]:
    """The tap's processes in a session (Linux /proc; none found elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            # After the command's closing parenthesis: state ppid pgrp session ...
            in_session = int(stat[stat.rindex(")") + 2 :].split()[3]) == session
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue
        names = [Path(arg).name for arg in args[:2]]
        module = args[args.index("-m") + 1] if "-m" in args[:-1] else None
        tap = "tap-stripe-connect" in names or module == "tap_stripe_connect"
        if in_session and tap and int(entry.name) != session:
            found.append(int(entry.name))
    return found


def executor() -> dg.ExecutorDefinition:
    """The executor `STRIPE_CONNECT_EXECUTOR` names: where each shard's step runs.

    multiprocess (default): a process on the run's machine; k8s: a Kubernetes Job (pod) per
    shard (`dagster-k8s`); celery: a task that a `dagster-celery` worker on any machine picks
    up. Their settings (image, broker, ...) are run config under `execution: config:`.
    """
    name = os.environ.get("STRIPE_CONNECT_EXECUTOR", "multiprocess")
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor
    raise ValueError(
        f"STRIPE_CONNECT_EXECUTOR must be multiprocess, k8s or celery, not {name!r}"
    )


# Partitioned as its asset is (Dagster infers it: passing `partitions_def` is deprecated).
shards_job = dg.define_asset_job("stripe_connect_shards", selection=[stripe_connect])

defs = dg.Definitions(
    assets=[stripe_connect],
    jobs=[shards_job],
    resources={"meltano": MeltanoProject()},
    executor=executor(),
)
