"""A platform sync of many connected accounts: (account, stream) units run together, each
account within its own budget, and an optional cap on the whole run."""

from __future__ import annotations

import bisect
import collections
import datetime
import json
import random
import string

import pytest

from tap_stripe_connect.resources import RESOURCES
from tap_stripe_connect.state.bookmarks import Bookmarks, Checkpoints, load_state
from tap_stripe_connect.sync.scheduler import Waiting, next_job
from tests.conftest import run_tap
from tests.decisions import read as read_decisions
from tests.emulator import Emulator
from tests.emulator.connect import ConnectPlatform
from tests.platform_state import every_bookmark
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
    """The most connected accounts with a unit running, as the scheduler started each unit
    (None, the platform's own units such as its reports of every account, not counted)."""
    return max(len({*start["running"], start["start"]} - {None}) for start in starts)


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
    connected = [start["start"] for start in starts if start["start"] is not None]
    first = connected[: len(platform.account_ids)]
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
    jobs = [Job("a"), Job("a"), Job("b"), Job("c")]

    def first(*running: str) -> Job:
        return next_job(Waiting(jobs), collections.Counter(running))

    assert first() is jobs[0]
    assert first("a") is jobs[2]
    assert first("a", "b") is jobs[3]
    assert first("a", "b", "c", "b", "c") is jobs[0]
    # Taken one after another as the units start: a, b, c, then a's second job.
    waiting, busy = Waiting(jobs), collections.Counter[str | None]()
    for expected in (0, 2, 3, 1):
        job = next_job(waiting, busy)
        busy[job.account] += 1
        assert job is jobs[expected]
    assert not waiting


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


def sdk_layout(state: dict) -> dict:
    """A STATE as releases before docs/state.md wrote it: in each stream's entry, one SDK
    partition per connected account, its bookmark an RFC 3339 string."""
    old: dict = {"bookmarks": {s: dict(e) for s, e in state.get("bookmarks", {}).items()}}
    for (stream, account), value in sorted(every_bookmark(state).items()):
        partitions = old["bookmarks"].setdefault(stream, {}).setdefault("partitions", [])
        at = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
        partitions.append(
            {
                "context": {"account_id": account},
                "replication_key": "updated",
                "replication_key_value": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    return old


def test_a_state_in_the_sdk_layout_of_earlier_releases_resumes_every_account(tmp_path):
    with ConnectPlatform(accounts=4, objects=12) as platform:
        config = platform_settings(platform, max_requests_per_second=100)
        first = run_tap(config=config, tmp_path=tmp_path)
        assert_every_object_once(platform, first)
        before = every_bookmark(first.last_state)
        old = sdk_layout(first.last_state)
        assert "accounts" not in old
        assert old["bookmarks"]["charges"]["partitions"]
        platform.advance(300)
        changed = set()
        for account, emulator in platform.accounts.items():
            customer = emulator.objects("customers")[3]["id"]
            emulator.update("customers", customer, {"name": f"Changed in {account}"})
            changed.add((account, customer))
        resumed = run_tap(config=config, state=old, tmp_path=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = {(r["account_id"], r["id"]) for r in resumed.records("customers")}
    # Every account's change, and no account listed again from the start.
    assert changed <= got
    assert len(got) < sum(len(e.objects("customers")) for e in platform.accounts.values())
    assert not resumed.records("charges")
    # Written back in rows, every (stream, account) bookmark kept and moved on.
    after = every_bookmark(resumed.last_state)
    assert set(after) == set(before)
    assert all(after[key] > before[key] for key in before)
    assert not [s for s, e in resumed.last_state["bookmarks"].items() if "partitions" in e]


def test_an_unfinished_listing_of_the_sdk_layout_is_kept_for_its_account():
    state: dict = {}
    given = {
        "bookmarks": {
            "charges": {
                "partitions": [
                    {
                        "context": {"account_id": "acct_a"},
                        "listing": {"started": 1767225600, "table_version": None,
                                    "done": [[0, 1700000000]]},
                    },
                    {"context": {"account_id": "acct_b"}, "replication_key": "updated",
                     "replication_key_value": "2026-01-01T00:00:00Z",
                     # an earlier release killed mid-unit: the SDK's unfinished increment
                     "progress_markers": {"replication_key_value": "2026-02-01T00:00:00Z"}},
                ]
            }
        }
    }
    state["bookmarks"] = {"charges": dict(given["bookmarks"]["charges"])}
    load_state(state, given)
    store = Bookmarks(state)
    listing = store.listing("charges", "acct_a")
    assert listing is not None
    assert listing.started == 1767225600
    assert listing.done == [(0, 1700000000)]
    assert store.bookmark("charges", "acct_a") is None
    assert store.bookmark("charges", "acct_b") == 1767225600  # not the unfinished one
    assert "partitions" not in state["bookmarks"]["charges"]


def test_a_checkpoint_is_written_when_something_moved_less_often_as_state_grows():
    clock = [0.0]
    size = [1_000]
    written: list[float] = []

    def write() -> int:
        written.append(clock[0])
        return size[0]

    store = Bookmarks({})
    checkpoints = Checkpoints(store, write, clock=lambda: clock[0], min_seconds=1.0)
    checkpoints.maybe()
    assert written == [0.0]
    clock[0] = 5.0
    checkpoints.maybe()
    assert written == [0.0], "nothing moved: no STATE"
    store.advance("charges", "acct_1", 1767225600)
    checkpoints.maybe()
    store.advance("charges", "acct_2", 1767225600)
    clock[0] = 5.5
    checkpoints.maybe()
    assert written == [0.0, 5.0], "within a second of the last STATE"
    clock[0] = 6.0
    checkpoints.maybe()
    assert written == [0.0, 5.0, 6.0]
    # A STATE of 1 MB (10,000 accounts): the next one 10 s later (100 KB/s).
    size[0] = 1_000_000
    store.advance("charges", "acct_3", 1767225600)
    clock[0] = 7.0
    checkpoints.maybe()
    store.advance("charges", "acct_4", 1767225600)
    clock[0] = 16.9
    checkpoints.maybe()
    assert written[-1] == 7.0
    clock[0] = 17.0
    checkpoints.maybe()
    assert written[-1] == 17.0
    assert checkpoints.messages == 5
    assert checkpoints.bytes == 3 * 1_000 + 2 * 1_000_000
    # A stream's first listing progress waits for the size's 10 s, not for the floor.
    store.advance("charges", "acct_5", 1767225600)
    clock[0] = 26.9
    checkpoints.maybe(first_of="charges")
    assert written[-1] == 17.0
    size[0] = 1_000
    clock[0] = 27.0
    checkpoints.maybe(first_of="customers")
    assert written[-1] == 27.0
    store.advance("customers", "acct_5", 1767225600)
    clock[0] = 27.01
    checkpoints.maybe(first_of="invoices")
    assert written[-1] == 27.01, "a small STATE: the first progress of a stream at once"
    store.advance("invoices", "acct_5", 1767225600)
    clock[0] = 27.02
    checkpoints.maybe(first_of="invoices")
    assert written[-1] == 27.01, "only the first"
    # The first progress of charges came while the size's wait held every STATE back
    # (26.9): it goes out with the stream's next progress, within the floor.
    store.advance("charges", "acct_6", 1767225600)
    clock[0] = 27.5
    checkpoints.maybe(first_of="charges")
    assert written[-1] == 27.5


def test_one_state_of_ten_thousand_accounts_is_under_two_megabytes():
    """Every default stream's bookmark of 10,000 accounts in one STATE: a row per account."""
    rng = random.Random(5)
    streams = [r.name for r in RESOURCES if r.selected_by_default and not r.parent]
    state: dict = {}
    store = Bookmarks(state)
    started = 1767225600
    for n in range(10_000):
        account = "acct_1" + "".join(rng.choices(string.ascii_letters + string.digits, k=15))
        base = started + n // 10  # a run of ~17 minutes
        for stream in streams:
            store.advance(stream, account, base - rng.randrange(120))
    line = json.dumps({"type": "STATE", "value": state}, separators=(",", ":"))
    assert len(every_bookmark(state)) == 10_000 * len(streams)
    assert len(line) <= 2_000_000, len(line)


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


def test_a_platform_runs_more_workers_by_default_and_the_setting_wins():
    from tap_stripe_connect.settings import Settings

    def workers(**config) -> int:
        return Settings.from_config({"api_key": "sk_test_x", **config}).max_workers

    assert workers() == 32
    assert workers(account_ids=["*"]) == 256
    assert workers(account_ids=["acct_1"], max_workers=16) == 16
    assert workers(max_workers=8) == 8


def test_a_target_that_stops_reading_stops_the_run_at_once_with_one_clear_line(tmp_path):
    """The target closes the tap's stdout early (it failed): the run stops reading Stripe
    (no unit or page starts once a write fails; the accounts not begun are not read, their
    reads not spent) and ends with one line naming stdout, exit code 1, no flood of
    per-stream errors. Before, every unit of every account ran and failed on its own write."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    with ConnectPlatform(accounts=40, objects=30, latency=LATENCY) as platform:
        config = platform_settings(platform, max_workers=4, max_requests_per_second=100)
        (tmp_path / "config.json").write_text(json.dumps(config))
        argv = [sys.executable, "-m", "tap_stripe_connect", "--config",
                str(tmp_path / "config.json")]
        with (tmp_path / "stderr.txt").open("w") as stderr:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                    stdin=subprocess.DEVNULL)
            assert proc.stdout is not None
            for first in proc.stdout:  # the target fails at the first record
                if first.startswith(b'{"type":"RECORD"'):
                    break
            proc.stdout.close()
            proc.wait(timeout=120)
        err = (tmp_path / "stderr.txt").read_text()
        read = [a for a in platform.requests_by_account() if a is not None]
    assert first.startswith(b'{"type":"RECORD"')
    print(f"{len(read)} of 40 accounts read")
    assert len(read) < 40 // 2, len(read)
    assert proc.returncode == 1, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("tap-stripe-connect: error:")]
    assert len(lines) == 1, err[-3000:]
    assert "Could not write to stdout" in lines[0]
    assert "Broken pipe" in lines[0]
    assert "| ERROR" not in err, [ln for ln in err.splitlines() if "| ERROR" in ln][:3]
    assert "Traceback" not in err
