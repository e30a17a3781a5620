"""Stripe response bodies: parsed once, and checked before anything relies on them."""

from __future__ import annotations

import decimal
import typing as t

import msgspec

# msgspec parses a page about twice as fast as `json.loads` (the same values: exact
# Decimals for fractions, Python ints of any size); its DecodeError is a ValueError.
_DECODER = msgspec.json.Decoder(float_hook=decimal.Decimal)
# Decimals written back as JSON numbers: `parse(encode(x)) == x` (events spooled to disk).
_ENCODER = msgspec.json.Encoder(decimal_format="number")


def parse(content: bytes) -> t.Any:
    """The JSON of a response body; ValueError when it is not JSON."""
    return _DECODER.decode(content)


def encode(value: t.Any) -> bytes:
    """JSON that `parse` reads back as the same value."""
    return _ENCODER.encode(value)


def body_problem(
    body: t.Any,
    *,
    listing: bool = True,
    events: bool = False,
    created: bool = False,
    v2: bool = False,
) -> str | None:
    """What keeps a parsed 2xx body from being a Stripe object or list, or None.

    Records, paging and bookmarks rely on these fields; anything else passes as it is.
    """
    if not isinstance(body, dict):
        return f"{type(body).__name__} instead of an object"
    if v2:
        return _v2_list_problem(body)
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


def _v2_list_problem(body: dict) -> str | None:
    """A v2 list: `data`, and `next_page_url` a string or null (no `object`, no `has_more`)."""
    data = body.get("data")
    if not isinstance(data, list):
        return "a v2 list whose 'data' is not an array"
    following = body.get("next_page_url")
    if following is not None and not isinstance(following, str):
        return "a v2 list whose 'next_page_url' is not a string or null"
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            return f"item {index} of the list has no id"
    return None
