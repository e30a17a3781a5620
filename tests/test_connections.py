"""`tap-stripe-connect connections`: every account the configuration reaches, its status,
its sync times from STATE and the command that fixes it, through the CLI (and Meltano)
against the emulated platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tap_stripe_connect.settings import shard_of
from tests.conftest import ROOT
from tests.emulator import Emulator
from tests.emulator.connect import ConnectPlatform
from tests.emulator.context import PLATFORM_ID
from tests.test_connect_app import app_settings, connect_app
from tests.test_pipelines import clean_env

PROG = "tap-stripe-connect"


def connections(
    *args: str,
    config: dict,
    tmp_path: Path,
    state: dict | None = None,
    stdin: str | None = None,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    argv = [sys.executable, "-m", "tap_stripe_connect", "connections", "--config", str(config_path)]
    if state is not None:
        (tmp_path / "state.json").write_text(json.dumps(state))
        argv += ["--state", str(tmp_path / "state.json")]
    return subprocess.run(
        [*argv, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean_env(), **(env or {})},
        timeout=300,
        check=False,
    )


def rows(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    return {row["account_id"]: row for row in json.loads(proc.stdout)["connections"]}


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{PROG}: error:")]


def partition(account: str, stream: str, at: str) -> dict:
    return {"context": {"account_id": account}, "replication_key": "updated",
            "replication_key_value": at}


@pytest.fixture
def platform():
    with ConnectPlatform(accounts=3, objects=0, seed=900) as connect_platform:
        yield connect_platform


def reconnect(platform: ConnectPlatform, account: str) -> None:
    """The account's owner connects the platform again (classic Connect OAuth, over HTTP)."""
    authorize = requests.get(
        f"{platform.url}/oauth/authorize", allow_redirects=False, timeout=10,
        params={"client_id": platform.client_id, "redirect_uri": "http://localhost/cb",
                "account": account, "state": "s"},
    )
    code = parse_qs(urlsplit(authorize.headers["Location"]).query)["code"][0]
    token = requests.post(f"{platform.url}/oauth/token", timeout=10, data={
        "grant_type": "authorization_code", "code": code, "client_secret": platform.platform_key,
    })
    assert token.json()["stripe_user_id"] == account


def rfc3339(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds or 0)))


def platform_state(accounts: list[str]) -> tuple[dict, dict[str, tuple[str, str]]]:
    """A platform's STATE over two streams, and each account's (newest, oldest) bookmark."""
    bookmarks: dict[str, tuple[str, str]] = {}
    customers, invoices = [], []
    for day, account in enumerate(accounts, start=1):
        newest, oldest = f"2026-01-{day + 10:02d}T06:00:00Z", f"2025-12-{day:02d}T00:00:00Z"
        customers.append(partition(account, "customers", newest))
        invoices.append(partition(account, "invoices", oldest))
        bookmarks[account] = (newest, oldest)
    state = {"bookmarks": {"customers": {"partitions": customers},
                           "invoices": {"partitions": invoices}}}
    return state, bookmarks


def test_a_platform_table_names_each_account_its_status_sync_times_and_fix(platform, tmp_path):
    ok, lost = platform.account_ids[0], platform.account_ids[1]
    left_at = rfc3339(platform.clock())
    platform.deauthorize(lost)  # Stripe's 403 `account_invalid` for the platform key
    back = platform.account_ids[2]  # left, then connected again: its event is older
    platform.deauthorize(back)
    reconnect(platform, back)
    left = "acct_1LeftThePlatform0"  # in STATE, no longer listed by the platform
    state, bookmarks = platform_state([*platform.account_ids, left])
    config = {"api_key": platform.platform_key, "api_url": platform.url, "account_ids": ["*"]}
    proc = connections("--format", "json", config=config, state=state, tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr
    found = rows(proc)
    assert set(found) == {*platform.account_ids, left}
    for account in platform.account_ids:
        assert found[account]["name"] == platform._name(account)
        assert found[account]["flow"] == "platform key"
    for account, (newest, oldest) in bookmarks.items():
        assert (found[account]["last_sync"], found[account]["oldest_bookmark"]) == (
            newest,
            oldest,
        )
    assert found[ok]["status"] == "ok"
    assert found[ok]["fix"] is None
    assert (found[back]["status"], found[back]["reason"]) == ("ok", None)
    # `lost` disconnected (the platform's `account.application.deauthorized` event says
    # when); `left` is only gone from the list.
    assert found[lost]["status"] == "revoked"
    assert found[lost]["reason"] == f"deauthorized at {left_at}"
    assert (found[left]["status"], found[left]["reason"]) == ("no access", None)
    for account in (lost, left):
        assert "tap-stripe-connect connect" in found[account]["fix"]
    # One line on stderr for each account not ok, naming it and what to do.
    lines = errors(proc)
    assert len(lines) == 2
    assert lost in lines[0]
    assert f"revoked: deauthorized at {left_at}; reconnect it" in lines[0]
    assert "remove" in lines[0]
    assert "'account_ids'" in lines[0]
    assert left in lines[1]
    assert "reconnect it" in lines[1]
    # The list (one page), one cheap request per account and, as one failed, one read
    # of the platform's events; no more.
    log = platform.requests_by_account()
    assert log[None] == [("GET", "/v1/accounts"), ("GET", "/v1/events")]
    for account in platform.account_ids:
        assert log[account] == [("GET", "/v1/account")]


def test_an_organization_key_checks_each_account_through_stripe_context(platform, tmp_path):
    config = {"api_key": platform.organization_key, "api_url": platform.url,
              "account_id": PLATFORM_ID, "account_ids": ["*"]}
    proc = connections("--format", "json", config=config, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = rows(proc)
    assert set(found) == set(platform.account_ids)
    assert {(r["flow"], r["status"]) for r in found.values()} == {("organization key", "ok")}
    assert {context for _, context in platform.account_headers} == {
        PLATFORM_ID, *(f"{PLATFORM_ID}/{a}" for a in platform.account_ids)
    }


def test_a_shard_shows_and_checks_its_own_accounts_only(platform, tmp_path):
    state, _ = platform_state(platform.account_ids)
    for k in (1, 2):
        mine = [a for a in platform.account_ids if shard_of(a, 2) == k]
        since = len(platform.api_requests)
        config = {"api_key": platform.platform_key, "api_url": platform.url,
                  "account_ids": ["*"], "account_shard": f"{k}/2"}
        proc = connections("--format", "json", config=config, state=state, tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert set(rows(proc)) == set(mine)
        checked = {a for a in platform.requests_by_account(since) if a}
        assert checked == set(mine)


def test_the_table_and_offline_make_no_request_from_a_meltano_state(platform, tmp_path):
    state, bookmarks = platform_state(platform.account_ids)
    config = {"api_key": platform.platform_key, "api_url": platform.url,
              "account_ids": ["*"]}
    # `meltano state get <id>` wraps the STATE in `singer_state`; `-` reads it from stdin.
    proc = connections("--offline", "--state", "-", config=config, tmp_path=tmp_path,
                       stdin=json.dumps({"singer_state": state}))
    assert proc.returncode == 0, proc.stderr
    assert not platform.api_requests
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["ACCOUNT", "NAME", "FLOW", "STATUS"]
    body = {line.split()[0]: line for line in lines[1:]}
    assert set(body) == set(platform.account_ids)
    for account, (newest, _) in bookmarks.items():
        assert "not checked" in body[account]
        assert newest in body[account]


def test_a_revoked_oauth_connection_names_the_command_that_reconnects_it(platform, tmp_path):
    account = platform.account_ids[2]
    credentials = tmp_path / "stripe-credentials.json"
    credentials.write_text(json.dumps({
        "refresh_token": platform.issue_refresh_token(account),
        "stripe_user_id": account,
        "flow": "stripe_app",  # recorded by newer `connect`s: shown as it is
    }))
    config = {"client_id": platform.client_id, "client_secret": platform.platform_key,
              "credentials_file": str(credentials), "api_url": platform.url,
              "oauth_url": platform.url}
    good = connections("--format", "json", config=config, tmp_path=tmp_path)
    assert good.returncode == 0, good.stderr
    assert rows(good)[account]["status"] == "ok"
    assert rows(good)[account]["flow"] == "stripe_app"
    platform.deauthorize(account)
    revoked = connections("--format", "json", config=config, tmp_path=tmp_path)
    assert revoked.returncode == 1
    row = rows(revoked)[account]
    assert row["status"] == "revoked"
    assert row["fix"] == f"run tap-stripe-connect connect --config <config.json> " \
        f"--credentials-file {credentials}"
    (line,) = errors(revoked)
    assert account in line
    assert "revoked" in line
    assert "connect" in line
    # The first run saved an access token; without one, the refresh itself is refused.
    saved = json.loads(credentials.read_text())
    assert saved.get("access_token")
    credentials.write_text(json.dumps({k: v for k, v in saved.items() if k != "access_token"}))
    refused = connections("--format", "json", config=config, tmp_path=tmp_path)
    assert refused.returncode == 1
    assert rows(refused)[account]["status"] == "revoked"
    # Through Meltano the fix is Meltano's command.
    under = connections("--format", "json", config=config, tmp_path=tmp_path,
                        env={"MELTANO_PROJECT_ROOT": str(tmp_path)})
    assert rows(under)[account]["fix"] == "run meltano invoke tap-stripe-connect:connect"


def test_a_connect_account_deauthorized_is_revoked_with_when_and_the_command(platform, tmp_path):
    account = platform.account_ids[1]
    credentials = tmp_path / "stripe-credentials.json"
    credentials.write_text(json.dumps({
        "refresh_token": platform.issue_refresh_token(account), "stripe_user_id": account,
    }))
    config = {"client_id": platform.client_id, "client_secret": platform.platform_key,
              "credentials_file": str(credentials), "api_url": platform.url,
              "oauth_url": platform.url}
    at = rfc3339(platform.clock())
    # The platform disconnects the account, as classic Connect does it.
    answer = requests.post(f"{platform.url}/oauth/deauthorize", timeout=10,
                           data={"client_id": platform.client_id, "stripe_user_id": account})
    assert answer.json() == {"stripe_user_id": account}
    since = len(platform.api_requests)
    proc = connections(config=config, tmp_path=tmp_path)
    assert proc.returncode == 1
    fix = f"run tap-stripe-connect connect --config <config.json> --credentials-file {credentials}"
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith(account)]
    assert f"revoked (deauthorized at {at})" in line
    assert line.endswith(fix)
    assert errors(proc) == [f"{PROG}: error: account {account}: revoked: "
                            f"deauthorized at {at}; {fix}"]
    # One read of the platform's events beyond the account's own check.
    assert platform.requests_by_account(since)[None] == [("GET", "/v1/events")]
    since = len(platform.api_requests)
    offline = connections("--offline", "--format", "json", config=config, tmp_path=tmp_path)
    assert rows(offline)[account]["reason"] is None
    assert len(platform.api_requests) == since


def test_a_connect_account_read_with_the_platform_key_shows_its_deauthorization(
    platform, tmp_path
):
    """Classic Connect as Stripe recommends it: the platform's key, and the account
    `connect` saved, read with `Stripe-Account`."""
    account = platform.account_ids[0]
    credentials = tmp_path / "stripe-credentials.json"
    credentials.write_text(json.dumps({"stripe_user_id": account, "oauth_flow": "connect"}))
    config = {"api_key": platform.platform_key, "credentials_file": str(credentials),
              "api_url": platform.url}
    good = connections("--format", "json", config=config, tmp_path=tmp_path)
    assert good.returncode == 0, good.stderr
    assert {a: r["status"] for a, r in rows(good).items()} == {account: "ok"}
    at = rfc3339(platform.clock())
    platform.deauthorize(account)
    proc = connections("--format", "json", config=config, tmp_path=tmp_path)
    assert proc.returncode == 1
    row = rows(proc)[account]
    assert (row["flow"], row["status"], row["reason"]) == (
        "platform key", "revoked", f"deauthorized at {at}"
    )
    assert row["fix"] == (
        f"run tap-stripe-connect connect --config <config.json> --credentials-file {credentials}"
    )


def test_an_uninstalled_app_is_revoked_with_when_until_it_is_installed_again(tmp_path):
    with ConnectPlatform(accounts=1, objects=0, seed=920) as platform:
        account = platform.account_ids[0]
        connect_app(platform, tmp_path)
        path = tmp_path / "config" / "tap-stripe-connect" / "credentials.json"
        config = {**app_settings(platform), "credentials_file": str(path)}
        platform.advance(60)
        at = rfc3339(platform.clock())
        platform.uninstall(account)
        platform.advance(60)
        proc = connections("--format", "json", config=config, tmp_path=tmp_path)
        assert proc.returncode == 1
        row = rows(proc)[account]
        assert (row["status"], row["reason"]) == ("revoked", f"deauthorized at {at}")
        assert row["fix"] == f"run tap-stripe-connect connect --config <config.json> " \
            f"--credentials-file {path}"
        (line,) = errors(proc)
        assert f"revoked: deauthorized at {at}; run tap-stripe-connect connect" in line
        # Installed again after the event: the connection is newer, all is well.
        connect_app(platform, tmp_path, account=account)
        again = connections("--format", "json", config=config, tmp_path=tmp_path)
        assert again.returncode == 0, again.stderr
        assert (rows(again)[account]["status"], rows(again)[account]["reason"]) == ("ok", None)


def test_a_key_that_may_not_read_events_keeps_the_plain_status(platform, tmp_path):
    kept, lost = platform.account_ids[:2]
    platform.deauthorize(lost)
    config = {"api_key": platform.no_events_key, "api_url": platform.url,
              "account_ids": [kept, lost]}
    proc = connections("--format", "json", config=config, tmp_path=tmp_path)
    assert proc.returncode == 1
    found = rows(proc)
    assert (found[kept]["status"], found[kept]["reason"]) == ("ok", None)
    assert (found[lost]["status"], found[lost]["reason"]) == ("no access", None)
    (line,) = errors(proc)
    assert line == (f"{PROG}: error: account {lost}: no access: reconnect it (its owner "
                    "signs in: tap-stripe-connect connect --config <config.json>) or remove "
                    f"{lost} from setting 'account_ids'")
    # It asked once (403 `rak_event_read`) and said nothing of it.
    assert platform.requests_by_account()[None] == [("GET", "/v1/events")]
    assert "event" not in proc.stdout + proc.stderr


def test_a_stripe_app_refresh_token_near_its_year_is_expiring(platform, tmp_path):
    account = platform.account_ids[0]
    credentials = tmp_path / "stripe-credentials.json"
    credentials.write_text(
        json.dumps({"refresh_token": "rt_app", "stripe_user_id": account, "flow": "stripe_app"})
    )
    config = {"client_id": platform.client_id, "client_secret": platform.platform_key,
              "credentials_file": str(credentials), "api_url": platform.url}
    # Stripe Apps refresh tokens live a year and roll on each refresh, which rewrites the
    # file: 11 months without a refresh is fine, 360 days is not.
    for days, status in ((335, "not checked"), (360, "token expiring")):
        written = time.time() - days * 86400
        os.utime(credentials, (written, written))
        proc = connections("--offline", "--format", "json", config=config, tmp_path=tmp_path)
        assert rows(proc)[account]["status"] == status, proc.stderr
        assert proc.returncode == (status != "not checked")
    assert "tap-stripe-connect connect" in rows(proc)[account]["fix"]
    (line,) = errors(proc)
    assert account in line
    assert "token expiring" in line
    assert not platform.api_requests


def test_a_key_reaches_its_own_account_and_its_bookmarks(tmp_path):
    with Emulator(objects=0, seed=910, freeze_clock=True) as emulator:
        own = emulator.account_id
        state = {"bookmarks": {
            "charges": {"account_id": own, "replication_key": "updated",
                        "replication_key_value": "2025-12-20T00:00:00Z"},
            "customers": {"account_id": own, "replication_key": "updated",
                          "replication_key_value": "2025-12-10T00:00:00Z"},
        }}
        config = {"api_key": emulator.api_key, "api_url": emulator.url}
        proc = connections("--format", "json", config=config, state=state, tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr
        (row,) = rows(proc).values()
        assert (row["account_id"], row["flow"], row["status"]) == (own, "key", "ok")
        assert (row["last_sync"], row["oldest_bookmark"]) == (
            "2025-12-20T00:00:00Z", "2025-12-10T00:00:00Z",
        )
        # Stripe's clock (the `Date` header, less its second of resolution), not this
        # machine's, ages the bookmark: the emulator's stands still, months before this
        # machine's. After the response the tap's Stripe time runs on with its own monotonic
        # clock (whole seconds: a loaded machine may add some, never take any away).
        by_stripe = emulator.clock - 1 - 1765324800
        assert by_stripe <= row["oldest_bookmark_age_seconds"] <= by_stripe + 60
        offline = connections("--offline", "--format", "json", config=config, state=state,
                              tmp_path=tmp_path)
        assert offline.returncode == 0, offline.stderr
        (row,) = rows(offline).values()
        assert (row["account_id"], row["status"], row["last_sync"]) == (
            own, "not checked", "2025-12-20T00:00:00Z"
        )
        bad = connections(config={**config, "api_key": "sk_test_rolled0key"}, tmp_path=tmp_path)
        assert bad.returncode == 1
        (line,) = errors(bad)
        assert "no access" in line
        assert "'api_key'" in line
        assert "sk_test_rolled0key" not in bad.stderr + bad.stdout


MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
PLUGIN = ROOT / ".meltano" / "extractors" / "tap-stripe-connect" / "venv" / "bin" / PROG


@pytest.fixture(scope="module")
def meltano_tap() -> Path:
    """Meltano and this project's tap plugin (scripts/install_meltano.sh), once."""
    if not (MELTANO.exists() and PLUGIN.exists()):
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install_meltano.sh"), "tap-stripe-connect"],
            cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-5000:]
    return MELTANO


def test_meltano_invokes_the_connections_command(meltano_tap, platform, tmp_path):
    state, _ = platform_state(platform.account_ids)
    (tmp_path / "state.json").write_text(json.dumps({"singer_state": state}))
    env = {
        **clean_env(),
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "TAP_STRIPE_CONNECT_API_KEY": platform.platform_key,
        "TAP_STRIPE_CONNECT_API_URL": platform.url,
        "TAP_STRIPE_CONNECT_ACCOUNT_IDS": json.dumps(platform.account_ids[:2]),
    }
    proc = subprocess.run(
        [str(meltano_tap), "invoke", "tap-stripe-connect:connections", "--format", "json",
         "--state", str(tmp_path / "state.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = rows(proc)
    assert set(found) == set(platform.account_ids[:2])
    assert {r["status"] for r in found.values()} == {"ok"}


def test_an_unreadable_state_or_bad_settings_are_one_line_each(tmp_path):
    config = {"api_key": "sk_test_x", "account_ids": ["*"]}
    (tmp_path / "broken.json").write_text("{not json")
    for args, named in (
        (["--state", str(tmp_path / "broken.json")], "--state"),
        (["--state", str(tmp_path / "missing.json")], "--state"),
    ):
        proc = connections("--offline", *args, config=config, tmp_path=tmp_path)
        assert proc.returncode == 1
        (line,) = proc.stderr.splitlines()
        assert named in line, line
    organization = {"api_key": "sk_org_test_x", "account_ids": ["*"]}
    proc = connections("--offline", config=organization, tmp_path=tmp_path)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert "'account_id'" in line
    assert "sk_org_test_x" not in line
