"""Credentials for Stripe's API.

Ways in, one bearer token out:
- a secret or restricted key (`api_key`), for the key's own account or, with
  `Stripe-Account`, for the platform's connected accounts (also the account a classic
  Connect `connect` saved, when the platform's key is configured);
- an OAuth credential of one account, from `tap-stripe-connect connect` (its credentials
  file) or settings: classic Connect (a refresh token exchanged at connect.stripe.com, or
  a ready access token) or a Stripe App (an access token that lives an hour, refreshed at
  `{api_url}/v1/oauth/token`). Refresh tokens roll: each refresh is made under the
  credentials file's lock and its new token saved (atomically, fsynced) before use.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shlex
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import requests
from singer_sdk.authenticators import BearerTokenAuthenticator, OAuthAuthenticator

from tap_stripe_connect.errors import ConfigError, TapError, register_secrets

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover - no advisory locks: runs must not share a credentials file
    fcntl = None

logger = logging.getLogger("tap-stripe-connect")

# Stripe key prefixes: secret (sk_), restricted (rk_), publishable (pk_, client-side only).
READ_KEY_PREFIXES = ("sk_", "rk_")
DEFAULT_OAUTH_URL = "https://connect.stripe.com"
CREDENTIAL_FIELDS = (
    "oauth_flow",
    "access_token",
    "refresh_token",
    "expires_at",
    "stripe_user_id",
    "scope",
    "livemode",
)
#: `oauth_flow`: classic Stripe Connect OAuth, or a Stripe App's OAuth 2.0 install.
CONNECT_FLOW, APP_FLOW = "connect", "stripe_app"
OAUTH_FLOWS = (CONNECT_FLOW, APP_FLOW)
#: Stripe Apps: an access token lives an hour; it is refreshed five minutes early.
APP_TOKEN_SECONDS = 3600
APP_TOKEN_MARGIN = 300


def check_api_key(api_key: str | None, setting: str = "api_key") -> str:
    """Return the key, or raise a ConfigError that never repeats it."""
    if not api_key or not str(api_key).strip():
        raise ConfigError(
            f"Setting '{setting}' is empty: set it to a Stripe secret key (sk_...) or "
            "restricted key (rk_...)."
        )
    if api_key.startswith("pk_"):
        raise ConfigError(
            f"Setting '{setting}' holds a publishable key (pk_...), which cannot read data: "
            "use a secret key (sk_...) or a restricted key (rk_...) from the Stripe Dashboard."
        )
    if not api_key.startswith(READ_KEY_PREFIXES):
        raise ConfigError(
            f"Setting '{setting}' is not a Stripe API key: expected a secret key (sk_...) or "
            "a restricted key (rk_...)."
        )
    return api_key


def is_live_key(api_key: str) -> bool:
    """Live keys have a larger rate budget than test-mode keys."""
    return "_live_" in api_key


def secrets_in(config: Mapping[str, t.Any]) -> list[str]:
    """Every configured value that must never be printed."""
    names = ("api_key", "client_secret", "refresh_token", "access_token")
    return [str(config[n]) for n in names if config.get(n)]


# -- Stripe Connect OAuth -------------------------------------------------------------------


class OAuthError(TapError):
    """Stripe's OAuth endpoint refused a grant (`invalid_grant`, `invalid_client`...)."""

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error


def request_token(
    base_url: str,
    data: dict[str, str],
    timeout: float = 60,
    *,
    path: str = "/oauth/token",
    secret_key: str | None = None,
    setting: str = "oauth_url",
) -> dict:
    """`POST {base_url}{path}`: exchange a code or refresh token for credentials.

    Classic Connect posts to connect.stripe.com with the secret key in the form; Stripe
    Apps post to `{api_url}/v1/oauth/token` with it as HTTP Basic username (`secret_key`).
    """
    url = f"{base_url.rstrip('/')}{path}"
    auth = (secret_key, "") if secret_key else None
    try:
        response = requests.post(url, data=data, auth=auth, timeout=timeout)
    except requests.RequestException as exc:
        raise TapError(
            f"Could not reach Stripe's OAuth endpoint at {url} (setting '{setting}'): "
            f"{type(exc).__name__}."
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.status_code >= 400 or "access_token" not in body:
        given = body.get("error") or response.status_code
        if isinstance(given, dict):  # Stripe's API error shape (a refused secret key)
            error = str(given.get("code") or "invalid_client")
            description = str(given.get("message") or response.reason or "")
        else:
            error = str(given)
            description = str(body.get("error_description") or response.reason or "")
        raise OAuthError(f"Stripe refused the OAuth request ({error}): {description}", str(error))
    register_secrets([body.get("access_token", ""), body.get("refresh_token", "")])
    return t.cast("dict", body)


def reconnect_command(credentials_file: Path | None, named: bool = False) -> str:
    """The exact command that connects an account again, as this run was started: through
    Meltano, or the CLI with the same `--config` files (and credentials file)."""
    if os.environ.get("MELTANO_EXTRACTOR_NAME") or os.environ.get("MELTANO_PROJECT_ROOT"):
        return "meltano invoke tap-stripe-connect:connect"
    argv = sys.argv[1:]
    configs = [
        argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"
    ] + [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    parts = ["tap-stripe-connect", "connect"]
    for config in configs:
        parts += ["--config", config]
    # The configuration names the file, or it is the default: `connect` finds it.
    default = default_credentials_file()
    if not named and credentials_file is not None and credentials_file != default:
        parts += ["--credentials-file", str(credentials_file)]
    return shlex.join(parts)


def default_credentials_file() -> Path:
    """Where `connect` saves credentials unless told: a per-user folder outside any
    checkout (`$XDG_CONFIG_HOME/tap-stripe-connect/credentials.json`, by default
    `~/.config/tap-stripe-connect/credentials.json`), so a refresh token never lands in a
    repository."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tap-stripe-connect" / "credentials.json"


def credentials_path(config: Mapping[str, t.Any]) -> Path:
    """The credentials file of a run: setting 'credentials_file', else the default."""
    return Path(str(config.get("credentials_file") or default_credentials_file())).expanduser()


def read_credentials(path: str | os.PathLike[str] | None) -> dict[str, t.Any]:
    if not path or not Path(path).exists():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise ConfigError(
            f"The credentials file named by setting 'credentials_file' ({path}) is not "
            "readable JSON: run `tap-stripe-connect connect` to create it again."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"The credentials file ({path}) does not hold an object: run "
            "`tap-stripe-connect connect` to create it again."
        )
    register_secrets([str(data.get("access_token") or ""), str(data.get("refresh_token") or "")])
    return data


@contextlib.contextmanager
def credentials_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the credentials file's lock (`<file>.lock`, shared by every process on this
    machine) while a rotating refresh token is read, spent and saved: two runs refreshing
    at once would otherwise spend the same token, and one of them save a dead one."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info(
                    "Waiting for the lock on the credentials file %s (another run is "
                    "refreshing its token)",
                    path,
                )
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_credentials(path: str | os.PathLike[str], credentials: Mapping[str, t.Any]) -> None:
    """Write atomically, readable by the owner only: the file holds a refresh token.

    The file's data and the folder's entry are both flushed to disk (fsync) before this
    returns: the old refresh token stops working once the new one is issued, so the new
    one must survive a crash right after.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({k: credentials[k] for k in CREDENTIAL_FIELDS if k in credentials}, handle)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class StripeKeyAuthenticator(BearerTokenAuthenticator):
    """Authenticates every request with the configured API key."""

    def __init__(self, config: Mapping[str, t.Any]) -> None:
        super().__init__(token=check_api_key(config.get("api_key")))
        #: The platform's key reads an account `connect` saved: how to connect it again.
        self.reconnect: str | None = (
            reconnect_command(credentials_path(config), named=True)
            if connected_account(config)
            else None
        )

    def expire(self, token: str | None) -> bool:
        """A key cannot be refreshed."""
        return False


class StripeOAuthAuthenticator(OAuthAuthenticator):
    """A connected account's OAuth credential: classic Connect, or a Stripe App.

    The access token is obtained once per run (a Stripe App's, which lives an hour, again
    five minutes before it ends); when Stripe answers 401 `api_key_expired` (or
    `platform_api_key_expired`: another run's refresh revoked it) the client calls `expire`
    with the token that failed, and the next request refreshes it once (threads that
    failed with the same token share that one refresh). A new refresh token from Stripe
    replaces the old one in the credentials file before the new access token is used, so
    the next run still works. Requests carry the token and no `Stripe-Account`.
    """

    def __init__(self, config: Mapping[str, t.Any]) -> None:
        # Tokens given as settings are used as they are; otherwise they come from the
        # credentials file (`connect`'s default one unless 'credentials_file' names one).
        given = config.get("refresh_token") or config.get("access_token")
        self.credentials_file: Path | None = (
            credentials_path(config) if config.get("credentials_file") or not given else None
        )
        self.file_named = bool(config.get("credentials_file"))
        stored = read_credentials(self.credentials_file)
        self.flow = oauth_flow(config, stored, self.credentials_file)
        super().__init__(
            auth_endpoint=f"{str(config.get('oauth_url') or DEFAULT_OAUTH_URL).rstrip('/')}"
            "/oauth/token",
            client_id=config.get("client_id"),
            client_secret=config.get("client_secret"),
        )
        self.oauth_url = str(config.get("oauth_url") or DEFAULT_OAUTH_URL)
        self.api_url = str(config.get("api_url") or "https://api.stripe.com").rstrip("/")
        self.refresh_token = stored.get("refresh_token") or config.get("refresh_token")
        self.access_token = stored.get("access_token") or config.get("access_token")
        self.account_id = stored.get("stripe_user_id") or config.get("account_id")
        self._stored = stored
        self._lock = threading.Lock()
        if self.access_token:
            # A ready access token is used until Stripe says it expired (a Stripe App's
            # until five minutes before its hour ends).
            self._use({"access_token": self.access_token, **stored})
        elif not (self.refresh_token and self.client_secret):
            where = f" ({self.credentials_file} has none)" if self.credentials_file else ""
            raise ConfigError(
                "Stripe OAuth needs settings 'client_secret' and 'refresh_token' (or "
                "'access_token', or a 'credentials_file' written by `tap-stripe-connect "
                f"connect`){where}: connect an account with `{self.reconnect}`."
            )

    @property
    def reconnect(self) -> str:
        return reconnect_command(self.credentials_file, named=self.file_named)

    @property
    def oauth_request_body(self) -> dict:
        return {
            "grant_type": "refresh_token",
            "refresh_token": str(self.refresh_token),
            "client_secret": str(self.client_secret),
        }

    def authenticate_request(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        with self._lock:
            if not self.is_token_valid():
                self.update_access_token()
            token = self.access_token
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def update_access_token(self) -> None:
        if not (self.refresh_token and self.client_secret):
            raise TapError(
                f"The access token for Stripe account {self.account_id or '(unknown)'} "
                f"expired and there is no refresh token: connect the account again with "
                f"`{self.reconnect}`."
            )
        if self.credentials_file is None:
            self._use(self._refresh())
            return
        # Stripe rolls the refresh token on every refresh: the spent one stops working.
        # Under the file's lock, a run that finds a newer token saved by another run uses
        # it; otherwise it refreshes and saves the new token before using it.
        with credentials_lock(self.credentials_file):
            stored = read_credentials(self.credentials_file)
            if stored.get("refresh_token") and stored["refresh_token"] != self.refresh_token:
                self._stored = stored
                self._use(stored)
                return
            body = self._refresh()
            if body.get("refresh_token") and body["refresh_token"] != self.refresh_token:
                self._stored = {**self._stored, **body, "oauth_flow": self.flow}
                write_credentials(self.credentials_file, self._stored)
            self._use(body)

    def _refresh(self) -> dict:
        try:
            if self.flow == APP_FLOW:
                body = request_token(
                    self.api_url,
                    {"grant_type": "refresh_token", "refresh_token": str(self.refresh_token)},
                    path="/v1/oauth/token",
                    secret_key=str(self.client_secret),
                    setting="api_url",
                )
                return {**body, "expires_at": int(time.time()) + APP_TOKEN_SECONDS}
            return request_token(self.oauth_url, self.oauth_request_body)
        except OAuthError as exc:
            if exc.error in ("invalid_grant", "invalid_request"):
                why = (
                    "the app was uninstalled from it or its access was revoked"
                    if self.flow == APP_FLOW
                    else "the connection was revoked, or the account disconnected"
                )
                raise TapError(
                    f"Stripe account {self.account_id or '(unknown)'} can no longer be read: "
                    f"{why} (Stripe refused the refresh token: {exc.error}). Its state is "
                    f"kept: connect it again with `{self.reconnect}`, and the next run reads "
                    "only what changed."
                ) from None
            raise

    def _use(self, credentials: Mapping[str, t.Any]) -> None:
        self.access_token = credentials["access_token"]
        self.refresh_token = credentials.get("refresh_token") or self.refresh_token
        self.account_id = credentials.get("stripe_user_id") or self.account_id
        now = time.time()
        expires_at = credentials.get("expires_at")
        if isinstance(expires_at, (int, float)):
            # Valid until five minutes before it ends (SDK: `last_refreshed` + `expires_in`).
            self.expires_in = APP_TOKEN_SECONDS - APP_TOKEN_MARGIN
            issued = min(now, float(expires_at) - APP_TOKEN_SECONDS)
        else:
            self.expires_in = None  # classic Connect: until Stripe says it expired
            issued = now
        self.last_refreshed = datetime.datetime.fromtimestamp(issued, tz=datetime.timezone.utc)

    def expire(self, token: str | None) -> bool:
        """Mark `token` expired; True when a refresh can be tried."""
        with self._lock:
            if token == self.access_token:
                self.last_refreshed = None
            return bool(self.refresh_token and self.client_secret)


def oauth_flow(
    config: Mapping[str, t.Any], stored: Mapping[str, t.Any], path: Path | None
) -> str:
    """The flow of a run: setting 'oauth_flow', else the one the credentials file records
    (`connect` writes it), else classic Connect. The two must agree."""
    recorded = stored.get("oauth_flow")
    flow = str(config.get("oauth_flow") or recorded or CONNECT_FLOW)
    if flow not in OAUTH_FLOWS:
        raise ConfigError(
            f"Setting 'oauth_flow' must be 'connect' or 'stripe_app', not {flow[:40]!r}."
        )
    if recorded and recorded != flow:
        raise ConfigError(
            f"The credentials file {path} was written by the '{recorded}' flow but setting "
            f"'oauth_flow' is '{flow}': set it to '{recorded}', or run `tap-stripe-connect "
            "connect` again with the flow you mean."
        )
    return flow


def connected_account(config: Mapping[str, t.Any]) -> str | None:
    """Classic Connect as Stripe recommends it: with the platform's key (`api_key`) and a
    credentials file from `connect`, the account it saved is read with `Stripe-Account`."""
    if not (config.get("api_key") and config.get("credentials_file")):
        return None
    if config.get("account_id") or config.get("account_ids"):
        return None
    stored = read_credentials(credentials_path(config))
    if stored.get("oauth_flow", CONNECT_FLOW) != CONNECT_FLOW:
        return None
    return str(stored["stripe_user_id"]) if stored.get("stripe_user_id") else None


def uses_oauth(config: Mapping[str, t.Any]) -> bool:
    """OAuth tokens given as settings, or (without an API key) a credentials file: the
    one named, or `connect`'s default one when the platform's `client_id` is set."""
    return bool(
        config.get("refresh_token")
        or config.get("access_token")
        or (
            not config.get("api_key")
            and (config.get("credentials_file") or config.get("client_id"))
        )
    )


def build_authenticator(
    config: Mapping[str, t.Any],
) -> StripeKeyAuthenticator | StripeOAuthAuthenticator:
    if uses_oauth(config):
        return StripeOAuthAuthenticator(config)
    return StripeKeyAuthenticator(config)
