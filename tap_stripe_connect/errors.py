"""Errors that end a run with one line a person can act on."""

from __future__ import annotations

import logging
import re
import typing as t

from singer_sdk.exceptions import FatalAPIError

from tap_stripe_connect.logs import quiet_chatter

if t.TYPE_CHECKING:
    import requests

# Stripe echoes a masked key in some messages (`sk_test_****abcd`); we print none of it.
_KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk|rak)_(?:test|live)_[A-Za-z0-9*]+")
_BEARER_PATTERN = re.compile(r"(?i)(bearer\s+)\S+")

_known_secrets: set[str] = set()


def register_secrets(values: t.Iterable[str]) -> None:
    """Remember configured secrets so `redact` can remove them from any text."""
    _known_secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    """Remove secrets and anything shaped like a Stripe key or bearer token."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    text = _KEY_PATTERN.sub("***", text)
    return _BEARER_PATTERN.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Last line of defence: no log line carries a configured secret or key."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_REDACTING = RedactingFilter()


def install_redaction() -> None:
    """Filter every handler and the tap's loggers; again once the SDK set up logging.

    The SDK's per-page chatter is moved to DEBUG at the same time (`logs.py`).
    """
    quiet_chatter()
    for handler in logging.getLogger().handlers:
        if _REDACTING not in handler.filters:
            handler.addFilter(_REDACTING)
    for name in ("tap-stripe-connect", "singer_sdk"):
        if _REDACTING not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_REDACTING)


class TapError(Exception):
    """An error whose message is the whole story for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class ConfigError(TapError):
    """A setting is missing, malformed or inconsistent."""


class StripeAPIError(TapError, FatalAPIError):
    """Stripe answered with an error that retrying will not fix."""

    def __init__(self, message: str, response: requests.Response | None = None) -> None:
        super().__init__(message)
        self.status = response.status_code if response is not None else None
        self.code = stripe_error(response).get("code") if response is not None else None


class StripeAuthError(StripeAPIError):
    """401: the credential is invalid, expired or revoked."""


class StripePermissionError(StripeAPIError):
    """403: the credential may not read this resource."""


class StripeAccountInvalidError(StripePermissionError):
    """401/403 for a connected account: the platform may no longer read that account
    (deauthorised, disconnected, or never connected). Every read of it fails alike."""


class StripeNotFoundError(StripeAPIError):
    """404: the object does not exist (or no longer does)."""


class StripeEndpointMissingError(StripeAPIError):
    """Stripe does not know the URL (404 "Unrecognized request URL"): nothing was read."""


def stripe_error(response: requests.Response) -> dict[str, t.Any]:
    """The `error` object of a Stripe error body, or {} when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def request_label(response: requests.Response) -> str:
    """`GET /v1/charges, Request-Id req_123`: what Stripe support asks for."""
    request = response.request
    path = (request.path_url or "").split("?")[0] if request is not None else ""
    method = request.method if request is not None else "GET"
    request_id = response.headers.get("Request-Id", "none")
    return f"{method} {path}, Request-Id {request_id}"
