"""Stripe Connect in front of several emulated accounts: OAuth, `/v1/accounts`, routing.

`ConnectPlatform` runs one HTTP server that plays `connect.stripe.com` (authorise, token
exchange and refresh, deauthorisation) and `api.stripe.com` for a platform with connected
accounts. Each connected account is its own `Emulator` with its own data; API requests
are routed to it by `Stripe-Account` (platform key) or by its OAuth access token, and
answered with that emulator's status, headers and body.

    with ConnectPlatform(accounts=3) as platform:
        platform.url, platform.platform_key, platform.client_id
        platform.account_ids            # ["acct_...", ...]
        platform.accounts[acct_id]      # the Emulator holding that account's data

With `consent_page=True` (as `python -m tests.emulator --connect` runs it) the authorise
URL shows a consent page, as connect.stripe.com does, with a choice of account and
"Connect" / "Decline" buttons; without it the authorise URL redirects at once.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import html
import json
import secrets
import socket
import struct
import threading
import time
import typing as t
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.emulator.context import ORGANIZATION_KEY, PLATFORM_ID, AccountsV2
from tests.emulator.context import addressed as context_addressed
from tests.emulator.reports import Reports
from tests.emulator.server import Emulator, mask_key
from tests.emulator.store import ApiError

PLATFORM_KEY = "sk_test_platform_emulator"
CLIENT_ID = "ca_emulator0000000000000001"
#: A Stripe App with OAuth 2.0 access: its client id and its developer's secret key.
APP_CLIENT_ID = "ca_app0emulator00000000001"
APP_SECRET_KEY = "sk_test_app0developer0emulator"
#: The app's external-test install link (`/oauth/v2/<link>/authorize`).
APP_TEST_LINK = "chnlink_emulator0test01"
#: A restricted key of the platform without the `event_read` permission: it reads the
#: connected accounts as the platform key does, but not the platform's events (403).
NO_EVENTS_KEY = "rk_test_platform0noevents"
DEAUTHORIZED = "account.application.deauthorized"
#: Stripe Apps: access tokens live an hour, authorisation codes five minutes.
APP_TOKEN_SECONDS = 3600
APP_CODE_SECONDS = 300
# `Date` is not forwarded: `send_response` writes the platform's (emulated) one.
_FORWARDED = ("Request-Id", "Stripe-Version", "Stripe-Should-Retry", "Content-Type")


@dataclass
class Grant:
    account_id: str
    access_token: str
    refresh_token: str
    issued: float
    revoked: bool = False
    expired: bool = False
    #: Stripe Apps OAuth: the token ends at this emulated time (the platform's clock).
    expires_at: float | None = None
    #: Why a revoked token is refused: Stripe's error code (None: an invalid key).
    revoked_code: str | None = None


class ConnectPlatform:
    """A platform, its OAuth endpoints and its connected accounts."""

    def __init__(
        self,
        accounts: int = 3,
        objects: int = 30,
        seed: int = 100,
        *,
        token_ttl: float | None = None,
        rotate_refresh_tokens: bool = True,
        consent_page: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        **emulator_options: t.Any,
    ) -> None:
        self.accounts: dict[str, Emulator] = {}
        self.account_ids: list[str] = []
        self.objects = objects
        self.seed = seed
        self.emulator_options = emulator_options
        #: Accounts that left the platform: no longer in `GET /v1/accounts`, no access.
        self.disconnected: set[str] = set()
        self.platform_key = PLATFORM_KEY
        #: An organization key (`Stripe-Context` only) and Accounts v2 (context.py).
        self.organization_key = ORGANIZATION_KEY
        self.v2 = AccountsV2()
        #: (`Stripe-Account`, `Stripe-Context`) of each API request, as sent.
        self.account_headers: list[tuple[str | None, str | None]] = []
        self.client_id = CLIENT_ID
        #: Seconds an access token lives; None: until revoked (Stripe's default).
        self.token_ttl = token_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.consent_page = consent_page
        self.address = (host, port)
        self.deauthorized: set[str] = set()
        #: When set, access tokens expire once this many more API requests were served.
        self.expire_after: int | None = None
        self.token_requests: list[dict[str, str]] = []
        self.app_client_id = APP_CLIENT_ID
        self.app_secret_key = APP_SECRET_KEY
        self.app_test_link = APP_TEST_LINK
        #: Accounts that uninstalled the app: its tokens answer 401, refresh `invalid_grant`.
        self.uninstalled: set[str] = set()
        #: `account.application.deauthorized` events (an app uninstalled, an account
        #: disconnected): on the Connect webhook, and in the platform's (or the app
        #: developer's) `GET /v1/events?type=account.application.deauthorized`, each with
        #: `account` = the account that left and `data.object` the application.
        self.application_events: list[dict] = []
        self.no_events_key = NO_EVENTS_KEY
        self._app_codes: dict[str, tuple[str, str, float]] = {}  # code -> (account, uri, at)
        self.api_requests: list[tuple[str, str, str | None]] = []
        self._codes: dict[str, tuple[str, str]] = {}  # code -> (account, redirect_uri)
        self._grants: dict[str, Grant] = {}  # by access token
        self._refresh: dict[str, Grant] = {}  # by refresh token
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        #: The platform's Reports API over its connected accounts' balance transactions.
        self.reports = Reports(self._ledgers, lambda: int(self.clock() or 0), platform=True,
                               version=self._ledger_sizes, settled=self._settled)
        self.add_accounts(accounts)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> ConnectPlatform:
        # The accounts answer in-process (`Emulator.answer`): their own servers are not
        # started (100 idle servers polled their sockets 2,000 times a second).
        platform = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: t.Any) -> None:
                pass

            def date_time_string(self, timestamp: float | None = None) -> str:
                # The `Date` header: the emulated clock, as the accounts' own servers send
                # it (the tap takes bookmarks from it), not this machine's.
                return email.utils.formatdate(platform.clock(), usegmt=True)

            def do_GET(self) -> None:
                platform._handle(self, "GET")

            def do_POST(self) -> None:
                platform._handle(self, "POST")

        server = ThreadingHTTPServer(self.address, Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for emulator in self.accounts.values():
            emulator.stop()

    def __enter__(self) -> ConnectPlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- test controls ---------------------------------------------------------------

    def add_accounts(
        self, count: int, objects: int | None = None, *, v2: t.Sequence[str] | None = None
    ) -> list[str]:
        """`count` more accounts connect to the platform (each with its own data, from the
        next seeds: a platform made with more accounts over the same seed has the same
        ones), listed after the others by `GET /v1/accounts`; `v2`: created through
        Accounts v2 with these configurations (only `GET /v2/core/accounts` lists them)."""
        added = []
        for _ in range(count):
            emulator = Emulator(
                objects=self.objects if objects is None else objects,
                seed=self.seed + len(self.accounts),
                **self.emulator_options,
            )
            with self._lock:
                self.accounts[emulator.account_id] = emulator
                self.account_ids.append(emulator.account_id)
                if v2 is not None:
                    self.v2.created_v2[emulator.account_id] = list(v2)
            added.append(emulator.account_id)
        return added

    def advance(self, seconds: float) -> None:
        """Time passes for every connected account (one clock for the platform)."""
        with self._lock:
            accounts = list(self.accounts.values())
        for emulator in accounts:
            emulator.advance(seconds)

    def disconnect(self, account_id: str) -> None:
        """The account leaves the platform: gone from `GET /v1/accounts`, and no access."""
        self.deauthorize(account_id)
        with self._lock:
            self.disconnected.add(account_id)

    def requests_by_account(self, since: int = 0) -> dict[str | None, list[tuple[str, str]]]:
        """The API requests served (from index `since` of `api_requests`), by `Stripe-Account`."""
        found: dict[str | None, list[tuple[str, str]]] = {}
        for method, path, account in self.api_requests[since:]:
            found.setdefault(account, []).append((method, path))
        return found

    def deauthorize(self, account_id: str) -> None:
        """The account disconnects the platform (classic Connect; `POST /oauth/deauthorize`):
        its tokens and platform access end and `account.application.deauthorized` is sent."""
        with self._lock:
            self.deauthorized.add(account_id)
            for grant in self._grants.values():
                if grant.account_id == account_id:
                    grant.revoked = True
            if account_id in self.accounts:
                self._deauthorized_event(account_id, self.client_id)

    def uninstall(self, account_id: str) -> None:
        """The account uninstalls the app: its tokens stop working (401, then
        `invalid_grant` on refresh) and `account.application.deauthorized` is sent."""
        with self._lock:
            self.uninstalled.add(account_id)
            for grant in self._grants.values():
                if grant.account_id == account_id and grant.expires_at is not None:
                    grant.revoked = True
                    grant.revoked_code = None
            self._deauthorized_event(account_id, self.app_client_id)

    def _deauthorized_event(self, account_id: str, application: str) -> None:
        self.application_events.append({
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "type": DEAUTHORIZED,
            "account": account_id,
            "created": int(self.clock() or 0),
            "livemode": False,
            "data": {"object": {"id": application, "object": "application",
                                "name": "tap-stripe-connect (emulator)"}},
        })

    def _application_event_list(self, token: str, query: dict[str, list[str]]) -> tuple[int, dict]:
        """The platform's (or app developer's) `GET /v1/events?type=account.application.
        deauthorized`: its application's events, newest first, paged as Stripe pages."""
        if token == self.no_events_key:
            return 403, {"error": {"type": "invalid_request_error", "message": (
                f"The provided key '{mask_key(token)}' does not have the required permissions "
                f"for this endpoint on account '{PLATFORM_ID}'. Having the 'rak_event_read' "
                "permission would allow this request to continue.")}}
        application = self.app_client_id if token == self.app_secret_key else self.client_id
        arg = {k: v[-1] for k, v in query.items()}
        limit = min(100, max(1, int(arg.get("limit") or 10)))
        with self._lock:
            events = [e for e in reversed(self.application_events)
                      if e["data"]["object"]["id"] == application]
        ids = [e["id"] for e in events]
        start = ids.index(arg["starting_after"]) + 1 if arg.get("starting_after") in ids else 0
        return 200, {"object": "list", "url": "/v1/events",
                     "has_more": start + limit < len(events),
                     "data": events[start : start + limit]}

    def expire_tokens(self) -> None:
        """Every access token issued so far expires now (refresh tokens stay valid)."""
        with self._lock:
            for grant in self._grants.values():
                grant.expired = True

    def issue_refresh_token(self, account_id: str) -> str:
        """A refresh token as if `account_id` had connected through OAuth."""
        with self._lock:
            return self._grant(account_id).refresh_token

    # -- HTTP --------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        if split.path == "/oauth/authorize" and method == "GET":
            self._authorize(handler, parse_qs(split.query))
        elif split.path.startswith("/oauth/v2/") and method == "GET":
            self._install(handler, split.path, parse_qs(split.query))
        elif split.path == "/v1/oauth/token" and method == "POST":
            form = {k: v[-1] for k, v in parse_qs(body).items()}
            self._reply(handler, *self._app_token(handler, form))
        elif split.path == "/oauth/token" and method == "POST":
            form = {k: v[-1] for k, v in parse_qs(body).items()}
            self._reply(handler, *self._token(form))
        elif split.path == "/oauth/deauthorize" and method == "POST":
            form = {k: v[-1] for k, v in parse_qs(body).items()}
            self.deauthorize(form.get("stripe_user_id", ""))
            self._reply(handler, 200, {"stripe_user_id": form.get("stripe_user_id")})
        elif split.path == "/_emulator/accounts" and method == "POST":
            # More accounts connect (`count`, default 1; `objects`): for a running emulator.
            form = {k: v[-1] for k, v in parse_qs(split.query or body).items()}
            objects = int(form["objects"]) if form.get("objects") else None
            added = self.add_accounts(int(form.get("count") or 1), objects)
            self._reply(handler, 200, {"added": added, "accounts": len(self.account_ids)})
        elif split.path == "/_emulator/advance" and method == "POST":
            # Time passes (`seconds`) for every account: for a running emulator.
            form = {k: v[-1] for k, v in parse_qs(split.query or body).items()}
            self.advance(float(form.get("seconds") or 0))
            self._reply(handler, 200, {"clock": self.clock()})
        elif split.path.startswith(("/v1/reporting/", "/v1/files")) and self._as_platform(handler):
            self._report_call(handler, method, split.path, split.query, body)
        elif split.path.startswith(("/v1/", "/v2/")):
            self._api(handler, method, split.path, split.query, body)
        else:
            self._reply(
                handler,
                404,
                {"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}},
            )

    def _authorize(self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        """The consent screen, answered at once: `deny=1` declines, `account=` chooses."""
        arg = {k: v[-1] for k, v in query.items()}
        redirect = arg.get("redirect_uri", "")
        if arg.get("client_id") != self.client_id or not redirect:
            self._reply(
                handler,
                400,
                {"error": "invalid_request", "error_description": "Unknown client_id or redirect"},
            )
            return
        if self.consent_page and "decision" not in arg and not arg.get("deny"):
            self._consent(handler, arg)
            return
        params = {"state": arg.get("state", "")}
        if arg.get("deny") or arg.get("decision") == "deny":
            params.update(error="access_denied", error_description="The user denied your request")
        else:
            account = arg.get("account") or self.account_ids[0]
            code = "ac_" + secrets.token_hex(12)
            with self._lock:
                self._codes[code] = (account, redirect)
            params.update(code=code, scope=arg.get("scope", "read_only"))
        location = f"{redirect}{'&' if '?' in redirect else '?'}{urlencode(params)}"
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _install(
        self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]]
    ) -> None:
        """marketplace.stripe.com's OAuth install link: the published app's
        (`/oauth/v2/authorize`) or its external-test one (`/oauth/v2/chnlink_.../authorize`);
        a page to pick the account and install, then the redirect with `code` and `state`
        (or `error=access_denied`)."""
        arg = {k: v[-1] for k, v in query.items()}
        link = path[len("/oauth/v2/") :].rpartition("/authorize")[0]
        redirect = arg.get("redirect_uri", "")
        if (
            not path.endswith("/authorize")
            or link not in ("", self.app_test_link)
            or arg.get("client_id") != self.app_client_id
            or not redirect
        ):
            self._reply(handler, 400, {"error": "invalid_request",
                                       "error_description": "The provided OAuth link is invalid"})
            return
        if "decision" not in arg:
            self._consent(handler, arg, action=path, install=True)
            return
        params = {"state": arg.get("state", "")}
        if arg["decision"] == "deny":
            params.update(error="access_denied", error_description="The user denied your request")
        else:
            account = arg.get("account") or self.account_ids[0]
            code = "ac_" + secrets.token_hex(12)
            with self._lock:
                self._app_codes[code] = (account, redirect, float(self.clock() or 0))
                self.uninstalled.discard(account)
            params.update(code=code)
        location = f"{redirect}{'&' if '?' in redirect else '?'}{urlencode(params)}"
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _app_token(self, handler: BaseHTTPRequestHandler, form: dict[str, str]) -> tuple[int, dict]:
        """`POST /v1/oauth/token` of Stripe Apps: the developer's secret key as HTTP Basic
        username; refresh tokens roll (the old one and the previous access token stop
        working); the app uninstalled: `invalid_grant`."""
        self.token_requests.append({"grant_type": form.get("grant_type", ""), "app": "1"})
        auth = handler.headers.get("Authorization") or ""
        user = ""
        if auth.startswith("Basic "):
            with contextlib.suppress(ValueError):
                user = base64.b64decode(auth[6:]).decode().partition(":")[0]
        if user != self.app_secret_key:
            return 401, {"error": {"type": "invalid_request_error",
                                   "message": "Invalid API Key provided: "
                                   + mask_key(user or "sk_test_none")}}
        now = float(self.clock() or 0)
        with self._lock:
            if form.get("grant_type") == "authorization_code":
                found = self._app_codes.pop(form.get("code", ""), None)
                if found is None or now - found[2] > APP_CODE_SECONDS:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "Authorization code does not exist or "
                                 "expired"}
                account = found[0]
            elif form.get("grant_type") == "refresh_token":
                old = self._refresh.get(form.get("refresh_token", ""))
                if old is None or old.expires_at is None or old.account_id in self.uninstalled:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "Token has been expired or revoked."}
                # Rolled: the spent refresh token is gone, the previous access token revoked.
                self._refresh.pop(form.get("refresh_token", ""))
                old.revoked = True
                old.revoked_code = "platform_api_key_expired"
                account = old.account_id
            else:
                return 400, {"error": "unsupported_grant_type",
                             "error_description": "grant_type must be authorization_code or "
                             "refresh_token"}
            grant = Grant(account, access_token="rk_test_app" + secrets.token_hex(12),
                          refresh_token="rt_app" + secrets.token_hex(16), issued=time.monotonic(),
                          expires_at=now + APP_TOKEN_SECONDS)
            self._grants[grant.access_token] = grant
            self._refresh[grant.refresh_token] = grant
        return 200, {
            "access_token": grant.access_token,
            "refresh_token": grant.refresh_token,
            "stripe_user_id": account,
            "livemode": False,
            "scope": "stripe_apps",
            "token_type": "bearer",
            "stripe_publishable_key": "pk_test_" + account[-10:],
        }

    def _consent(
        self,
        handler: BaseHTTPRequestHandler,
        arg: dict[str, str],
        action: str = "/oauth/authorize",
        install: bool = False,
    ) -> None:
        """Stripe's consent screen, reduced: which account, then Connect or Decline."""
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in arg.items()
            if k not in ("account", "decision")
        )
        options = "".join(
            f'<option value="{a}">{html.escape(self._name(a))} ({a})</option>'
            for a in self.account_ids
        )
        asks = (
            f"Install the app {html.escape(arg['client_id'])}: it asks for the permissions of "
            "its manifest on your Stripe account."
            if install
            else f"The platform {html.escape(arg['client_id'])} asks for "
            f"{html.escape(arg.get('scope', 'read_only'))} access to your Stripe account."
        )
        page = (
            '<!doctype html><html lang="en"><meta charset="utf-8">'
            "<title>Connect with Stripe (emulator)</title>"
            "<h1>Connect with Stripe</h1>"
            f"<p>{asks}</p>"
            f'<form method="get" action="{html.escape(action)}">{hidden}'
            f'<label>Account <select name="account" id="account">{options}</select></label> '
            '<button type="submit" name="decision" value="allow" id="connect">Connect</button> '
            '<button type="submit" name="decision" value="deny" id="decline">Decline</button>'
            "</form></html>"
        ).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(page)))
        handler.end_headers()
        handler.wfile.write(page)

    def _name(self, account_id: str) -> str:
        account = self.accounts[account_id].store.account
        profile = account.get("business_profile") or {}
        return str(profile.get("name") or account.get("email") or account_id)

    def _grant(self, account_id: str) -> Grant:
        grant = Grant(
            account_id,
            access_token="sk_test_oauth" + secrets.token_hex(12),
            refresh_token="rt_" + secrets.token_hex(16),
            issued=time.monotonic(),
        )
        self._grants[grant.access_token] = grant
        self._refresh[grant.refresh_token] = grant
        return grant

    def _token(self, form: dict[str, str]) -> tuple[int, dict]:
        self.token_requests.append({k: v for k, v in form.items() if k == "grant_type"})
        if form.get("client_secret") != self.platform_key:
            return 401, {
                "error": "invalid_client",
                "error_description": "No such API key: "
                + mask_key(form.get("client_secret") or "sk_test_none"),
            }
        with self._lock:
            if form.get("grant_type") == "authorization_code":
                found = self._codes.pop(form.get("code", ""), None)
                if found is None:
                    return 400, {
                        "error": "invalid_grant",
                        "error_description": "Authorization code does not exist: "
                        + form.get("code", "")[:6]
                        + "...",
                    }
                grant = self._grant(found[0])
                self.deauthorized.discard(found[0])  # connected again
            elif form.get("grant_type") == "refresh_token":
                old = self._refresh.get(form.get("refresh_token", ""))
                if old is None or old.revoked or old.account_id in self.deauthorized:
                    return 400, {
                        "error": "invalid_grant",
                        "error_description": "Refresh token is invalid or revoked",
                    }
                grant = self._grant(old.account_id)
                if not self.rotate_refresh_tokens:
                    self._refresh.pop(grant.refresh_token)
                    grant.refresh_token = old.refresh_token
                    self._refresh[old.refresh_token] = grant
                else:
                    self._refresh.pop(old.refresh_token)
            else:
                return 400, {
                    "error": "unsupported_grant_type",
                    "error_description": "grant_type must be authorization_code or refresh_token",
                }
        return 200, {
            "access_token": grant.access_token,
            "refresh_token": grant.refresh_token,
            "stripe_user_id": grant.account_id,
            "scope": "read_only",
            "livemode": False,
            "token_type": "bearer",
            "stripe_publishable_key": "pk_test_" + grant.account_id[-10:],
        }

    def _as_platform(self, handler: BaseHTTPRequestHandler) -> bool:
        """The platform's own key without `Stripe-Account`: the platform's reports (of its
        connected accounts); else a connected account's own, answered by its emulator."""
        token = (handler.headers.get("Authorization") or "").partition(" ")[2].strip()
        return token == self.platform_key and not handler.headers.get("Stripe-Account")

    def _api(self, handler: BaseHTTPRequestHandler, method: str, path: str, query: str,
             body: str = "") -> None:
        auth = handler.headers.get("Authorization") or ""
        token = auth.partition(" ")[2].strip()
        sent = (handler.headers.get("Stripe-Account"), handler.headers.get("Stripe-Context"))
        self.account_headers.append(sent)
        organization = token == self.organization_key
        header_account, refusal = context_addressed(
            organization=organization,
            stripe_account=sent[0],
            stripe_context=sent[1],
            stripe_version=handler.headers.get("Stripe-Version"),
            token_mask=mask_key(token or "sk_none"),
        )
        self.api_requests.append((method, path, header_account))
        if refusal is not None:
            self._reply(handler, *refusal)
            return
        if (path == "/v1/events" and header_account is None
                and parse_qs(query).get("type") == [DEAUTHORIZED]
                and token in (self.platform_key, self.no_events_key, self.app_secret_key)):
            self._reply(handler, *self._application_event_list(token, parse_qs(query)))
            return
        with self._lock:
            if self.expire_after is not None:
                self.expire_after -= 1
                if self.expire_after < 0:
                    self.expire_after = None
                    for issued in self._grants.values():
                        issued.expired = True
            grant = self._grants.get(token)
            if token in (self.platform_key, self.no_events_key) or organization:
                account = header_account
                if account is None and path == "/v1/accounts":
                    self._reply(handler, *self._account_list(parse_qs(query)))
                    return
                if account is None and path == "/v2/core/accounts":
                    listed = [a for a in self.account_ids if a not in self.disconnected]
                    self._reply(handler, *self.v2.answer(parse_qs(query), listed, self._v2_of))
                    return
                if account is None:
                    account = self.account_ids[0] if path != "/v1/account" else None
                    if account is None:
                        self._reply(
                            handler,
                            200,
                            {
                                "id": PLATFORM_ID,
                                "object": "account",
                                "livemode": False,
                            },
                        )
                        return
                if account in self.deauthorized or account not in self.accounts:
                    self._reply(
                        handler,
                        403,
                        {
                            "error": {
                                "type": "invalid_request_error",
                                "code": "account_invalid",
                                "message": f"The provided key '{mask_key(token)}' does not have "
                                f"access to account '{account}' (or that account does not exist). "
                                "Application access may have been revoked.",
                            }
                        },
                    )
                    return
            elif grant is not None and grant.revoked and grant.revoked_code:
                # A Stripe App's access token revoked by the refresh that rolled it.
                self._reply(handler, 401, {"error": {
                    "type": "invalid_request_error", "code": grant.revoked_code,
                    "message": f"Expired API Key provided: {mask_key(token)}"}})
                return
            elif grant is not None and not grant.revoked:
                if grant.expired or (
                    self.token_ttl is not None and time.monotonic() - grant.issued > self.token_ttl
                ) or (grant.expires_at is not None and (self.clock() or 0) >= grant.expires_at):
                    self._reply(
                        handler,
                        401,
                        {
                            "error": {
                                "type": "invalid_request_error",
                                "code": "api_key_expired",
                                "message": f"Expired API Key provided: {mask_key(token)}",
                            }
                        },
                    )
                    return
                account = grant.account_id
            else:
                self._reply(
                    handler,
                    401,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": f"Invalid API Key provided: {mask_key(token or 'sk_none')}",
                        }
                    },
                )
                return
        target = self.accounts[account]
        headers = {
            k: v
            for k, v in handler.headers.items()
            if k.lower() not in ("host", "authorization", "stripe-account", "content-length")
        }
        headers["Authorization"] = f"Bearer {target.api_key}"
        if body:  # a report run's form
            headers["Content-Length"] = str(len(body.encode()))
        # A connected account's report files are downloaded from the platform's address.
        target.public_url = self.url
        status, answered, content, broken = target.answer(
            method, f"{path}{'?' + query if query else ''}", headers, body.encode()
        )
        handler.send_response(status)
        for name in _FORWARDED:
            if name in answered:
                handler.send_header(name, answered[name])
        handler.send_header("Content-Length", answered.get("Content-Length", str(len(content))))
        handler.end_headers()
        handler.wfile.write(content)
        if broken:  # the account's server broke the connection: so does the platform
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.wfile.flush()
                handler.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                handler.connection.close()

    def _ledger_sizes(self) -> tuple:
        with self._lock:
            listed = [a for a in self.account_ids if a not in self.disconnected]
        return tuple(
            (a, len(self.accounts[a].store.collection("balance_transactions").keys))
            for a in listed
        )

    def _ledgers(self) -> dict[str, list[dict]]:
        with self._lock:
            listed = [a for a in self.account_ids if a not in self.disconnected]
        return {a: self.accounts[a].store.objects("balance_transactions") for a in listed}

    def _settled(self) -> dict[str, dict[str, dict]]:
        with self._lock:
            listed = [a for a in self.account_ids if a not in self.disconnected]
        return {a: self.accounts[a].store.settled() for a in listed}

    def _report_call(self, handler: BaseHTTPRequestHandler, method: str, path: str,
                     query: str, body: str) -> None:
        """The Reports API, run by the platform for its connected accounts (its key, no
        `Stripe-Account`)."""
        self.api_requests.append((method, path, handler.headers.get("Stripe-Account")))
        form = {**parse_qs(query, keep_blank_values=True),
                **parse_qs(body, keep_blank_values=True)}
        try:
            status, answer, kind = self.reports.serve(method, path, form, None, self.url)
        except ApiError as error:
            self._reply(handler, error.status, error.body())
            return
        if isinstance(answer, dict):
            self._reply(handler, status, answer)
            return
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Request-Id", "req_connect" + secrets.token_hex(6))
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)

    def _account_list(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        """`GET /v1/accounts`, in the order the accounts connected, paged by `limit`
        (1-100, default 10) and `starting_after` as Stripe pages its lists."""
        arg = {k: v[-1] for k, v in query.items()}
        limit = int(arg.get("limit") or 10) if (arg.get("limit") or "10").isdigit() else 0
        if not 1 <= limit <= 100:
            return 400, {"error": {"type": "invalid_request_error", "param": "limit",
                                   "message": "Invalid limit: must be between 1 and 100"}}
        listed = [
            a for a in self.account_ids if a not in self.disconnected and self.v2.in_v1_list(a)
        ]
        start = 0
        if after := arg.get("starting_after"):
            if after not in listed:
                return 400, {"error": {"type": "invalid_request_error",
                                       "param": "starting_after",
                                       "message": f"No such account: '{after}'"}}
            start = listed.index(after) + 1
        page = listed[start : start + limit]
        data = [{**self.accounts[a].store.account, "id": a} for a in page]
        return 200, {
            "object": "list",
            "url": "/v1/accounts",
            "has_more": start + limit < len(listed),
            "data": data,
        }

    def _v2_of(self, account_id: str) -> dict:
        """What `GET /v2/core/accounts` shows of an account: name, email, creation."""
        account = self.accounts[account_id].store.account
        return {
            "name": self._name(account_id),
            "email": account.get("email"),
            "created": account.get("created"),
        }

    def clock(self) -> float | None:
        """One clock for the whole platform: the connected accounts' emulated time."""
        return self.accounts[self.account_ids[0]].clock if self.accounts else None

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Request-Id", "req_connect" + secrets.token_hex(6))
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
