"""Stripe Connect: the `connect` command, OAuth credentials, and many accounts in one run."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections import Counter
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.conftest import ROOT, run_tap
from tests.emulator.connect import ConnectPlatform
from tests.platform_state import account_bookmarks

CORE = ("charges", "customers", "invoices", "subscriptions")


def assert_every_object_once(platform: ConnectPlatform, run) -> None:
    """Exit 0, and every connected account's core objects exactly once, by (account, id)."""
    assert run.returncode == 0, run.stderr[-2000:]
    for stream in CORE:
        emitted = Counter((r["account_id"], r["id"]) for r in run.records(stream))
        expected = Counter(
            (account, o["id"])
            for account, emulator in platform.accounts.items()
            for o in emulator.objects(stream)
        )
        assert emitted == expected, stream


@pytest.fixture
def platform():
    with ConnectPlatform(accounts=3, objects=25) as connect_platform:
        yield connect_platform


def platform_settings(platform: ConnectPlatform, **extra) -> dict:
    return {
        "client_id": platform.client_id,
        "client_secret": platform.platform_key,
        "oauth_url": platform.url,
        "api_url": platform.url,
        "max_retry_seconds": 10,
        **extra,
    }


def start_connect(platform, tmp_path, *extra: str, settings: dict | None = None):
    config = tmp_path / "connect.json"
    config.write_text(json.dumps(settings or platform_settings(platform)))
    argv = [
        sys.executable,
        "-m",
        "tap_stripe_connect",
        "connect",
        "--config",
        str(config),
        "--no-browser",
        "--port",
        "0",  # a free port: the default 8976 may be taken on a test machine
        "--credentials-file",
        str(tmp_path / "creds.json"),
        *extra,
    ]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "/oauth/authorize?" in line:
            return proc, line.strip()
    raise AssertionError(proc.stderr.read() if proc.stderr else "no URL printed")


def browse(url: str) -> requests.Response:
    """What a browser does: follow Stripe's consent redirect back to the local listener."""
    consent = requests.get(url, allow_redirects=False, timeout=10)
    assert consent.status_code == 302
    return requests.get(consent.headers["Location"], timeout=10)


def finish(proc) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_connect_then_sync_with_the_saved_credentials(platform, tmp_path):
    proc, url = start_connect(platform, tmp_path)
    assert "scope=read_only" in url
    assert "state=" in url
    assert browse(url).status_code == 200
    code, out, err = finish(proc)
    assert code == 0, err
    account = platform.account_ids[0]
    assert "Connection successful: Emulated Goods" in out
    assert f"({account})" in out
    creds = tmp_path / "creds.json"
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    saved = json.loads(creds.read_text())
    assert saved["stripe_user_id"] == account
    for secret in (saved["access_token"], saved["refresh_token"], platform.platform_key):
        assert secret not in out + err

    settings = platform_settings(platform, credentials_file=str(creds))
    run = run_tap(config=settings, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    emulator = platform.accounts[account]
    for stream in CORE:
        records = run.records(stream)
        assert {r["id"] for r in records} == {o["id"] for o in emulator.objects(stream)}
        assert {r["account_id"] for r in records} == {account}
    for secret in (saved["access_token"], saved["refresh_token"], platform.platform_key):
        assert secret not in run.stdout + run.stderr


def test_denied_consent_ends_with_one_line(platform, tmp_path):
    proc, url = start_connect(platform, tmp_path)
    browse(url + "&deny=1")
    code, _out, err = finish(proc)
    assert code == 1
    assert "declined" in err.strip().splitlines()[-1]
    assert not (tmp_path / "creds.json").exists()


def test_a_forged_state_is_refused(platform, tmp_path):
    proc, url = start_connect(platform, tmp_path)
    consent = requests.get(url, allow_redirects=False, timeout=10)
    forged = consent.headers["Location"].replace("state=", "state=forged")
    requests.get(forged, timeout=10)
    code, _out, err = finish(proc)
    assert code == 1
    assert "state does not match" in err
    assert not (tmp_path / "creds.json").exists()


def test_an_invalid_code_is_refused(platform, tmp_path):
    proc, url = start_connect(platform, tmp_path)
    consent = requests.get(url, allow_redirects=False, timeout=10)
    location = urlsplit(consent.headers["Location"])
    query = {k: v[-1] for k, v in parse_qs(location.query).items()}
    query["code"] = "ac_bogus"
    requests.get(location._replace(query=urlencode(query)).geturl(), timeout=10)
    code, _out, err = finish(proc)
    assert code == 1
    assert "refused the authorisation code" in err


def test_no_redirect_times_out(platform, tmp_path):
    proc, _url = start_connect(platform, tmp_path, "--timeout", "1")
    code, _out, err = finish(proc)
    assert code == 1
    assert "No redirect from Stripe arrived within 1 seconds" in err


def test_headless_mode_takes_the_pasted_redirect(platform, tmp_path):
    proc, url = start_connect(platform, tmp_path, "--headless")
    consent = requests.get(url, allow_redirects=False, timeout=10)
    out, err = proc.communicate(consent.headers["Location"] + "\n", timeout=60)
    assert proc.returncode == 0, err
    assert "Connection successful" in out


def test_token_expiry_mid_run_refreshes_once_and_loses_no_page(platform, tmp_path):
    account = platform.account_ids[1]
    creds = tmp_path / "creds.json"
    creds.write_text(
        json.dumps(
            {"refresh_token": platform.issue_refresh_token(account), "stripe_user_id": account}
        )
    )
    os.chmod(creds, 0o600)
    platform.expire_after = 6
    settings = platform_settings(platform, credentials_file=str(creds), max_workers=4)
    run = run_tap(config=settings, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    emulator = platform.accounts[account]
    for stream in CORE:
        assert Counter(r["id"] for r in run.records(stream)) == Counter(
            o["id"] for o in emulator.objects(stream)
        )
    grants = Counter(r["grant_type"] for r in platform.token_requests)
    assert grants == {"refresh_token": 2}, "one token at the start, one refresh on expiry"
    # The rotated refresh token was written back, so the next run works.
    saved = json.loads(creds.read_text())
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    second = run_tap(config=settings, tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert saved["refresh_token"] not in second.stdout + second.stderr + run.stderr


def test_every_connected_account_as_its_own_partition(platform, tmp_path):
    settings = platform_settings(platform, api_key=platform.platform_key, account_ids=["*"])
    settings.pop("client_secret")
    run = run_tap(config=settings, tmp_path=tmp_path)
    assert_every_object_once(platform, run)
    # One row of bookmarks per account (docs/state.md), no SDK partition per stream.
    assert set(account_bookmarks(run.last_state, "charges")) == set(platform.account_ids)
    assert "partitions" not in run.last_state["bookmarks"].get("charges", {})


def test_a_deauthorised_account_is_reported_and_the_others_complete(platform, tmp_path):
    gone = platform.account_ids[2]
    platform.deauthorize(gone)
    settings = platform_settings(platform, api_key=platform.platform_key, account_ids=["*"])
    run = run_tap(config=settings, tmp_path=tmp_path)
    assert run.returncode == 1
    assert gone in run.error_line
    assert "1 account(s) failed" in run.error_line
    for account in platform.account_ids[:2]:
        got = {r["id"] for r in run.records("customers") if r["account_id"] == account}
        assert got == {o["id"] for o in platform.accounts[account].objects("customers")}
    kept = set(account_bookmarks(run.last_state, "customers"))
    assert kept == set(platform.account_ids[:2])
    assert platform.platform_key not in run.stdout + run.stderr


def test_a_revoked_oauth_connection_names_the_account(platform, tmp_path):
    account = platform.account_ids[0]
    refresh = platform.issue_refresh_token(account)
    platform.deauthorize(account)
    settings = platform_settings(platform, refresh_token=refresh, account_id=account)
    run = run_tap(config=settings, tmp_path=tmp_path)
    assert run.returncode == 1
    assert account in run.error_line
    assert "connect it again" in run.error_line
    assert refresh not in run.stdout + run.stderr


def test_connect_is_listed_in_help_and_takes_config_before_or_after(tmp_path):
    help_text = subprocess.run(
        [sys.executable, "-m", "tap_stripe_connect", "--help"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    assert "connect" in help_text
    assert "meltano invoke tap-stripe-connect:connect" in help_text
    # The help's own next step (tests/test_meltano_project.py runs the Meltano one).
    assert "tap-stripe-connect connect --help" in help_text
    connect_help = subprocess.run(
        [sys.executable, "-m", "tap_stripe_connect", "connect", "--help"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    assert "--port" in connect_help
    assert "8976" in connect_help
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"client_id": "ca_x"}))  # no secret: connect says so
    for argv in (["--config", str(config), "connect"], ["connect", "--config", str(config)]):
        run = subprocess.run(
            [sys.executable, "-m", "tap_stripe_connect", *argv, "--port", "0"],
            capture_output=True, text=True, cwd=ROOT, check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("TAP_STRIPE_CONNECT")},
        )
        assert run.returncode == 1
        assert "needs settings 'client_id'" in run.stderr, run.stderr
        assert "unexpected extra argument" not in run.stderr


def test_the_default_callback_port_is_8976(platform, tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(platform_settings(platform)))
    run = subprocess.run(
        [sys.executable, "-m", "tap_stripe_connect", "connect", "--config", str(config),
         "--headless"],
        input="\n", capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
    )
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A8976%2Fcallback" in run.stdout
