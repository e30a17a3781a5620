"""Dagster code location: one partition per shard of a platform's connected accounts.

    dagster dev -m orchestration.dagster.definitions
    dg launch -m orchestration.dagster.definitions --assets stripe_connect --partition 1/4

The partitions of the asset `stripe_connect` are the shards "1/N" .. "N/N" (N from
`STRIPE_CONNECT_SHARDS`, default 4). Materialising partition "k/N" runs the project's
Meltano pipeline, `meltano run --state-id-suffix shard-k-of-N tap-stripe-connect <loader>`,
with `TAP_STRIPE_CONNECT_ACCOUNT_SHARD=k/N`: the tap syncs only the accounts whose id hashes
to shard k, and each shard keeps its own state in Meltano's state backend. Meltano's log
streams into the run's log; a non-zero exit fails the partition.

The Meltano project, its loader and any per-shard variables are the `meltano` resource's
config (see `MeltanoProject`); how the executors spread shards over machines is in
orchestration/dagster/README.md.
"""

# No `from __future__ import annotations`: Dagster reads the asset's annotations as types.
import os
import re
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
    """

    project_root: str = os.environ.get("MELTANO_PROJECT_ROOT", str(CHECKOUT))
    meltano: str = _default_meltano()
    extractor: str = "tap-stripe-connect"
    loader: str = os.environ.get("STRIPE_CONNECT_LOADER", "target-postgres")
    environment: str | None = None
    shard_env: dict[str, str] | None = None

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
        return {
            **os.environ,
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
    context.log.info(f"shard {shard}: {' '.join(argv)} (in {meltano.project_root})")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    summary = None
    started = time.monotonic()
    # Meltano logs to stderr, the tap's and the loader's lines included: one stream, line
    # by line into the run's log, as it comes.
    with subprocess.Popen(
        argv, cwd=meltano.project_root, env=meltano.env(shard), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            context.log.info(line)
            tail.append(line)
            summary = _SUMMARY.search(line) or summary
        status = proc.wait()
    seconds = round(time.monotonic() - started, 1)
    if status != 0:
        raise dg.Failure(
            description=f"shard {shard}: `meltano run` exited with {status} after {seconds}s",
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


shards_job = dg.define_asset_job("stripe_connect_shards", selection=[stripe_connect],
                                 partitions_def=SHARDS)

defs = dg.Definitions(
    assets=[stripe_connect],
    jobs=[shards_job],
    resources={"meltano": MeltanoProject()},
    executor=executor(),
)
