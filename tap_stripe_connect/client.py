"""The Stripe HTTP client and the base stream every resource shares.

Auth, `Stripe-Version`/`Stripe-Account`, cursor paging, retries, error messages, Stripe's
clock and record shaping live here once; `streams.py` only says which resource a stream is.
"""

from __future__ import annotations

import decimal
import email.utils
import functools
import threading
import time
import typing as t
from datetime import datetime, timezone

import backoff
import msgspec
import requests
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.helpers._typing import TypeConformanceLevel
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
from tap_stripe_connect.limiter import endpoint_of
from tap_stripe_connect.records import RecordShaper

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from singer_sdk.helpers.types import Context
    from singer_sdk.streams.rest import HTTPRequest, PageContext

    from tap_stripe_connect.resources import Resource
    from tap_stripe_connect.tap import TapStripeConnect

PAGE_SIZE = 100  # Stripe's maximum `limit`.
# Stripe's `Date` header has one-second resolution: step back one second so that a
# bookmark taken from it never lies after the moment the data was read.
DATE_RESOLUTION = 1
FAR_FUTURE = 2**33
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
    return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_to_unix(value: str) -> int:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


class StripeStream(RESTStream[str | None]):
    """A Stripe list endpoint described by a `Resource`."""

    resource: t.ClassVar[Resource]

    @property
    def stripe_tap(self) -> TapStripeConnect:
        return t.cast("TapStripeConnect", self._tap)
    # Stripe objects carry no update time; `updated` is the Stripe time from which the
    # record is known current (see README, "How incremental sync works").
    replication_key = "updated"

    # -- request building ---------------------------------------------------------

    @property
    def url_base(self) -> str:
        return str(self.config.get("api_url", "https://api.stripe.com")).rstrip("/")

    @property
    def http_headers(self) -> dict[str, str]:
        headers = {
            "Stripe-Version": str(self.config.get("api_version", "2024-06-20")),
            "User-Agent": f"tap-stripe-connect/{self.stripe_tap.plugin_version}",
        }
        if account := self.config.get("account_id"):
            headers["Stripe-Account"] = str(account)
        return headers

    def get_http_request(self, *, page: PageContext) -> HTTPRequest:
        request = super().get_http_request(page=page)
        # Platforms read each connected account as its own partition.
        if account := (page.stream_context or {}).get("account_id"):
            request.headers["Stripe-Account"] = str(account)
        return request

    @property
    def partitions(self) -> list[dict] | None:
        accounts = self.stripe_tap.connected_accounts
        return [{"account_id": account} for account in accounts] if accounts else None

    @property
    def authenticator(self) -> t.Any:
        return self.stripe_tap.authenticator

    @property
    def requests_session(self) -> requests.Session:
        return t.cast("requests.Session", self.stripe_tap.requests_session)

    @property
    def timeout(self) -> int:
        return int(self.config.get("request_timeout", 60))

    def get_new_paginator(self) -> StripeCursorPaginator:
        return StripeCursorPaginator()

    def get_url(self, context: Context | None) -> str:
        context = context or {}
        if "events_since" in context:
            return f"{self.url_base}/v1/events"
        path = self.resource.path.replace("{parent_id}", str(context.get("parent_id")))
        if "retrieve" in context:
            path = f"{path}/{context['retrieve']}"
        return self.url_base + path

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        """Query parameters for the three kinds of read: list, events, retrieve."""
        context = context or {}
        params: dict[str, t.Any] = {}
        if "retrieve" not in context:
            params["limit"] = PAGE_SIZE
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
        if self.resource.created_filter:
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
                parsed_body(response)
            except ValueError as exc:
                # A body cut short or not JSON at all: the request itself was fine.
                raise RetriableAPIError(
                    f"Stripe sent an unreadable response body ({request_label(response)})",
                    response,
                ) from exc
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
        return int(self.config.get("max_retries", 8)) + 1

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
            max_time=float(self.config.get("max_retry_seconds", 300)),
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
            logger=None,
        )(func)

        @functools.wraps(func)
        def call(*args: t.Any, **kwargs: t.Any) -> requests.Response:
            try:
                return t.cast("requests.Response", retrying(*args, **kwargs))
            except RetriableAPIError as exc:
                raise TapError(
                    f"Giving up on stream '{self.name}' after retries: {exc}. Stripe may be "
                    "having trouble; run the tap again later (progress so far is in STATE)."
                ) from None
            except requests.exceptions.RequestException as exc:
                raise TapError(
                    f"Could not reach Stripe at {self.url_base} (setting 'api_url') for stream "
                    f"'{self.name}': {type(exc).__name__}. Check the URL and the network."
                ) from None

        return call

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
        record["updated"] = unix_to_rfc3339(updated) if updated is not None else None
        record["account_id"] = (context or {}).get("account_id") or self.stripe_tap.account_id
        record["_sdc_deleted_at"] = None
        return record

    @property
    def state_manager(self) -> LockedStateManager:
        # Streams sync in parallel and share one state dict (see concurrency.py).
        if self._state_manager is None:
            self._state_manager = LockedStateManager(
                tap_name=self.tap_name,
                stream_name=self.name,
                tap_state=self._tap_state,
                state_partitioning_keys=self.state_partitioning_keys,
                is_sorted=self.is_sorted,
                check_sorted=self.check_sorted,
            )
        return t.cast("LockedStateManager", self._state_manager)

    def get_replication_key_signpost(self, context: Context | None = None) -> None:
        # The SDK caps bookmarks at this machine's clock; ours come from Stripe's clock
        # and never pass the start of the read (see `list_all`).
        return None

    def list_all(self, context: Context | None) -> Iterator[dict]:
        """Every object created at or after `start_date`, each once.

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
        if not self.resource.created_filter:
            batches: Iterable[list[dict]] = pages_of(self.request_records(context))
        else:
            lower = self.config_start_timestamp() or 0
            # Objects created after the read began reach the next sync through events.
            upper = (started or FAR_FUTURE) + DATE_RESOLUTION + 1
            endpoint = endpoint_of("GET", self.resource.path)
            ranges = gaps(lower, upper, resumed.done) if resumed else [(lower, upper)]
            batches = list_windows(
                lambda window: self.request_records({**(context or {}), "window": window}),
                [Window(a, b) for a, b in ranges],
                self.stripe_tap.window_workers,
                may_split=lambda: not self.stripe_tap.limiter.saturated(endpoint),
            )
        for batch in batches:
            if started is None:  # no response had been seen before this read began
                started = self.stripe_tap.clock.now()
            # A table version covers the whole table, so it cannot serve a table that
            # holds several accounts' partitions.
            if self._stream_version is None and not self.stripe_tap.connected_accounts:
                self.use_table_version(int(started or 0) * 1000)
            self.prefetch_children(batch, context)
            for obj in batch:
                yield self.shape(obj, started, context)
            # Resumed after the batch's last yield: its records (and their children's)
            # are written, so the `created` range it completes can go into STATE.
            covers = getattr(batch, "covers", None)
            if covers is not None and started is not None:
                self.checkpoint(context, started, covers)
        if self._stream_version is not None:
            self.activate_table_version(context)
        self.finish_listing(context, started)
        self.mark_synced(context, started)
        if resumed is not None and self.resource.event_types:
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
        lag = int(self.config.get("event_lag_seconds", 60))
        # Events must still reach back to the listing's start (Stripe keeps 30 days),
        # with a day to spare for the rest of the listing.
        too_old = (
            bool(self.resource.event_types)
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
        """Record a written `created` range of the listing and emit STATE."""
        with RUN_LOCK:
            state = self.get_context_state(context)
            entry = state.get(LISTING)
            listing = (
                Listing.from_state(entry)
                if entry is not None
                else Listing(started, self._stream_version)
            )
            listing.complete(*covers)
            state[LISTING] = listing.to_state()
            self.state_manager.is_flushed = False
            self._write_state_message()

    def finish_listing(self, context: Context | None, started: int | None) -> None:
        """The listing is complete: its start becomes the bookmark, in the same STATE."""
        with RUN_LOCK:
            state = self.get_context_state(context)
            had_listing = state.pop(LISTING, None) is not None
            if had_listing and started is not None and self.selected:
                state["replication_key"] = "updated"
                state["replication_key_value"] = unix_to_rfc3339(started)

    def use_table_version(self, version: int | None) -> None:
        """Tag this stream's (and its children's) records with a table version."""
        for stream in (self, *self.descendent_streams):
            stream._stream_version = version

    def activate_table_version(self, context: Context | None) -> None:
        """After a complete listing: rows the listing did not contain are gone from Stripe.

        Deletions older than Stripe's 30 days of events (or before a first sync) leave no
        event; an ACTIVATE_VERSION message lets targets drop the rows of earlier versions.
        It is written only once every record of the listing has been written.
        """
        version = self._stream_version
        for stream in (self, *self.descendent_streams):
            if stream.selected and getattr(stream, "schema_written", True):
                stream._write_activate_version_message(t.cast("int", version))
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
        if started is None or not self.selected:
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
        if bookmark is None or not self.resource.event_types:
            yield from self.list_all(context)
        else:
            yield from self.changes_since(rfc3339_to_unix(bookmark), context)

    def changes_since(self, bookmark: int, context: Context | None) -> Iterator[dict]:
        """The newest state of each object changed since the bookmark, once, from events.

        Events are read from the bookmark minus a lag, because Stripe's event list is
        eventually consistent: an event can appear a little after its `created` time.
        """
        since = bookmark - int(self.config.get("event_lag_seconds", 60))
        # Changes belong to the table version of the last complete listing.
        self.use_table_version(self.get_context_state(context).get("table_version"))
        started: int | None = None
        seen: set[str] = set()
        start_date = self.config_start_timestamp()
        for event in self.request_records({**(context or {}), "events_since": since}):
            if started is None:
                started = self.stripe_tap.clock.now()
                if self.events_expired(since, started):
                    self.use_table_version(None)
                    yield from self.list_all(context)
                    return
            obj = event["data"]["object"]
            # Events are newest first: the first one seen for an object is its latest state.
            if obj.get("id") is None or obj["id"] in seen:
                continue
            seen.add(obj["id"])
            if start_date is not None and int(obj.get("created") or start_date) < start_date:
                continue
            yield self.record_from_event(event, context)
        if started is None:
            started = self.stripe_tap.clock.now()
            if self.events_expired(since, started):
                self.use_table_version(None)
                yield from self.list_all(context)
                return
        self.mark_synced(context, started)

    def events_expired(self, since: int, now: int | None) -> bool:
        """Whether events since `since` may already be gone (Stripe keeps 30 days)."""
        if now is None or since >= now - EVENT_RETENTION:
            return False
        self.logger.warning(
            "Stream '%s': its bookmark is older than the 30 days of events Stripe keeps "
            "(less the %ss lag); re-reading every object of the stream instead.",
            self.name,
            self.config.get("event_lag_seconds", 60),
        )
        return True

    def record_from_event(self, event: dict, context: Context | None) -> dict:
        obj = event["data"]["object"]
        deleted_at = event["created"] if event["type"] in self.resource.delete_events else None
        if deleted_at is None and event.get("api_version") != self.api_version:
            # Payloads are rendered in the API version of the event's day; fetch the
            # object again so every record has the pinned shape.
            fetched = self.retrieve(obj["id"], context)
            # Stripe answers 404, or 200 with `deleted: true`, for an object deleted since.
            if fetched is None or fetched.get("deleted"):
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

    @property
    def api_version(self) -> str:
        return str(self.config.get("api_version", "2024-06-20"))

    # Records are shaped in `get_records`; they already match the schema: times are
    # RFC 3339 strings, fractions Decimals (written as JSON numbers), and fields the
    # schema does not name are allowed by it. The SDK's default (RECURSIVE) conformance
    # walks every nested value of every record again and took ~45% of the CPU of a sync.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        return row


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

    def send(self, request: requests.PreparedRequest, **kwargs: t.Any) -> requests.Response:  # type: ignore[override]
        with self._in_flight:
            self._before_send(request)
            return super().send(request, **kwargs)
