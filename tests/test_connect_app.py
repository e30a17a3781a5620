"""Stripe Apps OAuth 2.0 (`oauth_flow: stripe_app`) against the emulator, through the CLI:
the install link, the code exchange at `/v1/oauth/token`, rolling refresh tokens, and an
uninstalled app that reconnects and resumes from its bookmarks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import run_tap
from tests.emulator.connect import ConnectPlatform
from tests.test_connect import platform_settings, start_connect


@pytest.fixture
def platform():
    with ConnectPlatform(accounts=2, objects=8) as connect_platform:
        yield connect_platform


def app_settings(platform: ConnectPlatform, **extra) -> dict:
    """The platform's settings (tests/test_connect.py) for its Stripe App."""
    return platform_settings(
        platform,
        oauth_flow="stripe_app",
        client_id=platform.app_client_id,
        client_secret=platform.app_secret_key,
        **extra,
    )


def start(tmp_path, settings: dict, *extra: str) -> tuple[subprocess.Popen, str]:
    """`connect` with `settings`, saving to the user's config folder (in `tmp_path`)."""
    return start_connect(None, tmp_path, *extra, settings=settings, credentials=False)


def install(url: str, decision: str = "allow", account: str | None = None) -> str:
    """What the browser does on the install page: the redirect address Stripe sends."""
    extra = f"&decision={decision}" + (f"&account={account}" if account else "")
    answer = requests.get(url + extra, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def connect_app(platform, tmp_path, account: str | None = None, **settings) -> str:
    proc, url = start(tmp_path, app_settings(platform, **settings))
    page = requests.get(install(url, account=account), timeout=30)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert page.status_code == 200
    return out + page.text


def bookmarks(state: dict) -> dict:
    """Every stream's bookmark entry (the empty ones of child streams left out)."""
    return {name: entry for name, entry in state["bookmarks"].items() if entry}


def credentials(tmp_path) -> dict:
    return json.loads((tmp_path / "config" / "tap-stripe-connect" / "credentials.json").read_text())


def test_install_link_exchange_and_a_run_with_only_the_app_settings(platform, tmp_path):
    proc, url = start(tmp_path, app_settings(platform))
    link = urlsplit(url)
    assert f"{link.scheme}://{link.netloc}" == platform.url  # oauth_url replaces the host
    assert link.path == "/oauth/v2/authorize"
    query = {k: v[-1] for k, v in parse_qs(link.query).items()}
    assert set(query) == {"client_id", "redirect_uri", "state"}
    assert query["client_id"] == platform.app_client_id
    page = requests.get(install(url), timeout=30)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    account = platform.account_ids[0]
    name = platform.accounts[account].store.account["business_profile"]["name"]
    assert f"Connection successful: {name} ({account})" in out
    assert f"Connection successful: {name} ({account})" in page.text
    assert "meltano config set tap-stripe-connect oauth_flow stripe_app" in out
    saved = credentials(tmp_path)
    assert saved["oauth_flow"] == "stripe_app"
    assert saved["stripe_user_id"] == account
    assert saved["scope"] == "stripe_apps"
    assert saved["refresh_token"].startswith("rt_app")
    path = tmp_path / "config" / "tap-stripe-connect" / "credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # The code went to /v1/oauth/token with the app's key (the emulator refuses others).
    assert {"grant_type": "authorization_code", "app": "1"} in platform.token_requests
    for secret in (saved["refresh_token"], saved["access_token"], platform.app_secret_key):
        assert secret not in out + err + page.text

    # A run needs only the flow, the app's id and key, and the credentials file (here the
    # default one); the flow is also read from the file.
    since = len(platform.api_requests)
    for settings in (
        {k: v for k, v in app_settings(platform).items() if k != "oauth_url"},
        {"client_id": platform.app_client_id, "client_secret": platform.app_secret_key,
         "api_url": platform.url, "credentials_file": str(path)},
    ):
        run = run_tap(config=settings, tmp_path=tmp_path,
                      env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
        assert run.returncode == 0, run.stderr[-2000:]
        expected = {o["id"] for o in platform.accounts[account].objects("customers")}
        assert {r["id"] for r in run.records("customers")} == expected
        assert {r["account_id"] for r in run.records("customers")} == {account}
    # The token is bound to the account: no request carried Stripe-Account.
    assert set(platform.requests_by_account(since)) == {None}


def test_the_test_mode_link_and_a_pasted_redirect(platform, tmp_path):
    link = f"https://marketplace.stripe.com/oauth/v2/{platform.app_test_link}/authorize"
    proc, url = start(tmp_path, app_settings(platform, app_install_url=link), "--headless")
    assert url.startswith(f"{platform.url}/oauth/v2/{platform.app_test_link}/authorize?")
    redirect = install(url, account=platform.account_ids[1])
    out, err = proc.communicate(redirect + "\n", timeout=60)
    assert proc.returncode == 0, err
    assert f"({platform.account_ids[1]})" in out
    assert credentials(tmp_path)["stripe_user_id"] == platform.account_ids[1]


def test_headless_with_a_registered_https_redirect_uri(platform, tmp_path):
    """Live mode wants an https redirect URI: the user pastes the address it lands on."""
    proc, url = start(
        tmp_path, app_settings(platform), "--headless",
        "--redirect-uri", "https://app.example.com/stripe/callback",
    )
    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["redirect_uri"] == "https://app.example.com/stripe/callback"
    redirect = install(url)
    assert redirect.startswith("https://app.example.com/stripe/callback?")
    assert "code=ac_" in redirect
    out, err = proc.communicate(redirect + "\n", timeout=60)
    assert proc.returncode == 0, err
    assert f"({platform.account_ids[0]})" in out


def test_declining_the_install_ends_with_one_line(platform, tmp_path):
    proc, url = start(tmp_path, app_settings(platform))
    page = requests.get(install(url, decision="deny"), timeout=30)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "declined" in err.strip().splitlines()[-1]
    assert "Connection cancelled" in page.text
    assert not (tmp_path / "config" / "tap-stripe-connect" / "credentials.json").exists()


def test_an_expired_access_token_rolls_the_refresh_token_saved_before_use(platform, tmp_path):
    connect_app(platform, tmp_path)
    path = tmp_path / "config" / "tap-stripe-connect" / "credentials.json"
    first = credentials(tmp_path)
    platform.advance(3601)  # Stripe's hour is over (the emulator's clock)
    # Each request: its token, and the refresh token the file held when it arrived.
    seen: list[tuple[str, str]] = []
    answer = platform._api

    def spy(handler, method, path_, query, body=""):
        token = (handler.headers.get("Authorization") or "").partition(" ")[2]
        seen.append((token, json.loads(path.read_text())["refresh_token"]))
        answer(handler, method, path_, query, body)

    platform._api = spy
    settings = app_settings(platform, credentials_file=str(path))
    run = run_tap(config=settings, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    second = credentials(tmp_path)
    assert second["refresh_token"] != first["refresh_token"]
    new_tokens = {token for token, _ in seen if token != first["access_token"]}
    assert new_tokens == {second["access_token"]}, "one refresh"
    # Saved before use: every request with the new token found the new refresh token saved.
    assert {saved for token, saved in seen if token in new_tokens} == {second["refresh_token"]}
    assert Counter(r["grant_type"] for r in platform.token_requests)["refresh_token"] == 1
    # The old refresh token stopped working, and the previous access token was revoked.
    spent = requests.post(
        f"{platform.url}/v1/oauth/token", auth=(platform.app_secret_key, ""),
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, timeout=10,
    )
    assert spent.status_code == 400
    assert spent.json()["error"] == "invalid_grant"
    old = requests.get(f"{platform.url}/v1/account", timeout=10,
                       headers={"Authorization": f"Bearer {first['access_token']}"})
    assert old.status_code == 401


def test_an_uninstalled_app_names_the_account_keeps_state_and_resumes(platform, tmp_path):
    """Re-authentication that resumes: uninstall, a failed run with its one line and the
    exact command, reconnect the same account, and a run that reads only the changes."""
    account = platform.account_ids[0]
    connect_app(platform, tmp_path)
    path = tmp_path / "config" / "tap-stripe-connect" / "credentials.json"
    settings = app_settings(platform, credentials_file=str(path))
    first = run_tap(config=settings, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    state = first.last_state

    platform.uninstall(account)
    assert platform.application_events[-1]["type"] == "account.application.deauthorized"
    assert platform.application_events[-1]["account"] == account
    emulator = platform.accounts[account]
    renamed = emulator.objects("customers")[0]["id"]
    emulator.update("customers", renamed, {"name": "Renamed after the uninstall"})
    created = emulator.create("customers", name="Created after the uninstall")["id"]
    platform.advance(120)

    failed = run_tap(config=settings, state=state, tmp_path=tmp_path)
    assert failed.returncode == 1
    line = failed.error_line
    assert account in line
    assert "revoked, the app uninstalled" in line
    assert f"`tap-stripe-connect connect --config {tmp_path / 'config.json'}`" in line
    assert failed.records("customers") == []
    assert bookmarks(failed.last_state) == bookmarks(state), "the account's state is kept"
    # Refreshing fails too (invalid_grant), with the same advice.
    stale = {**json.loads(path.read_text()), "expires_at": 0}
    path.write_text(json.dumps(stale))
    refused = run_tap(config=settings, state=state, tmp_path=tmp_path)
    assert refused.returncode == 1
    assert account in refused.error_line
    assert "uninstalled" in refused.error_line
    assert "tap-stripe-connect connect --config" in refused.error_line

    connect_app(platform, tmp_path, account=account)
    resumed = run_tap(config=settings, state=state, tmp_path=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(r["id"] for r in resumed.records("customers")) == sorted([renamed, created])
    # Exactly the changes: the two customers and their two events (`accounts` is a full
    # table, read whole every run).
    read = Counter(
        m["stream"] for m in resumed.messages if m["type"] == "RECORD" and m["stream"] != "accounts"
    )
    assert read == {"customers": 2, "events": 2}
    assert {e["data"]["object"]["id"] for e in resumed.records("events")} == {renamed, created}


def test_a_refresh_by_another_run_mid_sync_is_taken_from_the_file(platform, tmp_path):
    """Another run refreshes while this one syncs: Stripe revokes this run's access token
    (401 `platform_api_key_expired`); this run takes the new token the other one saved
    instead of spending its own, now dead, refresh token, and loses no page."""
    account = platform.account_ids[0]
    connect_app(platform, tmp_path)
    path = tmp_path / "config" / "tap-stripe-connect" / "credentials.json"
    served = 0
    answer = platform._api

    def another_run_refreshes_at_the_fifth_request(handler, method, path_, query, body=""):
        nonlocal served
        served += 1
        if served == 5:
            saved = json.loads(path.read_text())
            rolled = requests.post(
                f"{platform.url}/v1/oauth/token", auth=(platform.app_secret_key, ""),
                data={"grant_type": "refresh_token", "refresh_token": saved["refresh_token"]},
                timeout=10,
            ).json()
            path.write_text(json.dumps({**saved, **rolled}))
        answer(handler, method, path_, query, body)

    platform._api = another_run_refreshes_at_the_fifth_request
    run = run_tap(config=app_settings(platform, credentials_file=str(path)), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert served > 5
    for stream in ("customers", "charges", "invoices"):
        assert Counter(r["id"] for r in run.records(stream)) == Counter(
            o["id"] for o in platform.accounts[account].objects(stream)
        ), stream
    # This run spent no refresh token of its own: the only refresh was the other run's.
    refreshes = [r for r in platform.token_requests if r["grant_type"] == "refresh_token"]
    assert len(refreshes) == 1
