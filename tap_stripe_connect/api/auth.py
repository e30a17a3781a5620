"""Credentials for Stripe's API.

Three ways in, one bearer token out:
- a secret or restricted key (`api_key`), for the key's own account or, with
  `Stripe-Account`, for the platform's connected accounts;
- a Stripe Connect OAuth credential of a connected account: a refresh token (exchanged
  once per run for an access token, and again when Stripe says it expired) or a ready
  access token.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import threading
import typing as t
from pathlib import Path

import requests
from singer_sdk.authenticators import BearerTokenAuthenticator, OAuthAuthenticator

from tap_stripe_connect.errors import ConfigError, TapError, register_secrets

if t.TYPE_CHECKING:
    from collections.abc import Mapping

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


def write_credentials(path: str | os.PathLike[str], credentials: Mapping[str, t.Any]) -> None:
    """Write atomically, readable by the owner only: the file holds a refresh token."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({k: credentials[k] for k in CREDENTIAL_FIELDS if k in credentials}, handle)
            handle.write("\n")
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


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
        self.credentials_file = config.get("credentials_file")
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
            raise ConfigError(
                "Stripe Connect needs settings 'client_secret' and 'refresh_token' (or "
                "'access_token', or a 'credentials_file' written by `tap-stripe-connect "
                "connect`)."
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
        try:
            body = request_token(self.oauth_url, self.oauth_request_body)
        except OAuthError as exc:
            if exc.error in ("invalid_grant", "invalid_request"):
                raise TapError(
                    f"The connection to Stripe account {self.account_id or '(unknown)'} was "
                    "revoked or has expired: connect it again with `tap-stripe-connect "
                    "connect`."
                ) from None
            raise
        self.access_token = body["access_token"]
        self.account_id = body.get("stripe_user_id") or self.account_id
        self.last_refreshed = datetime.datetime.now(tz=datetime.timezone.utc)
        self.expires_in = None
        if body.get("refresh_token") and body["refresh_token"] != self.refresh_token:
            self.refresh_token = body["refresh_token"]
            if self.credentials_file:
                write_credentials(self.credentials_file, {**self._stored, **body})

    def expire(self, token: str | None) -> bool:
        """Mark `token` expired; True when a refresh can be tried."""
        with self._lock:
            if token == self.access_token:
                self.last_refreshed = None
            return bool(self.refresh_token and self.client_secret)


def uses_oauth(config: Mapping[str, t.Any]) -> bool:
    return bool(
        config.get("refresh_token")
        or config.get("access_token")
        or (config.get("credentials_file") and not config.get("api_key"))
    )


def build_authenticator(
    config: Mapping[str, t.Any],
) -> StripeKeyAuthenticator | StripeOAuthAuthenticator:
    if uses_oauth(config):
        return StripeOAuthAuthenticator(config)
    return StripeKeyAuthenticator(config)
