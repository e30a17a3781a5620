"""Permissions, checked before a sync: every selected stream readable, or one clear error.

A restricted key (`rk_...`) reads only what it was given. Rather than failing halfway
through a run, the tap reads each selected stream once with `limit=1` before any stream
starts, and ends with one message naming every stream it may not read and the permission
each needs. With `skip_unreadable_streams`, those streams are deselected instead, with a
warning each. Secret keys and OAuth access tokens read everything, so the check (one
request per stream) runs for restricted keys only.

What a stream needs:
- its list endpoint; a child's is its parent's (children are read through the parent);
- the Events API, when it (or the parent it is read with) syncs through events: the first
  run lists, but every later run reads events, and a key that cannot is found out now,
  not on the second run;
- for a per-parent list (`list_per`, payment methods per customer): the parent's list and
  one parent's list of children.
"""

from __future__ import annotations

import functools
import re
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tap_stripe_connect.errors import StripePermissionError, TapError
from tap_stripe_connect.resources import EVENTS

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_stripe_connect.client import StripeStream
    from tap_stripe_connect.tap import TapStripeConnect

SKIP_SETTING = "skip_unreadable_streams"
# Stripe's 403 names the permission: "Having the 'rak_charge_read' permission would ...".
_STRIPE_PERMISSION = re.compile(r"'(rak_[a-z_]+)'")


class UnreadableStreamsError(TapError):
    """Selected streams the credential may not read."""


@dataclass(frozen=True)
class Need:
    """A permission a stream needs: the Dashboard's name, and Stripe's when it said it."""

    permission: str
    stripe_name: str | None = None

    def __str__(self) -> str:
        stripe = f" ({self.stripe_name})" if self.stripe_name else ""
        return f"the '{self.permission}' read permission{stripe}"


@dataclass(frozen=True)
class Unreadable:
    stream: str
    needs: tuple[Need, ...]

    def __str__(self) -> str:
        return f"stream '{self.stream}' needs " + " and ".join(str(n) for n in self.needs)


def is_restricted(tap: TapStripeConnect) -> bool:
    return str(tap.config.get("api_key") or "").startswith("rk_")


def find_unreadable(tap: TapStripeConnect, streams: t.Iterable[StripeStream]) -> list[Unreadable]:
    """The given streams the credential may not read, each with what it lacks.

    One request per distinct endpoint the streams need, several at once.
    """
    streams = list(streams)
    by_name = t.cast("dict[str, StripeStream]", dict(tap.streams))
    checks: dict[str, Callable[[], Need | None]] = {}
    needed: dict[str, list[str]] = {}
    for stream in streams:
        root = stream
        while root.resource.parent:
            root = by_name[root.resource.parent]
        keys = []
        if stream.resource.list_per:
            parent = by_name[stream.resource.list_per]
            key = f"{stream.name} of one {parent.name}"
            keys += [parent.name, key]
            checks.setdefault(parent.name, functools.partial(_probe, parent))
            checks.setdefault(key, functools.partial(_probe_one_parent, stream, parent))
        else:
            keys.append(root.name)
            checks.setdefault(root.name, functools.partial(_probe, root))
        # A child is re-read with its parent, which follows events when it is an EVENTS one.
        if EVENTS in (stream.resource.sync, root.resource.sync) and "events" in by_name:
            keys.append("events")
            checks.setdefault("events", functools.partial(_probe, by_name["events"]))
        needed[stream.name] = keys

    workers = max(1, min(8, tap.max_workers, len(checks)))
    with ThreadPoolExecutor(workers, thread_name_prefix="permissions") as pool:
        futures = {key: pool.submit(check) for key, check in checks.items()}
        failed = {key: need for key, f in futures.items() if (need := f.result()) is not None}
    unreadable = []
    for stream in streams:
        needs = tuple(dict.fromkeys(failed[k] for k in needed[stream.name] if k in failed))
        if needs:
            unreadable.append(Unreadable(stream.name, needs))
    return unreadable


def _probe(stream: StripeStream, context: dict | None = None) -> Need | None:
    """None if the credential may read the stream's list, else what it needs."""
    try:
        stream.probe({**_context(stream), **(context or {})})
    except StripePermissionError as exc:
        if exc.code == "account_invalid":
            return None  # the account, not a permission: the sync reports the account
        found = _STRIPE_PERMISSION.search(str(exc))
        return Need(stream.resource.permission, found.group(1) if found else None)
    return None


def _probe_one_parent(stream: StripeStream, parent: StripeStream) -> Need | None:
    """A per-parent list: read the list of the first parent, if the parent list has one."""
    try:
        first = parent.probe(_context(parent))
    except StripePermissionError:
        return None  # reported by the parent's own check
    return None if first is None else _probe(stream, {"parent_id": first["id"]})


def _context(stream: StripeStream) -> dict:
    """The first partition (connected account) of a platform sync, else no context."""
    partitions = stream.partitions
    return dict(partitions[0]) if partitions else {}


def check_permissions(tap: TapStripeConnect) -> None:
    """Before any stream starts: stop naming every unreadable stream, or skip them."""
    if not is_restricted(tap):
        return
    selected = [s for s in tap.streams.values() if s.selected]
    unreadable = find_unreadable(tap, t.cast("list[StripeStream]", selected))
    if not unreadable:
        return
    if not tap.config.get(SKIP_SETTING):
        raise UnreadableStreamsError(
            f"The API key may not read {len(unreadable)} of the selected streams: "
            + "; ".join(str(u) for u in unreadable)
            + ". Give the restricted key these read permissions in the Stripe Dashboard, "
            f"deselect the streams, or set '{SKIP_SETTING}' to true to sync the others."
        )
    for item in unreadable:
        tap.logger.warning(
            "Skipping stream '%s' (setting '%s'): %s.", item.stream, SKIP_SETTING, item
        )
        tap.streams[item.stream].selected = False
