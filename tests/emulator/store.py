"""The emulator's data: objects, their order, the clock, mutations and the events they emit.

Each stream is a `Collection` kept sorted ascending by `(created, id)`; lists are served
newest first by walking it backwards, so paging and `created` filters are bisects, not
scans. Objects are never changed in place: a mutation stores a new dict, so an event can
hold the object exactly as it was, and each object's JSON is cached until it is replaced.

All public methods take the store lock; the HTTP server and the Python API share it.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from tests.emulator.billing import (
    COUNTED,
    KINDS,
    TOP_LEVEL,
    BillingStore,
    Builder,
    default_counts,
    item_of_line,
)
from tests.emulator.generate import (
    API_VERSION,
    BASE62,
    CORE_STREAMS,
    DAY,
    DEFAULT_CLOCK,
    HOUR,
    Generator,
    embedded_list,
)
from tests.emulator.versions import render as render_version

#: Stripe keeps events for 30 days.
EVENT_RETENTION = 30 * DAY

Key = tuple[int, str]


@dataclass(frozen=True)
class StreamInfo:
    name: str
    #: Stripe's object name (`charge`), used in messages such as "No such charge: 'ch_1'".
    object: str
    #: The restricted-key permission Stripe names in a 403.
    permission: str
    #: Event type prefix (`customer.subscription`), None for objects without own events.
    event_prefix: str | None


STREAMS: dict[str, StreamInfo] = {
    info.name: info
    for info in (
        StreamInfo("charges", "charge", "rak_charge_read", "charge"),
        StreamInfo("customers", "customer", "rak_customer_read", "customer"),
        StreamInfo("invoices", "invoice", "rak_invoice_read", "invoice"),
        StreamInfo("subscriptions", "subscription", "rak_subscription_read",
                   "customer.subscription"),
        StreamInfo("invoice_line_items", "line_item", "rak_invoice_read", None),
        StreamInfo("subscription_items", "subscription_item", "rak_subscription_read", None),
        StreamInfo("events", "event", "rak_event_read", None),
    )
}
# The streams beyond the core four (see billing.py).
STREAMS.update(
    (name, StreamInfo(name, kind.object, kind.permission, kind.event_prefix))
    for name, kind in KINDS.items()
)

_STREAM_OF_OBJECT = {info.object: name for name, info in STREAMS.items()}

#: Top-level fields `expand[]` can replace with the object they name, per stream.
EXPANDABLE: dict[str, dict[str, str]] = {
    "charges": {"customer": "customers", "invoice": "invoices"},
    "invoices": {"customer": "customers", "subscription": "subscriptions", "charge": "charges"},
    "subscriptions": {"customer": "customers", "latest_invoice": "invoices"},
}


class ApiError(Exception):
    """A Stripe error response: status plus the `error` object's fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None, fault: str | None = None) -> None:
        super().__init__(message)
        #: Set when the error is an emulated fault ("rate_limit", "random"), for the log.
        self.fault = fault
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        error: dict[str, Any] = {}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        error["message"] = self.message
        if self.param:
            error["param"] = self.param
        error["type"] = self.type
        return {"error": error}


def no_such(info: StreamInfo, obj_id: str, param: str, status: int = 404) -> ApiError:
    return ApiError(status, f"No such {info.object}: '{obj_id}'", code="resource_missing",
                    param=param)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# The same bytes as `_ENCODER` for the emulator's objects, ~6x faster: rendering objects
# took ~60% of the emulator's CPU in a platform run of 100 accounts.
_FAST = msgspec.json.Encoder()


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (one shared encoder: `json.dumps` with options builds one per call)."""
    try:
        return _FAST.encode(value)
    except TypeError:  # a type msgspec does not encode as json does
        return _ENCODER.encode(value).encode("utf-8")


def copy(value: Any) -> Any:
    """A deep copy that is exactly what a client would parse from the API's JSON."""
    return json.loads(dumps(value))


class Collection:
    """One stream's live objects, sorted ascending by `(created, id)`.

    `time_field` names the time objects sort by when it is not `created` (`invoiceitem`
    has `date`).
    """

    def __init__(self, time_field: str = "created") -> None:
        self.time_field = time_field
        self.by_id: dict[str, dict] = {}
        self.keys: list[Key] = []
        self.version = 0
        self._subsets: dict[Any, tuple[int, list[Key]]] = {}

    def load(self, objects: Iterable[dict]) -> None:
        for obj in objects:
            self.by_id[obj["id"]] = obj
        self.keys = sorted((obj[self.time_field], obj["id"]) for obj in self.by_id.values())
        self.version += 1

    def put(self, obj: dict) -> None:
        """Insert or replace (an object's `created` never changes)."""
        if obj["id"] not in self.by_id:
            insort(self.keys, (obj[self.time_field], obj["id"]))
        self.by_id[obj["id"]] = obj
        self.version += 1

    def remove(self, obj_id: str) -> dict:
        obj = self.by_id.pop(obj_id)
        key = (obj[self.time_field], obj_id)
        del self.keys[bisect_left(self.keys, key)]
        self.version += 1
        return obj

    def subset(self, name: Any, predicate: Callable[[dict], bool]) -> list[Key]:
        """The keys of objects matching `predicate`, cached until the collection changes."""
        cached = self._subsets.get(name)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        by_id = self.by_id
        keys = [key for key in self.keys if predicate(by_id[key[1]])]
        if len(self._subsets) > 64:
            self._subsets.clear()
        self._subsets[name] = (self.version, keys)
        return keys


def page_keys(keys: list[Key], limit: int, lo: int, hi: int, *, after: Key | None = None,
              before: Key | None = None) -> tuple[list[Key], bool]:
    """One newest-first page of `keys[lo:hi]` (ascending), Stripe cursor semantics.

    `after` (starting_after) pages towards older objects, `before` (ending_before) returns
    the objects just newer than it, still newest first.
    """
    if after is not None:
        hi = min(hi, bisect_left(keys, after))
    if before is not None:
        lo = max(lo, bisect_right(keys, before))
        end = min(hi, lo + limit)
        return keys[lo:end][::-1], end < hi
    start = max(lo, hi - limit)
    return keys[start:hi][::-1], start > lo


def created_bounds(keys: list[Key], created: dict[str, int] | None,
                   floor: int | None = None) -> tuple[int, int]:
    """Index range of keys whose `created` satisfies the filter (and is >= `floor`)."""
    lo, hi = 0, len(keys)
    bounds = dict(created or {})
    if floor is not None:
        bounds["gte"] = max(bounds.get("gte", floor), floor)
    for op, value in bounds.items():
        if op == "eq":
            lo = max(lo, bisect_left(keys, (value, "")))
            hi = min(hi, bisect_left(keys, (value + 1, "")))
        elif op == "gte":
            lo = max(lo, bisect_left(keys, (value, "")))
        elif op == "gt":
            lo = max(lo, bisect_left(keys, (value + 1, "")))
        elif op == "lt":
            hi = min(hi, bisect_left(keys, (value, "")))
        elif op == "lte":
            hi = min(hi, bisect_left(keys, (value + 1, "")))
    return lo, max(lo, hi)


def _constant(n: int) -> Callable[[int], int]:
    return lambda _index: n


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return "".join(reversed(out))


class Store(BillingStore):
    """Objects, events and the clock of one emulated Stripe account.

    `objects`: objects per core stream (the streams of billing.py get a few each, see
    `billing.default_counts`), or a count per stream (core or `billing.COUNTED`).
    """

    def __init__(
        self,
        objects: int | dict[str, int] = 50,
        seed: int = 1,
        *,
        clock: int = DEFAULT_CLOCK,
        lines_per_invoice: Callable[[int], int] | int | None = None,
        items_per_subscription: Callable[[int], int] | int | None = None,
        freeze_clock: bool = False,
        varied_pricing: bool = False,
    ) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.start_clock = int(clock)
        self.freeze_clock = freeze_clock
        self._clock_base = float(clock)
        self._clock_mono = time.monotonic()
        self.event_api_version = API_VERSION
        self._event_seq = 0
        self._json: dict[str, tuple[dict, bytes]] = {}
        if isinstance(objects, int):
            counts = dict.fromkeys(CORE_STREAMS, objects)
            extra = default_counts(objects)
        else:
            unknown = set(objects) - set(CORE_STREAMS) - set(COUNTED)
            if unknown:
                raise ValueError(f"objects: unknown streams {sorted(unknown)}")
            counts = {name: int(objects.get(name, 0)) for name in CORE_STREAMS}
            extra = {name: int(objects.get(name, 0)) for name in COUNTED}
        if isinstance(lines_per_invoice, int):
            lines_per_invoice = _constant(lines_per_invoice)
        if isinstance(items_per_subscription, int):
            items_per_subscription = _constant(items_per_subscription)

        gc_was_enabled = gc.isenabled()
        gc.disable()  # generation allocates ~10^5 dicts and frees nothing
        try:
            self.gen = Generator(seed, int(clock), varied_pricing=varied_pricing)
            data = self.gen.generate(counts, lines_per_invoice, items_per_subscription)
            self.account = data.account
            self.collections: dict[str, Collection] = {
                name: Collection() for name in (*CORE_STREAMS, "events")
            }
            for name in CORE_STREAMS:
                self.collections[name].load(getattr(data, name))
            self.lines: dict[str, list[dict]] = data.lines
            self.items: dict[str, list[dict]] = data.items
            #: Deleted customers (retrieve returns a `deleted: true` stub) and invoices.
            self.deleted: dict[str, tuple[str, dict]] = {}
            self._invoice_seq: dict[str, int] = {}
            self._generate_billing(extra, Collection)
            self._initial_events()
        finally:
            if gc_was_enabled:
                # The generated objects live as long as the store: keep the cyclic collector
                # from re-scanning them (big stores made its full passes take ~100 ms).
                gc.freeze()
                gc.enable()

    # -- clock -----------------------------------------------------------------------------

    def now(self) -> int:
        """Emulated Stripe time in Unix seconds: runs with the wall clock unless frozen."""
        if self.freeze_clock:
            return int(self._clock_base)
        return int(self._clock_base + (time.monotonic() - self._clock_mono))

    def advance(self, seconds: float) -> int:
        with self.lock:
            self._clock_base += seconds
            return self.now()

    def _tick(self) -> int:
        """The time of a mutation; the clock then moves on a second so events are ordered."""
        at = self.now()
        self._clock_base += 1
        self.gen.clock = at + 1  # generated times stay <= clock - 1 = the mutation time
        return at

    # -- events ----------------------------------------------------------------------------

    def _event(self, type_: str, obj: dict, created: int, previous: dict | None = None,
               request_id: str | None = None) -> dict:
        self._event_seq += 1
        # Ids grow with creation order, so events of the same second keep their order.
        event_id = f"evt_1{_base62(self._event_seq, 5)}{self.gen.tag}{self.gen.rand(8)}"
        stream = _STREAM_OF_OBJECT.get(obj.get("object"))
        if stream is not None:
            # Payloads are rendered in the API version of the event.
            obj = render_version(stream, obj, self.event_api_version)
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {
            "id": event_id,
            "object": "event",
            "api_version": self.event_api_version,
            "created": created,
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {
                "id": request_id if request_id is not None else f"req_{self.gen.rand(14)}",
                "idempotency_key": None,
            },
            "type": type_,
        }
        self.collections["events"].put(event)
        return event

    @staticmethod
    def _created_type(stream: str, obj: dict) -> str:
        if stream == "charges":
            return f"charge.{obj['status']}"
        if stream in KINDS:  # None: Stripe sends no event when one is created
            return KINDS[stream].created  # type: ignore[return-value]
        return f"{STREAMS[stream].event_prefix}.created"

    def _initial_events(self) -> None:
        """A creation event for every object created in the 30 days before the clock."""
        floor = self.start_clock - EVENT_RETENTION
        pending = []
        for order, stream in enumerate((*CORE_STREAMS, *TOP_LEVEL)):
            if stream in KINDS and not KINDS[stream].created:
                continue
            coll = self.collections[stream]
            start = bisect_left(coll.keys, (floor, ""))
            for created, obj_id in coll.keys[start:]:
                pending.append((created, order, obj_id, stream))
        pending.sort()
        for created, _order, obj_id, stream in pending:
            obj = self.collections[stream].by_id[obj_id]
            self._event(self._created_type(stream, obj), obj, created)

    def set_event_api_version(self, version: str) -> None:
        with self.lock:
            self.event_api_version = version

    # -- reading ---------------------------------------------------------------------------

    def warm(self) -> None:
        """Render every object's JSON now, into the cache `json_of` keeps (a benchmark's
        emulator then spends its CPU on requests, as in a warmed single-account run)."""
        with self.lock:
            for collection in self.collections.values():
                for obj in collection.by_id.values():
                    self.json_of(obj)
            for children in (self.lines, self.items, getattr(self, "cn_lines", {})):
                for objs in children.values():
                    for obj in objs:
                        self.json_of(obj)

    def json_of(self, obj: dict) -> bytes:
        """An object's JSON, cached until the object is replaced."""
        cached = self._json.get(obj["id"])
        if cached is not None and cached[0] is obj:
            return cached[1]
        data = dumps(obj)
        self._json[obj["id"]] = (obj, data)
        return data

    def collection(self, stream: str) -> Collection:
        try:
            return self.collections[stream]
        except KeyError:
            raise ValueError(
                f"unknown stream {stream!r}; expected one of {sorted(self.collections)}"
            ) from None

    def event_floor(self) -> int:
        return self.now() - EVENT_RETENTION

    def cursor_key(self, stream: str, obj_id: str, param: str) -> Key:
        """The sort key of a cursor object; deleted objects keep their place."""
        info = STREAMS[stream]
        obj = self.collections[stream].by_id.get(obj_id)
        if obj is None:
            deleted = self.deleted.get(obj_id)
            if deleted is None or deleted[0] != stream:
                raise no_such(info, obj_id, param, status=400)
            obj = deleted[1]
        if stream == "events" and obj["created"] < self.event_floor():
            raise no_such(info, obj_id, param, status=400)
        return obj[self.collections[stream].time_field], obj_id

    def list_page(
        self,
        stream: str,
        *,
        limit: int = 10,
        created: dict[str, int] | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        subset: tuple[Any, Callable[[dict], bool]] | None = None,
        within: tuple[str, Any] | None = None,
    ) -> tuple[list[dict], bool]:
        """One page of a top-level list, newest first, and `has_more`.

        `within`: only objects whose field (`customer`) has this value (an index).
        """
        with self.lock:
            coll = self.collection(stream)
            keys = coll.keys if subset is None else coll.subset(*subset)
            if within is not None:
                keys = [key for key in self.within(stream, *within)
                        if subset is None or subset[1](coll.by_id[key[1]])]
            floor = self.event_floor() if stream == "events" else None
            after = self.cursor_key(stream, starting_after, "starting_after") \
                if starting_after else None
            before = self.cursor_key(stream, ending_before, "ending_before") \
                if ending_before else None
            lo, hi = created_bounds(keys, created, floor)
            page, has_more = page_keys(keys, limit, lo, hi, after=after, before=before)
            by_id = coll.by_id
            return [by_id[key[1]] for key in page], has_more

    def child_page(
        self,
        stream: str,
        parent_id: str,
        *,
        limit: int = 10,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> tuple[list[dict], bool]:
        """A page of an invoice's lines or a subscription's items, in Stripe's order."""
        with self.lock:
            if stream == "invoice_line_items":
                children = self.lines.get(parent_id)
                if children is None or parent_id not in self.collections["invoices"].by_id:
                    raise no_such(STREAMS["invoices"], parent_id, "invoice")
            elif stream == "credit_note_line_items":
                children = self.cn_lines.get(parent_id)
                if children is None:
                    raise no_such(STREAMS["credit_notes"], parent_id, "credit_note")
            else:
                children = self.items.get(parent_id)
                if children is None:
                    raise no_such(STREAMS["subscriptions"], parent_id, "subscription", 400)
            info = STREAMS[stream]

            def position(child_id: str, param: str) -> int:
                for index, child in enumerate(children):
                    if child["id"] == child_id:
                        return index
                raise no_such(info, child_id, param, status=400)

            if ending_before:
                end = position(ending_before, "ending_before")
                start = max(0, end - limit)
                return children[start:end], start > 0
            start = position(starting_after, "starting_after") + 1 if starting_after else 0
            return children[start:start + limit], start + limit < len(children)

    def retrieve(self, stream: str, obj_id: str) -> dict:
        with self.lock:
            info = STREAMS[stream]
            if stream == "subscription_items":
                for sub_id, items in self.items.items():
                    if sub_id not in self.collections["subscriptions"].by_id:
                        continue
                    for item in items:
                        if item["id"] == obj_id:
                            return item
                raise no_such(info, obj_id, "id")
            obj = self.collections[stream].by_id.get(obj_id)
            if obj is not None:
                if stream == "events" and obj["created"] < self.event_floor():
                    raise no_such(info, obj_id, "id")
                return obj
            deleted = self.deleted.get(obj_id)
            if stream == "customers" and deleted and deleted[0] == "customers":
                # Stripe answers 200 with a stub for a deleted customer.
                return {"id": obj_id, "object": "customer", "deleted": True}
            if stream == "payment_methods" and deleted and deleted[0] == stream:
                return deleted[1]  # detached: it exists, `customer` null
            raise no_such(info, obj_id, "id")

    def expand(self, stream: str, obj: dict, fields: Iterable[str]) -> dict:
        """`obj` with the named reference fields replaced by the objects they name."""
        refs = EXPANDABLE.get(stream, {})
        out = None
        if stream in KINDS and KINDS[stream].includable:
            fields = list(fields)
            included = self.with_includes(stream, obj, fields)
            out = None if included is obj else included
        for name in fields:
            target = refs.get(name)
            value = obj.get(name)
            if target is None or not isinstance(value, str):
                continue
            found = self.collections[target].by_id.get(value)
            if found is None and value in self.deleted and target == "customers":
                found = {"id": value, "object": "customer", "deleted": True}
            if found is not None:
                out = out if out is not None else dict(obj)
                out[name] = found
        return out if out is not None else obj

    def objects(self, stream: str) -> list[dict]:
        """Current objects of a stream as the API returns them, newest first (deep copies)."""
        with self.lock:
            if stream == "invoice_line_items":
                invoices = self.collections["invoices"]
                parts = [line for _c, inv_id in reversed(invoices.keys)
                         for line in self.lines[inv_id]]
            elif stream == "subscription_items":
                subs = self.collections["subscriptions"]
                parts = [item for _c, sub_id in reversed(subs.keys)
                         for item in self.items[sub_id]]
            elif stream == "credit_note_line_items":
                notes = self.collections["credit_notes"]
                parts = [line for _c, note_id in reversed(notes.keys)
                         for line in self.cn_lines[note_id]]
            elif stream in KINDS and KINDS[stream].includable:
                # Includable fields (`tiers`) as `expand[]` returns them.
                coll = self.collection(stream)
                return copy([self.with_includes(stream, coll.by_id[obj_id],
                                                KINDS[stream].includable)
                             for _c, obj_id in reversed(coll.keys)])
            else:
                coll = self.collection(stream)
                keys = coll.keys
                if stream == "events":
                    keys = keys[bisect_left(keys, (self.event_floor(), "")):]
                parts = [coll.by_id[obj_id] for _c, obj_id in reversed(keys)]
            return json.loads(b"[" + b",".join(self.json_of(o) for o in parts) + b"]")

    def get(self, stream: str, obj_id: str) -> dict | None:
        with self.lock:
            try:
                return copy(self.retrieve(stream, obj_id))
            except ApiError:
                return None

    def counts(self) -> dict[str, int]:
        with self.lock:
            counts = {name: len(coll.by_id) for name, coll in self.collections.items()}
            counts["invoice_line_items"] = sum(
                len(self.lines[i]) for i in self.collections["invoices"].by_id
            )
            counts["subscription_items"] = sum(
                len(self.items[s]) for s in self.collections["subscriptions"].by_id
            )
            counts["credit_note_line_items"] = sum(
                len(self.cn_lines[n]) for n in self.collections["credit_notes"].by_id
            )
            return counts

    # -- mutations -----------------------------------------------------------------------

    def _core(self, stream: str, obj_id: str) -> tuple[Collection, dict]:
        if stream not in CORE_STREAMS:
            raise ValueError(f"stream must be one of {list(CORE_STREAMS)}, not {stream!r}")
        coll = self.collections[stream]
        obj = coll.by_id.get(obj_id)
        if obj is None:
            raise KeyError(f"No such {STREAMS[stream].object}: '{obj_id}'")
        return coll, obj

    @staticmethod
    def _previous(old: dict, new: dict) -> dict:
        return {k: old.get(k) for k in new if old.get(k) != new[k]}

    def update(self, stream: str, obj_id: str, changes: dict,
               event_type: str | None = None) -> dict:
        """Shallow-merge `changes`; emits `<object>.updated` with `previous_attributes`.

        Any top-level stream. `event_type` names the event instead (`payout.paid`); for a
        stream where Stripe has no `.updated` event (payment intents, checkout sessions,
        invoice items) a plain update sends none, as Stripe's does.
        """
        changes = copy(changes)
        with self.lock:
            if stream in KINDS:
                return copy(self._billing_update(stream, obj_id, changes, event_type))
            coll, old = self._core(stream, obj_id)
            fixed = {"id", "object", "created", "lines", "items"} & set(changes)
            if fixed:
                raise ValueError(f"update cannot change {sorted(fixed)}")
            at = self._tick()
            previous = self._previous(old, changes)
            if not previous:  # Stripe sends no event when nothing changed
                return copy(old)
            new = {**old, **changes}
            coll.put(new)
            self._event(event_type or f"{STREAMS[stream].event_prefix}.updated", new, at,
                        previous)
            return copy(new)

    def _live_customer(self, customer_id: Any) -> dict | None:
        if customer_id is None:
            return None
        customer = self.collections["customers"].by_id.get(customer_id)
        if customer is None:
            raise KeyError(f"No such customer: '{customer_id}'")
        return customer

    def _any_customer(self) -> dict:
        customers = self.collections["customers"]
        if not customers.keys:
            raise ValueError("there are no customers to attach the new object to")
        return customers.by_id[customers.keys[self.gen.rng.randrange(len(customers.keys))][1]]

    def create(self, stream: str, **fields: Any) -> dict:
        """A new object created now; emits its creation event (`charge.succeeded`, ...)."""
        fields = copy(fields)
        with self.lock:
            if stream in KINDS:
                return copy(self._billing_create(stream, self._tick(), fields))
            if stream not in CORE_STREAMS:
                raise ValueError(f"stream must be one of {list(CORE_STREAMS)} or "
                                 f"{list(KINDS)}, not {stream!r}")
            at = self._tick()
            gen = self.gen
            if stream == "customers":
                obj = gen.customer(at, **fields)
            elif stream == "charges":
                customer = (self._live_customer(fields.pop("customer"))
                            if "customer" in fields else self._any_customer())
                obj = gen.charge(at, customer, amount=fields.pop("amount", None),
                                 currency=fields.pop("currency", None),
                                 invoice=fields.pop("invoice", None),
                                 status=fields.pop("status", "succeeded"), history=False,
                                 **fields)
                if obj["balance_transaction"]:  # the charge's money reaches the balance
                    self.collections["balance_transactions"].put(
                        Builder(gen).charge_transaction(obj))
            elif stream == "subscriptions":
                customer = (self._live_customer(fields.pop("customer"))
                            if "customer" in fields else self._any_customer())
                if customer is None:
                    raise ValueError("a subscription needs a customer")
                n_items = int(fields.pop("items", 1))
                obj, items = gen.subscription(at, customer, n_items,
                                              status=fields.pop("status", "active"),
                                              history=False, **fields)
                self.items[obj["id"]] = items
            else:
                obj = self._new_invoice(at, fields)
            self.collections[stream].put(obj)
            self._event(self._created_type(stream, obj), obj, at)
            if stream == "invoices":
                self._items_of_lines(obj, self.lines[obj["id"]])
            return copy(obj)

    def _items_of_lines(self, invoice: dict, lines: list[dict]) -> None:
        """The invoice items new `invoiceitem` lines name: pending items pulled into the
        invoice, which sends no event of theirs (its own event lists them)."""
        for line in lines:
            if line["type"] == "invoiceitem":
                self.collections["invoice_items"].put(item_of_line(line, invoice))

    def _new_invoice(self, at: int, fields: dict) -> dict:
        sub = None
        if fields.get("subscription"):
            sub = self.collections["subscriptions"].by_id.get(fields["subscription"])
            if sub is None:
                raise KeyError(f"No such subscription: '{fields['subscription']}'")
        fields.pop("subscription", None)
        if "customer" in fields:
            customer = self._live_customer(fields.pop("customer"))
        elif sub is not None:
            customer = self._live_customer(sub["customer"])
        else:
            customer = self._any_customer()
        if customer is None:
            raise ValueError("an invoice needs a customer")
        n_lines = int(fields.pop("lines", 1))
        status = fields.pop("status", "draft")
        obj, lines = self.gen.invoice(
            at, customer, n_lines, subscription=sub,
            sub_items=self.items[sub["id"]] if sub else None, status=status, **fields,
        )
        if status != "draft" and "number" not in fields:
            obj["number"] = self._next_number(customer)
        self.lines[obj["id"]] = lines
        return obj

    def _next_number(self, customer: dict) -> str:
        seq = self._invoice_seq.get(customer["id"], customer["next_invoice_sequence"])
        self._invoice_seq[customer["id"]] = seq + 1
        return f"{customer['invoice_prefix']}-{seq:04d}"

    def delete(self, stream: str, obj_id: str, cancel_subscriptions: bool = True) -> dict:
        """Delete a customer or a draft invoice; emits `customer.deleted`/`invoice.deleted`.

        Like Stripe, deleting a customer first cancels its subscriptions (each emits
        `customer.subscription.deleted`) unless `cancel_subscriptions` is False.
        """
        with self.lock:
            if stream in KINDS:
                return copy(self._billing_delete(stream, obj_id))
            coll, obj = self._core(stream, obj_id)
            if stream not in ("customers", "invoices"):
                raise ValueError(f"Stripe cannot delete {stream}; only customers and draft "
                                 "invoices")
            if stream == "invoices" and obj["status"] != "draft":
                raise ValueError(f"You can only delete draft invoices ({obj_id} is "
                                 f"{obj['status']}).")
            at = self._tick()
            if stream == "customers" and cancel_subscriptions:
                subs = self.collections["subscriptions"]
                for _c, sub_id in list(subs.keys):
                    sub = subs.by_id[sub_id]
                    if sub["customer"] == obj_id and sub["status"] not in (
                        "canceled", "incomplete_expired"
                    ):
                        self._cancel(sub, at)
            if stream == "customers":
                # Its payment methods leave with it; Stripe documents no event for that.
                for key in list(self.within("payment_methods", "customer", obj_id)):
                    method = self.collections["payment_methods"].remove(key[1])
                    self.deleted[key[1]] = ("payment_methods", {**method, "customer": None})
            coll.remove(obj_id)
            self.deleted[obj_id] = (stream, obj)
            gone = {**obj, "deleted": True}
            self._event(f"{STREAMS[stream].event_prefix}.deleted", gone, at)
            return copy(gone)

    def _cancel(self, sub: dict, at: int) -> dict:
        new = {
            **sub,
            "status": "canceled",
            "canceled_at": at,
            "ended_at": at,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "cancellation_details": {"comment": None, "feedback": None,
                                     "reason": "cancellation_requested"},
        }
        self.collections["subscriptions"].put(new)
        self._event("customer.subscription.deleted", new, at)
        return new

    def cancel_subscription(self, sub_id: str) -> dict:
        """Cancel now; emits `customer.subscription.deleted` (the subscription remains)."""
        with self.lock:
            _coll, sub = self._core("subscriptions", sub_id)
            if sub["status"] in ("canceled", "incomplete_expired"):
                raise ValueError(f"Subscription {sub_id} is already {sub['status']}.")
            return copy(self._cancel(sub, self._tick()))

    def change_quantity(self, sub_id: str, quantity: int) -> dict:
        """Every item of the subscription now has `quantity` (an upgrade or a downgrade);
        emits `customer.subscription.updated`. The next invoice of the subscription
        (`create("invoices", subscription=...)`) bills the new quantity."""
        with self.lock:
            coll, old = self._core("subscriptions", sub_id)
            at = self._tick()
            items = [{**item, "quantity": int(quantity)} for item in self.items[sub_id]]
            self.items[sub_id] = items
            new = {**old, "items": embedded_list(items, old["items"]["url"])}
            coll.put(new)
            self._event("customer.subscription.updated", new, at, {"items": old["items"]})
            return copy(new)

    def pay_invoice(self, inv_id: str) -> dict:
        """Mark paid (out of band); emits `invoice.paid` and `invoice.updated`."""
        with self.lock:
            coll, old = self._core("invoices", inv_id)
            if old["status"] not in ("draft", "open", "uncollectible"):
                raise ValueError(f"Invoice {inv_id} is {old['status']} and cannot be paid.")
            at = self._tick()
            changes: dict[str, Any] = {}
            transitions = dict(old["status_transitions"])
            if old["status"] == "draft":
                changes.update(self._finalize(old, at))
                transitions["finalized_at"] = at
                customer = self.collections["customers"].by_id.get(old["customer"]) or \
                    self.deleted.get(old["customer"], ("", None))[1]
                if customer is not None:
                    changes["number"] = self._next_number(customer)
            transitions["paid_at"] = at
            changes.update({
                "amount_paid": old["amount_due"],
                "amount_remaining": 0,
                "attempt_count": old["attempt_count"] + 1,
                "attempted": True,
                "auto_advance": False,
                "next_payment_attempt": None,
                "paid": True,
                "paid_out_of_band": True,
                "status": "paid",
                "status_transitions": transitions,
            })
            new = {**old, **changes}
            coll.put(new)
            if old["status"] == "draft":
                self._event("invoice.finalized", new, at)
            self._event("invoice.paid", new, at)
            self._event("invoice.updated", new, at, self._previous(old, changes))
            return copy(new)

    def _finalize(self, old: dict, at: int) -> dict:
        acct = self.account["id"]
        return {
            "effective_at": at,
            "ending_balance": 0,
            "hosted_invoice_url": f"https://invoice.stripe.com/i/{acct}/test_{self.gen.rand(32)}",
            "invoice_pdf": f"https://pay.stripe.com/invoice/{acct}/test_{self.gen.rand(32)}/pdf",
            "webhooks_delivered_at": at,
        }

    def refund_charge(self, charge_id: str, amount: int | None = None) -> dict:
        """Refund (all that is left by default); emits `charge.refunded`."""
        with self.lock:
            coll, old = self._core("charges", charge_id)
            left = old["amount"] - old["amount_refunded"]
            if old["status"] != "succeeded" or left <= 0:
                raise ValueError(f"Charge {charge_id} has already been refunded or did not "
                                 "succeed.")
            amount = left if amount is None else int(amount)
            if not 0 < amount <= left:
                raise ValueError(f"Refund amount must be between 1 and {left}.")
            at = self._tick()
            refunded = old["amount_refunded"] + amount
            changes = {"amount_refunded": refunded, "refunded": refunded == old["amount"]}
            new = {**old, **changes}
            coll.put(new)
            self._event("charge.refunded", new, at, self._previous(old, changes))
            return copy(new)

    def add_invoice_lines(self, inv_id: str, n: int = 1) -> dict:
        """Append `n` invoice-item lines and update the totals; emits `invoice.updated`."""
        with self.lock:
            _coll, old = self._core("invoices", inv_id)
            at = self._tick()
            added = [self.gen.invoice_item_line(inv_id, old["currency"], at) for _ in range(n)]
            new = self._with_lines(old, added, at)
            self._items_of_lines(new, added)
            return new

    def pull_invoice_items(self, inv_id: str, item_ids: list[str]) -> dict:
        """Pending invoice items join a draft invoice, as Stripe pulls them in: the items'
        `invoice` is set with no event of their own; the invoice's `invoice.updated` lists
        them in its lines."""
        with self.lock:
            _coll, old = self._core("invoices", inv_id)
            if old["status"] != "draft":
                raise ValueError(f"only a draft invoice takes items ({inv_id} is {old['status']})")
            items = self.collections["invoice_items"]
            at = self._tick()
            added = []
            for item_id in item_ids:
                item = items.by_id.get(item_id)
                if item is None or item["invoice"] is not None:
                    raise ValueError(f"{item_id} is not a pending invoice item")
                items.put({**item, "invoice": inv_id})
                line = self.gen.invoice_item_line(inv_id, old["currency"], at)
                line.update(
                    amount=item["amount"], amount_excluding_tax=item["amount"],
                    description=item["description"], invoice_item=item_id, price=item["price"],
                    quantity=item["quantity"], period=dict(item["period"]),
                )
                added.append(line)
            return self._with_lines(old, added, at)

    def _with_lines(self, old: dict, added: list[dict], at: int) -> dict:
        """The invoice with lines appended and its totals updated; emits `invoice.updated`."""
        inv_id = old["id"]
        lines = self.lines[inv_id] + added
        self.lines[inv_id] = lines
        subtotal = sum(line["amount"] for line in lines)
        total = subtotal - sum(d["amount"] for line in lines for d in line["discount_amounts"])
        changes = {
            "amount_due": total,
            "amount_remaining": max(0, total - old["amount_paid"]),
            "subtotal": subtotal,
            "subtotal_excluding_tax": subtotal,
            "total": total,
            "total_excluding_tax": total,
        }
        new = {**old, **changes, "lines": embedded_list(lines, old["lines"]["url"])}
        self.collections["invoices"].put(new)
        self._event("invoice.updated", new, at, self._previous(old, changes))
        return copy(new)

    def update_account(self, changes: dict) -> dict:
        """The account itself changes (its settings, its verification): `account.updated`
        in its own events, which a platform reads with `Stripe-Account`."""
        changes = copy(changes)
        with self.lock:
            at = self._tick()
            previous = self._previous(self.account, changes)
            if not previous:
                return copy(self.account)
            self.account = {**self.account, **changes}
            self._event("account.updated", self.account, at, previous)
            return copy(self.account)


__all__ = ["EVENT_RETENTION", "HOUR", "STREAMS", "ApiError", "Store"]
