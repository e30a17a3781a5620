"""A platform sync of many connected accounts: (account, stream) units run together, each
account within its own budget, and an optional cap on the whole run."""

from __future__ import annotations

import bisect

import pytest

from tap_stripe_connect.sync.scheduler import next_job
from tests.conftest import run_tap
from tests.decisions import read as read_decisions
from tests.emulator import Emulator
from tests.emulator.connect import ConnectPlatform
from tests.test_connect import CORE, assert_every_object_once

LATENCY = (30, 10)
PER_ACCOUNT = 10  # requests/s: small, so that an account's budget is what bounds it


@pytest.fixture
def platform():
    """Five connected accounts; the first (listed first) holds 10x the objects."""
    platform = ConnectPlatform(accounts=5, objects=30, latency=LATENCY)
    big = platform.account_ids[0]
    platform.accounts[big] = Emulator(objects=300, seed=100, latency=LATENCY)
    assert platform.accounts[big].account_id == big
    with platform:
        yield platform


def platform_settings(platform: ConnectPlatform, **extra) -> dict:
    return {
        "api_key": platform.platform_key,
        "api_url": platform.url,
        "account_ids": ["*"],
        "max_requests_per_second": PER_ACCOUNT,
        "max_workers": 16,
        "max_retry_seconds": 10,
        **extra,
    }


def peak_per_second(times: list[float]) -> int:
    """The most requests that arrived within any one second."""
    times = sorted(times)
    return max((bisect.bisect_left(times, at + 1.0) - i for i, at in enumerate(times)), default=0)


def decided(platform: ConnectPlatform, tmp_path, **extra) -> tuple[dict, list[dict]]:
    """A platform run through `tests.decisions`: each account's budget grants (on its
    limiter's own clock; "total": the run's cap) and the units as the scheduler started
    them. Every object arrives once."""
    path = tmp_path / "decisions.jsonl"
    run = run_tap(
        config=platform_settings(platform, **extra),
        tmp_path=tmp_path,
        module="tests.decisions",
        env={"TAP_TEST_DECISIONS": str(path)},
    )
    assert_every_object_once(platform, run)
    return read_decisions(path)


def most_accounts_at_once(starts: list[dict]) -> int:
    """The most accounts with a unit running, as the scheduler started each unit."""
    return max(len({*start["running"], start["start"]}) for start in starts)


def test_accounts_sync_together_each_within_its_budget_and_a_large_one_holds_none_back(
    platform, tmp_path
):
    grants, starts = decided(platform, tmp_path)
    # Each account its own budget (None: the platform's own, which lists the accounts).
    assert set(grants) - {None} == set(platform.account_ids)
    for account, at in grants.items():
        assert peak_per_second(at) <= PER_ACCOUNT, f"{account} over its budget"
    assert not any(emulator.rate_limited for emulator in platform.accounts.values())
    # Accounts run at once: units of every account run together.
    assert most_accounts_at_once(starts) == len(platform.account_ids)
    # Fair rotation: the large account (listed first) does not take the workers first;
    # the first units started are one of each account.
    first = [start["start"] for start in starts[: len(platform.account_ids)]]
    assert sorted(first) == sorted(platform.account_ids)


def test_the_total_cap_bounds_every_second_of_the_run(platform, tmp_path):
    total = 12
    grants, _ = decided(platform, tmp_path, max_requests_per_second_total=total)
    capped = grants.pop("total")
    assert peak_per_second(capped) <= total
    # Every request went through the cap: as many grants there as in the accounts' own.
    assert len(capped) == sum(len(at) for at in grants.values())
    for at in grants.values():
        assert peak_per_second(at) <= PER_ACCOUNT


class Job:
    def __init__(self, account: str | None) -> None:
        self.account = account
        self.name = str(account)

    def run(self) -> None:
        pass


def test_the_next_job_is_of_the_account_with_fewest_running():
    waiting = [Job("a"), Job("a"), Job("b"), Job("c")]
    assert next_job(waiting, []) == 0
    assert next_job(waiting, ["a"]) == 2
    assert next_job(waiting, ["a", "b"]) == 3
    assert next_job(waiting, ["a", "b", "c", "b", "c"]) == 0


def run_killed(
    config: dict, tmp_path, after_records: int, state: dict | None = None
) -> tuple[list[dict], dict | None]:
    """Run the tap, SIGKILL it after `after_records` RECORD messages: its records and last STATE."""
    import json
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = tmp_path / "killed.json"
    path.write_text(json.dumps(config))
    argv = [sys.executable, "-m", "tap_stripe_connect", "--config", str(path)]
    if state is not None:
        (tmp_path / "killed-state.json").write_text(json.dumps(state))
        argv += ["--state", str(tmp_path / "killed-state.json")]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    records, state = [], None
    for line in proc.stdout:
        message = json.loads(line)
        if message["type"] == "RECORD":
            records.append(message)
            if len(records) >= after_records:
                proc.send_signal(signal.SIGKILL)
                break
        elif message["type"] == "STATE":
            state = message["value"]
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return records, state


def test_a_killed_platform_run_resumes_every_account_without_gaps(platform, tmp_path):
    config = platform_settings(platform)
    killed, state = run_killed(config, tmp_path, after_records=1500)
    assert state is not None, "no STATE before the kill"
    resumed = run_tap(config=config, state=state, tmp_path=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # Resumed per account from the STATE, not from scratch.
    everything = sum(len(e.objects(s)) for e in platform.accounts.values() for s in CORE)
    assert sum(len(resumed.records(s)) for s in CORE) < everything
    for stream in CORE:
        emitted = {
            (m["record"]["account_id"], m["record"]["id"]) for m in killed if m["stream"] == stream
        } | {(r["account_id"], r["id"]) for r in resumed.records(stream)}
        expected = {
            (account, o["id"])
            for account, emulator in platform.accounts.items()
            for o in emulator.objects(stream)
        }
        assert emitted == expected, f"{stream}: {len(expected - emitted)} objects lost"


def test_each_account_finds_its_own_state_entry_among_many(monkeypatch):
    """A unit's state entry is its account's own, found without scanning every account's
    (entries indexed by context), also for accounts added while the run goes on."""
    from tap_stripe_connect.sdk_compat import StreamStateManager
    from tap_stripe_connect.state.bookmarks import LockedStateManager

    scans = []
    scan = StreamStateManager.get_context_state
    monkeypatch.setattr(
        StreamStateManager,
        "get_context_state",
        lambda self, context: scans.append(context) or scan(self, context),
    )

    accounts = [f"acct_{n:04d}" for n in range(300)]
    partitions = [
        {"context": {"account_id": a}, "replication_key_value": f"v{a}"} for a in accounts
    ]
    tap_state = {"bookmarks": {"charges": {"partitions": partitions}}}
    manager = LockedStateManager(
        stream_name="charges", tap_state=tap_state, state_partitioning_keys=["account_id"]
    )
    for account in reversed(accounts):
        entry = manager.get_context_state({"account_id": account})
        assert entry is partitions[accounts.index(account)]
    assert scans == [], "the SDK's scan of every entry was used"
    new = manager.get_context_state({"account_id": "acct_new"})
    assert new == {"context": {"account_id": "acct_new"}}
    assert partitions[-1] is new
    assert manager.get_context_state({"account_id": "acct_new"}) is new
    assert manager.get_context_state({"account_id": accounts[7]})["replication_key_value"] == (
        f"v{accounts[7]}"
    )
    # A STATE with an account twice is refused as the SDK refuses it.
    partitions.append({"context": {"account_id": accounts[3]}})
    with pytest.raises(ValueError, match="duplicate"):
        manager.get_context_state({"account_id": accounts[3]})


def test_many_accounts_are_read_at_once_also_when_stripe_answers_fast(tmp_path):
    """Fast responses (20 ms, where one account's streams start one by one as the CPU
    allows) still keep many accounts' units in flight at once: each is a few pages of one
    account, waiting for its own responses. Counted where the scheduler starts units."""
    with ConnectPlatform(accounts=12, objects=5, latency=(20, 2)) as platform:
        _, starts = decided(
            platform,
            tmp_path,
            max_requests_per_second=1000,
            max_requests_per_second_per_endpoint=1000,
        )
    # Started at once, up to max_workers (16) units: every account has one running.
    assert most_accounts_at_once(starts) == 12
