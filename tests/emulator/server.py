"""The HTTP side of the emulator: Stripe's v1 read API on a local `ThreadingHTTPServer`.

`Emulator` owns a `Store` (data, clock, mutations) and a server thread. Each request goes
through: control endpoints (`/_emulator/...`, not recorded) -> latency -> injected fault
-> authentication -> routing and permissions -> rate limits -> random failures -> the
endpoint. Every response carries `Request-Id`, `Date` (emulator clock), `Content-Type`,
`Content-Length` and `Stripe-Version`; connections are kept alive (HTTP/1.1).
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import io
import json
import random
import re
import socket
import struct
import sys
import threading
import time
import traceback
import typing as t
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from requests.structures import CaseInsensitiveDict

from tests.emulator.billing import KINDS
from tests.emulator.generate import API_VERSION, BASE62, DEFAULT_CLOCK
from tests.emulator.reports import Reports
from tests.emulator.store import STREAMS, ApiError, Store, dumps, no_such
from tests.emulator.versions import ENDIVE
from tests.emulator.versions import render as render_version

DEFAULT_KEY = "sk_test_emulator"
_REQUEST_IDS = random.Random()
_INT = re.compile(r"-?\d+")
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z_]+)?")
_SUBSCRIPTION_STATUSES = ("active", "all", "canceled", "ended", "incomplete",
                          "incomplete_expired", "past_due", "paused", "trialing", "unpaid")
_INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")
MAX_TYPES = 20


@dataclass(frozen=True)
class RequestRecord:
    """One `/v1` request as the emulator saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    #: Wall-clock time (time.time()) when the request arrived.
    time: float
    #: Why the response was not the endpoint's own: "injected", "rate_limit", "random".
    fault: str | None = None
    request_id: str = ""
    #: Seconds spent answering, latency included.
    duration: float = 0.0


@dataclass
class Fault:
    status: int
    count: int
    path_prefix: str = "/v1/"
    should_retry: bool | None = True
    body: Any = None
    reset_connection: bool = False
    stall_seconds: float = 0.0
    truncated: bool = False


@dataclass
class _Exchange:
    """One request in flight and what the response needs beyond status and body."""

    method: str
    path: str
    query: dict[str, list[str]]
    version: str
    request_id: str
    extra: dict[str, str] = field(default_factory=dict)
    mode: Fault | None = None
    fault_tag: str | None = None


# -- request parsing --------------------------------------------------------------------------

COMMON = {"limit": "int", "starting_after": "str", "ending_before": "str", "expand": "array"}
LIST_PARAMS: dict[str, dict[str, str]] = {
    "charges": {**COMMON, "created": "range", "customer": "str", "payment_intent": "str",
                "transfer_group": "str"},
    "customers": {**COMMON, "created": "range", "email": "str", "test_clock": "str"},
    "invoices": {**COMMON, "created": "range", "customer": "str", "subscription": "str",
                 "status": "str", "collection_method": "str", "due_date": "range"},
    "subscriptions": {**COMMON, "created": "range", "customer": "str", "status": "str",
                      "collection_method": "str", "price": "str", "test_clock": "str",
                      "current_period_end": "range", "current_period_start": "range"},
    "events": {**COMMON, "created": "range", "type": "str", "types": "array",
               "delivery_success": "str"},
    "invoice_line_items": COMMON,
    "subscription_items": {**COMMON, "subscription": "str"},
    # The streams of billing.py: each lists its own filters.
    **{name: kind.list_params for name, kind in KINDS.items()},
}
RETRIEVE_PARAMS = {"expand": "array"}
RANGE_OPS = ("gt", "gte", "lt", "lte")
#: Simple equality filters: query parameter -> object field.
EQUALITY_FILTERS = {"customer", "payment_intent", "transfer_group", "email", "subscription",
                    "collection_method", "test_clock"}


def _split_key(key: str) -> tuple[str, str | None]:
    """`created[gte]` -> (`created`, `gte`); `expand[]` -> (`expand`, ``); `limit` -> (.., None)."""
    if key.endswith("]") and "[" in key:
        name, _, sub = key[:-1].partition("[")
        return name, sub
    return key, None


def _int(value: str, param: str) -> int:
    if not _INT.fullmatch(value.strip()):
        raise ApiError(400, f"Invalid integer: {value}", code="parameter_invalid_integer",
                       param=param)
    return int(value)


def parse_params(raw: dict[str, list[str]], spec: dict[str, str]) -> dict[str, Any]:
    """Validate a query string against an endpoint's parameters, Stripe style."""
    out: dict[str, Any] = {}
    for key, values in raw.items():
        name, sub = _split_key(key)
        kind = spec.get(name)
        if kind is None or (kind in ("int", "str") and sub is not None):
            raise ApiError(400, f"Received unknown parameter: {key}", code="parameter_unknown",
                           param=key)
        if kind == "array":
            if sub is None or not (sub == "" or sub.isdigit()):
                raise ApiError(400, f"Invalid array: {key} must be given as {name}[]",
                               code="parameter_invalid_array", param=name)
            out.setdefault(name, []).extend(values)
            continue
        value = values[-1]
        if value == "":
            raise ApiError(
                400,
                f"You passed an empty string for '{key}'. We assume empty values are an "
                f"attempt to unset a parameter; however '{key}' cannot be unset. You should "
                f"remove '{key}' from your request or supply a non-empty value.",
                code="parameter_invalid_empty", param=key,
            )
        if kind == "range":
            if sub is None:
                out.setdefault(name, {})["eq"] = _int(value, key)
            elif sub in RANGE_OPS:
                out.setdefault(name, {})[sub] = _int(value, key)
            else:
                raise ApiError(400, f"Received unknown parameter: {key}",
                               code="parameter_unknown", param=key)
        elif kind == "int":
            out[name] = _int(value, key)
        else:
            out[name] = value
    limit = out.get("limit")
    if limit is not None:
        if limit < 1:
            raise ApiError(400, "This value must be greater than or equal to 1.",
                           code="parameter_invalid_integer", param="limit")
        if limit > 100:
            raise ApiError(400, "This value must be less than or equal to 100.",
                           code="parameter_invalid_integer", param="limit")
    if "starting_after" in out and "ending_before" in out:
        raise ApiError(400, "You may only specify one of these parameters: ending_before, "
                       "starting_after.", param="ending_before")
    return out


def _in_range(value: Any, ops: dict[str, int]) -> bool:
    if not isinstance(value, int):
        return False
    checks = {"eq": value.__eq__, "gt": value.__gt__, "gte": value.__ge__,
              "lt": value.__lt__, "lte": value.__le__}
    return all(checks[op](bound) for op, bound in ops.items())


def _field_is(name: str, value: object) -> Callable[[dict], bool]:
    return lambda obj: obj.get(name) == value


def _field_or_id_is(name: str, value: object) -> Callable[[dict], bool]:
    def matches(obj: dict) -> bool:
        field = obj.get(name)
        return field == value or (isinstance(field, dict) and field.get("id") == value)

    return matches


def _field_in_range(name: str, ops: dict[str, int]) -> Callable[[dict], bool]:
    return lambda obj: _in_range(obj.get(name), ops)


def _status_in(*statuses: str, exclude: str | None = None) -> Callable[[dict], bool]:
    allowed = frozenset(statuses) - {exclude}
    return lambda obj: obj["status"] in allowed


def _has_price(items: dict[str, list[dict]], price: str) -> Callable[[dict], bool]:
    return lambda sub: any(item["price"]["id"] == price for item in items[sub["id"]])


def mask_key(key: str) -> str:
    """`sk_test_****abcd`: Stripe echoes a key with all but its kind and last 4 hidden."""
    match = re.match(r"[a-z]+_(test_|live_)?", key)
    prefix = match.group(0) if match else key[:3]
    return f"{prefix}****{key[-4:]}"


# -- fault bodies -----------------------------------------------------------------------------

def default_error(status: int, key: str, account: str) -> ApiError:
    """A realistic Stripe error for an injected status."""
    masked = mask_key(key or DEFAULT_KEY)
    if status == 401:
        return ApiError(401, f"Invalid API Key provided: {masked}")
    if status == 403:
        return ApiError(403, f"The provided key '{masked}' does not have the required "
                        f"permissions for this endpoint on account '{account}'. Having the "
                        "'rak_charge_read' permission would allow this request to continue.")
    if status == 404:
        return ApiError(404, "No such object", code="resource_missing", param="id")
    if status == 409:
        return ApiError(409, "This object cannot be accessed right now because another API "
                        "request or Stripe process is currently accessing it. If you see this "
                        "error intermittently, retry the request.", code="lock_timeout")
    if status == 429:
        return ApiError(429, "Request rate limit exceeded. You can learn more about rate "
                        "limits here https://stripe.com/docs/rate-limits.", code="rate_limit")
    if status == 402:
        return ApiError(402, "Your card was declined.", type="card_error", code="card_declined")
    if status >= 500:
        return ApiError(status, "Sorry, something went wrong. We've already been notified of "
                        "the problem, but if you need any help, you can reach us at "
                        "support.stripe.com/contact.", type="api_error")
    return ApiError(status, "Invalid request (injected by the Stripe emulator).")


# -- the HTTP server --------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are closed after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: no per-request logging

    def do_GET(self) -> None:
        self.server.emulator._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.emulator._handle(self, "POST")

    def do_DELETE(self) -> None:
        self.server.emulator._handle(self, "DELETE")


class _NoSocket:
    """The connection of an in-process request: breaking it is left to the caller."""

    def setsockopt(self, *args: Any) -> None:
        raise OSError("no socket")

    def close(self) -> None:
        raise OSError("no socket")


class _LocalHandler:
    """What `Emulator._handle` reads from and writes to, for a request without a socket."""

    def __init__(self, target: str, headers: dict[str, str], body: bytes) -> None:
        self.path = target
        self.headers = CaseInsensitiveDict(headers)
        self.rfile = io.BytesIO(body)
        self.wfile = io.BytesIO()
        self.close_connection = False
        self.connection = _NoSocket()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conn_lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return  # clients going away is normal
        super().handle_error(request, client_address)


class _RateLimiter:
    """Sliding one-second windows per key-account and per key-account-endpoint."""

    def __init__(self, global_rps: float | None, endpoint_rps: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.global_rps = global_rps
        self.endpoint_rps = endpoint_rps
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[Any, deque[float]] = {}

    def check(self, scope: tuple[str, str], endpoint: str) -> str | None:
        """None if the request may proceed (and counts it), else the limit's name."""
        if not self.global_rps and not self.endpoint_rps:
            return None
        now = self._clock()
        with self._lock:
            windows = []
            for key, limit in (((scope,), self.global_rps), ((scope, endpoint), self.endpoint_rps)):
                window = self._windows.setdefault(key, deque())
                while window and window[0] <= now - 1.0:
                    window.popleft()
                windows.append((window, limit))
            if self.global_rps and len(windows[0][0]) >= self.global_rps:
                return "global-rate"
            if self.endpoint_rps and len(windows[1][0]) >= self.endpoint_rps:
                return "endpoint-rate"
            for window, _limit in windows:
                window.append(now)
            return None


_ROUTES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"/v1/account"), "account", "GET /v1/account"),
    (re.compile(r"/v1/invoices/([^/]+)/lines"), "invoice_line_items",
     "GET /v1/invoices/:id/lines"),
    *(
        (re.compile(rf"/v1/{name}"), name, f"GET /v1/{name}")
        for name in ("charges", "customers", "invoices", "subscriptions", "subscription_items",
                     "events")
    ),
    *(
        (re.compile(rf"/v1/{name}/([^/]+)"), name, f"GET /v1/{name}/:id")
        for name in ("charges", "customers", "invoices", "subscriptions", "subscription_items",
                     "events")
    ),
    # The streams of billing.py: their lists of a parent's children, then list and retrieve.
    (re.compile(r"/v1/credit_notes/([^/]+)/lines"), "credit_note_line_items",
     "GET /v1/credit_notes/:id/lines"),
    (re.compile(r"/v1/customers/([^/]+)/payment_methods"), "payment_methods",
     "GET /v1/customers/:id/payment_methods"),
    *(
        route
        for name, kind in KINDS.items() if kind.parent is None
        for route in (
            (re.compile(re.escape(kind.retrieve_path)), name, f"GET {kind.retrieve_path}"),
            (re.compile(re.escape(kind.retrieve_path) + r"/([^/]+)"), name,
             f"GET {kind.retrieve_path}/:id"),
        )
    ),
]
#: Lists of one parent's children (the path's id is the parent's, not the object's).
_PARENT_LISTS = frozenset({"GET /v1/invoices/:id/lines", "GET /v1/credit_notes/:id/lines",
                           "GET /v1/customers/:id/payment_methods"})


def _route(method: str, path: str) -> tuple[str, str, tuple[str, ...]]:
    """(stream, endpoint template, path ids) for a path, or a 404 like Stripe's."""
    for pattern, stream, endpoint in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return stream, endpoint, match.groups()
    raise ApiError(404, f"Unrecognized request URL ({method}: {path}). Please see "
                   "https://stripe.com/docs or we can help at https://support.stripe.com/.")


_CONTROL_ACTIONS = (
    "advance", "update", "create", "delete", "cancel_subscription", "pay_invoice",
    "refund_charge", "add_invoice_lines", "set_event_api_version", "inject", "set_latency",
    "set_rate_limit", "set_fail_rate", "clear_requests",
)


class Emulator:
    """A local Stripe API v1 (read side) with deterministic data; see the package docs."""

    def __init__(
        self,
        objects: int | dict[str, int] = 50,
        seed: int = 1,
        *,
        lines_per_invoice: Callable[[int], int] | int | None = None,
        items_per_subscription: Callable[[int], int] | int | None = None,
        api_keys: dict[str, set[str] | None] | None = None,
        latency: tuple[float, float] = (0, 0),
        rate_limit: float | None = None,
        endpoint_rate_limit: float | None = None,
        fail_rate: float = 0.0,
        clock: int = DEFAULT_CLOCK,
        freeze_clock: bool = False,
        varied_pricing: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        limit_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = Store(objects, seed, clock=clock, lines_per_invoice=lines_per_invoice,
                           items_per_subscription=items_per_subscription,
                           freeze_clock=freeze_clock, varied_pricing=varied_pricing)
        self.api_keys: dict[str, set[str] | None] = (
            dict(api_keys) if api_keys is not None else {DEFAULT_KEY: None}
        )
        self.api_key = next(
            (k for k, v in self.api_keys.items() if v is None and not k.startswith("pk_")),
            next(iter(self.api_keys), DEFAULT_KEY),
        )
        self.account_id: str = self.store.account["id"]
        self.host = host
        self._port = port
        self._latency = (float(latency[0]), float(latency[1]))
        #: The clock the rate limits count requests on (tests inject one).
        self.limit_clock = limit_clock
        self._limiter = _RateLimiter(rate_limit, endpoint_rate_limit, limit_clock)
        #: Waits out a response's latency (tests replace it to see requests wait together).
        self.latency_wait: Callable[[float], object] = self._stop_wait
        self.fail_rate = float(fail_rate)
        self._rng = random.Random(f"emulator-faults-{seed}")
        self._rng_lock = threading.Lock()
        self._faults: list[Fault] = []
        self._fault_lock = threading.Lock()
        #: Misbehaviour switches (see `unserve`, `scramble_order`, `add_undeclared`).
        self.unserved: set[str] = set()
        self.scrambled: set[str] = set()
        self.undeclared: dict[str, dict[str, Any]] = {}
        #: (path prefix, callback): run once before the next request under that path.
        self._before: list[tuple[str, Callable[[], object]]] = []
        self._records: list[RequestRecord] = []
        self._records_lock = threading.Lock()
        self.rate_limited = 0
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: Where clients reach this account when another server answers for it (a Connect
        #: platform): the address of its report files.
        self.public_url: str | None = None
        #: Stripe's Reports API over this account's balance transactions (reports.py).
        self.reports = Reports(
            lambda: {self.account_id: self.store.objects("balance_transactions")},
            self.store.now,
            version=lambda: len(self.store.collection("balance_transactions").keys),
            settled=lambda: {self.account_id: self.store.settled()},
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Emulator:
        if self._server is not None:
            return self
        self._stop.clear()
        self._server = _Server((self.host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="stripe-emulator", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start()")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- data and mutations (see Store) --------------------------------------------------------

    @property
    def clock(self) -> int:
        return self.store.now()

    def advance(self, seconds: float) -> int:
        return self.store.advance(seconds)

    def objects(self, stream: str) -> list[dict]:
        return self.store.objects(stream)

    def get(self, stream: str, obj_id: str) -> dict | None:
        return self.store.get(stream, obj_id)

    def events(self) -> list[dict]:
        return self.store.objects("events")

    def update(self, stream: str, obj_id: str, changes: dict,
               event_type: str | None = None) -> dict:
        return self.store.update(stream, obj_id, changes, event_type)

    def create(self, stream: str, **fields: Any) -> dict:
        return self.store.create(stream, **fields)

    def delete(self, stream: str, obj_id: str, cancel_subscriptions: bool = True) -> dict:
        return self.store.delete(stream, obj_id, cancel_subscriptions)

    def cancel_subscription(self, sub_id: str) -> dict:
        return self.store.cancel_subscription(sub_id)

    def pay_invoice(self, inv_id: str) -> dict:
        return self.store.pay_invoice(inv_id)

    def change_quantity(self, sub_id: str, quantity: int) -> dict:
        return self.store.change_quantity(sub_id, quantity)

    def refund_charge(self, charge_id: str, amount: int | None = None) -> dict:
        return self.store.refund_charge(charge_id, amount)

    def add_invoice_lines(self, inv_id: str, n: int = 1) -> dict:
        return self.store.add_invoice_lines(inv_id, n)

    def pull_invoice_items(self, inv_id: str, item_ids: list[str]) -> dict:
        return self.store.pull_invoice_items(inv_id, item_ids)

    def update_account(self, changes: dict) -> dict:
        return self.store.update_account(changes)

    def set_event_api_version(self, version: str) -> None:
        self.store.set_event_api_version(version)

    # -- faults and limits ---------------------------------------------------------------------

    def inject(  # noqa: PLR0917 (the documented signature takes these positionally)
        self,
        status: int,
        count: int = 1,
        path_prefix: str = "/v1/",
        should_retry: bool | None = True,
        body: Any = None,
        reset_connection: bool = False,
        stall_seconds: float = 0,
        truncated: bool = False,
    ) -> None:
        """The next `count` requests whose path starts with `path_prefix` get this fault.

        `status` 200 serves the real response, altered by `truncated` (half the body, with
        a matching Content-Length), `reset_connection` (half the body, then a TCP reset),
        `stall_seconds` (sleep before answering) or `body` (sent instead: a str/bytes is
        sent raw, anything else as JSON). Other statuses answer with `body` or a realistic
        Stripe error, with `Stripe-Should-Retry` set from `should_retry` (None: no header).
        """
        with self._fault_lock:
            self._faults.append(Fault(int(status), int(count), path_prefix, should_retry, body,
                                      reset_connection, float(stall_seconds), truncated))

    def clear_faults(self) -> None:
        with self._fault_lock:
            self._faults.clear()
        self.unserved.clear()
        self.scrambled.clear()
        self.undeclared.clear()

    def unserve(self, *endpoints: str) -> None:
        """Answer these endpoints ("GET /v1/account", "GET /v1/customers/:id/payment_methods")
        with Stripe's 404 for a URL it does not know, as a server that lacks them would."""
        self.unserved.update(endpoints)

    def scramble_order(self, *streams: str) -> None:
        """List these streams' pages oldest first: out of Stripe's documented order."""
        self.scrambled.update(streams)

    def add_undeclared(self, stream: str, **fields: Any) -> None:
        """Serve `stream`'s objects with these extra top-level fields (as a newer Stripe)."""
        self.undeclared.setdefault(stream, {}).update(fields)

    def _stop_wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def before_request(self, path_prefix: str, callback: Callable[[], object]) -> None:
        """Run `callback` once, just before serving the next `/v1` request whose path starts
        with `path_prefix` (Stripe's data changing while a client is between two requests)."""
        with self._fault_lock:
            self._before.append((path_prefix, callback))

    def set_latency(self, mean_ms: float, jitter_ms: float = 0) -> None:
        self._latency = (float(mean_ms), float(jitter_ms))

    def set_rate_limit(self, global_rps: float | None, endpoint_rps: float | None = None) -> None:
        self._limiter = _RateLimiter(global_rps, endpoint_rps, self.limit_clock)

    def set_fail_rate(self, rate: float) -> None:
        self.fail_rate = float(rate)

    # -- request log ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the `/v1` requests served so far, oldest first."""
        with self._records_lock:
            return list(self._records)

    def request_count(self, path_prefix: str = "/v1/", method: str | None = None,
                      status: int | None = None) -> int:
        with self._records_lock:
            return sum(
                1 for r in self._records
                if r.path.startswith(path_prefix)
                and (method is None or r.method == method)
                and (status is None or r.status == status)
            )

    def clear_requests(self) -> None:
        with self._records_lock:
            self._records.clear()
        self.rate_limited = 0

    # -- request handling ----------------------------------------------------------------------

    def _handle(self, h: _Handler, method: str) -> None:
        arrived, started = time.time(), time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length > 0 else b""
        h.request_body = body  # type: ignore[attr-defined]  (a report run's form)
        split = urlsplit(h.path)
        if split.path.startswith("/_emulator/"):
            self._control(h, method, split.path, body)
            return
        ex = _Exchange(
            method=method, path=split.path, query=parse_qs(split.query, keep_blank_values=True),
            version=h.headers.get("Stripe-Version") or API_VERSION,
            request_id="req_" + "".join(_REQUEST_IDS.choices(BASE62, k=14)),
        )
        try:
            status, payload = self._respond(h, ex)
        except Exception:
            traceback.print_exc()
            error = default_error(500, "", self.account_id)
            status, payload = 500, dumps(error.body())
        # Recorded before the response leaves, so a client that has its answer always
        # finds the request in the log.
        record = RequestRecord(method, ex.path, ex.query, dict(h.headers.items()), status,
                               arrived, ex.fault_tag, ex.request_id, time.monotonic() - started)
        with self._records_lock:
            self._records.append(record)
        self._send(h, ex, status, payload)

    def _respond(self, h: _Handler, ex: _Exchange) -> tuple[int, bytes]:
        """Status and body for one `/v1` request; sets `ex.extra`/`ex.mode`/`ex.fault_tag`."""
        mean, jitter = self._latency
        if mean or jitter:
            with self._rng_lock:
                delay = self._rng.uniform(mean - jitter, mean + jitter)
            if delay > 0:
                self.latency_wait(delay / 1000)
        with self._fault_lock:
            due = [hook for hook in self._before if ex.path.startswith(hook[0])][:1]
            for hook in due:
                self._before.remove(hook)
        for _, callback in due:
            callback()
        fault = self._take_fault(ex.path)
        if fault is not None:
            ex.fault_tag = "injected"
            if fault.stall_seconds:
                self._stop.wait(fault.stall_seconds)
            if fault.truncated or fault.reset_connection:
                ex.mode = fault
            if fault.status != 200:
                if fault.should_retry is not None:
                    ex.extra["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
                if fault.body is not None:
                    return fault.status, self._raw(fault.body)
                error = default_error(fault.status, self._key(h), self.account_id)
                return error.status, dumps(error.body())
        try:
            status, payload = self._serve(h, ex.method, ex.path, ex.query, ex.version)
        except ApiError as error:
            ex.fault_tag = ex.fault_tag or error.fault
            for name, value in error.headers.items():
                ex.extra.setdefault(name, value)
            status, payload = error.status, dumps(error.body())
        if fault is not None and fault.body is not None:
            payload = self._raw(fault.body)
        return status, payload

    @staticmethod
    def _raw(body: Any) -> bytes:
        if isinstance(body, bytes):
            return body
        if isinstance(body, str):
            return body.encode("utf-8")
        return dumps(body)

    def _take_fault(self, path: str) -> Fault | None:
        with self._fault_lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @staticmethod
    def _key(h: _Handler) -> str:
        auth = h.headers.get("Authorization") or ""
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(value.strip()).decode("utf-8").partition(":")[0]
            except (ValueError, UnicodeDecodeError):
                return ""
        return auth.strip()

    def _authenticate(self, h: _Handler, key: str) -> set[str] | None:
        if not key:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                "details, or we can help at https://support.stripe.com/.",
                headers={"WWW-Authenticate": 'Basic realm="Stripe"'},
            )
        if key.startswith("pk_"):
            raise ApiError(
                401,
                "This API call cannot be made with a publishable API key. Please use a "
                "secret API key. You can find a list of your API keys at "
                "https://dashboard.stripe.com/account/apikeys.",
                headers={"WWW-Authenticate": 'Basic realm="Stripe"'},
            )
        if key not in self.api_keys:
            raise ApiError(401, f"Invalid API Key provided: {mask_key(key.strip())}",
                           headers={"WWW-Authenticate": 'Basic realm="Stripe"'})
        return self.api_keys[key]

    def _serve(self, h: _Handler, method: str, path: str, query: dict[str, list[str]],
               version: str) -> tuple[int, bytes]:
        key = self._key(h)
        readable = self._authenticate(h, key)
        if not _VERSION.fullmatch(version):
            raise ApiError(400, f"Invalid Stripe API version: {version}",
                           code="api_version_invalid")
        account = h.headers.get("Stripe-Account")
        if account and account != self.account_id:
            raise ApiError(
                403,
                f"The provided key '{mask_key(key)}' does not have access to account "
                f"'{account}' (or that account does not exist). Application access may "
                "have been revoked.",
                code="account_invalid",
            )
        if path.startswith(("/v1/reporting/", "/v1/files")):
            form = parse_qs(getattr(h, "request_body", b"").decode(), keep_blank_values=True)
            status, answer, _ = self.reports.serve(method, path, {**query, **form}, readable,
                                                   self.public_url or self.url)
            return status, answer if isinstance(answer, bytes) else dumps(answer)
        stream, endpoint, ids = _route(method, path)
        if endpoint in self.unserved:
            raise ApiError(404, f"Unrecognized request URL ({method}: {path}). Please see "
                           "https://stripe.com/docs or we can help at https://support.stripe.com/.")
        if method != "GET":
            raise ApiError(400, f"The Stripe emulator only serves reads ({method} {path}); "
                           "change data with the /_emulator/ endpoints or the Python API.")
        if readable is not None and stream != "account":
            needed = STREAMS[stream].permission
            if not any(STREAMS[s].permission == needed for s in readable if s in STREAMS):
                raise ApiError(
                    403,
                    f"The provided key '{mask_key(key)}' does not have the required "
                    f"permissions for this endpoint on account '{self.account_id}'. Having "
                    f"the '{needed}' permission would allow this request to continue.",
                )
        limited = self._limiter.check((key, account or self.account_id), endpoint)
        if limited:
            with self._fault_lock:
                self.rate_limited += 1
            message = (
                "Request rate limit exceeded. You can learn more about rate limits here "
                "https://stripe.com/docs/rate-limits."
                if limited == "global-rate" else
                f"Request rate limit exceeded for {endpoint}. You can learn more about rate "
                "limits here https://stripe.com/docs/rate-limits."
            )
            raise ApiError(429, message, code="rate_limit", fault="rate_limit", headers={
                "Stripe-Should-Retry": "true", "Stripe-Rate-Limited-Reason": limited,
            })
        if self.fail_rate:
            with self._rng_lock:
                failing = self._rng.random() < self.fail_rate
                status = self._rng.choice((500, 503))
            if failing:
                error = default_error(status, key, self.account_id)
                error.headers = {"Stripe-Should-Retry": "true"}
                error.fault = "random"
                raise error
        if stream == "account":
            parse_params(query, RETRIEVE_PARAMS)
            return 200, dumps(self.store.account)
        if endpoint in _PARENT_LISTS or not ids:
            return 200, self._list(stream, path, query, ids[0] if ids else None, version)
        params = parse_params(query, RETRIEVE_PARAMS)
        fields = self._expand_fields(params, prefix="")
        with self.store.lock:
            obj = self.store.retrieve(stream, ids[0])
            if fields:
                expanded = self._json(stream, self.store.expand(stream, obj, fields), version,
                                      stored=False)
                return 200, self._with_undeclared(stream, expanded)
            return 200, self._with_undeclared(stream, self._json(stream, obj, version))

    def _json(self, stream: str, obj: dict, version: str, *, stored: bool = True) -> bytes:
        """An object's JSON in the shape of the requested API version (store lock held).

        `stored`: `obj` is the store's own object, whose 2024-06-20 JSON is cached."""
        if version == ENDIVE:
            parent = None
            if stream == "subscription_items":
                parent = self.store.collections["subscriptions"].by_id.get(obj["subscription"])
            return dumps(render_version(stream, obj, version, parent))
        return self.store.json_of(obj) if stored else dumps(obj)

    def _with_undeclared(self, stream: str, part: bytes) -> bytes:
        extra = self.undeclared.get(stream)
        return dumps({**json.loads(part), **extra}) if extra else part

    @staticmethod
    def _expand_fields(params: dict[str, Any], prefix: str) -> list[str]:
        fields = []
        for value in params.get("expand", ()):
            if value.startswith(prefix) and "." not in value[len(prefix):]:
                fields.append(value[len(prefix):])
        return fields

    def _list(self, stream: str, path: str, query: dict[str, list[str]],
              parent_id: str | None, version: str) -> bytes:
        store = self.store
        params = parse_params(query, LIST_PARAMS[stream])
        limit = params.get("limit", 10)
        after, before = params.get("starting_after"), params.get("ending_before")
        if stream == "payment_methods":
            # A customer's payment methods (`GET /v1/payment_methods` without a customer
            # lists Treasury payment methods: there are none here).
            customer = parent_id or params.pop("customer", None)
            if customer is not None and customer not in store.collections["customers"].by_id:
                raise no_such(STREAMS["customers"], customer, "customer")
            objs, has_more = store.list_page(
                stream, limit=limit, starting_after=after, ending_before=before,
                subset=self._subset(stream, params), within=("customer", customer),
            ) if customer is not None else ([], False)
        elif stream in ("invoice_line_items", "subscription_items", "credit_note_line_items"):
            if stream == "subscription_items":
                parent_id = params.get("subscription")
                if not parent_id:
                    raise ApiError(400, "Missing required param: subscription.",
                                   code="parameter_missing", param="subscription")
                if parent_id not in store.collections["subscriptions"].by_id:
                    raise no_such(STREAMS["subscriptions"], parent_id, "subscription", 400)
            assert parent_id is not None
            objs, has_more = store.child_page(stream, parent_id, limit=limit,
                                              starting_after=after, ending_before=before)
        else:
            objs, has_more = store.list_page(
                stream, limit=limit, created=params.get("created"), starting_after=after,
                ending_before=before, subset=self._subset(stream, params),
            )
        fields = self._expand_fields(params, prefix="data.")
        if stream in self.scrambled:
            objs = list(reversed(objs))
        with store.lock:
            parts = [
                self._json(stream, store.expand(stream, obj, fields), version, stored=False)
                if fields else self._json(stream, obj, version)
                for obj in objs
            ]
        parts = [self._with_undeclared(stream, part) for part in parts]
        return b"".join((
            b'{"object":"list","data":[', b",".join(parts), b'],"has_more":',
            b"true" if has_more else b"false", b',"url":', dumps(path), b"}",
        ))

    def _subset(self, stream: str, params: dict[str, Any]) -> tuple[Any, Callable] | None:
        """A cache name and predicate for list filters other than `created`, or None."""
        checks: list[Callable[[dict], bool]] = []
        name: list[Any] = []
        for param in sorted(EQUALITY_FILTERS & set(params)):
            if param == "subscription" and stream == "subscription_items":
                continue
            checks.append(_field_is(param, params[param]))
            name.append((param, params[param]))
        for param in ("due_date", "current_period_end", "current_period_start"):
            if param in params:
                ops = params[param]
                checks.append(_field_in_range(param, ops))
                name.append((param, tuple(sorted(ops.items()))))
        if stream == "subscriptions":
            status = params.get("status")
            if status is not None and status not in _SUBSCRIPTION_STATUSES:
                raise ApiError(400, "Invalid status: must be one of "
                               f"{', '.join(_SUBSCRIPTION_STATUSES)}", param="status")
            if status is None:  # Stripe hides canceled subscriptions by default
                checks.append(_status_in(*_SUBSCRIPTION_STATUSES, exclude="canceled"))
            elif status == "ended":
                checks.append(_status_in("canceled", "incomplete_expired"))
            elif status != "all":
                checks.append(_status_in(status))
            name.append(("status", status))
            if "price" in params:
                checks.append(_has_price(self.store.items, params["price"]))
                name.append(("price", params["price"]))
        elif stream == "invoices" and "status" in params:
            if params["status"] not in _INVOICE_STATUSES:
                raise ApiError(400, "Invalid status: must be one of "
                               f"{', '.join(_INVOICE_STATUSES)}", param="status")
            checks.append(_status_in(params["status"]))
            name.append(("status", params["status"]))
        elif stream == "events":
            self._event_filters(params, checks, name)
        elif stream in KINDS:
            self._kind_filters(stream, params, checks, name)
        if not checks:
            return None

        def matches(obj: dict) -> bool:
            return all(check(obj) for check in checks)

        return tuple(name), matches

    @staticmethod
    def _kind_filters(stream: str, params: dict[str, Any], checks: list, name: list) -> None:
        """Filters of the streams of billing.py: ranges, booleans, equality (or the id of an
        embedded object, as `promotion_code.coupon`)."""
        if stream == "prices" and "active" not in params:
            # "Returns a list of your active prices": archived ones need `active=false`.
            checks.append(_field_is("active", True))
            name.append(("active", "default"))
        for param, kind in KINDS[stream].params.items():
            if param not in params or param in EQUALITY_FILTERS:
                continue
            value = params[param]
            if kind == "range":
                checks.append(_field_in_range(param, value))
                name.append((param, tuple(sorted(value.items()))))
                continue
            if param in ("active", "inclusive"):
                if value not in ("true", "false"):
                    raise ApiError(400, f"Invalid boolean: {value}", param=param,
                                   code="parameter_invalid_boolean")
                checks.append(_field_is(param, value == "true"))
            else:
                checks.append(_field_or_id_is(param, value))
            name.append((param, value))

    @staticmethod
    def _event_filters(params: dict[str, Any], checks: list, name: list) -> None:
        if "type" in params and "types" in params:
            raise ApiError(400, "You may only specify one of these parameters: type, types.",
                           param="types")
        patterns: list[str] | None = None
        if "type" in params:
            patterns = [params["type"]]
        elif "types" in params:
            patterns = list(params["types"])
            if len(patterns) > MAX_TYPES:
                raise ApiError(400, f"Invalid array: types can have at most {MAX_TYPES} "
                               "entries.", code="parameter_invalid_array", param="types")
        if patterns is not None:
            exact = frozenset(p for p in patterns if not p.endswith("*"))
            prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

            def matches(o: dict) -> bool:
                return o["type"] in exact or (bool(prefixes) and o["type"].startswith(prefixes))

            checks.append(matches)
            name.append(("types", tuple(sorted(patterns))))
        if "delivery_success" in params:
            value = params["delivery_success"]
            if value not in ("true", "false"):
                raise ApiError(400, f"Invalid boolean: {value}", param="delivery_success",
                               code="parameter_invalid_boolean")
            # Nothing is ever delivered to a webhook here, so nothing ever failed.
            delivered = value == "true"
            checks.append(lambda o: delivered)
            name.append(("delivery_success", value))

    # -- writing responses ---------------------------------------------------------------------

    def _send(self, h: _Handler, ex: _Exchange, status: int, payload: bytes) -> None:
        mode = ex.mode
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        body = payload
        if mode is not None and mode.truncated:
            body = payload[: max(1, len(payload) // 2)]
        headers = {
            "Server": "nginx",
            "Date": email.utils.formatdate(self.store.now(), usegmt=True),
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "close" if h.close_connection else "keep-alive",
            "Cache-Control": "no-cache, no-store",
            "Request-Id": ex.request_id,
            "Stripe-Version": ex.version,
            **ex.extra,
        }
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        ) + "\r\n"
        if mode is not None and mode.reset_connection:
            body = body[: len(body) // 2]
        try:
            h.wfile.write(head.encode("latin-1") + body)
        except OSError:
            h.close_connection = True
            return
        if mode is not None and mode.reset_connection:
            h.close_connection = True
            try:  # SO_LINGER 0: close() sends a TCP RST instead of a FIN
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                h.connection.close()
            except OSError:
                pass

    # -- in-process requests (a Connect platform in front of this account) ------------------

    def answer(self, method: str, target: str, headers: dict[str, str],
               body: bytes = b"") -> tuple[int, dict[str, str], bytes, bool]:
        """Serve one request without a socket: status, headers and body as this account's
        server would send them, and whether it would break the connection after them.

        `ConnectPlatform` routes each connected account's requests here. Forwarding them
        over HTTP cost ~6 ms of CPU per request (a new connection, a second server, a
        client): with 100 accounts the emulator used as much CPU as the tap it serves."""
        local = _LocalHandler(target, headers, body)
        self._handle(t.cast("_Handler", local), method)
        head, _, sent = local.wfile.getvalue().partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines)
        broken = local.close_connection or len(sent) < int(fields.get("Content-Length", 0))
        return int(status_line.split(" ", 2)[1]), fields, sent, broken

    # -- control endpoints -------------------------------------------------------------------

    def _control(self, h: _Handler, method: str, path: str, body: bytes) -> None:
        action = path[len("/_emulator/"):]
        status = 200
        result: Any = None
        try:
            if method == "GET" and action == "state":
                result = {"clock": self.clock, "url": self.url, "api_key": self.api_key,
                          "account_id": self.account_id, "counts": self.store.counts(),
                          "requests": len(self._records), "rate_limited": self.rate_limited}
            elif method == "GET" and action.startswith("objects/"):
                result = self.objects(action[len("objects/"):])
            elif method == "GET" and action == "requests":
                result = [asdict(r) for r in self.requests]
            elif method == "POST" and action in _CONTROL_ACTIONS:
                kwargs = json.loads(body or b"{}")
                if not isinstance(kwargs, dict):
                    raise TypeError("the body must be a JSON object of keyword arguments")
                if action == "create" and isinstance(kwargs.get("fields"), dict):
                    kwargs = {"stream": kwargs["stream"], **kwargs["fields"]}
                if action == "update" and "changes" not in kwargs:
                    raise TypeError("update needs 'stream', 'id' and 'changes'")
                if "id" in kwargs and action != "create":
                    kwargs = self._positional_id(action, kwargs)
                result = getattr(self, action)(**kwargs)
            else:
                status, result = 404, {"error": {"type": "emulator_error",
                                                 "message": f"unknown control {method} {path}"}}
        except (KeyError, ValueError, TypeError) as exc:
            status = 400
            result = {"error": {"type": "emulator_error", "message": str(exc).strip("'\"")}}
        payload = dumps(result if status != 200 else {"result": result})
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: {'close' if h.close_connection else 'keep-alive'}\r\n\r\n")
        try:
            h.wfile.write(head.encode("latin-1") + payload)
        except OSError:
            h.close_connection = True

    @staticmethod
    def _positional_id(action: str, kwargs: dict) -> dict:
        """Map the JSON `id` onto each method's own argument name."""
        names = {"update": "obj_id", "delete": "obj_id", "cancel_subscription": "sub_id",
                 "pay_invoice": "inv_id", "refund_charge": "charge_id",
                 "add_invoice_lines": "inv_id"}
        kwargs = dict(kwargs)
        if action in names:
            kwargs[names[action]] = kwargs.pop("id")
        return kwargs


__all__ = ["DEFAULT_KEY", "Emulator", "RequestRecord"]
