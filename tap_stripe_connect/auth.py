"""Credentials for Stripe's API: a secret or restricted key, sent as a bearer token."""

from __future__ import annotations

import typing as t

from singer_sdk.authenticators import BearerTokenAuthenticator

from tap_stripe_connect.errors import ConfigError

if t.TYPE_CHECKING:
    from collections.abc import Mapping

# Stripe key prefixes: secret (sk_), restricted (rk_), publishable (pk_, client-side only).
READ_KEY_PREFIXES = ("sk_", "rk_")


def check_api_key(api_key: str | None) -> str:
    """Return the key, or raise a ConfigError that never repeats it."""
    if not api_key or not api_key.strip():
        raise ConfigError(
            "Setting 'api_key' is empty: set it to a Stripe secret key (sk_...) or "
            "restricted key (rk_...)."
        )
    if api_key.startswith("pk_"):
        raise ConfigError(
            "Setting 'api_key' holds a publishable key (pk_...), which cannot read data: "
            "use a secret key (sk_...) or a restricted key (rk_...) from the Stripe Dashboard."
        )
    if not api_key.startswith(READ_KEY_PREFIXES):
        raise ConfigError(
            "Setting 'api_key' is not a Stripe API key: expected a secret key (sk_...) or a "
            "restricted key (rk_...)."
        )
    return api_key


def is_live_key(api_key: str) -> bool:
    """Live keys have a larger rate budget than test-mode keys."""
    return "_live_" in api_key


class StripeKeyAuthenticator(BearerTokenAuthenticator):
    """Authenticates every request with the configured API key."""

    def __init__(self, config: Mapping[str, t.Any]) -> None:
        super().__init__(token=check_api_key(config.get("api_key")))


def secrets_in(config: Mapping[str, t.Any]) -> list[str]:
    """Every configured value that must never be printed."""
    names = ("api_key", "client_secret", "refresh_token", "access_token")
    return [str(config[n]) for n in names if config.get(n)]
