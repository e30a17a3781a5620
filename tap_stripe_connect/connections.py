"""`tap-stripe-connect connections`: one table of every account the configuration reaches.

The accounts come from the settings: a credentials file written by `connect`, the key's
own account, `account_id`, `account_ids` (`["*"]`: the platform's list of accounts, v1 or
v2 as `account_list` says), and the accounts a STATE holds that none of those names any
more. For each: its id and name, how the tap reaches it (the flow), whether it may read it
(`ok`, `revoked`, `no access`, `token expiring`), its last successful sync and the age of
its oldest bookmark (from `--state`: a STATE file, or Meltano's, `meltano state get`),
and for anything not `ok` the command that fixes it.

Each account costs one cheap request (`GET /v1/account` as that account) through the
tap's one client, plus the pages of the platform's list under `["*"]`; when an account
cannot be read and the platform's key is configured, one more: the platform's
`account.application.deauthorized` events, which turn a failing account that left after
its connection was made into `revoked` with the time (a key that may not read events
tells nothing more). `--offline` makes none. Exit code 1 when an account is not `ok`,
with one line naming each on stderr.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tap_stripe_connect.api import StripeClient, list_read
from tap_stripe_connect.api.auth import (
    StripeKeyAuthenticator,
    StripeOAuthAuthenticator,
    build_authenticator,
    connected_account,
    read_credentials,
    secrets_in,
    uses_oauth,
)
from tap_stripe_connect.api.context import addressed, header_problem, is_organization_key
from tap_stripe_connect.api.reads import ACCOUNT, Kind, Read, v2_accounts_read
from tap_stripe_connect.connect import account_name, load_settings
from tap_stripe_connect.errors import (
    ConfigError,
    StripeAccountInvalidError,
    StripeAuthError,
    StripePermissionError,
    TapError,
    redact,
    register_secrets,
)
from tap_stripe_connect.resources import RESOURCES_BY_NAME
from tap_stripe_connect.settings import CONFIG_SCHEMA, Settings, format_time, parse_time
from tap_stripe_connect.state.bookmarks import Bookmarks, load_state
from tap_stripe_connect.sync.run import SYNCED_CONFIGURATIONS

OK, REVOKED, NO_ACCESS, EXPIRING = "ok", "revoked", "no access", "token expiring"
NOT_CHECKED, ERROR = "not checked", "error"
#: A recorded refresh token expiring sooner than this is reported (`token expiring`).
EXPIRING_SECONDS = 14 * 86400
#: Stripe Apps refresh tokens expire a year after they are issued.
REFRESH_TOKEN_SECONDS = 365 * 86400
PROG = "tap-stripe-connect"
#: The event Stripe sends the platform (or the app's developer) when an account
#: disconnects it or uninstalls the app; its `account` is the account that left.
DEAUTHORIZED = "account.application.deauthorized"
#: The platform's latest deauthorizations: one page, newest first, made as itself.
DEAUTHORIZED_READ = Read(
    Kind.EVENTS, "/v1/events", (("type", DEAUTHORIZED),), object="event",
    permission="rak_event_read", as_itself=True,
)


@dataclasses.dataclass
class Connection:
    """One account the configuration reaches, and what is known of it."""

    account_id: str
    flow: str
    #: How requests address it: the `account_ids` entry (maybe a Stripe-Context path);
    #: None: the credential's own account.
    address: str | None = None
    name: str = ""
    status: str = NOT_CHECKED
    last_sync: int | None = None
    oldest_bookmark: int | None = None
    fix: str | None = None
    detail: str | None = None
    #: Why it is not `ok`, when Stripe says: "deauthorized at <time>".
    reason: str | None = None

    def row(self, now: int) -> dict[str, t.Any]:
        oldest = self.oldest_bookmark
        return {
            "account_id": self.account_id,
            "name": self.name,
            "flow": self.flow,
            "status": self.status,
            "last_sync": format_time(self.last_sync) if self.last_sync is not None else None,
            "oldest_bookmark": format_time(oldest) if oldest is not None else None,
            "oldest_bookmark_age_seconds": max(0, now - oldest) if oldest is not None else None,
            "fix": self.fix,
            "reason": self.reason,
            "detail": self.detail,
        }


# -- bookmarks ----------------------------------------------------------------------------


def bookmarks_by_account(
    state: t.Mapping[str, t.Any], own_account: str | None
) -> dict[str, list[int]]:
    """Every bookmark (Unix seconds) of STATE, by the account whose unit holds it.

    The one place `connections` reads STATE, through the tap's own reader of it
    (state/bookmarks.py): a platform's accounts each have a row of bookmarks (the
    per-account partitions of earlier releases are read into rows); a single account's
    streams hold their own entry, marked with its `account_id` (or, unmarked,
    `own_account`'s).
    """
    found: dict[str, list[int]] = {}
    normal: dict[str, t.Any] = {"bookmarks": copy.deepcopy(dict(state.get("bookmarks") or {}))}
    try:
        load_state(normal, state)
    except (AttributeError, TypeError, ValueError):
        return found  # not a STATE this tap wrote: nothing to tell
    store = Bookmarks(normal)
    streams = list((normal.get("accounts") or {}).get("streams") or ())
    for account in sorted(store.accounts()):
        for stream in streams:
            value = store.bookmark(stream, account)
            if value is not None:
                found.setdefault(account, []).append(value)
    for entry in (normal.get("bookmarks") or {}).values():
        value = entry.get("replication_key_value") if isinstance(entry, dict) else None
        owner = entry.get("account_id") or own_account if isinstance(entry, dict) else None
        if not owner or not isinstance(value, str):
            continue
        try:
            found.setdefault(str(owner), []).append(parse_time(value))
        except ValueError:
            continue
    return found


def read_state(path: str | None) -> dict[str, t.Any]:
    """A STATE file (`-`: stdin): Singer's, or Meltano's (`{"singer_state": ...}`)."""
    if not path:
        return {}
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        state = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        raise TapError(
            f"Could not read the state file {path} as JSON (--state): pass a STATE the "
            "target saved, or the output of `meltano state get <state_id>`."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("singer_state"), dict):
        state = state["singer_state"]
    if not isinstance(state, dict):
        raise TapError(f"The state file {path} (--state) does not hold a JSON object.")
    return state


# -- settings -----------------------------------------------------------------------------


def typed(settings: dict[str, t.Any]) -> dict[str, t.Any]:
    """Settings from `TAP_STRIPE_CONNECT_*` variables arrive as text: arrays, numbers and
    booleans are read as JSON (an array also as comma-separated values)."""
    properties = CONFIG_SCHEMA.get("properties") or {}
    out = dict(settings)
    for name, value in settings.items():
        kind = (properties.get(name) or {}).get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if not isinstance(value, str) or "string" in kinds or not kind:
            continue
        try:
            out[name] = json.loads(value)
        except ValueError:
            if "array" in kinds:
                out[name] = [v.strip() for v in value.split(",") if v.strip()]
    return out


def under_meltano() -> bool:
    return bool(os.environ.get("MELTANO_PROJECT_ROOT"))


def connect_command(credentials_file: str | None) -> str:
    if under_meltano():
        return "meltano invoke tap-stripe-connect:connect"
    where = f" --credentials-file {credentials_file}" if credentials_file else ""
    return f"tap-stripe-connect connect --config <config.json>{where}"


def new_key_fix() -> str:
    if under_meltano():
        return "run meltano config set tap-stripe-connect api_key <a valid sk_... or rk_... key>"
    return "set setting 'api_key' to a valid secret or restricted key (sk_... or rk_...)"


def reconnect_fix(address: str, credentials_file: str | None) -> str:
    return (
        f"reconnect it (its owner signs in: {connect_command(credentials_file)}) or remove "
        f"{address} from setting 'account_ids'"
    )


# -- the accounts ---------------------------------------------------------------------------


def credential_flow(config: t.Mapping[str, t.Any], stored: t.Mapping[str, t.Any]) -> str:
    """How an OAuth credential was obtained, as the credentials file records it (older
    files record nothing: classic Connect OAuth)."""
    flow = stored.get("flow") or stored.get("oauth_flow") or config.get("oauth_flow")
    return str(flow or "connect")


def key_flow(settings: Settings) -> str:
    """A key reading other accounts: a platform's, or an organization's (`sk_org_...`)."""
    return "organization key" if is_organization_key(settings.api_key) else "platform key"


def configured(
    config: dict[str, t.Any], settings: Settings, stored: dict[str, t.Any]
) -> list[Connection]:
    """The accounts the settings name (before any request)."""
    if uses_oauth(config):
        account = stored.get("stripe_user_id") or config.get("account_id")
        flow = credential_flow(config, stored)
        return [Connection(str(account or "(unknown)"), flow, name=str(stored.get("name") or ""))]
    if settings.account_ids:
        return [
            Connection(str(addressed(entry)), key_flow(settings), address=entry)
            for entry in dict.fromkeys(settings.account_ids)
            if entry != "*"
        ]
    if settings.account_id:
        return [Connection(str(addressed(settings.account_id)), key_flow(settings), address=None)]
    return [Connection("", "key")]


def listed(client: StripeClient, settings: Settings) -> list[Connection]:
    """`account_ids: ["*"]`: the platform's accounts, as a sync lists them."""
    if settings.account_list == "v2":
        rows = [
            a
            for a in client.list(v2_accounts_read())
            if set(a.get("applied_configurations") or ()) & SYNCED_CONFIGURATIONS
        ]
        return [
            Connection(
                a["id"], key_flow(settings), address=a["id"], name=a.get("display_name") or ""
            )
            for a in rows
        ]
    return [
        Connection(a["id"], key_flow(settings), address=a["id"], name=account_name(a))
        for a in client.list(list_read(RESOURCES_BY_NAME["accounts"]))
    ]


def check(client: StripeClient, connection: Connection, credentials_file: str | None) -> None:
    """One request as the account: `GET /v1/account`. Sets status, name and fix."""
    oauth = isinstance(client.authenticator, StripeOAuthAuthenticator)
    read = dataclasses.replace(ACCOUNT, account=connection.address)
    reconnect = f"run {connect_command(credentials_file)}"
    try:
        account, _ = client.call(read)
    except StripeAccountInvalidError as exc:
        connection.status, connection.detail = NO_ACCESS, str(exc)
        # An `account_ids` entry may also be removed; `account_id` or `connect`'s account
        # is connected again.
        connection.fix = (
            reconnect_fix(connection.address, credentials_file) if connection.address else reconnect
        )
        return
    except StripePermissionError:
        # A restricted key without the Account permission: it works, it may not read this.
        connection.status = OK
        return
    except StripeAuthError as exc:
        connection.detail = str(exc)
        if oauth:
            connection.status, connection.fix = REVOKED, reconnect
        else:
            connection.status = NO_ACCESS
            connection.fix = new_key_fix()
        return
    except TapError as exc:
        connection.detail = str(exc)
        if oauth and ("revoked" in str(exc) or "expired" in str(exc)):
            connection.status, connection.fix = REVOKED, reconnect
        else:
            connection.status = ERROR
        return
    connection.status = OK
    connection.name = account_name(account) if account else connection.name
    if not connection.account_id and account:
        connection.account_id = str(account.get("id") or "")


def platform_client(
    config: t.Mapping[str, t.Any], settings: Settings, client: StripeClient
) -> StripeClient | None:
    """A client with the platform's key, which may read its Connect events: the key of a
    platform reading its accounts, or under OAuth the platform's (or app developer's)
    secret key, `client_secret`. None: no such key (an account's own key)."""
    if not uses_oauth(config):
        reads_accounts = bool(settings.account_ids or settings.account_id)
        return client if reads_accounts and key_flow(settings) == "platform key" else None
    secret = config.get("client_secret")
    if not (isinstance(secret, str) and secret.startswith(("sk_", "rk_"))):
        return None
    return StripeClient(settings, StripeKeyAuthenticator({"api_key": secret}), user_agent=PROG)


def deauthorized(client: StripeClient) -> dict[str, int]:
    """Each account's latest `account.application.deauthorized` event (its `created`), from
    one read of the platform's events. A key that may not read events: nothing."""
    try:
        body, _ = client.call(DEAUTHORIZED_READ)
    except TapError:
        return {}  # 403 without `event_read`, or no answer: today's statuses stand
    found: dict[str, int] = {}
    for event in body.get("data") or ():  # newest first: the first of each is its latest
        account, created = event.get("account"), event.get("created")
        if event.get("type") == DEAUTHORIZED and isinstance(account, str) \
                and isinstance(created, int):
            found.setdefault(account, created)
    return found


def mark_deauthorized(rows: list[Connection], events: t.Mapping[str, int], fix: str) -> None:
    """An account that fails its check and left after its connection was made (a working
    connection is newer than any deauthorization): `revoked`, with when, and the fix."""
    for row in rows:
        at = events.get(row.account_id)
        if at is None or row.status not in (REVOKED, NO_ACCESS):
            continue
        row.status, row.reason = REVOKED, f"deauthorized at {format_time(at)}"
        row.fix = row.fix or fix


def refresh_expires_at(
    config: t.Mapping[str, t.Any], stored: t.Mapping[str, t.Any], path: str | None
) -> float | None:
    """When the refresh token of the credentials file expires (this machine's clock), if
    it does: as the file records it, or else, for Stripe Apps (whose refresh tokens live
    a year and roll on every refresh, the file rewritten each time), a year after the
    file was last written. Classic Connect refresh tokens do not expire."""
    value = stored.get("refresh_token_expires_at")
    if value is not None:
        try:
            return float(value) if not isinstance(value, str) else float(parse_time(value))
        except (TypeError, ValueError):
            return None
    if credential_flow(config, stored) != "stripe_app" or not path:
        return None
    try:
        return Path(path).stat().st_mtime + REFRESH_TOKEN_SECONDS
    except OSError:
        return None


def reconnect_left(credentials_file: str | None) -> str:
    return (
        f"reconnect it (its owner signs in: {connect_command(credentials_file)}); "
        "until then runs skip it and keep its state"
    )


def add_bookmarks(
    rows: list[Connection],
    state: t.Mapping[str, t.Any],
    settings: Settings,
    *,
    online: bool,
    fix: str,
) -> None:
    """Each account's newest and oldest bookmark; under `["*"]`, also a row for each
    account of this shard that STATE holds and the platform no longer lists (`fix`)."""
    shard = settings.account_shard
    own = rows[0] if len(rows) == 1 and rows[0].address is None else None
    bookmarks = bookmarks_by_account(state, own.account_id or None if own else None)
    if own is not None and not own.account_id and len(bookmarks) == 1:
        own.account_id = next(iter(bookmarks))  # offline: the account the STATE is of
    by_key = {r.address or r.account_id: r for r in rows}
    for key, marks in bookmarks.items():
        row = by_key.get(key)
        if row is None and ("*" not in settings.account_ids or (shard and not shard.holds(key))):
            continue  # no longer in the settings (or in another shard): runs do not reach it
        if row is None:
            # In STATE, but no longer named by the settings or listed by the platform.
            row = by_key[key] = Connection(str(addressed(key)), key_flow(settings), address=key)
            rows.append(row)
            if online:
                row.status = NO_ACCESS
                row.detail = "not in the platform's list of accounts (it left the platform)"
                row.fix = fix
        row.last_sync, row.oldest_bookmark = max(marks), min(marks)


# -- output -------------------------------------------------------------------------------


def age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {rest // 60}m"
    return f"{rest // 60}m"


COLUMNS = ("ACCOUNT", "NAME", "FLOW", "STATUS", "LAST SYNC", "OLDEST BOOKMARK", "FIX")


def table(rows: list[dict[str, t.Any]]) -> str:
    cells = [
        [
            r["account_id"],
            r["name"] or "-",
            r["flow"],
            f"{r['status']} ({r['reason']})" if r["reason"] else r["status"],
            r["last_sync"] or "-",
            age(r["oldest_bookmark_age_seconds"]),
            r["fix"] or "",
        ]
        for r in rows
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(COLUMNS, *cells, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [list(COLUMNS), *cells]
    ]
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------


def connections(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tap-stripe-connect connections",
        description="Every Stripe account the configuration reaches: its flow, status, "
        "last successful sync and oldest bookmark, and the command that fixes it.",
    )
    parser.add_argument("--config", action="append", default=[], help="config file, or ENV")
    parser.add_argument(
        "--state", help="STATE file (Singer's, or `meltano state get`'s output; - for stdin)"
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="a table (default) or JSON"
    )
    parser.add_argument(
        "--offline", action="store_true", help="make no request: settings and STATE only"
    )
    args = parser.parse_args(argv)
    config = typed(load_settings(args.config))
    register_secrets(secrets_in(config))
    if problem := header_problem(config):
        raise ConfigError(f"Invalid settings: {problem}.")
    if account := connected_account(config):  # the account `connect` saved, as a run reads it
        config["account_id"] = account
    # A status check, not a sync: a Stripe that does not answer is said within a minute.
    configured_settings = Settings.from_config(config)
    settings = dataclasses.replace(
        configured_settings,
        max_retries=min(2, configured_settings.max_retries),
        max_retry_seconds=min(30.0, configured_settings.max_retry_seconds),
    )
    credentials_file = config.get("credentials_file")
    stored = read_credentials(credentials_file) if uses_oauth(config) else {}
    state = read_state(args.state)
    rows = configured(config, settings, stored)
    shard = settings.account_shard
    client: StripeClient | None = None
    if not args.offline:
        if not (config.get("api_key") or uses_oauth(config)):
            raise ConfigError(
                "No credential: set setting 'api_key' (sk_... or rk_...) or "
                "'credentials_file' (written by `tap-stripe-connect connect`), or pass "
                "--offline to read the STATE only."
            )
        client = StripeClient(settings, build_authenticator(config), user_agent=PROG)
        if "*" in settings.account_ids:
            known = {r.account_id for r in rows}
            rows += [r for r in listed(client, settings) if r.account_id not in known]
        if shard is not None:  # `account_shard`: this shard's accounts only, as a run
            rows = [r for r in rows if r.address is None or shard.holds(r.address)]
        with ThreadPoolExecutor(max(1, min(settings.max_workers, len(rows)))) as pool:
            list(pool.map(lambda r: check(client, r, credentials_file), rows))
        platform = platform_client(config, settings, client)
        if platform is not None and any(r.status in (REVOKED, NO_ACCESS) for r in rows):
            reconnect = f"run {connect_command(credentials_file)}"
            mark_deauthorized(rows, deauthorized(platform), reconnect)
    add_bookmarks(
        rows, state, settings, online=client is not None, fix=reconnect_left(credentials_file)
    )
    now = (client.clock.now() if client is not None else None) or int(time.time())
    expires = refresh_expires_at(config, stored, credentials_file) if stored else None
    if expires is not None and expires - time.time() < EXPIRING_SECONDS:
        for row in rows:
            if row.status in (OK, NOT_CHECKED):
                row.status = EXPIRING
                row.fix = f"run {connect_command(credentials_file)}"
    result = [r.row(now) for r in rows]
    if args.format == "json":
        print(redact(json.dumps({"connections": result}, indent=2)), flush=True)
    else:
        print(redact(table(result)), flush=True)
    failing = [r for r in rows if r.status not in (OK, NOT_CHECKED)]
    for row in failing:
        who = f"{row.account_id} ({row.name})" if row.name else row.account_id
        why = row.fix or redact(row.detail or "")
        why = f"{row.reason}; {why}" if row.reason else why
        sys.stderr.write(f"{PROG}: error: account {who}: {row.status}: {why}\n")
    return 1 if failing else 0
