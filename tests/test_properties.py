"""Random JSON shapes and values through parsing, shaping and schema conformance.

Whatever Stripe (or a proxy in front of it) answers, the tap either turns it into records
that serialise, or stops with a clear error (`TapError`, or `RetriableAPIError` naming the
request, which the retry loop turns into one). Hypothesis runs derandomized with a bounded
number of examples, so every run tries the same inputs.
"""

from __future__ import annotations

import collections
import copy
import datetime
import functools
import json
import logging
import re
import threading
import typing as t
from unittest import mock

import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_stripe_connect.api import list_read
from tap_stripe_connect.api.client import StripeClient, checked_body
from tap_stripe_connect.api.failures import Retriable
from tap_stripe_connect.api.reads import events_read
from tap_stripe_connect.errors import StripeAPIError, TapError
from tap_stripe_connect.inputs import check_state, config_problems
from tap_stripe_connect.output.records import RecordShaper
from tap_stripe_connect.sdk_compat import conform_record_data_types
from tap_stripe_connect.state.listing import Listing, StateError, gaps, merge
from tap_stripe_connect.sync.events import changed_object_id
from tap_stripe_connect.sync.windows import Window, list_windows
from tap_stripe_connect.tap import TapStripeConnect

CORE = ("charges", "customers", "invoices", "subscriptions")
KEY = "sk_test_propertiesK3y_9t7Rq"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
PROPERTY_SETTINGS = settings(
    derandomize=True,
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**66), max_value=2**66)
    | st.integers(min_value=0, max_value=2_000_000_000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)


@functools.cache
def tap() -> TapStripeConnect:
    config = {"api_key": KEY, "account_id": "acct_property"}
    return TapStripeConnect(config=config, validate_config=True)


def objects_for(stream: str, *, well_formed: bool = False) -> st.SearchStrategy[dict]:
    """Dicts shaped loosely like the stream's objects: its field names, any values.

    `well_formed` ones have the string `id` and integer `created` every Stripe object has.
    """
    names = sorted(tap().streams[stream].schema["properties"])
    ids = st.text(min_size=1, max_size=10)
    times = st.integers(min_value=0, max_value=2_000_000_000)
    fields = dict.fromkeys([n for n in names if n not in ("id", "created")][:40], json_values)
    if well_formed:
        return st.fixed_dictionaries({"id": ids, "created": times}, optional=fields)
    return st.fixed_dictionaries(
        {}, optional={"id": ids | json_values, "created": times | json_values, **fields}
    )


def shaped_or_error(stream, obj: dict, updated: t.Any) -> tuple[dict | None, TapError | None]:
    try:
        return stream.records.shape(obj, updated, None), None
    except TapError as exc:
        return None, exc


def response(body: bytes, path: str = "/v1/charges") -> requests.Response:
    request = requests.Request("GET", f"https://api.stripe.com{path}?limit=100").prepare()
    result = requests.Response()
    result.status_code = 200
    result.reason = "OK"
    result._content = body
    result.request = request
    result.url = request.url or ""
    result.headers = CaseInsensitiveDict(
        {"Request-Id": "req_property", "Date": "Thu, 01 Jan 2026 00:00:00 GMT"}
    )
    result.elapsed = datetime.timedelta(milliseconds=5)
    return result


def raised(call: t.Callable[[], t.Any], *errors: type[Exception]) -> Exception | None:
    """The error `call()` raised among `errors`, or None; any other error fails the test."""
    try:
        call()
    except errors as exc:
        return exc
    return None


def write(stream, record: dict) -> None:
    """Through the SDK's record path (conformance, maps) and the writer's serialiser."""
    for message in stream._generate_record_messages(copy.deepcopy(record)):
        line = tap().message_writer.serialize_message(message)
        assert json.loads(bytes(line))["record"]["id"] == record["id"]
    conform_record_data_types(
        stream_name=stream.name,
        record=copy.deepcopy(record),
        schema=stream.schema,
        level=TypeConformanceLevel.RECURSIVE,
        logger=logging.getLogger("properties"),
    )


# -- shaping -----------------------------------------------------------------------------------


def times_of(stream: str) -> st.SearchStrategy[dict]:
    """Any number (or other value) in every top-level date-time field of the stream."""
    schema = tap().streams[stream].schema["properties"]
    names = sorted(n for n, p in schema.items() if p.get("format") == "date-time")
    numbers = st.integers() | st.floats() | st.decimals() | json_values
    return st.fixed_dictionaries({}, optional=dict.fromkeys(names, numbers))


@PROPERTY_SETTINGS
@given(
    st.sampled_from(CORE).flatmap(lambda s: st.tuples(st.just(s), (objects_for(s) | times_of(s))))
)
def test_shaping_any_object_gives_rfc3339_times_or_a_clear_error(case):
    stream_name, obj = case
    schema = tap().streams[stream_name].schema
    before = copy.deepcopy(obj)
    error = raised(lambda: RecordShaper(schema).shape(obj), TapError)
    if error is not None:
        assert "Unix time" in str(error)
        return
    for name, prop in schema["properties"].items():
        value = before.get(name)
        if prop.get("format") == "date-time" and type(value) is int:
            assert RFC3339.fullmatch(obj[name]), (name, obj[name])


# -- responses to records ----------------------------------------------------------------------


def list_bodies(stream: str) -> st.SearchStrategy[bytes]:
    envelopes = st.fixed_dictionaries(
        {"object": st.just("list") | json_values},
        optional={
            "data": st.lists(objects_for(stream), max_size=5) | json_values,
            "has_more": st.booleans() | json_values,
            "url": st.text(max_size=10),
        },
    )
    well_formed = st.fixed_dictionaries(
        {
            "object": st.just("list"),
            "data": st.lists(objects_for(stream, well_formed=True), max_size=4),
            "has_more": st.booleans(),
        }
    )
    as_json = (well_formed | envelopes | json_values).map(lambda v: json.dumps(v).encode())
    return as_json | st.binary(max_size=40) | as_json.map(lambda b: b[: len(b) // 2])


@PROPERTY_SETTINGS
@given(st.sampled_from(CORE).flatmap(lambda s: st.tuples(st.just(s), list_bodies(s))))
def test_any_list_body_becomes_records_or_a_clear_error_naming_the_request(case):
    stream_name, body = case
    stream = tap().streams[stream_name]
    resp = response(body, f"/v1/{stream_name}")
    read = list_read(stream.resource)
    error = raised(lambda: checked_body(read, resp, body), Retriable, TapError)
    if error is not None:
        assert f"GET /v1/{stream_name}, Request-Id req_property" in str(error)
        return
    parsed = checked_body(read, resp, body)
    records = parsed["data"]
    # Paged on: Stripe sending the same page again ends with an error naming the request.
    with mock.patch.object(StripeClient, "call", return_value=(parsed, resp)):
        error = raised(lambda: list(tap().client.pages(read)), StripeAPIError)
    assert error is None or "Request-Id req_property" in str(error)
    stamps = [int(r["created"]) for r in records]
    # Out of Stripe's newest-first order (windows rely on it), or paging on to the same
    # page again: an error naming the request; otherwise every object once.
    out_of_order = stamps != sorted(stamps, reverse=True)
    repeated = bool(parsed.get("has_more") and records)
    assert (error is not None) == (out_of_order or repeated)
    if out_of_order:
        assert "out of its newest-first order" in str(error)
    for record in records:
        assert isinstance(record, dict)
        assert isinstance(record["id"], str)
        int(record["created"])  # what the `created` windows sort and split on
        shaped, error = shaped_or_error(stream, record, 1_767_225_600)
        if shaped is not None:
            write(stream, shaped)
        else:
            assert "Unix time" in str(error)


event_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(min_size=1, max_size=8) | json_values,
        "type": st.sampled_from(["charge.updated", "customer.deleted"]) | json_values,
        "created": st.integers(min_value=0, max_value=2_000_000_000) | json_values,
        "api_version": st.just("2024-06-20"),
        "data": st.fixed_dictionaries(
            {},
            optional={
                "object": objects_for("charges", well_formed=True).map(
                    lambda o: {**o, "object": "charge"}
                )
                | objects_for("charges")
                | json_values
            },
        )
        | json_values,
    },
)


@PROPERTY_SETTINGS
@given(
    st.fixed_dictionaries(
        {"object": st.just("list"), "data": st.lists(event_objects, max_size=4)},
        optional={"has_more": st.booleans()},
    ).map(lambda v: json.dumps(v).encode())
)
def test_any_event_list_is_read_or_refused_with_a_clear_error(body):
    stream = tap().streams["charges"]
    resp = response(body, "/v1/events")
    read = events_read(stream.resource, 0)
    error = raised(lambda: checked_body(read, resp, body), Retriable)
    if error is not None:
        assert "GET /v1/events, Request-Id req_property" in str(error)
        return
    for event in checked_body(read, resp, body)["data"]:
        payload = event["data"]["object"]
        assert isinstance(payload, dict)
        if changed_object_id(stream.resource, payload) is None:
            continue
        shaped, _ = shaped_or_error(stream, payload, event["created"])
        if shaped is not None and isinstance(shaped.get("id"), str):
            write(stream, shaped)


# -- settings, STATE and listings --------------------------------------------------------------


@PROPERTY_SETTINGS
@given(st.dictionaries(st.sampled_from(["max_retries", "api_key", "start_date", "x"]), json_values))
def test_any_settings_give_phrases_not_crashes_and_never_echo_the_key(config):
    schema = TapStripeConnect.config_jsonschema
    problems = config_problems(config, schema)
    assert all(isinstance(p, str) and "\n" not in p for p in problems)
    key = config.get("api_key")
    if isinstance(key, str) and len(key) >= 8:
        assert not any(key in p for p in problems)


@PROPERTY_SETTINGS
@given(
    json_values
    | st.fixed_dictionaries(
        {"bookmarks": st.dictionaries(st.sampled_from(CORE), json_values, max_size=3)}
    )
    | st.fixed_dictionaries(
        {
            "bookmarks": st.fixed_dictionaries(
                {
                    "charges": st.dictionaries(
                        st.sampled_from(
                            ["listing", "partitions", "replication_key_value", "table_version"]
                        ),
                        json_values,
                    )
                }
            )
        }
    )
)
def test_any_state_is_accepted_or_refused_in_one_line(state):
    error = raised(lambda: check_state(state), StateError)
    if error is not None:
        assert "\n" not in str(error)
        assert str(error).startswith(("STATE entry", "The STATE"))


ranges = st.lists(
    st.tuples(st.integers(0, 1000), st.integers(0, 1000)).map(sorted).map(tuple), max_size=8
)


@PROPERTY_SETTINGS
@given(ranges, st.integers(0, 1000), st.integers(0, 1000))
def test_done_ranges_and_gaps_cover_the_listing_exactly_once(done, lower, upper):
    merged = merge(done)
    assert all(a < b for a, b in merged)
    assert all(merged[i][1] < merged[i + 1][0] for i in range(len(merged) - 1))
    missing = gaps(lower, upper, done)
    for point in range(lower, upper):
        in_done = any(a <= point < b for a, b in done)
        in_gap = any(a <= point < b for a, b in missing)
        assert in_done != in_gap, point
    listing = Listing(started=5, table_version=None)
    for a, b in done:
        listing.complete(a, b)
    assert Listing.from_state(json.loads(json.dumps(listing.to_state()))).done == merged


# -- windows: what a batch says is done is done --------------------------------------------------


class SplitWatch:
    """Stripe's list over `objects`, paged as the tap pages it, with a reader that waits
    for a split.

    Each window's bounds are read once, when its paging starts (as `window_records` builds
    one `Read` per window); a split raises the window's `lower` meanwhile, and paging then
    ends at the first object below it (`Window.accept`). Windows `read` is given that are
    not among the first ones are splits. A reader that has claimed `PAUSE_AFTER` objects
    of a window still worth splitting stops between pages until `wanted` windows were
    split, or it is no longer worth splitting (or `WAIT` seconds pass): the consumer then
    waits for a batch, and splits one. So splits happen however loaded the machine, not
    only when a page happens to be slow.
    """

    PAUSE_AFTER = 100  # a window estimates what it holds after 100 objects
    WAIT = 10.0

    def __init__(self, objects: list[dict], page_size: int, first: list[Window], wanted: int):
        self.ordered = sorted(objects, key=lambda o: (o["created"], o["id"]), reverse=True)
        self.page_size = page_size
        self.first = {id(w) for w in first}
        self.wanted = wanted  # splits to wait for
        self.splits = 0
        self.waited_in_vain = 0
        self.changed = threading.Condition()

    def read(self, window: Window) -> t.Iterator[dict]:
        with self.changed:
            if id(window) not in self.first:
                self.splits += 1
                self.changed.notify_all()
        lower, upper = window.lower, window.upper  # fixed for the whole paging
        after: tuple[int, str] | None = None
        claimed = 0
        while True:
            page = [
                o
                for o in self.ordered
                if lower <= o["created"] < upper
                and (after is None or (o["created"], o["id"]) < after)
            ][: self.page_size]
            yield from page
            claimed += len(page)
            if len(page) < self.page_size:
                return
            after = (page[-1]["created"], page[-1]["id"])
            if self.wanted and claimed >= self.PAUSE_AFTER:
                self.wait_for_a_split(window)

    def splittable(self, window: Window) -> bool:
        """Whether the consumer can split `window`: estimated to hold enough still, over
        more than one second (a split gives away whole seconds)."""
        cursor = window.cursor if window.cursor is not None else window.lower
        return window.remaining() >= 2 * Window.MIN_SPLIT and cursor >= window.lower + 2

    def wait_for_a_split(self, window: Window) -> None:
        with self.changed:
            if not self.changed.wait_for(
                lambda: self.splits >= self.wanted or not self.splittable(window),
                timeout=self.WAIT,
            ):
                self.waited_in_vain += 1

windows_strategy = st.tuples(
    st.lists(st.integers(0, 5_000), min_size=0, max_size=900)
    | st.lists(st.integers(0, 5_000), min_size=400, max_size=900),
    st.lists(st.tuples(st.integers(0, 5_000), st.integers(0, 5_000)).map(sorted), max_size=3),
    st.integers(0, 3),
)


#: Cases whose windows must split (`extra` idle workers, many objects over many seconds in
#: each window): run first, whatever examples Hypothesis draws. Those depend on the text of
#: the test function (derandomized: the seed is a digest of its code) and on Hypothesis's
#: version, not on `HYPOTHESIS_SEED`: how many of them split changes with any edit.
MUST_SPLIT = (
    (list(range(0, 5_000, 6)), [], 3),  # one window, 834 objects, three idle workers
    (list(range(0, 5_000, 7)), [(2_000, 3_000)], 1),  # two windows around a done range
)


@settings(PROPERTY_SETTINGS, max_examples=25)
@given(windows_strategy)
@example(MUST_SPLIT[0])
@example(MUST_SPLIT[1])
def test_a_batch_covers_only_ranges_whose_objects_were_all_yielded(case):
    """Whatever the objects, the ranges already done and the workers: each batch's
    `covers` holds only objects yielded by then, the batches cover the listing, and every
    object is yielded once. Windows split for idle workers (`MUST_SPLIT` always does)."""
    stamps, done, extra = case
    objects = [{"id": f"o{i}", "created": c} for i, c in enumerate(stamps)]
    lower, upper = 0, 5_001
    # `floor` 0: these objects are created in [0, 5000], not after 2010 as Stripe's.
    windows = [Window(a, b, floor=0) for a, b in gaps(lower, upper, [tuple(d) for d in done])]
    # A worker for each window and `extra` more, which only a split gives work to.
    workers = len(windows) + extra
    stripe = SplitWatch(objects, 7, windows, wanted=extra)
    seen: collections.Counter[str] = collections.Counter()
    covered: list[tuple[int, int]] = []
    original, Window.MIN_SPLIT = Window.MIN_SPLIT, 10  # split small windows too
    try:
        for batch in list_windows(stripe.read, windows, workers, batch_size=5):
            seen.update(o["id"] for o in batch)
            if batch.covers is not None:
                a, b = batch.covers
                missing = [o for o in objects if a <= o["created"] < b and o["id"] not in seen]
                assert not missing, (batch.covers, missing[:3])
                covered.append(batch.covers)
    finally:
        Window.MIN_SPLIT = original
    expected = merge([tuple(d) for d in done])
    assert merge([*covered, *expected]) == ([(lower, upper)] if upper > lower else [])
    wanted = {o["id"] for o in objects if not any(a <= o["created"] < b for a, b in expected)}
    assert set(seen) == wanted
    assert set(seen.values()) <= {1}, "an object was yielded twice"
    assert stripe.waited_in_vain == 0, "a reader waited for a split that never came"
    if workers == 1:
        assert stripe.splits == 0
    if case in MUST_SPLIT:
        assert stripe.splits == extra, f"{stripe.splits} windows split off for {extra} idle workers"
