"""The Stripe client: every request of a run goes through one `StripeClient`.

It owns what is the same for every read: the base URL, auth (and refreshing an OAuth
token Stripe says expired), `Stripe-Version`, `Stripe-Account` or `Stripe-Context`
(`context.py`), paging (v1 cursors, v2 `next_page_url`), the rate limiter of each
account, the bound on requests in flight, retries, Stripe's clock and the errors a
person reads. Callers describe a read (`reads.py`) and get objects back;
it imports nothing of the streams, the sync modes or the tap.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import threading
import time
import typing as t
import uuid
from urllib.parse import urlencode, urlsplit

import backoff
import requests

from tap_stripe_connect.api import failures, metering
from tap_stripe_connect.api.auth import StripeOAuthAuthenticator
from tap_stripe_connect.api.body import body_problem, parse
from tap_stripe_connect.api.clock import StripeClock
from tap_stripe_connect.api.context import header_name, header_value, sent_account
from tap_stripe_connect.api.limiter import RateLimiter, endpoint_of
from tap_stripe_connect.api.reads import ACCOUNT, Kind, Read
from tap_stripe_connect.api.transport import Wire
from tap_stripe_connect.errors import (
    StripeAPIError,
    StripeEndpointMissingError,
    StripeNotFoundError,
    StripePermissionError,
    redact,
    request_label,
    stripe_error,
)
from tap_stripe_connect.settings import LOCAL_HOSTS
from tap_stripe_connect.stop import Stop

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tap_stripe_connect.settings import Settings

BODY_READ = 1 << 22
logger = logging.getLogger("tap-stripe-connect")


class Newest:
    """The guard on Stripe's documented newest-first order of a `created` list.

    `created` windows and their splits trust it: a window's last object bounds what is
    left to read, so a list out of order would be read twice (duplicates) or not at all.
    A page that breaks it stops the read with an error instead.
    """

    def __init__(self, read: Read) -> None:
        self.read = read
        self.last: tuple[int, str] | None = None

    def check(self, page: list[dict], response: requests.Response) -> None:
        if not (self.read.created or self.read.kind is Kind.EVENTS):
            return
        for obj in page:
            created = obj.get("created")
            if not isinstance(created, int):
                continue
            if self.last is not None and created > self.last[0]:
                request, _, request_id = request_label(response).partition(", ")
                raise StripeAPIError(
                    f"Stripe listed {request} out of its newest-first order for "
                    f"{failures.what_for(self.read)} ({obj.get('id')}, created {created}, "
                    f"came after {self.last[1]}, created {self.last[0]}); the tap relies "
                    "on that order to read each object once, so it stops here (nothing "
                    f"past the last STATE is lost). Run the tap again later. [{request_id}]",
                    response,
                )
            self.last = (created, str(obj.get("id")))


def target(
    read: Read, api_url: str, after: str | None, headers: dict[str, str]
) -> tuple[str, str | None]:
    """The URL of a read, and the form it posts (None: a GET)."""
    if read.kind is Kind.FILE:
        return file_url(read), None
    url, query, data = api_url + read.path, read.query(after), None
    if read.kind is Kind.CREATE:
        data, query = urlencode(query), []
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Idempotency-Key"] = str(uuid.uuid4())  # a retried POST creates nothing twice
    return (url + "?" + urlencode(query) if query else url), data


def file_url(read: Read) -> str:
    """A file's URL as Stripe gave it, if the credential may be sent there: https (plain
    http only to this machine, an emulator), as for setting 'api_url'."""
    url = urlsplit(read.path)
    if url.scheme == "https" or (url.scheme == "http" and url.hostname in LOCAL_HOSTS):
        return read.path
    raise StripeAPIError(
        f"Stripe gave {failures.what_for(read)} a file URL the tap will not send the "
        f"credential to ({url.scheme}://{url.hostname}{url.path}: not https); check "
        "setting 'api_url'."
    )


class StripeClient:
    """Reads Stripe for one run: `list`, `pages`, `retrieve`, `first` and `account`."""

    def __init__(
        self,
        settings: Settings,
        authenticator: t.Any,
        *,
        user_agent: str = "tap-stripe-connect",
        clock: StripeClock | None = None,
        stop: Stop | None = None,
        budget_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.user_agent = user_agent
        self.clock = clock or StripeClock()
        self.stop = stop or Stop()  # set by a signal: no request starts after that
        self.budget_clock = budget_clock  # the rate budgets' clock (tests inject one)
        #: Requests prepared and sent (through the one session of the run).
        self.wire = Wire(settings.max_workers, settings.request_timeout)
        self.session = self.wire.session
        self.in_flight = threading.Semaphore(settings.max_workers)
        #: `Stripe-Account` or `Stripe-Context` (setting `account_header`).
        self.account_header = header_name(settings.account_header, settings.api_key)
        #: Whether the credential's account is in live mode (a larger rate budget).
        self.livemode = False
        self.requests_by_endpoint: collections.Counter[str] = collections.Counter()
        self.retries_by_stream: collections.Counter[str] = collections.Counter()
        #: Told the stream (None: the tap's own reads) of every request and retry; of a
        #: request also its connected account (None: the credential's) and how Stripe's
        #: read allocation counts it (`Read.allotment`).
        self.on_request: Callable[[str | None, str | None, str], None] | None = None
        self.on_retry: Callable[[str | None], None] | None = None
        self._lock = threading.Lock()
        self._limiters: dict[str | None, RateLimiter] = {}
        #: The optional cap on a whole run's requests, across accounts (one budget).
        cap = settings.max_requests_per_second_total
        self.total_limiter = self.new_limiter(cap, cap) if cap else None

    # -- the reads -----------------------------------------------------------------------

    def pages(self, read: Read) -> Iterator[list[dict]]:
        """The objects of a list, page by page (newest first, `starting_after`; a v2
        list by its `next_page_url`)."""
        after = read.after
        seen: set[str] = set()
        with metering.counter(read) as counter:
            yield from self._pages(read, after, seen, counter)

    def _pages(
        self, read: Read, after: str | None, seen: set[str], counter: metering.Counter
    ) -> Iterator[list[dict]]:
        newest = Newest(read)
        while True:
            body, response = self.call(read, after)
            counter.increment()
            data = body.get("data") or []
            if data:
                newest.check(data, response)
                yield data
            cursor = next_cursor(read, body, data, response)
            if cursor is None:
                return
            # A cursor seen before means the list is cycling; paging on would never end.
            if cursor in seen:
                raise StripeAPIError(
                    f"Stripe returned the same page cursor twice ({cursor}) while listing "
                    f"{request_label(response)}; stopping instead of looping."
                )
            seen.add(cursor)
            after = cursor

    def list(self, read: Read) -> Iterator[dict]:
        """The objects of a list (or the events of an events read), one by one."""
        for page in self.pages(read):
            yield from page

    def first(self, read: Read) -> dict | None:
        """A list's first object, from one request: whether the credential may read it."""
        with metering.counter(read) as counter:
            body, _ = self.call(read.first_only())
            counter.increment()
        data = body.get("data") or []
        return data[0] if data else None

    def retrieve(self, read: Read) -> dict | None:
        """One object; None when Stripe no longer has it."""
        try:
            with metering.counter(read) as counter:
                body, _ = self.call(read)
                counter.increment()
        except StripeNotFoundError:
            return None
        return body

    def answer(self, read: Read) -> tuple[dict, requests.Response]:
        """The body and the response of a read that is not a list: a report run created
        (a `POST`, retried under one `Idempotency-Key`), a file downloaded (`.content`)."""
        with metering.counter(read) as counter:
            answered = self.call(read)
            counter.increment()
        return answered

    def account(self, address: str | None = None) -> dict | None:
        """The credential's own account, or the one at `address` (and Stripe's time,
        from the same response).

        Restricted keys often may not read it; Stripe then names it in the error.
        """
        account: dict | None
        read = dataclasses.replace(ACCOUNT, account=address) if address else ACCOUNT
        try:
            with metering.counter(read) as counter:
                account, _ = self.call(read)
                counter.increment()
        except StripePermissionError as exc:
            found = re.search(r"on account '(acct_[A-Za-z0-9]+)'", str(exc))
            account = {"id": found.group(1)} if found else None
        except (StripeNotFoundError, StripeEndpointMissingError) as exc:
            # Not needed when setting 'account_id' names the account (the run checks).
            logger.warning("%s", exc)
            account = None
        self.livemode = bool((account or {}).get("livemode"))
        return account

    # -- budgets -------------------------------------------------------------------------

    def limiter_for(self, account: str | None) -> RateLimiter:
        """Stripe's budgets are per account: each connected account has its own."""
        with self._lock:
            limiter = self._limiters.get(account)
            if limiter is None:
                limiter = self._limiters[account] = self.new_limiter(
                    self.settings.account_rate(self.livemode),
                    self.settings.max_requests_per_second_per_endpoint,
                )
            return limiter

    def forget_budget(self, account: str) -> None:
        """A connected account's units are over: its budget is let go (a new one next)."""
        with self._lock:
            self._limiters.pop(account, None)

    def new_limiter(self, rate: float, endpoint_rate: float) -> RateLimiter:
        return RateLimiter(rate, endpoint_rate, clock=self.budget_clock, sleep=self.stop.wait)

    def responses_slow(self) -> bool:
        """Whether any account's responses are slow (a sync then mostly waits)."""
        with self._lock:
            limiters = list(self._limiters.values())
        return any(limiter.responses_slow for limiter in limiters)

    # -- one request, with its retries ---------------------------------------------------

    def backoff_wait(self) -> t.Iterator[float]:
        """Seconds between tries: 0.5, 1, 2, ... up to 30 (before jitter)."""
        return t.cast("t.Iterator[float]", backoff.expo(base=2, factor=0.5, max_value=30))

    def call(self, read: Read, after: str | None = None) -> tuple[dict, requests.Response]:
        """The parsed body of `read` (one page of it), retried while retrying may help."""
        request = self.prepare(read, after)
        waits = self.backoff_wait()
        next(waits)  # a generator: the first value comes after one `send`
        started = time.monotonic()
        tries = 0
        while True:
            tries += 1
            self.stop.check()  # no page starts once the run is asked to stop
            try:
                return self.attempt(read, request)
            except (failures.Retriable, *failures.NETWORK_ERRORS) as exc:
                elapsed = time.monotonic() - started
                if (
                    tries > self.settings.max_retries
                    or elapsed >= self.settings.max_retry_seconds
                    or failures.untrusted(exc)
                ):
                    raise failures.giving_up(
                        read,
                        request,
                        exc,
                        tries=failures.tries_text(tries, elapsed),
                        settings=self.settings,
                    ) from None
                wait = min(
                    backoff.random_jitter(next(waits)), self.settings.max_retry_seconds - elapsed
                )
                self.retrying(read, exc, wait, tries)
                self.stop.wait(wait)

    def retrying(self, read: Read, exc: Exception, wait: float, tries: int) -> None:
        with self._lock:
            self.retries_by_stream[read.name] += 1
        if self.on_retry is not None:
            self.on_retry(read.stream)
        logger.getChild(read.name).warning(
            "Retrying %s in %.1fs (try %d): %s",
            failures.what_for(read),
            wait,
            tries,
            redact(str(exc)),
        )

    def prepare(self, read: Read, after: str | None = None) -> requests.PreparedRequest:
        headers = {"Stripe-Version": self.settings.api_version, "User-Agent": self.user_agent}
        name = self.account_header
        # A platform's own report of its connected accounts: no `Stripe-Account` (under
        # `Stripe-Context`, the platform's own context).
        base = None if read.as_itself and name != "Stripe-Context" else self.settings.account_id
        if account := header_value(name, base, read.account):
            headers[name] = account
        if read.v2 and after:
            url, data = self.settings.api_url + after, None  # a v2 list's `next_page_url`
        else:
            url, data = target(read, self.settings.api_url, after, headers)
        # A GET of a URL of the tap's own making (`api_url`, a path of ids, an encoded query).
        own = data is None and read.kind is not Kind.FILE and not (read.v2 and after)
        return self.wire.prepare(read.method, url, headers, data, own=own)

    def attempt(
        self, read: Read, request: requests.PreparedRequest
    ) -> tuple[dict, requests.Response]:
        """One try: through the account's budget, the run's total (if capped) and the bound
        on requests in flight (a place taken once the budgets have room: see limiter.py)."""
        request = self.authenticator(request)
        endpoint = endpoint_of(read.method, urlsplit(read.path).path)
        limiter = self.limiter_for(read.account)
        grant = limiter.acquire(
            endpoint, also=self.total_limiter, slot=self.in_flight, check=self.stop.check
        )
        try:
            with self._lock:
                self.requests_by_endpoint[endpoint] += 1
            if self.on_request is not None:
                self.on_request(read.stream, read.account, read.allotment)
            response = self.wire.send(request)
            # Headers are in, the body not yet read: the sooner a response, the sooner its
            # place in the rate budget is free again (see limiter.py).
            grant.responded()
            metering.log_duration(read, response)
            # Kept where requests keeps a body it read itself (`response.json()` reads it).
            response._content = content = read_body(response)
        finally:
            self.in_flight.release()
        return self.check(read, response, content, limiter), response

    def check(
        self, read: Read, response: requests.Response, content: bytes, limiter: RateLimiter
    ) -> dict:
        """The body of a 2xx answer, or the error (retriable or not) of any other."""
        self.clock.observe(response)
        status = response.status_code
        if status < 300:
            if read.kind is Kind.FILE:
                return {}  # the contents are the response's (`download`)
            return checked_body(read, response, content)
        # Expired, or (a Stripe App's) revoked by a refresh another run made: refresh once.
        if status == 401 and stripe_error(response).get("code") in (
            "api_key_expired",
            "platform_api_key_expired",
        ):
            used = (response.request.headers.get("Authorization") or "")[len("Bearer ") :]
            if self.authenticator.expire(used):
                # The next try refreshes the token once (shared by every waiting thread).
                raise failures.Retriable(failures.retriable_message(response), response)
        if status == 429:
            limiter.on_throttled()
        if failures.should_retry(response):
            raise failures.Retriable(failures.retriable_message(response), response)
        oauth = self.authenticator if isinstance(
            self.authenticator, StripeOAuthAuthenticator
        ) else None
        raise failures.fatal_error(
            read,
            response,
            account=sent_account(response.request.headers)
            or self.own_account_id
            or (oauth.account_id if oauth else None),
            oauth=oauth is not None,
            reconnect=self.authenticator.reconnect,
        )

    #: The credential's own account id, once known (errors name it).
    own_account_id: str | None = None


def checked_body(read: Read, response: requests.Response, content: bytes) -> dict:
    """The parsed body of a 2xx answer, checked to be the Stripe object or list `read`
    expects (a body that is not is retried)."""
    try:
        body = parse(content)
    except ValueError as exc:
        # A body cut short or not JSON at all: the request itself was fine.
        raise failures.Retriable(
            f"Stripe sent an unreadable response body ({request_label(response)})", response
        ) from exc
    problem = body_problem(
        body,
        listing=read.listing,
        v2=read.v2,
        # Also the `events` stream's own list: every item an event.
        events=read.path == "/v1/events",
        created=read.created and read.kind is Kind.LIST,
    )
    if problem:
        # JSON, but not a Stripe object: a proxy's page, or a body cut short.
        raise failures.Retriable(
            f"Stripe sent a malformed response body: {problem} ({request_label(response)})",
            response,
        )
    return t.cast("dict", body)


def read_body(response: requests.Response) -> bytes:
    """The body, read here so that a connection broken mid-body still names the
    response (and its Request-Id) in the error.

    In 4 MB reads instead of requests' 10 KB ones: each read gives up the GIL and waits
    to take it back, up to 5 ms while other threads parse pages, ~40 times for a page
    of invoices.
    """
    try:
        return b"".join(response.iter_content(BODY_READ)) or b""
    except requests.RequestException as exc:
        response.close()
        raise failures.BodyBroken(response, exc) from exc


def next_cursor(
    read: Read, body: dict, data: list[dict], response: requests.Response
) -> str | None:
    """Where the next page starts: after the page's last object (`starting_after`), or a
    v2 list's `next_page_url`; None when the list ended."""
    if not read.v2:
        return str(data[-1]["id"]) if body.get("has_more") and data else None
    following = body.get("next_page_url") or None
    # Followed on the same API only: the key goes with it.
    if following is not None and not following.startswith(read.path.rsplit("/", 1)[0] + "/"):
        raise StripeAPIError(
            f"Stripe named a next page that cannot be followed ({following[:80]}) while "
            f"listing {request_label(response)}; stopping."
        )
    return following
