"""Errors that end a run with one line a person can act on."""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
import typing as t

from singer_sdk.exceptions import FatalAPIError

from tap_stripe_connect.logs import quiet_chatter

if t.TYPE_CHECKING:
    import requests

# Stripe echoes a masked key in some messages (`sk_test_****abcd`); we print none of it.
_KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk|rak)_(?:test|live)_[A-Za-z0-9*]+")
_BEARER_PATTERN = re.compile(r"(?i)(bearer\s+)\S+")

# Replaced whole, never changed in place: `redact` reads it in any thread while a token
# refresh (another thread) adds to it.
_known_secrets: frozenset[str] = frozenset()
_secrets_lock = threading.Lock()


def register_secrets(values: t.Iterable[str]) -> None:
    """Remember configured secrets so `redact` can remove them from any text."""
    global _known_secrets  # noqa: PLW0603
    new = {v for v in values if v and len(v) >= 4}
    with _secrets_lock:
        if not new <= _known_secrets:
            _known_secrets = _known_secrets | new


def redact(text: str) -> str:
    """Remove secrets and anything shaped like a Stripe key or bearer token."""
    for secret in _known_secrets:  # this call's snapshot of the set
        if secret in text:
            text = text.replace(secret, "***")
    text = _KEY_PATTERN.sub("***", text)
    return _BEARER_PATTERN.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Last line of defence: no log line carries a configured secret or key, nor the
    traceback or stack logged with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # What a formatter would print; it prints `exc_text` when set.
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


def _print_redacted(exc_type: type[BaseException], exc: BaseException, tb: t.Any) -> None:
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(redact(text))
    sys.stderr.flush()


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    sys.stderr.write(f"Exception in thread {getattr(args.thread, 'name', '?')}:\n")
    _print_redacted(args.exc_type, t.cast("BaseException", args.exc_value), args.exc_traceback)


_REDACTING = RedactingFilter()


def install_redaction() -> None:
    """Filter every handler and the tap's loggers; again once the SDK set up logging.

    The SDK's per-page chatter is moved to DEBUG at the same time (`logs.py`).
    """
    quiet_chatter()
    # Tracebacks printed without logging (an error before the SDK's own hook, a thread's).
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _print_redacted
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _thread_excepthook
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


class OutputError(TapError):
    """stdout cannot be written (its reader closed it, a disk is full): nothing more read
    can reach the target, so the run stops."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(
            f"Could not write to stdout ({cause}): the target (or the pipe or file the tap's "
            "output goes to) closed it or failed, so the run stopped reading Stripe. Fix that, "
            "then run the tap again with the last STATE the target saved."
        )


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
