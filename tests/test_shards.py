"""`account_shard: "k/N"`: a platform's connected accounts split into N stable, disjoint
shards, each synced by its own run with its own state."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tap_stripe_connect.settings import AccountShard, shard_of
from tests.conftest import ROOT, run_tap
from tests.emulator.connect import ConnectPlatform
from tests.platform_state import every_bookmark
from tests.test_account_list import settings_for
from tests.test_connect import CORE

# Fixed ids and their shards of 2, 3 and 16: the SHA-256 of the id, modulo N, plus 1.
# A change here moves every platform's accounts between shards (and their states).
GOLDEN = {
    "acct_1Nv0FGQ9RKHgCVdK": (1, 3, 7),
    "acct_1OaBcDeFgHiJkLmN": (2, 1, 12),
    "acct_1PzYxWvUtSrQpOnM": (2, 2, 4),
    "acct_1Q2w3E4r5T6y7U8i": (1, 1, 15),
    "acct_1R9o8I7u6Y5t4R3e": (1, 3, 13),
    "acct_1S1a2B3c4D5e6F7g": (2, 2, 2),
}


def test_an_account_has_a_fixed_shard():
    for account, shards in GOLDEN.items():
        assert tuple(shard_of(account, n) for n in (2, 3, 16)) == shards, account


def test_the_shard_does_not_depend_on_the_process():
    """Python's `hash()` of a str changes with each process (PYTHONHASHSEED): not used."""
    code = (
        "from tap_stripe_connect.settings import shard_of; "
        f"print([shard_of(a, 16) for a in {sorted(GOLDEN)!r}])"
    )
    seen = set()
    for seed in ("1", "2", "3"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        seen.add(out)
    assert seen == {f"{[GOLDEN[a][2] for a in sorted(GOLDEN)]}\n"}


BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
account_ids = st.lists(
    st.text(BASE62, min_size=16, max_size=16).map(lambda s: "acct_" + s),
    min_size=1,
    max_size=300,
    unique=True,
)


def expected_shard(account: str, count: int) -> int:
    """The documented rule, worked out another way: the first 16 hex digits of the id's
    SHA-256 as a number, modulo the count, plus 1."""
    return int(hashlib.sha256(account.encode("utf-8")).hexdigest()[:16], 16) % count + 1


@settings(max_examples=60, deadline=None)
@given(accounts=account_ids, count=st.integers(1, 64))
def test_each_account_is_held_by_exactly_its_own_shard(accounts, count):
    shards = [AccountShard.parse(f"{k}/{count}") for k in range(1, count + 1)]
    for account in accounts:
        holders = [shard.index for shard in shards if shard.holds(account)]
        assert holders == [expected_shard(account, count)], account


def test_shards_are_about_even():
    accounts = [f"acct_{i:016d}" for i in range(4000)]
    sizes = Counter(shard_of(a, 8) for a in accounts)
    assert set(sizes) == set(range(1, 9))
    assert max(sizes.values()) < 1.2 * 4000 / 8


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("3-16", 'must look like "k/N"'),
        ("a/b", 'must look like "k/N"'),
        ("3/", 'must look like "k/N"'),
        ("0/4", "between 1 and 4"),
        ("5/4", "between 1 and 4"),
        ("1/0", "N must be 1 or more"),
        (3, "must be a string"),
    ],
)
def test_a_bad_shard_ends_with_one_line_naming_the_setting(tmp_path, value, words):
    config = {"api_key": "sk_test_x", "account_ids": ["*"], "account_shard": value}
    run = run_tap(config=config, tmp_path=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert "'account_shard'" in run.error_line, run.stderr
    assert words in run.error_line


def test_a_shard_without_account_ids_is_refused(tmp_path):
    run = run_tap(config={"api_key": "sk_test_x", "account_shard": "1/2"}, tmp_path=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert "'account_shard'" in run.error_line
    assert "'account_ids'" in run.error_line


# -- sharded runs against the Connect emulator ---------------------------------------------


@pytest.fixture(scope="module")
def platform():
    with ConnectPlatform(accounts=6, objects=8, seed=300) as connect_platform:
        yield connect_platform


STREAMS = (*CORE, "accounts")


def rows(run) -> set[tuple[str, str, str]]:
    """(stream, account, id) of every record; an `accounts` record's account is itself."""
    found = set()
    for stream in STREAMS:
        for record in run.records(stream):
            account = record["id"] if stream == "accounts" else record["account_id"]
            found.add((stream, account, record["id"]))
    return found


def requested_accounts(platform: ConnectPlatform, since: int) -> set[str]:
    return {account for _, _, account in platform.api_requests[since:] if account}


def test_two_shards_sync_exactly_the_accounts_of_one_unsharded_run(platform, tmp_path):
    whole = run_tap(config=settings_for(platform), tmp_path=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    everything = rows(whole)
    assert {account for _, account, _ in everything} == set(platform.account_ids)

    shards = {}
    for k in (1, 2):
        before = len(platform.api_requests)
        run = run_tap(config=settings_for(platform, account_shard=f"{k}/2"), tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        shards[k] = rows(run)
        mine = {a for a in platform.account_ids if shard_of(a, 2) == k}
        assert mine, "the fixture's accounts all hash into one shard"
        # Its own accounts' records, and requests only for its own accounts.
        assert {account for _, account, _ in shards[k]} == mine
        assert requested_accounts(platform, before) == mine
        assert f"Shard {k}/2 (setting 'account_shard'): {len(mine)} of the 6" in run.stderr
        # Each record once within the shard's run.
        assert sum(len(run.records(stream)) for stream in STREAMS) == len(shards[k])

    assert shards[1] | shards[2] == everything
    assert not {a for _, a, _ in shards[1]} & {a for _, a, _ in shards[2]}


def test_a_shard_leaves_other_accounts_state_as_it_came(platform, tmp_path):
    first = run_tap(config=settings_for(platform, account_shard="1/2"), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    state = first.last_state
    assert state is not None
    # Shard 2 of 2 handed shard 1's state: it syncs its own accounts from the start and
    # writes shard 1's entries back untouched.
    before = len(platform.api_requests)
    second = run_tap(
        config=settings_for(platform, account_shard="2/2"), state=state, tmp_path=tmp_path
    )
    assert second.returncode == 0, second.stderr[-2000:]
    mine = {a for a in platform.account_ids if shard_of(a, 2) == 2}
    assert requested_accounts(platform, before) == mine
    after = second.last_state
    assert after is not None
    others = every_bookmark(state)
    assert others, "shard 1's run wrote no bookmark to pass through"
    kept = every_bookmark(after)
    for (stream, account), bookmark in others.items():
        assert account not in mine
        assert kept[stream, account] == bookmark, stream
    assert {a for _, a, _ in rows(second)} == mine


def test_an_empty_shard_reads_nothing_as_the_platform(platform, tmp_path):
    count = 64
    used = {shard_of(account, count) for account in platform.account_ids}
    empty = min(set(range(1, count + 1)) - used)
    before = len(platform.api_requests)
    run = run_tap(
        config=settings_for(platform, account_shard=f"{empty}/{count}"), tmp_path=tmp_path
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.records() == []
    # The platform's own account is not a connected account: none of its data is read.
    paths = {path for _, path, _ in platform.api_requests[before:]}
    assert paths <= {"/v1/account", "/v1/accounts"}
