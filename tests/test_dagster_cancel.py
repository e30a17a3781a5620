"""A shard whose sync is cancelled fails its Dagster partition.

The partition runs its pipeline (here a stand-in for `meltano run` that runs the real tap
against the emulator, with slow responses); the tap gets SIGTERM midway, as from Meltano,
Kubernetes or a person. It must exit 143, not 0, so the partition fails and says the sync
was cancelled: a success would hide the accounts never synced.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from tests.test_dagster import needs_dagster
from tests.test_faults import config, core_catalog, emulator


def test_a_cancelled_shard_fails_its_partition(tmp_path):
    needs_dagster()
    import dagster as dg

    from orchestration.dagster import definitions

    with emulator(objects=2000, seed=53) as emu:
        emu.set_latency(150, 50)
        (tmp_path / "config.json").write_text(json.dumps(config(emu, max_workers=4)))
        (tmp_path / "catalog.json").write_text(core_catalog())
        pid_file, records = tmp_path / "tap.pid", tmp_path / "records.jsonl"
        fake = tmp_path / "meltano"
        fake.write_text(
            "#!/bin/sh\n"
            f"echo $$ > '{pid_file}'\n"
            f"exec '{sys.executable}' -m tap_stripe_connect --config '{tmp_path}/config.json'"
            f" --catalog '{tmp_path}/catalog.json' > '{records}'\n"
        )
        fake.chmod(0o755)
        signalled = threading.Event()

        def cancel() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if pid_file.exists() and records.exists() and records.stat().st_size > 50_000:
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
                    signalled.set()
                    return
                time.sleep(0.05)

        canceller = threading.Thread(target=cancel, daemon=True)
        canceller.start()
        project = definitions.MeltanoProject(
            project_root=str(tmp_path), meltano=str(fake), loader="target-jsonl"
        )
        shard = definitions.SHARDS.get_partition_keys()[0]
        result = dg.materialize(
            [definitions.stripe_connect],
            partition_key=shard,
            resources={"meltano": project},
            raise_on_error=False,
        )
        canceller.join(timeout=5)
        assert signalled.is_set(), "the sync ended before it could be cancelled"
        assert not result.success
        failures = [
            e.step_failure_data.error.message  # type: ignore[union-attr]
            for e in result.all_events
            if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
        ]
        assert any(
            "exited with 143" in m and "SIGTERM: the shard's sync was cancelled" in m
            for m in failures
        ), failures


def test_a_cancelled_step_stops_its_pipeline_with_sigterm(tmp_path):
    """What the asset does when Dagster interrupts its step (a cancelled run): SIGTERM to
    every process of the pipeline's session; the tap writes its STATE and exits 143."""
    needs_dagster()
    import subprocess

    from orchestration.dagster import definitions

    with emulator(objects=2000, seed=55) as emu:
        emu.set_latency(300, 50)
        (tmp_path / "config.json").write_text(json.dumps(config(emu, max_workers=4)))
        (tmp_path / "catalog.json").write_text(core_catalog())
        argv = [sys.executable, "-m", "tap_stripe_connect", "--config",
                str(tmp_path / "config.json"), "--catalog", str(tmp_path / "catalog.json")]
        # A shell in between, as `meltano` is: the signal reaches the tap through the session.
        proc = subprocess.Popen(
            ["/bin/sh", "-c", '"$@"; exit $?', "sh", *argv], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        assert proc.stdout is not None
        for count, _ in enumerate(proc.stdout):
            if count == 100:
                break
        definitions.stop_pipeline(proc)
        rest = proc.stdout.read().decode()
        assert proc.returncode == 143
        assert definitions.cancelled(proc.returncode) == "SIGTERM"
        assert json.loads(rest.splitlines()[-1])["type"] == "STATE"
