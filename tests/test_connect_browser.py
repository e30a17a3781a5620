""""Connect with Stripe" in a real browser: headless Chromium, the emulator's consent page,
the redirect to `tap-stripe-connect connect`, and the page that tells the outcome.

The success test runs the README's three "Try it locally" commands as written (with
`--port 0` added so parallel runs do not collide). Chromium is Debian's `chromium` with
its `chromedriver` (`.ci/run` installs both); without them the tests skip locally and
fail in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import typing as t
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests import readme
from tests.conftest import ROOT
from tests.emulator.connect import ConnectPlatform

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def browser() -> t.Iterator[t.Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = "Chromium not installed (apt-get install chromium chromium-driver; .ci/run does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def click(driver: t.Any, element_id: str) -> None:
    """Click an element once the page shows it (a loaded machine may be slow to render)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + 60
    while not driver.find_elements(By.ID, element_id):
        if time.monotonic() > deadline:
            raise AssertionError(f"no #{element_id}; the browser shows {driver.current_url}")
        time.sleep(0.1)
    driver.find_element(By.ID, element_id).click()


def page_text(driver: t.Any) -> str:
    """The page's text once `connect` answered the redirect (it holds it until then)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = driver.find_elements(By.ID, "outcome")
        if found:
            return str(driver.find_element(By.TAG_NAME, "body").text)
        time.sleep(0.1)
    raise AssertionError(f"no outcome page; the browser shows {driver.current_url}")


def start(argv: list[str] | str, cwd: Path, env: dict[str, str], shell: bool = False):
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        shell=shell,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def read_until(proc: subprocess.Popen, marker: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            return line.strip()
    raise AssertionError(f"{marker!r} never printed: {proc.stderr.read() if proc.stderr else ''}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def user_env(config_home: Path) -> dict[str, str]:
    """A user's environment, whose per-user config folder is `config_home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_STRIPE_CONNECT_")}
    env["PYTHONPATH"] = str(ROOT)  # `python -m tests.emulator` from any folder
    env["XDG_CONFIG_HOME"] = str(config_home)
    return env


def test_readme_local_connect_flow_in_a_real_browser(browser, tmp_path):
    """The README's three commands: emulator, connect + browser, then a sync."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = user_env(tmp_path / "home-config")
    emulator = start(
        readme.command(".venv/bin/python -m tests.emulator --connect") + " --port 0",
        tmp_path, env, shell=True,
    )
    try:
        said = read_until(emulator, "Settings for tap-stripe-connect written")
        # The next step the emulator prints is the README's next command.
        assert said.endswith(
            readme.command(".venv/bin/tap-stripe-connect connect --config emulator-connect")
        ), said
        config = json.loads((tmp_path / "emulator-connect.json").read_text())
        connect = start(
            readme.command(".venv/bin/tap-stripe-connect connect --config emulator-connect")
            + " --port 0",
            tmp_path, env, shell=True,
        )
        url = read_until(connect, "/oauth/authorize?")
        browser.get(url)
        click(browser, "connect")  # on the emulator's "Connect with Stripe" consent page
        text = page_text(browser)
        out, err = connect.communicate(timeout=60)
        assert connect.returncode == 0, err
        assert "Connection successful: Emulated Goods" in text, text
        account = text.split("(acct_", 1)[1].split(")", 1)[0]
        assert "Connection successful: Emulated Goods" in out
        assert f"(acct_{account})" in out
        # Saved outside the checkout, in the user's config folder.
        assert not (tmp_path / "stripe-credentials.json").exists()
        saved = json.loads(
            (tmp_path / "home-config" / "tap-stripe-connect" / "credentials.json").read_text()
        )
        assert saved["stripe_user_id"] == f"acct_{account}"
        assert saved["refresh_token"] not in text + out + err
        assert config["client_secret"] not in text + out + err

        sync = subprocess.run(
            readme.command(".venv/bin/tap-stripe-connect --config emulator-connect.json >"),
            shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
            check=False,
        )
        assert sync.returncode == 0, sync.stderr[-2000:]
        records = [
            json.loads(line)["record"]
            for line in (tmp_path / "records.jsonl").read_text().splitlines()
            if line.startswith('{"type":"RECORD"') or line.startswith('{"type": "RECORD"')
        ]
        charges = [r for r in records if r.get("object") == "charge"]
        assert charges, "the sync read no charges"
        assert {r["account_id"] for r in records} == {f"acct_{account}"}
    finally:
        stop(emulator)


@pytest.fixture
def platform():
    with ConnectPlatform(accounts=2, objects=5, consent_page=True) as connect_platform:
        yield connect_platform


def run_connect(platform: ConnectPlatform, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    config = tmp_path / "connect.json"
    config.write_text(json.dumps({
        "client_id": platform.client_id,
        "client_secret": platform.platform_key,
        "oauth_url": platform.url,
        "api_url": platform.url,
    }))
    proc = start(
        [str(ROOT / ".venv" / "bin" / "tap-stripe-connect"), "--config", str(config), "connect",
         "--port", "0", "--credentials-file", str(tmp_path / "creds.json")],
        tmp_path, user_env(tmp_path / "config"),
    )
    return proc, read_until(proc, "/oauth/authorize?")


def with_query(url: str, **changes: str) -> str:
    split = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(split.query).items()}
    return split._replace(query=urlencode({**query, **changes})).geturl()


def failure(browser: t.Any, proc: subprocess.Popen, tmp_path: Path, title: str) -> tuple[str, str]:
    """The page's text and connect's stderr, once it failed; nothing may have been saved."""
    text = page_text(browser)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert text.startswith(title), text
    assert not (tmp_path / "creds.json").exists()
    return text, err


def test_declining_on_the_consent_page_says_so_in_the_browser(browser, platform, tmp_path):
    proc, url = run_connect(platform, tmp_path)
    browser.get(url)
    click(browser, "decline")
    text, err = failure(browser, proc, tmp_path, "Connection cancelled")
    assert "declined on Stripe's consent page" in text
    assert "tap-stripe-connect connect` again" in text
    assert "declined" in err


def test_a_state_mismatch_is_refused_in_the_browser_and_connect_keeps_waiting(
    browser, platform, tmp_path
):
    proc, url = run_connect(platform, tmp_path)
    browser.get(with_query(url, state="forged-by-someone-else"))
    click(browser, "connect")
    text = page_text(browser)
    assert text.startswith("Connection failed"), text
    assert "state does not match" in text
    assert "Nothing was saved" in text
    assert proc.poll() is None, "a forged redirect must not end the flow"
    browser.get(url)  # the real one
    click(browser, "connect")
    assert "Connection successful" in page_text(browser)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_an_invalid_code_is_shown_in_the_browser(browser, platform, tmp_path):
    proc, url = run_connect(platform, tmp_path)
    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    # The redirect as Stripe would send it, with a code Stripe never issued.
    bogus = urlencode({"code": "ac_bogus", "state": query["state"]})
    browser.get(f"{query['redirect_uri']}?{bogus}")
    text, _err = failure(browser, proc, tmp_path, "Connection failed")
    assert "refused the authorisation code" in text
    assert "run `tap-stripe-connect connect` again" in text


def test_a_credential_that_fails_validation_is_shown_in_the_browser(browser, platform, tmp_path):
    proc, url = run_connect(platform, tmp_path)
    platform.expire_after = 0  # the new token is refused by GET /v1/account
    browser.get(url)
    click(browser, "connect")
    text, _err = failure(browser, proc, tmp_path, "Connection failed")
    assert "did not accept the new credential (HTTP 401" in text


# -- Stripe Apps in the browser: connect, sync, revoke, reconnect, resume -----------------

DOCS_IMAGES = ROOT / "docs" / "img"


def banner_first(driver: t.Any) -> dict:
    """Where the outcome banner is: the body's first element, at the top of the page."""
    return t.cast("dict", driver.execute_script(
        "const b = document.getElementById('outcome');"
        "const r = b.getBoundingClientRect();"
        "return {first: document.body.firstElementChild === b, top: r.top, "
        "height: r.height, width: r.width, page: document.documentElement.clientWidth, "
        "scroll: document.documentElement.scrollWidth, "
        "viewport: !!document.querySelector('meta[name=viewport]')};"
    ))


def screenshot(driver: t.Any, tmp_path: Path, name: str) -> Path:
    """A picture of the page; `UPDATE_DOCS_IMAGES=1` also keeps it for docs/connect.md."""
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    if os.environ.get("UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / name)
    return path


def run_sync(config: Path, tmp_path: Path, state: dict | None, env: dict[str, str]):
    argv = [str(ROOT / ".venv" / "bin" / "tap-stripe-connect"), "--config", str(config)]
    if state is not None:
        (tmp_path / "state.json").write_text(json.dumps(state))
        argv += ["--state", str(tmp_path / "state.json")]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done, messages


def records(messages: list[dict], stream: str) -> list[dict]:
    return [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == stream]


def last_state(messages: list[dict]) -> dict:
    return [m["value"] for m in messages if m["type"] == "STATE"][-1]


def test_stripe_app_connect_revoke_reconnect_and_resume_in_a_real_browser(browser, tmp_path):
    with ConnectPlatform(accounts=2, objects=5, consent_page=True) as platform:
        env = user_env(tmp_path / "config")
        config = tmp_path / "app.json"
        config.write_text(json.dumps({
            "oauth_flow": "stripe_app",
            "client_id": platform.app_client_id,
            "client_secret": platform.app_secret_key,
            "oauth_url": platform.url,
            "api_url": platform.url,
        }))

        def connect_in_browser(name: str | None) -> str:
            proc = start(
                [str(ROOT / ".venv" / "bin" / "tap-stripe-connect"), "connect", "--config",
                 str(config), "--port", "0"], tmp_path, env,
            )
            url = read_until(proc, "authorize?")
            assert url.startswith(f"{platform.url}/oauth/v2/authorize?")
            browser.set_window_size(1000, 760)
            browser.get(url)
            click(browser, "connect")
            text = page_text(browser)
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            placed = banner_first(browser)
            assert placed["first"], "the outcome is the first thing on the page"
            assert placed["top"] == 0
            assert placed["viewport"]
            if name:
                screenshot(browser, tmp_path, name)
            return text

        account = platform.account_ids[0]
        text = connect_in_browser("connect-callback.png")
        assert text.startswith("Connection successful: ")
        assert f"({account})" in text.splitlines()[0]
        assert f"tap-stripe-connect --config {config}" in text  # the next command
        # Readable on a phone: the banner fits, nothing scrolls sideways.
        browser.set_window_size(390, 844)
        placed = banner_first(browser)
        assert placed["first"]
        assert placed["scroll"] <= placed["page"]
        screenshot(browser, tmp_path, "connect-callback-phone.png")

        first, messages = run_sync(config, tmp_path, None, env)
        assert first.returncode == 0, first.stderr[-2000:]
        assert {r["account_id"] for r in records(messages, "customers")} == {account}
        state = last_state(messages)

        platform.uninstall(account)  # access lapses
        emulator = platform.accounts[account]
        changed = emulator.objects("customers")[1]["id"]
        emulator.update("customers", changed, {"name": "Changed while disconnected"})
        added = emulator.create("customers", name="Added while disconnected")["id"]
        platform.advance(120)
        failed, messages = run_sync(config, tmp_path, state, env)
        assert failed.returncode == 1
        line = failed.stderr.strip().splitlines()[-1]
        assert account in line
        assert f"`tap-stripe-connect connect --config {config}`" in line
        assert records(messages, "customers") == []

        text = connect_in_browser(None)  # through the page
        assert f"({account})" in text.splitlines()[0]
        resumed, messages = run_sync(config, tmp_path, state, env)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert sorted(r["id"] for r in records(messages, "customers")) == sorted([changed, added])
        # Exactly the changes: the customers and their events (`accounts` is a full table).
        read = Counter(
            m["stream"] for m in messages if m["type"] == "RECORD" and m["stream"] != "accounts"
        )
        assert read == {"customers": 2, "events": 2}


def test_a_failure_banner_says_what_to_do_and_comes_first(browser, platform, tmp_path):
    proc, url = run_connect(platform, tmp_path)
    browser.get(url)
    click(browser, "decline")
    text, _err = failure(browser, proc, tmp_path, "Connection cancelled")
    assert banner_first(browser)["first"]
    assert "tap-stripe-connect connect --config" in text  # the command to run again
    screenshot(browser, tmp_path, "connect-callback-cancelled.png")
