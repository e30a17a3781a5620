"""The CLI, recording what the tap decided, for tests that would otherwise time it.

`python -m tests.decisions <tap arguments>` runs `tap_stripe_connect.cli.main` as
`python -m tap_stripe_connect` does, and appends a JSON line to the file named by
`$TAP_TEST_DECISIONS` for each

- grant of a rate budget: `{"grant": <account, or "total" for the run's cap>, "at": <the
  limiter's own clock>, "endpoint": <the endpoint's budget it took>}`; a budget's
  promise holds between its grants, whatever the machine's load did to the requests
  after (arrival times at a server do not);
- start of a unit of work: `{"start": <its account>, "running": [<accounts of the units
  running then>]}`, as the scheduler chose it.
"""

from __future__ import annotations

import json
import os
import threading

from tap_stripe_connect.api import client as client_module
from tap_stripe_connect.api.limiter import RateLimiter
from tap_stripe_connect.sync import scheduler


def install(path: str) -> None:
    """Record every grant and every unit start of this process in `path`."""
    lock = threading.Lock()
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open until the process ends)

    def record(entry: dict) -> None:
        with lock:
            out.write(json.dumps(entry) + "\n")
            out.flush()

    acquire, limiter_for, next_job = (
        RateLimiter.acquire,
        client_module.StripeClient.limiter_for,
        scheduler.next_job,
    )

    def recorded_acquire(self: RateLimiter, endpoint: str, **options):
        grant = acquire(self, endpoint, **options)
        entry = {"grant": getattr(self, "account_tag", "total"), "at": grant.at}
        record({**entry, "endpoint": endpoint})
        # The run's total cap (`max_requests_per_second_total`) is taken in the same call,
        # at the same instant (limiter.py: `also`).
        if getattr(grant, "also", None) is not None:
            record({"grant": "total", "at": grant.also.at, "endpoint": endpoint})
        return grant

    def tagged_limiter_for(self, account: str | None) -> RateLimiter:
        limiter = limiter_for(self, account)
        limiter.account_tag = account  # type: ignore[attr-defined]
        return limiter

    def recorded_next_job(waiting, busy):
        job = next_job(waiting, busy)
        running = sorted(busy.elements(), key=str)
        record({"start": getattr(job, "account", None), "running": running})
        return job

    RateLimiter.acquire = recorded_acquire  # type: ignore[method-assign]
    client_module.StripeClient.limiter_for = tagged_limiter_for  # type: ignore[method-assign]
    scheduler.next_job = recorded_next_job


def entries(path) -> list[dict]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def read(path) -> tuple[dict[str | None, list[float]], list[dict]]:
    """The grants (times per account, "total" for the cap) and the unit starts of a file."""
    grants: dict[str | None, list[float]] = {}
    starts = []
    for entry in entries(path):
        if "grant" in entry:
            grants.setdefault(entry["grant"], []).append(entry["at"])
        else:
            starts.append(entry)
    return grants, starts


if __name__ == "__main__":
    install(os.environ["TAP_TEST_DECISIONS"])
    from tap_stripe_connect.cli import main

    main()
