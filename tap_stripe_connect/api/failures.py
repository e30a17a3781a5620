"""Stripe's answers that are not data, as errors a person can act on.

One line each, naming the cause, the stream or setting involved and the `Request-Id`
(what Stripe support asks for); never a secret. Whether an answer is worth retrying is
decided here once (`Stripe-Should-Retry`, 409, 429, 5xx), as stripe-python does.
"""

from __future__ import annotations

import typing as t

import requests

from tap_stripe_connect.api.reads import Kind
from tap_stripe_connect.errors import (
    StripeAccountInvalidError,
    StripeAPIError,
    StripeAuthError,
    StripeEndpointMissingError,
    StripeNotFoundError,
    StripePermissionError,
    TapError,
    request_label,
    stripe_error,
)

if t.TYPE_CHECKING:
    from tap_stripe_connect.api.reads import Read

#: Failures of a request that a later try may not have.
NETWORK_ERRORS = (
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class Retriable(Exception):  # noqa: N818 (a signal, not an error a user sees)
    """A try that failed in a way a later try may not: `message`, and the response if any."""

    def __init__(self, message: str, response: requests.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


def should_retry(response: requests.Response) -> bool:
    """Whether Stripe says, or the status implies, that the same request may succeed."""
    header = response.headers.get("Stripe-Should-Retry")
    if header is not None and header in ("true", "false"):
        return header == "true"
    status = response.status_code
    return status in {409, 429} or status >= 500


def retriable_message(response: requests.Response) -> str:
    message = stripe_error(response).get("message") or response.reason
    return f"Stripe answered {response.status_code} ({message}) for {request_label(response)}"


def fatal_error(
    read: Read,
    response: requests.Response,
    *,
    account: str | None,
    oauth: bool,
    reconnect: str | None = None,
) -> StripeAPIError:
    """One line naming the cause, the stream or setting involved, and the Request-Id."""
    error = stripe_error(response)
    status = response.status_code
    # Stripe refuses a `Stripe-Account` the platform lost with 403 (`account_invalid`),
    # and has with 401: the key is fine, the account is not.
    if _account_invalid(error) and (status == 403 or (status == 401 and account and not oauth)):
        if reconnect:  # an account `connect` saved, read with the platform's key
            return StripeAccountInvalidError(
                f"Stripe account {account} can no longer be read: the platform's access "
                f"was revoked (deauthorised, or the account disconnected). Its state is "
                f"kept: connect it again with `{reconnect}`, and the next run reads only "
                f"what changed. [{request_label(response)}]",
                response,
            )
        return StripeAccountInvalidError(
            f"The platform may no longer read connected account {account} (deauthorised, "
            f"or not connected to this platform): reconnect it or remove it from setting "
            f"'account_ids'. [{request_label(response)}]",
            response,
        )
    if status == 401:
        return _auth_error(read, response, account=account, oauth=oauth, reconnect=reconnect)
    if status == 403:
        return _permission_error(read, response, account=account)
    where = f"[{request_label(response)}]"
    message = error.get("message") or response.reason or "no message"
    if status == 404:
        return not_found(read, response, message)
    param = error.get("param")
    setting = {"created": "start_date"}.get(str(param).split("[")[0]) if param else None
    hint = f" Check setting '{setting}'." if setting else ""
    about = f" parameter '{param}'" if param else ""
    return StripeAPIError(
        f"Stripe rejected the request{about} for {what_for(read)} "
        f"({status}): {message}.{hint} {where}",
        response,
    )


def _account_invalid(error: dict) -> bool:
    """Whether Stripe refused the `Stripe-Account` (not the key, not a permission)."""
    message = str(error.get("message") or "")
    return error.get("code") == "account_invalid" or "does not have access to account" in message


def what_for(read: Read) -> str:
    """What a read was for, in words: a stream, or the tap's own start-up check."""
    if read.kind is Kind.ACCOUNT:
        return "the start-up account check"
    return f"stream '{read.name}'"


def not_found(read: Read, response: requests.Response, message: str) -> StripeAPIError:
    """A 404 names either a missing object (`resource_missing`: a parent deleted since it
    was listed, which a listing may skip) or a URL Stripe does not know ("Unrecognized
    request URL", or no Stripe error at all): nothing was read, which no listing may take
    for "no data"."""
    request, _, request_id = request_label(response).partition(", ")
    if stripe_error(response).get("code") == "resource_missing":
        return StripeNotFoundError(
            f"Stripe has no object at {request} for {what_for(read)}: {message} [{request_id}]",
            response,
        )
    unknown = "Unrecognized request URL"
    said = unknown if message.startswith(unknown) else message
    hint = (
        "or set setting 'account_id' to the credential's account (acct_...)"
        if read.kind is Kind.ACCOUNT
        else f"or deselect stream '{read.name}' if this server does not offer it"
    )
    return StripeEndpointMissingError(
        f"Stripe does not serve the endpoint {request} needed by {what_for(read)} (404: "
        f"{said}): check setting 'api_url', {hint}. [{request_id}]",
        response,
    )


def _auth_error(
    read: Read,
    response: requests.Response,
    *,
    account: str | None,
    oauth: bool,
    reconnect: str | None = None,
) -> StripeAuthError:
    where = f"[{request_label(response)}]"
    if oauth:
        return StripeAuthError(
            f"Stripe account {account} can no longer be read: Stripe rejected its access "
            f"token (the connection was revoked, the app uninstalled, or the account "
            f"disconnected) while reading {what_for(read)}. Its state is kept: connect it "
            f"again with `{reconnect or 'tap-stripe-connect connect'}`, and the next run "
            f"reads only what changed. {where}",
            response,
        )
    return StripeAuthError(
        f"Stripe rejected the credential in setting 'api_key' (invalid, expired or "
        f"revoked) while reading {what_for(read)}: create or roll a key in the "
        f"Stripe Dashboard and update the setting. {where}",
        response,
    )


def _permission_error(
    read: Read, response: requests.Response, *, account: str | None
) -> StripePermissionError:
    error = stripe_error(response)
    where = f"[{request_label(response)}]"
    message = error.get("message") or response.reason or "no message"
    return StripePermissionError(
        f"The credential may not read stream '{read.name}' ({read.object} "
        f"objects): give the restricted key the '{read.permission}' read "
        f"permission, or deselect the stream. Stripe said: {message} {where}",
        response,
    )


def tries_text(tries: int, elapsed: float) -> str:
    return f"{tries} tr{'y' if tries == 1 else 'ies'} in {elapsed:.1f}s"


def giving_up(
    read: Read,
    request: requests.PreparedRequest,
    exc: Exception,
    *,
    tries: str,
    settings: t.Any,
) -> TapError:
    """The last try failed too: one line saying what, and what the user can do."""
    if isinstance(exc, Retriable) and not isinstance(exc, BodyBroken):
        return TapError(
            f"Giving up on {what_for(read)} after {tries}: {exc}. Stripe "
            "may be having trouble; run the tap again later (progress so far is in "
            "STATE; settings 'max_retries' and 'max_retry_seconds' bound the retries)."
        )
    if isinstance(exc, BodyBroken):
        return TapError(
            f"Giving up on {what_for(read)} after {tries}: the connection broke while "
            f"Stripe was sending the response ({request_label(exc.response)}; "
            f"{type(exc.cause).__name__}). Check the network and run the tap again (progress "
            "so far is in STATE)."
        )
    method = request.method or "GET"
    path = (request.path_url or "").split("?")[0]
    if isinstance(exc, requests.exceptions.Timeout) and not isinstance(
        exc, requests.exceptions.ConnectTimeout
    ):
        return TapError(
            f"Giving up on {what_for(read)} after {tries}: Stripe did not answer "
            f"{method} {path} within {settings.request_timeout}s (setting 'request_timeout'; "
            "no response, so no Request-Id). Run the tap again later (progress so far is "
            "in STATE)."
        )
    if untrusted(exc):
        return TapError(
            f"Stripe's certificate at {settings.api_url} (setting 'api_url') is not trusted, "
            f"for {what_for(read)}: a proxy or gateway between may sign TLS with its own. "
            "Name its CA bundle in the environment variable REQUESTS_CA_BUNDLE (the tap "
            "trusts certifi's bundle otherwise)."
        )
    return TapError(
        f"Could not reach Stripe at {settings.api_url} (setting 'api_url') for "
        f"{what_for(read)} ({method} {path}, {tries}): {type(exc).__name__}. Check the URL "
        "and the network."
    )


def untrusted(exc: Exception) -> bool:
    """Whether `exc` is a server's certificate not trusted: another try cannot help."""
    return isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(
        exc
    )


class BodyBroken(Retriable):
    """The connection broke while the body was read: the response (and its Request-Id)
    is known, the data is not."""

    def __init__(self, response: requests.Response, cause: requests.RequestException) -> None:
        super().__init__(str(cause), response)
        self.response: requests.Response = response
        self.cause = cause
