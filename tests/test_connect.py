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


def start_connect(
    platform, tmp_path, *extra: str, settings: dict | None = None, env: dict | None = None,
    credentials: bool = True,
):
    config = tmp_path / "connect.json"
    config.write_text(json.dumps(settings or platform_settings(platform)))
    saved = ["--credentials-file", str(tmp_path / "creds.json")] if credentials else []
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
        *saved,
        *extra,
    ]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=user_env(tmp_path, **(env or {})),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "authorize?" in line:  # Connect's /oauth/authorize, an app's /oauth/v2/.../authorize
            return proc, line.strip()
    raise AssertionError(proc.stderr.read() if proc.stderr else "no URL printed")


def user_env(tmp_path, **extra: str) -> dict[str, str]:
    """The environment of a user whose per-user config folder is in `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_STRIPE_CONNECT_")}
    return {**env, "XDG_CONFIG_HOME": str(tmp_path / "config"), **extra}


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
    assert urlsplit(url).path == "/oauth/authorize"
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


def test_a_forged_state_is_answered_400_and_the_real_redirect_still_connects(
    platform, tmp_path
):
    """Another page cannot end the flow: a redirect whose state does not match gets a 400
    page, and `connect` keeps waiting for the real one."""
    proc, url = start_connect(platform, tmp_path)
    consent = requests.get(url, allow_redirects=False, timeout=10)
    real = consent.headers["Location"]
    forged = requests.get(real.replace("state=", "state=forged"), timeout=10)
    assert forged.status_code == 400
    assert "state does not match" in forged.text
    assert proc.poll() is None, "connect must keep waiting"
    assert requests.get(real, timeout=10).status_code == 200
    code, out, err = finish(proc)
    assert code == 0, err
    assert "Connection successful" in out
    assert json.loads((tmp_path / "creds.json").read_text())["stripe_user_id"]


def test_a_forged_pasted_redirect_is_refused(platform, tmp_path):
    proc, url = start_connect(platform, tmp_path, "--headless")
    consent = requests.get(url, allow_redirects=False, timeout=10)
    forged = consent.headers["Location"].replace("state=", "state=forged")
    _out, err = proc.communicate(forged + "\n", timeout=60)
    assert proc.returncode == 1
    assert "state does not match" in err
    assert not (tmp_path / "creds.json").exists()


@pytest.mark.parametrize("setting", ["oauth_url", "api_url"])
def test_connect_sends_nothing_to_a_plain_http_url(platform, tmp_path, setting):
    """Checked before anything is printed or sent, as the tap's run checks them."""
    settings = platform_settings(platform, **{setting: "http://evil.example.com"})
    config = tmp_path / "connect.json"
    config.write_text(json.dumps(settings))
    run = subprocess.run(
        [sys.executable, "-m", "tap_stripe_connect", "connect", "--config", str(config),
         "--no-browser", "--port", "0", "--credentials-file", str(tmp_path / "creds.json")],
        capture_output=True, text=True, cwd=ROOT, env=user_env(tmp_path), timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert run.stdout == ""
    assert f"setting '{setting}' must use https" in run.stderr.strip().splitlines()[-1]
    assert platform.token_requests == []
    assert platform.api_requests == []


def test_credentials_reach_the_disk_file_and_folder(tmp_path, monkeypatch):
    """fsync of the file's data, then of the folder's entry after the atomic replace."""
    from tap_stripe_connect.api import auth

    synced: list[str] = []
    real_fsync = os.fsync
    replaced = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    real_replace = os.replace

    def replace(src, dst) -> None:
        real_replace(src, dst)
        replaced.append(len(synced))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "folder" / "creds.json"
    auth.write_credentials(target, {"refresh_token": "rt_x", "stripe_user_id": "acct_1"})
    assert json.loads(target.read_text())["refresh_token"] == "rt_x"
    assert len(synced) == 2, synced
    assert ".creds.json." in synced[0]  # the temporary file, before it replaces the target
    assert replaced == [1]
    assert synced[1] == str(target.parent)


def test_a_run_waits_for_another_runs_refresh_and_keeps_its_live_token(platform, tmp_path):
    """Two runs sharing a rotating refresh token: the second waits on the file's lock and
    takes the token the first saved, instead of spending the dead one."""
    import fcntl

    account = platform.account_ids[0]
    creds = tmp_path / "creds.json"
    spent = platform.issue_refresh_token(account)
    creds.write_text(json.dumps({"refresh_token": spent, "stripe_user_id": account}))
    settings = platform_settings(platform, credentials_file=str(creds))
    (tmp_path / "config.json").write_text(json.dumps(settings))
    lock = os.open(f"{creds}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # "another run" is refreshing
    output = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tap_stripe_connect", "--config", str(tmp_path / "config.json")],
        cwd=ROOT, env=user_env(tmp_path), stdin=subprocess.DEVNULL, stdout=output.open("w"),
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "Waiting for the lock on the credentials file" in line:
                break
        else:
            raise AssertionError("the run never waited for the credentials file's lock")
        # The other run refreshes (Stripe rolls the token) and saves the new one.
        answer = requests.post(
            f"{platform.url}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": spent,
                  "client_secret": platform.platform_key},
            timeout=10,
        ).json()
        creds.write_text(json.dumps({**answer, "stripe_user_id": account}))
    finally:
        os.close(lock)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert '"type":"RECORD"' in output.read_text().replace(" ", "")
    saved = json.loads(creds.read_text())["refresh_token"]
    assert saved == answer["refresh_token"]
    # The saved token is alive: the next run can refresh with it.
    again = requests.post(
        f"{platform.url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": saved,
              "client_secret": platform.platform_key},
        timeout=10,
    )
    assert again.status_code == 200


def test_by_default_credentials_go_to_the_user_config_folder(platform, tmp_path):
    """Not into the checkout; `connect` names the one secret variable the README exports,
    and a run with only the platform's settings reads the default file."""
    proc, url = start_connect(platform, tmp_path, credentials=False)
    assert browse(url).status_code == 200
    code, out, err = finish(proc)
    assert code == 0, err
    default = tmp_path / "config" / "tap-stripe-connect" / "credentials.json"
    assert f"Credentials saved to {default}" in out
    assert stat.S_IMODE(os.stat(default).st_mode) == 0o600
    assert not (ROOT / "stripe-credentials.json").exists()
    assert 'client_secret "$TAP_STRIPE_CONNECT_CLIENT_SECRET"' in out
    assert "STRIPE_PLATFORM_SECRET_KEY" not in out
    run = run_tap(
        config=platform_settings(platform), tmp_path=tmp_path,
        env={"XDG_CONFIG_HOME": str(tmp_path / "config")},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert {r["account_id"] for r in run.records("charges")} == {platform.account_ids[0]}


def test_what_trying_it_locally_writes_is_git_ignored():
    names = ["stripe-credentials.json", "emulator-connect.json", "records.jsonl"]
    ignored = subprocess.run(
        ["git", "check-ignore", *names], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    assert ignored == names


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


def test_with_the_platform_key_connect_keeps_only_the_account_id_and_resumes(
    platform, tmp_path
):
    """Classic Connect as Stripe recommends: no per-account token; the run reads the
    connected account with the platform's key and `Stripe-Account`. When the account
    disconnects, the run names it and the command that connects it again; after that, the
    next run reads only what changed."""
    creds = tmp_path / "creds.json"
    settings = platform_settings(
        platform, api_key=platform.platform_key, credentials_file=str(creds)
    )
    proc, url = start_connect(platform, tmp_path, settings=settings)
    assert browse(url).status_code == 200
    code, out, err = finish(proc)
    assert code == 0, err
    account = platform.account_ids[0]
    assert json.loads(creds.read_text()) == {"oauth_flow": "connect", "stripe_user_id": account}
    assert "meltano config set tap-stripe-connect api_key" in out
    since = len(platform.api_requests)
    run = run_tap(config=settings, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    emulator = platform.accounts[account]
    assert {r["id"] for r in run.records("customers")} == {
        o["id"] for o in emulator.objects("customers")
    }
    assert set(platform.requests_by_account(since)) == {account}
    assert not any(r.get("grant_type") == "refresh_token" for r in platform.token_requests)

    platform.deauthorize(account)
    changed = emulator.objects("customers")[2]["id"]
    emulator.update("customers", changed, {"name": "Changed while disconnected"})
    platform.advance(120)
    failed = run_tap(config=settings, state=run.last_state, tmp_path=tmp_path)
    assert failed.returncode == 1
    assert account in failed.error_line
    command = f"tap-stripe-connect connect --config {tmp_path / 'config.json'}"
    assert f"`{command}`" in failed.error_line
    assert failed.records("customers") == []

    # The command, as printed (the run's config names the credentials file).
    proc, url = start_connect(platform, tmp_path, settings=settings, credentials=False)
    assert browse(url).status_code == 200
    code, _out, err = finish(proc)
    assert code == 0, err
    resumed = run_tap(config=settings, state=run.last_state, tmp_path=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["id"] for r in resumed.records("customers")] == [changed]
    # Exactly the change: the customer and its event (`accounts` is a full table).
    read = Counter(
        m["stream"] for m in resumed.messages if m["type"] == "RECORD" and m["stream"] != "accounts"
    )
    assert read == {"customers": 1, "events": 1}
