"""The Stripe HTTP client and the base stream every resource shares.

Auth, `Stripe-Version`/`Stripe-Account`, cursor paging, retries, error messages, Stripe's
clock and record shaping live here once; `streams.py` only says which resource a stream is.
"""

from __future__ import annotations

import decimal
import email.utils
import functools
import itertools
import math
import threading
import time
import typing as t
from urllib.parse import urlsplit

import backoff
import msgspec
import requests
from requests.utils import resolve_proxies
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.pagination import BaseAPIPaginator
from singer_sdk.streams import RESTStream

from tap_stripe_connect.auth import StripeOAuthAuthenticator
from tap_stripe_connect.checkpoints import LISTING, Listing, gaps
from tap_stripe_connect.concurrency import RUN_LOCK, LockedStateManager, Window, list_windows
from tap_stripe_connect.errors import (
    StripeAPIError,
    StripeAuthError,
    StripeNotFoundError,
    StripePermissionError,
    TapError,
    redact,
    request_label,
    stripe_error,
)
from tap_stripe_connect.limiter import RateLimiter, endpoint_of
from tap_stripe_connect.records import RecordShaper, format_unix
from tap_stripe_connect.resources import CREATED, EVENTS, FULL_TABLE, RESOURCES_BY_NAME
from tap_stripe_connect.sdk_compat import CompatStream
from tap_stripe_connect.settings import parse_time as rfc3339_to_unix

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from singer_sdk.helpers.types import Context
    from singer_sdk.streams.rest import HTTPRequest, PageContext

    from tap_stripe_connect.resources import Resource
    from tap_stripe_connect.settings import Settings
    from tap_stripe_connect.tap import TapStripeConnect

PAGE_SIZE = 100  # Stripe's maximum `limit`.
# Stripe's `Date` header has one-second resolution: step back one second so that a
# bookmark taken from it never lies after the moment the data was read.
DATE_RESOLUTION = 1
FAR_FUTURE = 2**33
BODY_READ = 1 << 22
CHECKPOINT_SECONDS = 1.0
# Stripe keeps events for 30 days.
EVENT_RETENTION = 30 * 24 * 3600


class StripeClock:
    """Stripe's time, learned from the `Date` header of its responses.

    Bookmarks compare against event and object times stamped by Stripe, so they must
    come from Stripe's clock, not this machine's.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._anchor: tuple[int, float] | None = None

    def observe(self, response: requests.Response) -> int | None:
        """Record the server time of a response; return it in Unix seconds."""
        header = response.headers.get("Date")
        if not header:
            return None
        try:
            server_time = int(email.utils.parsedate_to_datetime(header).timestamp())
        except (TypeError, ValueError):
            return None
        with self._lock:
            self._anchor = (server_time, self._monotonic())
        return server_time

    def now(self) -> int | None:
        """Stripe's current time in Unix seconds, or None before any response."""
        with self._lock:
            if self._anchor is None:
                return None
            server_time, seen_at = self._anchor
            return server_time + int(self._monotonic() - seen_at) - DATE_RESOLUTION


class StripeCursorPaginator(BaseAPIPaginator[str | None]):
    """`starting_after` paging over Stripe list objects (`has_more`, newest first)."""

    def __init__(self) -> None:
        super().__init__(None)
        self._seen: set[str] = set()

    def has_more(self, response: requests.Response) -> bool:
        return bool(parsed_body(response).get("has_more"))

    def get_next(self, response: requests.Response) -> str | None:
        data = parsed_body(response).get("data") or []
        if not data:
            return None
        cursor = data[-1]["id"]
        # A cursor seen before means the list is cycling; paging on would never end.
        if cursor in self._seen:
            raise StripeAPIError(
                f"Stripe returned the same page cursor twice ({cursor}) while listing "
                f"{request_label(response)}; stopping instead of looping."
            )
        self._seen.add(cursor)
        return str(cursor)


# msgspec parses a page about twice as fast as `json.loads` (the same values: exact
# Decimals for fractions, Python ints of any size); its DecodeError is a ValueError.
_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)


def parsed_body(response: requests.Response) -> dict[str, t.Any]:
    """The JSON body, parsed once per response (validation parses it first)."""
    body = getattr(response, "_stripe_body", None)
    if body is None:
        body = _DECODER.decode(response.content)
        response._stripe_body = body  # type: ignore[attr-defined]
    return t.cast("dict[str, t.Any]", body)


def body_problem(
    body: t.Any, *, listing: bool = True, events: bool = False, created: bool = False
) -> str | None:
    """What keeps a parsed 2xx body from being a Stripe object or list, or None.

    Records, paging and bookmarks rely on these fields; anything else passes as it is.
    """
    if not isinstance(body, dict):
        return f"{type(body).__name__} instead of an object"
    if body.get("object") != "list":
        return "an object that is not a list" if listing else None
    data = body.get("data")
    if not isinstance(data, list):
        return "a list whose 'data' is not an array"
    if not isinstance(body.get("has_more", False), bool):
        return "a list whose 'has_more' is not true or false"
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            return f"item {index} of the list has no id"
        stamp = item.get("created")
        if (created or events) and (not isinstance(stamp, int) or isinstance(stamp, bool)):
            return f"item {index} of the list has no integer 'created'"
        if events:
            payload = item.get("data")
            if not isinstance(item.get("type"), str) or not (
                isinstance(payload, dict) and isinstance(payload.get("object"), dict)
            ):
                return f"event {index} of the list has no 'type' or 'data.object'"
    return None


def pages_of(objects: Iterable[dict], size: int = PAGE_SIZE) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for obj in objects:
        batch.append(obj)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def unix_to_rfc3339(value: int) -> str:
    return format_unix(int(value))  # cached: every record of a listing has the same `updated`


class StripeStream(RESTStream[str | None], CompatStream):
    """A Stripe list endpoint described by a `Resource`."""

    resource: t.ClassVar[Resource]

    @property
    def stripe_tap(self) -> TapStripeConnect:
        return t.cast("TapStripeConnect", self.tap)

    # Stripe objects carry no update time; `updated` is the Stripe time from which the
    # record is known current (see README, "How incremental sync works").
    replication_key = "updated"

    # -- request building ---------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.stripe_tap.settings

    @property
    def url_base(self) -> str:
        return self.settings.api_url

    @property
    def http_headers(self) -> dict[str, str]:
        headers = {
            "Stripe-Version": self.settings.api_version,
            "User-Agent": self.user_agent,
        }
        if account := self.config.get("account_id"):
            headers["Stripe-Account"] = str(account)
        return headers

    def account_limiter(self, context: Context | None) -> RateLimiter:
        """The limiter this stream's requests go through: the one of their `Stripe-Account`."""
        account = (context or {}).get("account_id") or self.config.get("account_id")
        return self.stripe_tap.limiter_for(str(account) if account else None)

    @functools.cached_property
    def user_agent(self) -> str:
        # Once per stream: the SDK looks the version up in the package metadata on every
        # call, ~1 ms, which was ~3% of a sync's CPU when done for every request.
        return f"tap-stripe-connect/{self.stripe_tap.plugin_version}"

    def get_http_request(self, *, page: PageContext) -> HTTPRequest:
        request = super().get_http_request(page=page)
        # Platforms read each connected account as its own partition.
        if account := (page.stream_context or {}).get("account_id"):
            request.headers["Stripe-Account"] = str(account)
        return request

    @property
    def partitions(self) -> list[dict] | None:
        accounts = self.stripe_tap.connected_accounts
        # The platform's list of its connected accounts is read once, not per account.
        if not accounts or self.resource.object == "account":
            return None
        return [{"account_id": account} for account in accounts]

    @property
    def authenticator(self) -> t.Any:
        return self.stripe_tap.authenticator

    @property
    def requests_session(self) -> requests.Session:
        return t.cast("requests.Session", self.stripe_tap.requests_session)

    @property
    def timeout(self) -> int:
        return self.settings.request_timeout

    def get_new_paginator(self) -> StripeCursorPaginator:
        return StripeCursorPaginator()

    def get_url(self, context: Context | None) -> str:
        context = context or {}
        if "events_since" in context:
            return f"{self.url_base}/v1/events"
        path = self.resource.retrieve_path if "retrieve" in context else self.resource.path
        path = path.replace("{parent_id}", str(context.get("parent_id")))
        return self.url_base + path.replace("{id}", str(context.get("retrieve")))

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        """Query parameters for the three kinds of read: list, events, retrieve."""
        context = context or {}
        params: dict[str, t.Any] = {}
        if "retrieve" not in context:
            # `probe`: one object is enough (see `probe`).
            params["limit"] = 1 if context.get("probe") else PAGE_SIZE
            if next_page_token or context.get("after"):
                params["starting_after"] = next_page_token or context["after"]
        if "events_since" in context:
            params["types[]"] = list(self.resource.event_types)
            params["created[gte]"] = context["events_since"]
            return params
        if self.resource.expand:
            prefix = "" if "retrieve" in context else "data."
            params["expand[]"] = [prefix + field for field in self.resource.expand]
        if "retrieve" in context:
            return params
        for key, value in self.resource.list_params:
            params[key] = value.replace("{parent_id}", str(context.get("parent_id")))
        if variant := context.get("variant"):
            params[variant[0]] = variant[1]
        # `unbounded`: every object, whatever `start_date` (the parents of `list_per`).
        if self.resource.created_filter and not context.get("unbounded"):
            window = context.get("window")
            bounds = (getattr(window, "lower", None), self.config_start_timestamp())
            if lower := [x for x in bounds if x is not None]:
                params["created[gte]"] = max(lower)
            if window is not None:
                params["created[lt]"] = window.upper
        return params

    def config_start_timestamp(self) -> int | None:
        return t.cast("int | None", self.stripe_tap.start_timestamp)

    # -- responses, errors and retries ----------------------------------------------

    def validate_response(self, response: requests.Response) -> None:
        self.stripe_tap.clock.observe(response)
        should_retry = response.headers.get("Stripe-Should-Retry")
        status = response.status_code
        if status < 300:
            try:
                body = parsed_body(response)
            except ValueError as exc:
                # A body cut short or not JSON at all: the request itself was fine.
                raise RetriableAPIError(
                    f"Stripe sent an unreadable response body ({request_label(response)})",
                    response,
                ) from exc
            path, _, query = (response.request.path_url or "").partition("?")
            problem = body_problem(
                body,
                # List requests, and only they, carry `limit` (see `get_url_params`).
                listing="limit=" in query,
                events=path == "/v1/events",
                created=self.resource.created_filter and path == self.resource.path,
            )
            if problem:
                # JSON, but not a Stripe object: a proxy's page, or a body cut short.
                label = request_label(response)
                raise RetriableAPIError(
                    f"Stripe sent a malformed response body: {problem} ({label})", response
                )
            return
        if status == 401 and stripe_error(response).get("code") == "api_key_expired":
            used = (response.request.headers.get("Authorization") or "")[len("Bearer ") :]
            if self.authenticator.expire(used):
                # The next try refreshes the token once (shared by every waiting thread).
                raise RetriableAPIError(self.retriable_message(response), response)
        if status == 429:
            self.stripe_tap.limiter_for(
                response.request.headers.get("Stripe-Account")
            ).on_throttled()
        if should_retry == "false":
            raise self.fatal_error(response)
        if should_retry == "true" or status in {409, 429} or status >= 500:
            raise RetriableAPIError(self.retriable_message(response), response)
        raise self.fatal_error(response)

    def retriable_message(self, response: requests.Response) -> str:
        message = stripe_error(response).get("message") or response.reason
        return f"Stripe answered {response.status_code} ({message}) for {request_label(response)}"

    def fatal_error(self, response: requests.Response) -> StripeAPIError:
        """One line naming the cause, the stream or setting involved, and the Request-Id."""
        error = stripe_error(response)
        status = response.status_code
        where = f"[{request_label(response)}]"
        message = error.get("message") or response.reason or "no message"
        account = response.request.headers.get("Stripe-Account") or self.stripe_tap.account_id
        if status == 401 and isinstance(self.authenticator, StripeOAuthAuthenticator):
            return StripeAuthError(
                f"Stripe rejected the access token of connected account {account} (the "
                f"connection was revoked or deauthorised) while reading stream '{self.name}': "
                f"connect the account again with `tap-stripe-connect connect`. {where}",
                response,
            )
        if status == 401:
            return StripeAuthError(
                f"Stripe rejected the credential in setting 'api_key' (invalid, expired or "
                f"revoked) while reading stream '{self.name}': create or roll a key in the "
                f"Stripe Dashboard and update the setting. {where}",
                response,
            )
        if status == 403 and error.get("code") == "account_invalid":
            return StripePermissionError(
                f"The platform may no longer read connected account {account} (deauthorised, "
                f"or not connected to this platform): reconnect it or remove it from setting "
                f"'account_ids'. {where}",
                response,
            )
        if status == 403:
            return StripePermissionError(
                f"The credential may not read stream '{self.name}' ({self.resource.object} "
                f"objects): give the restricted key the '{self.resource.permission}' read "
                f"permission, or deselect the stream. Stripe said: {message} {where}",
                response,
            )
        if status == 404:
            return StripeNotFoundError(
                f"Stripe has no such {self.resource.object} for stream '{self.name}': "
                f"{message} {where}",
                response,
            )
        param = error.get("param")
        setting = {"created": "start_date"}.get(str(param).split("[")[0]) if param else None
        hint = f" Check setting '{setting}'." if setting else ""
        about = f" parameter '{param}'" if param else ""
        return StripeAPIError(
            f"Stripe rejected the request{about} for stream '{self.name}' "
            f"({status}): {message}.{hint} {where}",
            response,
        )

    def backoff_wait_generator(self) -> t.Generator[float, None, None]:
        return backoff.expo(base=2, factor=0.5, max_value=30)

    def backoff_max_tries(self) -> int:
        return self.settings.max_retries + 1

    def request_decorator(self, func: Callable) -> Callable:
        retrying = backoff.on_exception(
            self.backoff_wait_generator,
            (
                RetriableAPIError,
                requests.exceptions.Timeout,
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ),
            max_tries=self.backoff_max_tries,
            max_time=self.settings.max_retry_seconds,
            on_backoff=self.backoff_handler,
            on_giveup=_note_giveup,
            jitter=self.backoff_jitter,
            logger=None,
        )(func)

        @functools.wraps(func)
        def call(*args: t.Any, **kwargs: t.Any) -> requests.Response:
            try:
                return t.cast("requests.Response", retrying(*args, **kwargs))
            except RetriableAPIError as exc:
                raise TapError(
                    f"Giving up on stream '{self.name}' after {_tries(exc)}: {exc}. Stripe "
                    "may be having trouble; run the tap again later (progress so far is in "
                    "STATE; settings 'max_retries' and 'max_retry_seconds' bound the retries)."
                ) from None
            except requests.exceptions.RequestException as exc:
                raise TapError(self.network_error_message(exc, args)) from None

        return call

    def network_error_message(self, exc: requests.RequestException, args: tuple) -> str:
        """One line for a request that got no usable response, naming the request."""
        request: t.Any = next((a for a in args if isinstance(a, requests.PreparedRequest)), None)
        request = request or exc.request
        method = getattr(request, "method", None) or "GET"
        path = (getattr(request, "path_url", None) or "").split("?")[0]
        tries = _tries(exc)
        if exc.response is not None:
            return (
                f"Giving up on stream '{self.name}' after {tries}: the connection broke while "
                f"Stripe was sending the response ({request_label(exc.response)}; "
                f"{type(exc).__name__}). Check the network and run the tap again (progress "
                "so far is in STATE)."
            )
        if isinstance(exc, requests.exceptions.Timeout) and not isinstance(
            exc, requests.exceptions.ConnectTimeout
        ):
            return (
                f"Giving up on stream '{self.name}' after {tries}: Stripe did not answer "
                f"{method} {path} within {self.timeout}s (setting 'request_timeout'; no "
                "response, so no Request-Id). Run the tap again later (progress so far is "
                "in STATE)."
            )
        return (
            f"Could not reach Stripe at {self.url_base} (setting 'api_url') for stream "
            f"'{self.name}' ({method} {path}, {tries}): {type(exc).__name__}. Check the URL "
            "and the network."
        )

    def backoff_handler(self, details: t.Any) -> None:
        self.stripe_tap.count_retry(self.name)
        exc = details.get("exception")
        self.logger.warning(
            "Retrying stream '%s' in %.1fs (try %d): %s",
            self.name,
            details.get("wait") or 0.0,
            details.get("tries") or 0,
            redact(str(exc)) if exc else "",
        )

    def response_error_message(self, response: requests.Response) -> str:
        return self.retriable_message(response)

    # -- records ----------------------------------------------------------------------

    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        body = parsed_body(response)
        if body.get("object") == "list":
            yield from body.get("data") or []
        else:
            yield body

    @functools.cached_property
    def shaper(self) -> RecordShaper:
        return RecordShaper(self.schema)

    def shape(self, record: dict, updated: int | None, context: Context | None) -> dict:
        """Times as RFC 3339, plus the fields the tap adds to every record."""
        # A copy: a child's embedded items are also the parent's `lines.data`/`items.data`,
        # and the SDK writes the parent after its children, so the fields added below
        # would otherwise show up inside the parent record.
        record = self.shaper.shape(dict(record))
        # `updated`: the Stripe time from which the record is known current. An object with
        # its own (`product.updated`, when it last changed) keeps Stripe's value.
        if record.get("updated") is None:
            record["updated"] = unix_to_rfc3339(updated) if updated is not None else None
        record["account_id"] = (context or {}).get("account_id") or self.stripe_tap.account_id
        record["_sdc_deleted_at"] = None
        return record

    def new_state_manager(self, **kwargs: t.Any) -> LockedStateManager:
        # Streams sync in parallel and share one state dict (see concurrency.py).
        return LockedStateManager(**kwargs)

    def get_replication_key_signpost(self, context: Context | None = None) -> None:
        # The SDK caps bookmarks at this machine's clock; ours come from Stripe's clock
        # and never pass the start of the read (see `list_all`).
        return None

    def list_all(self, context: Context | None, since: int | None = None) -> Iterator[dict]:
        """Every object created at or after `start_date` (and `since`), each once.

        `since` makes a partial listing, which carries no table version: the incremental
        sync of CREATED streams, whose objects never change once written.

        The `created` range is read by several workers at once (see `concurrency.py`);
        records carry `updated` = the Stripe time at which the read began, which is also
        where the next incremental sync picks up.
        """
        started = self.stripe_tap.clock.now()
        # A listing a killed run left unfinished goes on where its last STATE left off.
        resumed = self.resumable_listing(context, started)
        if resumed is not None:
            started = resumed.started
            self.use_table_version(resumed.table_version)
        if self.resource.list_per:
            batches: Iterable[list[dict]] = self.per_parent_batches(context)
        elif not self.resource.created_filter:
            batches = pages_of(self.request_records(context))
        else:
            lower = max(self.config_start_timestamp() or 0, since or 0)
            # Objects created after the read began reach the next sync through events.
            upper = (started or FAR_FUTURE) + DATE_RESOLUTION + 1
            endpoint = endpoint_of("GET", self.resource.path)
            limiter = self.account_limiter(context)
            floor = self.stripe_tap.earliest_created(context)
            ranges = gaps(lower, upper, resumed.done) if resumed else [(lower, upper)]
            # Stripe lists some objects only when asked for them (archived prices): the
            # `created` range is then read once per entry of `list_variants`.
            batches = itertools.chain.from_iterable(
                list_windows(
                    functools.partial(self.window_records, context, variant),
                    [Window(a, b, floor) for a, b in ranges],
                    self.stripe_tap.window_workers,
                    may_split=lambda: (
                        not (
                            self.stripe_tap.stream_may_start
                            or limiter.saturated(endpoint)
                            or self.stripe_tap.cpu_bound(limiter)
                        )
                    ),
                    eager=lambda: limiter.responses_slow,
                )
                for variant in self.resource.list_variants or (None,)
            )
        for batch in batches:
            if started is None:  # no response had been seen before this read began
                started = self.stripe_tap.clock.now()
            # A table version covers the whole table, so it cannot serve a table that
            # holds several accounts' partitions, nor CREATED streams: their listings
            # after the first are partial, and `events` keeps what Stripe dropped.
            if (
                self.table_version is None
                and not self.stripe_tap.connected_accounts
                and self.resource.sync != CREATED
            ):
                self.use_table_version(int(started or 0) * 1000)
            self.prefetch_children(batch, context)
            for obj in batch:
                yield self.shape(obj, started, context)
            # Resumed after the batch's last yield: its records (and their children's)
            # are written, so the `created` range it completes can go into STATE.
            covers = getattr(batch, "covers", None)
            # (Variants read the same `created` ranges: no range is done before the last.)
            if covers is not None and started is not None and not self.resource.list_variants:
                self.checkpoint(context, started, covers)
        if self.table_version is not None:
            self.activate_table_version(context)
        self.finish_listing(context, started)
        self.mark_synced(context, started)
        if resumed is not None and self.resource.sync == EVENTS and started is not None:
            # Objects that changed while the killed run was down, read now rather than
            # by the next run: the bookmark is still the start of the listing.
            yield from self.changes_since(started, context)

    def resumable_listing(self, context: Context | None, now: int | None) -> Listing | None:
        """The unfinished listing recorded in this stream's (or partition's) state, if usable."""
        with RUN_LOCK:
            state = self.get_context_state(context)
            entry = state.get(LISTING)
            bookmark = state.get("replication_key_value")
        if entry is None:
            return None
        listing = Listing.from_state(entry)
        lag = self.settings.event_lag_seconds
        # Events must still reach back to the listing's start (Stripe keeps 30 days),
        # with a day to spare for the rest of the listing.
        too_old = (
            self.resource.sync == EVENTS
            and now is not None
            and listing.started - lag < now - EVENT_RETENTION + 86400
        )
        stale = bookmark is not None and listing.started < rfc3339_to_unix(bookmark)
        if too_old or stale or not self.resource.created_filter:
            self.logger.warning(
                "Stream '%s': the interrupted listing in STATE began too long ago to "
                "resume; listing the stream from the start.",
                self.name,
            )
            with RUN_LOCK:
                state.pop(LISTING, None)
            return None
        self.logger.info(
            "Stream '%s': resuming the listing begun at %s; %d `created` range(s) of it "
            "were already written.",
            self.name,
            unix_to_rfc3339(listing.started),
            len(listing.done),
        )
        return listing

    def checkpoint(self, context: Context | None, started: int, covers: tuple[int, int]) -> None:
        """Record a written `created` range of the listing; emit STATE now and then.

        A STATE message holds every stream's state: one per page of 100 records took ~3%
        of a sync's CPU (and as much of a target's). Once per `CHECKPOINT_SECONDS` per
        stream bounds what a killed run reads again to a second or so of work.
        """
        now = time.monotonic()
        with RUN_LOCK:
            state = self.get_context_state(context)
            entry = state.get(LISTING)
            listing = (
                Listing.from_state(entry)
                if entry is not None
                else Listing(started, self.table_version)
            )
            listing.complete(*covers)
            state[LISTING] = listing.to_state()
            self.state_manager.is_flushed = False
            if now - self._checkpointed >= CHECKPOINT_SECONDS:
                self.write_state_now()
                self._checkpointed = now

    _checkpointed = -math.inf  # monotonic time of this stream's last checkpoint STATE

    def finish_listing(self, context: Context | None, started: int | None) -> None:
        """The listing is complete: its start becomes the bookmark, in the same STATE."""
        with RUN_LOCK:
            state = self.get_context_state(context)
            had_listing = state.pop(LISTING, None) is not None
            if had_listing and started is not None and self.selected and self.replication_key:
                state["replication_key"] = self.replication_key
                state["replication_key_value"] = unix_to_rfc3339(started)

    def use_table_version(self, version: int | None) -> None:
        """Tag this stream's (and its children's) records with a table version."""
        for stream in (self, *self.descendent_streams):
            stream.table_version = version

    def activate_table_version(self, context: Context | None) -> None:
        """After a complete listing: rows the listing did not contain are gone from Stripe.

        Deletions older than Stripe's 30 days of events (or before a first sync) leave no
        event; an ACTIVATE_VERSION message lets targets drop the rows of earlier versions.
        It is written only once every record of the listing has been written.
        """
        version = self.table_version
        for stream in (self, *self.descendent_streams):
            if stream.selected and getattr(stream, "schema_written", True):
                stream.write_activate_version(t.cast("int", version))
        with RUN_LOCK:
            self.get_context_state(context)["table_version"] = version

    def prefetch_children(self, parents: list[dict], context: Context | None) -> None:
        """Start fetching child lists that overflow their parent's embedded page."""
        account = (context or {}).get("account_id")
        for child in self.child_streams:
            prefetch = getattr(child, "prefetch", None)
            if prefetch is not None and child.selected:
                for parent in parents:
                    prefetch(parent, account)

    def mark_synced(self, context: Context | None, started: int | None) -> None:
        """Move the bookmark to the start of this read, also when nothing changed."""
        if started is None:
            started = self.stripe_tap.clock.now()
        if started is None or not self.selected or self.replication_key is None:
            return
        self.state_manager.increment_state(
            {"updated": unix_to_rfc3339(started)},
            context=context,
            replication_key="updated",
        )

    def get_records(self, context: Context | None) -> Iterable[dict]:
        account = (context or {}).get("account_id")
        if not (account and self.stripe_tap.connected_accounts):
            yield from self.records_of(context)
            return
        try:
            yield from self.records_of(context)
        except (StripeAuthError, StripePermissionError) as exc:
            # One connected account failing must not stop the others. Its bookmark stays
            # where it was, so nothing is lost when it works again.
            with RUN_LOCK:
                self.get_context_state(context).pop("progress_markers", None)
            self.stripe_tap.report_account_failure(str(account), exc)

    def records_of(self, context: Context | None) -> Iterable[dict]:
        """One account's records: a full listing, or the changes since the bookmark."""
        bookmark = self.get_context_state(context).get("replication_key_value")
        if bookmark is None or self.resource.sync == FULL_TABLE:
            yield from self.list_all(context)
        elif self.resource.sync == CREATED:
            # Objects that never change: those created since the bookmark, less the lag
            # (a new object can appear in the list a little after its `created` time).
            lag = self.settings.event_lag_seconds
            yield from self.list_all(context, since=rfc3339_to_unix(bookmark) - lag)
        else:
            yield from self.changes_since(rfc3339_to_unix(bookmark), context)

    def changes_since(self, bookmark: int, context: Context | None) -> Iterator[dict]:
        """The newest state of each object changed since the bookmark, once, from events.

        Events are read from the bookmark minus a lag, because Stripe's event list is
        eventually consistent: an event can appear a little after its `created` time.
        """
        since = bookmark - self.settings.event_lag_seconds
        # Changes belong to the table version of the last complete listing.
        self.use_table_version(self.get_context_state(context).get("table_version"))
        seen: set[str] = set()
        start_date = self.config_start_timestamp()
        events = iter(self.request_records({**(context or {}), "events_since": since}))
        # The first page tells Stripe's time, which says whether events since `since` are
        # still kept.
        first = next(events, None)
        started = self.stripe_tap.clock.now()
        if self.events_expired(since, started):
            self.use_table_version(None)
            yield from self.list_all(context)
            return
        for event in itertools.chain([first] if first is not None else [], events):
            object_id = self.changed_object_id(event["data"]["object"])
            # Events are newest first: the first one seen for an object is its latest state.
            if object_id is None or object_id in seen:
                continue
            seen.add(object_id)
            record = self.record_from_event(event, object_id, context)
            created = record.get("created")
            if start_date is None or created is None or rfc3339_to_unix(created) >= start_date:
                yield record
        if not self.resource.creation_event:
            yield from self.created_since(since, started, seen, context)
        self.mark_synced(context, started)

    def created_since(
        self, since: int, started: int | None, seen: set[str], context: Context | None
    ) -> Iterator[dict]:
        """Objects created since `since` that no event announced (no creation event)."""
        upper = (started or FAR_FUTURE) + DATE_RESOLUTION + 1
        for obj in self.request_records({**(context or {}), "window": Window(since, upper)}):
            if obj["id"] not in seen:
                seen.add(obj["id"])
                yield self.shape(obj, started, context)

    def events_expired(self, since: int, now: int | None) -> bool:
        """Whether events since `since` may already be gone (Stripe keeps 30 days)."""
        if now is None or since >= now - EVENT_RETENTION:
            return False
        self.logger.warning(
            "Stream '%s': its bookmark is older than the 30 days of events Stripe keeps "
            "(less the %ss lag); re-reading every object of the stream instead.",
            self.name,
            self.settings.event_lag_seconds,
        )
        return True

    def changed_object_id(self, obj: dict) -> str | None:
        """The id of the object of this stream that an event's payload changed.

        Some events carry another object that names ours in a field of the same name:
        `charge.dispute.created` carries the dispute, whose `charge` is the charge.
        """
        if obj.get("object") == self.resource.object:
            return t.cast("str | None", obj.get("id"))
        related = obj.get(self.resource.object)
        return related if isinstance(related, str) else None

    def record_from_event(self, event: dict, object_id: str, context: Context | None) -> dict:
        obj = event["data"]["object"]
        gone = event["type"] in self.resource.delete_events or self.left_parent(obj)
        deleted_at = event["created"] if gone else None
        # Event payloads are never expanded: a stream that expands fields fetches the
        # object again, so records from lists and from events have one shape.
        stale = (
            obj.get("id") != object_id
            or event.get("api_version") != self.api_version
            or bool(self.resource.expand)
        )
        if deleted_at is None and stale:
            # Payloads are rendered in the API version of the event's day, and related
            # events carry another object: fetch ours so every record has one shape.
            fetched = self.retrieve(object_id, context)
            # Stripe answers 404, or 200 with `deleted: true`, for an object deleted since.
            if fetched is None or fetched.get("deleted") or self.left_parent(fetched):
                deleted_at = event["created"]
            else:
                obj = fetched
        record = self.shape(obj, event["created"], context)
        if deleted_at is not None:
            record["_sdc_deleted_at"] = unix_to_rfc3339(deleted_at)
        return record

    def retrieve(self, object_id: str, context: Context | None) -> dict | None:
        """`GET /v1/<resource>/<id>`; None when Stripe no longer has it."""
        try:
            return next(iter(self.request_records({**(context or {}), "retrieve": object_id})))
        except StripeNotFoundError:
            return None

    def window_records(
        self, context: Context | None, variant: tuple[str, str] | None, window: Window
    ) -> Iterable[dict]:
        """One `created` window of a listing (of one of its `list_variants`)."""
        return self.request_records({**(context or {}), "window": window, "variant": variant})

    def probe(self, context: Context | None = None) -> dict | None:
        """The list's first object, from one request with `limit=1`.

        The permission check before a sync (see `permissions.py`) reads each stream so;
        a credential that may not read it raises StripePermissionError.
        """
        return next(iter(self.request_records({**(context or {}), "probe": True})), None)

    def per_parent_batches(self, context: Context | None) -> Iterator[list[dict]]:
        """A `list_per` listing: the list of every object of the parent stream.

        Parent ids are paged from the parent's list (whatever `start_date`: the objects'
        own `created` decides); the lists of each page of 100 parents are read in the
        background, in parallel.
        """
        parents = t.cast("StripeStream", self.stripe_tap.streams[str(self.resource.list_per)])
        start = self.config_start_timestamp() or 0
        for page in pages_of(parents.request_records({**(context or {}), "unbounded": True})):
            lists = [
                self.stripe_tap.background.submit(self.list_of_parent, parent["id"], context)
                for parent in page
            ]
            yield [obj for f in lists for obj in f.result() if obj["created"] >= start]

    def list_of_parent(self, parent_id: str, context: Context | None) -> list[dict]:
        try:
            return list(self.request_records({**(context or {}), "parent_id": parent_id}))
        except StripeNotFoundError:  # the parent was deleted since it was listed
            return []

    def left_parent(self, obj: dict) -> bool:
        """For a `list_per` stream: the object belongs to no parent any more (detached)."""
        if not self.resource.list_per:
            return False
        return not obj.get(RESOURCES_BY_NAME[self.resource.list_per].object)

    @property
    def api_version(self) -> str:
        return self.settings.api_version

    # Records are shaped in `get_records`; they already match the schema: times are
    # RFC 3339 strings, fractions Decimals (written as JSON numbers), and fields the
    # schema does not name are allowed by it. The SDK's default (RECURSIVE) conformance
    # walks every nested value of every record again and took ~45% of the CPU of a sync.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        return row

    @functools.cached_property
    def every_property_selected(self) -> bool:
        """Whether the catalog selects every property (the mask is fixed for a run)."""
        return all(selected for breadcrumb, selected in self.mask.items() if breadcrumb)


def _note_giveup(details: t.Any) -> None:
    """Keep the number of tries and the time spent on the exception that ended them."""
    exc = details.get("exception")
    if exc is not None:
        exc.tap_retry = (details.get("tries") or 0, details.get("elapsed") or 0.0)


def _tries(exc: BaseException) -> str:
    tries, elapsed = getattr(exc, "tap_retry", (1, 0.0))
    return f"{tries} tr{'y' if tries == 1 else 'ies'} in {elapsed:.1f}s"


class StripeSession(requests.Session):
    """One HTTP session per account, shared by every stream and worker of a run.

    Every request, retries included, passes the account's rate limiter and the bound on
    requests in flight before it is sent.
    """

    def __init__(
        self,
        before_send: Callable[[requests.PreparedRequest], None],
        in_flight: threading.Semaphore,
    ) -> None:
        super().__init__()
        self._before_send = before_send
        self._in_flight = in_flight
        self._proxies: dict[tuple[str, str], dict[str, str]] = {}

    def send(self, request: requests.PreparedRequest, **kwargs: t.Any) -> requests.Response:  # type: ignore[override]
        stream = kwargs.pop("stream", self.stream)
        if "proxies" not in kwargs:
            # requests reads the proxy variables of the environment (all of it) for every
            # request, ~1% of a sync's CPU; a run asks a host or two, in one environment.
            where = urlsplit(request.url or "")[:2]
            if (proxies := self._proxies.get(where)) is None:
                proxies = resolve_proxies(request, dict(self.proxies), self.trust_env)
                self._proxies[where] = proxies
            kwargs["proxies"] = proxies
        with self._in_flight:
            self._before_send(request)
            response = super().send(request, stream=True, **kwargs)
            # Headers are in, the body not yet read: the sooner a response, the sooner its
            # place in the rate budget is free again (see limiter.py).
            if (grant := getattr(request, "limiter_grant", None)) is not None:
                grant.responded()
            if not stream:
                # Read the body here, not inside requests, so that a connection broken
                # mid-body still names the response (and its Request-Id) in the error.
                try:
                    # What `response.content` does, in 4 MB reads instead of 10 KB ones:
                    # each read gives up the GIL and waits to take it back, up to 5 ms
                    # while other threads parse pages, ~40 times for a page of invoices.
                    response._content = b"".join(response.iter_content(BODY_READ)) or b""
                    response._content_consumed = True  # type: ignore[attr-defined]
                except requests.RequestException as exc:
                    exc.response, exc.request = response, request
                    response.close()
                    raise
            return response
