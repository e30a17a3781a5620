"""Credentials for Stripe's API.

Three ways in, one bearer token out:
- a secret or restricted key (`api_key`), for the key's own account or, with
  `Stripe-Account`, for the platform's connected accounts;
- a Stripe Connect OAuth credential of a connected account: a refresh token (exchanged
  once per run for an access token, and again when Stripe says it expired) or a ready
  access token.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import sys
import tempfile
import threading
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
CREDENTIAL_FIELDS = ("access_token", "refresh_token", "stripe_user_id", "scope", "livemode")


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


def request_token(oauth_url: str, data: dict[str, str], timeout: float = 60) -> dict:
    """`POST {oauth_url}/oauth/token`: exchange a code or refresh token for credentials."""
    try:
        response = requests.post(f"{oauth_url.rstrip('/')}/oauth/token", data=data, timeout=timeout)
    except requests.RequestException as exc:
        raise TapError(
            f"Could not reach Stripe Connect at {oauth_url} (setting 'oauth_url'): "
            f"{type(exc).__name__}."
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400 or "access_token" not in body:
        error = str(body.get("error") or response.status_code)
        description = str(body.get("error_description") or response.reason or "")
        raise OAuthError(f"Stripe Connect refused the request ({error}): {description}", error)
    register_secrets([body.get("access_token", ""), body.get("refresh_token", "")])
    return t.cast("dict", body)


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

    def expire(self, token: str | None) -> bool:
        """A key cannot be refreshed."""
        return False


class StripeOAuthAuthenticator(OAuthAuthenticator):
    """A connected account's OAuth credential.

    The access token is obtained once per run; when Stripe answers 401 `api_key_expired`
    the client calls `expire` with the token that failed, and the next request refreshes
    it once (threads that failed with the same token share that one refresh). A new
    refresh token from Stripe replaces the old one in the credentials file, so the next
    run still works.
    """

    def __init__(self, config: Mapping[str, t.Any]) -> None:
        # Tokens given as settings are used as they are; otherwise they come from the
        # credentials file (`connect`'s default one unless 'credentials_file' names one).
        given = config.get("refresh_token") or config.get("access_token")
        self.credentials_file: Path | None = (
            credentials_path(config) if config.get("credentials_file") or not given else None
        )
        stored = read_credentials(self.credentials_file)
        super().__init__(
            auth_endpoint=f"{str(config.get('oauth_url') or DEFAULT_OAUTH_URL).rstrip('/')}"
            "/oauth/token",
            client_id=config.get("client_id"),
            client_secret=config.get("client_secret"),
        )
        self.oauth_url = str(config.get("oauth_url") or DEFAULT_OAUTH_URL)
        self.refresh_token = stored.get("refresh_token") or config.get("refresh_token")
        self.access_token = stored.get("access_token") or config.get("access_token")
        self.account_id = stored.get("stripe_user_id") or config.get("account_id")
        self._stored = stored
        self._lock = threading.Lock()
        if self.access_token:
            # A ready access token is used as it is until Stripe says it expired.
            self.last_refreshed = datetime.datetime.fromtimestamp(0, tz=datetime.timezone.utc)
        elif not (self.refresh_token and self.client_secret):
            where = f" ({self.credentials_file} has none)" if self.credentials_file else ""
            raise ConfigError(
                "Stripe Connect needs settings 'client_secret' and 'refresh_token' (or "
                "'access_token', or a 'credentials_file' written by `tap-stripe-connect "
                f"connect`){where}: run `tap-stripe-connect connect` to connect an account."
            )

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
                "expired and there is no refresh token: run `tap-stripe-connect connect` "
                "to connect the account again."
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
                self._stored = {**self._stored, **body}
                write_credentials(self.credentials_file, self._stored)
            self._use(body)

    def _refresh(self) -> dict:
        try:
            return request_token(self.oauth_url, self.oauth_request_body)
        except OAuthError as exc:
            if exc.error in ("invalid_grant", "invalid_request"):
                raise TapError(
                    f"The connection to Stripe account {self.account_id or '(unknown)'} was "
                    "revoked or has expired: connect it again with `tap-stripe-connect "
                    "connect`."
                ) from None
            raise

    def _use(self, credentials: Mapping[str, t.Any]) -> None:
        self.access_token = credentials["access_token"]
        self.refresh_token = credentials.get("refresh_token") or self.refresh_token
        self.account_id = credentials.get("stripe_user_id") or self.account_id
        self.last_refreshed = datetime.datetime.now(tz=datetime.timezone.utc)
        self.expires_in = None

    def expire(self, token: str | None) -> bool:
        """Mark `token` expired; True when a refresh can be tried."""
        with self._lock:
            if token == self.access_token:
                self.last_refreshed = None
            return bool(self.refresh_token and self.client_secret)


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
