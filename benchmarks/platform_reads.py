"""What a platform's schedule costs in Stripe's read allocation (issue 25), against the emulator.

    .venv/bin/python benchmarks/platform_reads.py
    .venv/bin/python benchmarks/platform_reads.py --accounts 5 --hours 96

A platform of quiet connected accounts (nothing changes in them) is synced once whole, then
run hourly (the emulator's clock, Stripe's, moves on an hour between two runs) under four
settings: the defaults; `quiet_account_interval_seconds: 86400` (listings of what Stripe
creates without an event, once a day); `quiet_account_events_interval_seconds: 21600` (a
quiet account's events every 6 hours); and both. Printed per setting: the reads (GETs with
`Stripe-Account`, from the emulator's request log) per account of each run, their mean, and
what 10,000 such accounts cost in a 30-day month. docs/platforms.md's table comes from it.
It asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import run_tap
from tests.emulator.connect import ConnectPlatform
from tests.test_platform import platform_settings

SCHEDULES: dict[str, dict[str, int]] = {
    "defaults": {},
    "quiet_account_interval_seconds: 86400": {"quiet_account_interval_seconds": 86400},
    "quiet_account_events_interval_seconds: 21600": {
        "quiet_account_events_interval_seconds": 21600
    },
    "both": {
        "quiet_account_interval_seconds": 86400,
        "quiet_account_events_interval_seconds": 21600,
    },
}


def hourly(accounts: int, hours: int, settings: dict[str, int]) -> list[float]:
    """Reads per connected account of each hourly run after a full sync."""
    with ConnectPlatform(accounts=accounts, objects=10, latency=(1, 1)) as platform:
        tmp = Path(tempfile.mkdtemp(prefix="platform-reads-"))
        config = platform_settings(platform, **settings)
        run = run_tap(config=config, tmp_path=tmp)
        state = run.last_state
        per_run = []
        for _ in range(hours):
            platform.advance(3600)
            since = len(platform.api_requests)
            run = run_tap(config=config, state=state, tmp_path=tmp)
            if run.returncode != 0:
                raise SystemExit(run.stderr[-2000:])
            state = run.last_state
            reads = collections.Counter(
                account
                for method, _path, account in platform.api_requests[since:]
                if method == "GET" and account
            )
            per_run.append(sum(reads.values()) / accounts)
        return per_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--hours", type=int, default=48)
    args = parser.parse_args()
    for name, settings in SCHEDULES.items():
        per_run = hourly(args.accounts, args.hours, settings)
        mean = sum(per_run) / len(per_run)
        month = mean * 10_000 * 24 * 30
        shown = " ".join(f"{n:g}" for n in per_run)
        print(
            f"{name}: reads per account per run [{shown}], mean {mean:.2f}; "
            f"10,000 accounts hourly: {month / 1e6:.1f} million reads a month",
            flush=True,
        )


if __name__ == "__main__":
    main()
