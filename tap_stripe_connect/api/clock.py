"""Stripe's clock, learned from the `Date` header of its responses.

Bookmarks compare against event and object times stamped by Stripe, so they come from
Stripe's clock, never this machine's. Tests inject the monotonic clock.
"""

from __future__ import annotations

import email.utils
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable

    import requests

# Stripe's `Date` header has one-second resolution: step back one second so that a
# bookmark taken from it never lies after the moment the data was read.
DATE_RESOLUTION = 1


class StripeClock:
    """Stripe's time: the latest `Date` header seen, advanced by the monotonic clock."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._anchor: tuple[int, float] | None = None
        #: The last `Date` header read, and its time (one tuple: threads read it whole).
        self._last: tuple[str, int] = ("", 0)

    def observe(self, response: requests.Response) -> int | None:
        """Record the server time of a response; return it in Unix seconds."""
        header = response.headers.get("Date")
        if not header:
            return None
        last_header, last_time = self._last
        if header == last_header:  # the same second as the last response (~20 us saved)
            server_time = last_time
        else:
            try:
                server_time = int(email.utils.parsedate_to_datetime(header).timestamp())
            except (TypeError, ValueError):
                return None
            self._last = (header, server_time)
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
