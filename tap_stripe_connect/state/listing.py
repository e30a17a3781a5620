"""Resumable listings: a killed first sync goes on where its last STATE left off.

A full listing reads a stream's `created` range in windows (see `sync/windows.py`). Each
time a batch of a window has been written, the part of the range it completes is recorded
in the stream's (or partition's) state, and a STATE message is written:

    "listing": {"started": 1767225600, "table_version": 1767225600000,
                "done": [[0, 1700000000], [1700050000, 1767225602]]}

`started` is the Stripe time the listing began. It stays the bookmark of the listing, so
changes made while a killed run was down are still read from events; `done` holds merged
`[lower, upper)` ranges of `created` whose every object (and its child records) has been
written. A run that finds a listing in its state lists only the gaps, with the same table
version, then reads the events since `started`. The entry is removed once the listing is
complete and the bookmark is set.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from tap_stripe_connect.errors import TapError

LISTING = "listing"

Range = tuple[int, int]


class StateError(TapError):
    """The STATE given with `--state` cannot be used."""


def merge(ranges: t.Iterable[Range]) -> list[Range]:
    """Sorted, non-overlapping ranges; touching ranges become one."""
    merged: list[list[int]] = []
    for lower, upper in sorted(r for r in ranges if r[0] < r[1]):
        if merged and lower <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], upper)
        else:
            merged.append([lower, upper])
    return [(lower, upper) for lower, upper in merged]


def gaps(lower: int, upper: int, done: t.Iterable[Range]) -> list[Range]:
    """The parts of [lower, upper) not covered by `done`, oldest first."""
    missing: list[Range] = []
    cursor = lower
    for done_lower, done_upper in merge(done):
        if done_upper <= cursor:
            continue
        if done_lower >= upper:
            break
        if done_lower > cursor:
            missing.append((cursor, done_lower))
        cursor = max(cursor, done_upper)
    if cursor < upper:
        missing.append((cursor, upper))
    return missing


@dataclass
class Listing:
    """The progress of one full listing of a stream or partition."""

    started: int
    table_version: int | None = None
    done: list[Range] = field(default_factory=list)

    def complete(self, lower: int, upper: int) -> None:
        self.done = merge([*self.done, (lower, upper)])

    def to_state(self) -> dict[str, t.Any]:
        return {
            "started": self.started,
            "table_version": self.table_version,
            "done": [[lower, upper] for lower, upper in self.done],
        }

    @classmethod
    def from_state(cls, value: t.Any, where: str = LISTING) -> Listing:
        """Read a `listing` entry; StateError names what is wrong with it."""
        if not isinstance(value, dict):
            raise StateError(f"STATE entry {where} is not an object.")
        started = value.get("started")
        version = value.get("table_version")
        done = value.get("done", [])
        if not _is_int(started) or started < 0:
            raise StateError(f"STATE entry {where}.started is not a Unix time in seconds.")
        if version is not None and not _is_int(version):
            raise StateError(f"STATE entry {where}.table_version is not an integer.")
        if not isinstance(done, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(_is_int(x) for x in r) and r[0] <= r[1]
            for r in done
        ):
            raise StateError(
                f"STATE entry {where}.done is not a list of [lower, upper] Unix-time pairs."
            )
        return cls(int(started), version, merge((int(a), int(b)) for a, b in done))


def _is_int(value: t.Any) -> t.TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
