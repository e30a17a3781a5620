"""`tap-stripe-connect connect`: "Connect with Stripe" in a terminal.

1. Print (and offer to open) Stripe's authorise URL with a random `state`.
2. Take the one redirect back, on 127.0.0.1 (or, headless, the URL pasted by the user),
   and check its `state` against CSRF.
3. Exchange the code for the connected account's credentials, validate them with
   `GET /v1/account`, print "Connection successful", and save them (mode 0600) for the tap.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import typing as t
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from tap_stripe_connect.api.auth import (
    DEFAULT_OAUTH_URL,
    OAuthError,
    request_token,
    write_credentials,
)
from tap_stripe_connect.errors import TapError, register_secrets

ENV_PREFIX = "TAP_STRIPE_CONNECT_"
DEFAULT_CREDENTIALS = "stripe-credentials.json"
_PAGE = (
    b"<!doctype html><title>tap-stripe-connect</title>"
    b"<p>Stripe answered. You can close this window and return to the terminal.</p>"
)


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


class _Callback(BaseHTTPRequestHandler):
    """Takes Stripe's redirect (one request), answers the browser with a short page."""

    def do_GET(self) -> None:
        self.server.redirect_query = urlsplit(self.path).query  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(_PAGE)))
        self.end_headers()
        self.wfile.write(_PAGE)

    def log_message(self, format: str, *args: t.Any) -> None:
        pass


def wait_for_redirect(server: HTTPServer, timeout: float) -> str:
    """The query string of the one redirect, or a TapError after `timeout` seconds."""
    server.redirect_query = None  # type: ignore[attr-defined]
    done = threading.Event()

    def serve() -> None:
        while not done.is_set() and server.redirect_query is None:  # type: ignore[attr-defined]
            server.handle_request()

    server.timeout = 0.2
    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    worker.join(timeout)
    done.set()
    query = server.redirect_query  # type: ignore[attr-defined]
    if query is None:
        raise TapError(
            f"No redirect from Stripe arrived within {int(timeout)} seconds: run "
            "`tap-stripe-connect connect` again and finish signing in to Stripe in the browser."
        )
    return t.cast("str", query)


def read_redirect(query: str, state: str) -> str:
    """The authorisation code, after checking the redirect is the answer to our request."""
    args = {k: v[-1] for k, v in parse_qs(query).items()}
    if args.get("state") != state:
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
        description="Connect a Stripe account through Stripe Connect OAuth.",
    )
    parser.add_argument("--config", action="append", default=[], help="config file, or ENV")
    parser.add_argument("--credentials-file", help=f"where to save (default {DEFAULT_CREDENTIALS})")
    parser.add_argument("--port", type=int, default=0, help="local port for the redirect")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait")
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    parser.add_argument(
        "--headless", action="store_true", help="paste the redirect URL instead of listening"
    )
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    register_secrets([str(settings.get(k) or "") for k in ("client_secret", "api_key")])
    client_id = settings.get("client_id")
    client_secret = settings.get("client_secret") or settings.get("api_key")
    if not client_id or not client_secret:
        raise TapError(
            "Connecting needs settings 'client_id' (ca_..., from the platform's Connect "
            "settings) and 'client_secret' (the platform's secret key)."
        )
    oauth_url = str(settings.get("oauth_url") or DEFAULT_OAUTH_URL).rstrip("/")
    state = secrets.token_urlsafe(24)
    server: HTTPServer | None = None
    if args.headless:
        redirect_uri = f"http://127.0.0.1:{args.port or 8976}/callback"
    else:
        # Only this machine may answer: the redirect carries a one-time code.
        server = HTTPServer(("127.0.0.1", args.port), _Callback)
        redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
    url = f"{oauth_url}/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "scope": "read_only",
            "state": state,
            "redirect_uri": redirect_uri,
        }
    )
    say(f"Connect with Stripe: open this address and sign in to the account to connect:\n  {url}")
    try:
        if not args.no_browser and not args.headless and sys.stdout.isatty():
            webbrowser.open(url)
        if server is not None:
            say(f"Waiting for Stripe's redirect on {redirect_uri} ...")
            query = wait_for_redirect(server, args.timeout)
        else:
            say("Paste the full address your browser was sent to after signing in:")
            query = urlsplit(sys.stdin.readline().strip()).query
    finally:
        if server is not None:
            server.server_close()
    code = read_redirect(query, state)
    try:
        credentials = request_token(
            oauth_url,
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
    account_id = credentials.get("stripe_user_id") or account.get("id")
    target = Path(args.credentials_file or settings.get("credentials_file") or DEFAULT_CREDENTIALS)
    write_credentials(target, {**credentials, "stripe_user_id": account_id})
    say(f"Connection successful: {account_name(account)} ({account_id})")
    say(f"Credentials saved to {target.resolve()} (readable by you only).")
    say("Point the tap at them, e.g. with Meltano:")
    say(f"  meltano config tap-stripe-connect set credentials_file {target.resolve()}")
    say(f"  meltano config tap-stripe-connect set client_id {client_id}")
    say('  meltano config tap-stripe-connect set client_secret "$STRIPE_PLATFORM_SECRET_KEY"')
    return 0


def say(line: str) -> None:
    print(line, flush=True)
