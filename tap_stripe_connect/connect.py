"""`tap-stripe-connect connect`: "Connect with Stripe" in a terminal.

Two flows (setting `oauth_flow`): classic Stripe Connect OAuth (`connect`, the default)
and a Stripe App's OAuth 2.0 install link (`stripe_app`).

1. Check `oauth_url` and `api_url` (https; plain http only to this machine), then print
   (and offer to open) the authorise address or install link with a random `state`.
2. Take the redirect back on 127.0.0.1:8976 (or, headless, the address pasted by the
   user). A redirect whose `state` does not match is answered 400 and the real one is
   still awaited; only the matching one is used.
3. Exchange the code for the account's credentials (Connect: connect.stripe.com with the
   platform's key; Apps: `{api_url}/v1/oauth/token` with the app's key as HTTP Basic
   username), check them with `GET /v1/account`, save them (mode 0600, atomically,
   fsynced) for the tap, and say "Connection successful" both in the terminal and on the
   page the browser was redirected to: a banner with the outcome, then the next command.
   The browser's request is held open until then, so the page shows the outcome, or why
   it failed and what to do.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import secrets
import shlex
import sys
import threading
import time
import typing as t
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from tap_stripe_connect.api.auth import (
    APP_FLOW,
    APP_TOKEN_SECONDS,
    CONNECT_FLOW,
    DEFAULT_OAUTH_URL,
    OAUTH_FLOWS,
    OAuthError,
    credentials_path,
    default_credentials_file,
    request_token,
    write_credentials,
)
from tap_stripe_connect.errors import ConfigError, TapError, redact, register_secrets
from tap_stripe_connect.inputs import URL_SETTINGS, url_problem
from tap_stripe_connect.settings import DEFAULTS

ENV_PREFIX = "TAP_STRIPE_CONNECT_"
#: The one name of the platform's secret key in the environment (README and `connect`).
SECRET_VARIABLE = f"{ENV_PREFIX}CLIENT_SECRET"
# Fixed, so it can be registered once as the platform's redirect URI:
# http://127.0.0.1:8976/callback
DEFAULT_PORT = 8976
#: A published Stripe App's OAuth install link (test mode: setting 'app_install_url').
DEFAULT_APP_INSTALL_URL = "https://marketplace.stripe.com/oauth/v2/authorize"
CALLBACK_PATH = "/callback"
# How long the browser's request waits for the code exchange and the check of the
# credential (each bounded by its own HTTP timeout) before the page gives up.
_PAGE_WAIT_SECONDS = 150


def check_urls(settings: t.Mapping[str, t.Any]) -> None:
    """Before anything is printed or sent: the code, the secret key and the tokens only go
    to https URLs (plain http only to this machine), as for the tap's own run."""
    for name in URL_SETTINGS:
        value = str(settings.get(name) or DEFAULTS[name])
        if problem := url_problem(name, value):
            raise ConfigError(f"Not connecting: {problem}. Nothing was sent.")


def load_settings(config_paths: list[str]) -> dict[str, t.Any]:
    """Settings from `--config` files (or ENV), then `TAP_STRIPE_CONNECT_*` variables."""
    settings: dict[str, t.Any] = {}
    for path in config_paths:
        if path == "ENV":
            continue
        try:
            settings.update(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            raise TapError(f"Could not read the config file {path} as JSON.") from None
    for name, value in os.environ.items():
        if name.startswith(ENV_PREFIX):
            settings.setdefault(name[len(ENV_PREFIX) :].lower(), value)
    return settings


class Redirect:
    """The one redirect from Stripe, and the outcome to show on the browser's page."""

    def __init__(self, state: str = "") -> None:
        self.state = state
        self.query: str | None = None
        self.arrived = threading.Event()
        self.outcome: tuple[str, str, tuple[str, ...]] | None = None  # title, details, next
        self.decided = threading.Event()
        self.answered = threading.Event()
        self.closed = False
        self._lock = threading.Lock()

    def belongs(self, query: str) -> bool:
        """Whether a redirect carries this request's `state` (compared in constant time):
        any other is a stale or forged address, which must not end the flow."""
        given = (parse_qs(query).get("state") or [""])[-1]
        return secrets.compare_digest(given.encode(), self.state.encode())

    def take(self, query: str) -> bool:
        """Keep the first redirect's query; False for any later one."""
        with self._lock:
            if self.arrived.is_set():
                return False
            self.query = query
            self.arrived.set()
            return True

    def finish(self, title: str, details: str, next_steps: t.Sequence[str] = ()) -> None:
        self.outcome = (title, details, tuple(next_steps))
        self.decided.set()

    def page(self) -> bytes:
        title, details, next_steps = self.outcome or (
            "Connection not finished",
            "tap-stripe-connect stopped before it could check the connection: see the terminal.",
            (),
        )
        return _page(title, details, next_steps)


# The callback page: the outcome first, as a banner, then what to run next; readable on a
# phone (the browser that signed in may be one, with --headless).
_STYLE = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1a1f36;background:#f6f9fc}
.banner{margin:0;padding:1.1rem 1.25rem;color:#fff;font-size:1.35rem;line-height:1.3;
overflow-wrap:anywhere}
.banner.ok{background:#1f7a4d}.banner.failed{background:#b3261e}
main{max-width:44rem;margin:0 auto;padding:1.25rem;overflow-wrap:anywhere}
h2{font-size:1rem;margin:1.5rem 0 .5rem}
pre{margin:0;padding:.75rem 1rem;background:#1a1f36;color:#e6ebf1;border-radius:6px;
overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere;font-size:.9rem}
.muted{color:#5b6473}
@media (min-width:40rem){.banner{font-size:1.6rem;padding:1.4rem 2rem}}
"""


def _page(title: str, details: str, next_steps: t.Sequence[str] = ()) -> bytes:
    kind = "ok" if title.startswith("Connection successful") else "failed"
    # The command to run next first; then the Meltano settings, for a Meltano project.
    meltano = [line for line in next_steps if line.startswith("meltano ")]
    first = [line for line in next_steps if not line.startswith("meltano ")]
    steps = "".join(
        f"<h2>{heading}</h2><pre id=\"{key}\">{html.escape(chr(10).join(lines))}</pre>"
        for heading, key, lines in (
            ("Next, in the terminal", "next", first or meltano),
            ("Or, in a Meltano project", "meltano", meltano if first else []),
        )
        if lines
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} - tap-stripe-connect</title><style>{_STYLE}</style>"
        "</head><body>"
        f'<h1 id="outcome" class="banner {kind}" role="status">{html.escape(title)}</h1>'
        f'<main><p id="details">{html.escape(details)}</p>{steps}'
        '<p class="muted">You can close this window and return to the terminal.</p>'
        "</main></body></html>"
    ).encode()


class _Callback(BaseHTTPRequestHandler):
    """Takes Stripe's redirect, and answers it once the connection is checked."""

    # Browsers open spare connections they may never use: do not wait on them for long.
    timeout = 10

    def do_GET(self) -> None:
        redirect: Redirect = self.server.redirect  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        if split.path != CALLBACK_PATH:
            self.send_error(404)  # a favicon
            return
        if not redirect.belongs(split.query):
            # Another page cannot end the flow: refused, and the real redirect awaited.
            self.answer(400, _page(
                "Connection failed: this address is not the one in progress",
                "Its state does not match the connection in progress (a stale or forged "
                "redirect). Nothing was saved; the terminal is still waiting for Stripe's "
                "redirect: finish signing in on the page `tap-stripe-connect connect` printed.",
            ))
            return
        if not redirect.take(split.query):
            self.send_error(404)  # a second redirect
            return
        redirect.decided.wait(_PAGE_WAIT_SECONDS)
        self.answer(200, redirect.page())
        redirect.answered.set()

    def answer(self, status: int, page: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: t.Any) -> None:
        pass


def serve_redirect(server: HTTPServer) -> threading.Thread:
    """Answer requests on `server` until the redirect's page is sent (or the server closes)."""
    redirect: Redirect = server.redirect  # type: ignore[attr-defined]

    def serve() -> None:
        while not redirect.answered.is_set() and not redirect.closed:
            try:
                server.handle_request()
            except (OSError, ValueError):  # closed under us at the end
                return

    server.timeout = 0.2
    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    return worker


def wait_for_redirect(redirect: Redirect, timeout: float) -> str:
    """The query string of the one redirect, or a TapError after `timeout` seconds."""
    if not redirect.arrived.wait(timeout) or redirect.query is None:
        raise TapError(
            f"No redirect from Stripe arrived within {int(timeout)} seconds: run "
            "`tap-stripe-connect connect` again and finish signing in to Stripe in the browser."
        )
    return redirect.query


def read_redirect(query: str, state: str) -> str:
    """The authorisation code, after checking the redirect is the answer to our request."""
    args = {k: v[-1] for k, v in parse_qs(query).items()}
    if not secrets.compare_digest(str(args.get("state") or "").encode(), state.encode()):
        raise TapError(
            "The redirect's state does not match this request (a stale or forged redirect): "
            "nothing was saved; run `tap-stripe-connect connect` again."
        )
    if args.get("error"):
        if args["error"] == "access_denied":
            raise TapError(
                "Connection cancelled: access was declined on Stripe's consent page. Run "
                "`tap-stripe-connect connect` again to connect."
            )
        raise TapError(
            f"Stripe did not authorise the connection ({args['error']}): "
            f"{args.get('error_description', 'no description')}."
        )
    if not args.get("code"):
        raise TapError("Stripe's redirect carried no authorisation code: run connect again.")
    return args["code"]


def account_name(account: dict) -> str:
    settings = account.get("settings") or {}
    profile = account.get("business_profile") or {}
    return str(
        (settings.get("dashboard") or {}).get("display_name")
        or profile.get("name")
        or account.get("email")
        or "Stripe account"
    )


def validate(settings: dict[str, t.Any], access_token: str) -> dict:
    """`GET /v1/account` with the new credential: proves it works and names the account."""
    api_url = str(settings.get("api_url") or "https://api.stripe.com").rstrip("/")
    try:
        response = requests.get(
            f"{api_url}/v1/account",
            headers={
                "Authorization": f"Bearer {access_token}",
                "Stripe-Version": str(settings.get("api_version") or "2024-06-20"),
            },
            timeout=60,
        )
    except requests.RequestException as exc:
        raise TapError(
            f"Could not reach Stripe at {api_url} (setting 'api_url') to check the new "
            f"credential: {type(exc).__name__}."
        ) from None
    if response.status_code != 200:
        raise TapError(
            f"Stripe did not accept the new credential (HTTP {response.status_code}, "
            f"Request-Id {response.headers.get('Request-Id', 'none')}): run connect again."
        )
    return t.cast("dict", response.json())


def connect(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tap-stripe-connect connect",
        description='"Connect with Stripe": connect a Stripe account through Stripe '
        "Connect OAuth (default) or a Stripe App's OAuth install link (setting "
        "oauth_flow: stripe_app), and save its credentials for the tap.",
    )
    parser.add_argument("--config", action="append", default=[], help="config file, or ENV")
    parser.add_argument(
        "--credentials-file",
        help="where to save (default: setting 'credentials_file', else "
        f"{default_credentials_file()})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"local port of the redirect URI http://127.0.0.1:PORT{CALLBACK_PATH} "
        f"(default {DEFAULT_PORT}; register that URI with the platform or in the app's "
        "manifest; 0 picks a free port)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait")
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    parser.add_argument(
        "--headless", action="store_true", help="paste the redirect URL instead of listening"
    )
    parser.add_argument(
        "--redirect-uri",
        help="with --headless: the redirect URI registered for the app or platform (e.g. "
        "an https page: Stripe requires https redirect URIs in live mode); paste the "
        "address it shows",
    )
    args = parser.parse_args(argv)
    if args.redirect_uri and not args.headless:
        parser.error("--redirect-uri needs --headless (connect listens on 127.0.0.1 otherwise)")
    settings = load_settings(args.config)
    register_secrets([str(settings.get(k) or "") for k in ("client_secret", "api_key")])
    check_urls(settings)
    flow = str(settings.get("oauth_flow") or CONNECT_FLOW)
    if flow not in OAUTH_FLOWS:
        raise ConfigError(
            f"Setting 'oauth_flow' must be 'connect' or 'stripe_app', not {flow[:40]!r}."
        )
    client_id = settings.get("client_id")
    client_secret = settings.get("client_secret") or (
        settings.get("api_key") if flow == CONNECT_FLOW else None
    )
    if not client_id or not client_secret:
        who = "the app's" if flow == APP_FLOW else "the platform's"
        raise ConfigError(
            f"Connecting needs settings 'client_id' (ca_..., {who} client id) and "
            f"'client_secret' ({who} secret key, e.g. in {SECRET_VARIABLE})."
        )
    state = secrets.token_urlsafe(24)
    server: HTTPServer | None = None
    redirect = Redirect(state)
    if args.headless:
        redirect_uri = (
            args.redirect_uri or f"http://127.0.0.1:{args.port or DEFAULT_PORT}{CALLBACK_PATH}"
        )
        if problem := url_problem("--redirect-uri", redirect_uri):
            raise ConfigError(f"Not connecting: {problem.replace('setting ', 'option ')}.")
    else:
        # Only this machine may answer: the redirect carries a one-time code.
        try:
            # A thread per connection: a browser's idle spare connection must not hold
            # up the redirect.
            server = ThreadingHTTPServer(("127.0.0.1", args.port), _Callback)
            server.daemon_threads = True
        except OSError as exc:
            raise TapError(
                f"Could not listen on 127.0.0.1:{args.port} for Stripe's redirect "
                f"({exc.strerror}): stop what uses that port, or pass --port with the port "
                "of another registered redirect URI."
            ) from None
        server.redirect = redirect  # type: ignore[attr-defined]
        redirect_uri = f"http://127.0.0.1:{server.server_address[1]}{CALLBACK_PATH}"
    url = authorize_url(settings, flow, str(client_id), state, redirect_uri)
    what = "install the app on" if flow == APP_FLOW else "sign in to"
    say(f"Connect with Stripe: open this address and {what} the account to connect:\n  {url}")
    worker = serve_redirect(server) if server is not None else None
    target = (
        Path(args.credentials_file).expanduser()
        if args.credentials_file
        else credentials_path(settings)
    ).resolve()
    try:
        if not args.no_browser and not args.headless and sys.stdout.isatty():
            webbrowser.open(url)
        if server is not None:
            say(f"Waiting for Stripe's redirect on {redirect_uri} ...")
            query = wait_for_redirect(redirect, args.timeout)
        else:
            say("Paste the full address your browser was sent to after signing in:")
            query = urlsplit(sys.stdin.readline().strip()).query
        try:
            account_id, name = finish_connection(settings, flow, query, state, target)
        except TapError as exc:
            redirect.finish(
                failure_title(str(exc)), redact(str(exc)), [again_command(args, settings)]
            )
            raise
        steps = next_steps(args, settings, flow, target, str(client_id))
        redirect.finish(
            f"Connection successful: {name} ({account_id})",
            f"tap-stripe-connect saved the credentials to {target}.",
            steps,
        )
    finally:
        redirect.decided.set()
        if server is not None and worker is not None:
            redirect.answered.wait(5)  # the page is on its way before the port closes
            redirect.closed = True
            worker.join(1)
            server.server_close()
    say(f"Connection successful: {name} ({account_id})")
    say(f"Credentials saved to {target} (readable by you only).")
    say("Next, point the tap at them, e.g. with Meltano (or run the last line):")
    for line in steps:
        say(f"  {line}")
    return 0


def authorize_url(
    settings: t.Mapping[str, t.Any], flow: str, client_id: str, state: str, redirect_uri: str
) -> str:
    """Classic Connect's authorise address, or a Stripe App's OAuth install link: the
    published app's, or the test-mode link given as setting 'app_install_url'. A setting
    'oauth_url' (an emulator) replaces the link's scheme and host."""
    if flow == CONNECT_FLOW:
        oauth_url = str(settings.get("oauth_url") or DEFAULT_OAUTH_URL).rstrip("/")
        return f"{oauth_url}/oauth/authorize?" + urlencode({
            "response_type": "code",
            "client_id": client_id,
            "scope": "read_only",
            "state": state,
            "redirect_uri": redirect_uri,
        })
    link = urlsplit(str(settings.get("app_install_url") or DEFAULT_APP_INSTALL_URL))
    oauth_url = str(settings.get("oauth_url") or "").rstrip("/")
    if oauth_url and oauth_url != DEFAULT_OAUTH_URL:
        host = urlsplit(oauth_url)
        link = link._replace(scheme=host.scheme, netloc=host.netloc)
    query = urlencode({"client_id": client_id, "redirect_uri": redirect_uri, "state": state})
    return link._replace(query=query, fragment="").geturl()


def finish_connection(
    settings: dict[str, t.Any], flow: str, query: str, state: str, target: Path
) -> tuple[str, str]:
    """Check the redirect, exchange its code, validate and save the credentials."""
    code = read_redirect(query, state)
    client_secret = str(settings.get("client_secret") or settings.get("api_key"))
    try:
        if flow == APP_FLOW:
            credentials = request_token(
                str(settings.get("api_url") or DEFAULTS["api_url"]),
                {"grant_type": "authorization_code", "code": code},
                path="/v1/oauth/token",
                secret_key=client_secret,
                setting="api_url",
            )
            credentials["expires_at"] = int(time.time()) + APP_TOKEN_SECONDS
        else:
            credentials = request_token(
                str(settings.get("oauth_url") or DEFAULT_OAUTH_URL),
                {"grant_type": "authorization_code", "code": code, "client_secret": client_secret},
            )
    except OAuthError as exc:
        if exc.error == "invalid_grant":
            raise TapError(
                "Stripe refused the authorisation code (invalid, expired or already used): "
                "run `tap-stripe-connect connect` again."
            ) from None
        raise
    account = validate(settings, credentials["access_token"])
    account_id = str(credentials.get("stripe_user_id") or account.get("id"))
    saved = {**credentials, "stripe_user_id": account_id, "oauth_flow": flow}
    if flow == CONNECT_FLOW and settings.get("api_key"):
        # As Stripe recommends: the platform's key reads the account with
        # `Stripe-Account`; no per-account token to keep.
        saved = {"oauth_flow": flow, "stripe_user_id": account_id}
    write_credentials(target, saved)
    return account_id, account_name(account)


def failure_title(message: str) -> str:
    return "Connection cancelled" if "declined" in message else "Connection failed"


def again_command(args: argparse.Namespace, settings: t.Mapping[str, t.Any]) -> str:
    """`connect` again, as it was run this time."""
    if os.environ.get("MELTANO_EXTRACTOR_NAME") or os.environ.get("MELTANO_PROJECT_ROOT"):
        return "meltano invoke tap-stripe-connect:connect"
    parts = ["tap-stripe-connect", "connect"]
    for config in args.config:
        parts += ["--config", config]
    if args.credentials_file:
        parts += ["--credentials-file", args.credentials_file]
    return shlex.join(parts)


def next_steps(
    args: argparse.Namespace,
    settings: t.Mapping[str, t.Any],
    flow: str,
    target: Path,
    client_id: str,
) -> list[str]:
    """What to run next: the Meltano settings, then a sync with this configuration."""
    prefix = "meltano config set tap-stripe-connect"
    lines = []
    if flow == APP_FLOW:
        lines.append(f"{prefix} oauth_flow {APP_FLOW}")
    lines.append(f"{prefix} credentials_file {shlex.quote(str(target))}")
    if flow == CONNECT_FLOW and settings.get("api_key"):
        lines.append(f'{prefix} api_key "${ENV_PREFIX}API_KEY"')
    else:
        lines += [
            f"{prefix} client_id {shlex.quote(client_id)}",
            f'{prefix} client_secret "${SECRET_VARIABLE}"',
        ]
    configs = [c for c in args.config if c != "ENV"]
    named = str(settings.get("credentials_file") or "")
    if configs and (
        target == default_credentials_file().resolve()
        or (named and Path(named).expanduser().resolve() == target)
    ):
        lines.append(shlex.join(["tap-stripe-connect", *[
            a for c in configs for a in ("--config", c)
        ]]))
    return lines


def say(line: str) -> None:
    print(line, flush=True)
