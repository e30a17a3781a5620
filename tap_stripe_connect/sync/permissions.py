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

from tap_stripe_connect.api import files_read, list_read, report_type_read
from tap_stripe_connect.errors import StripePermissionError, TapError
from tap_stripe_connect.resources import (
    EVENTS,
    FILES_PERMISSION,
    REPORT_PERMISSION,
    REPORTS_BY_NAME,
    RESOURCES_BY_NAME,
)

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_stripe_connect.resources import Resource
    from tap_stripe_connect.sync.run import Run

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


def find_unreadable(run: Run, names: t.Iterable[str]) -> list[Unreadable]:
    """The given streams the credential may not read, each with what it lacks.

    One request per distinct endpoint the streams need, several at once.
    """
    names = list(names)
    checks: dict[str, Callable[[], Need | None]] = {}
    needed: dict[str, list[str]] = {}
    for name in names:
        if name in REPORTS_BY_NAME:
            # A report stream runs reports and reads their files: both are checked.
            report = REPORTS_BY_NAME[name]
            platform = run.platform
            report_type = report.connected_type if platform else report.report_type
            keys = [f"report {report_type}", "files"]
            checks.setdefault(keys[0], functools.partial(
                _check_read, run, report_type_read(report_type, stream=name, platform=platform),
                REPORT_PERMISSION))
            checks.setdefault("files", functools.partial(
                _check_read, run, files_read(stream=name, platform=platform), FILES_PERMISSION))
            needed[name] = keys
            continue
        resource = root = RESOURCES_BY_NAME[name]
        while root.parent:
            root = RESOURCES_BY_NAME[root.parent]
        keys = []
        if resource.list_per:
            parent = RESOURCES_BY_NAME[resource.list_per]
            key = f"{name} of one {parent.name}"
            keys += [parent.name, key]
            checks.setdefault(parent.name, functools.partial(_check, run, parent))
            checks.setdefault(key, functools.partial(_check_one_parent, run, resource, parent))
        else:
            keys.append(root.name)
            checks.setdefault(root.name, functools.partial(_check, run, root))
        # A child is re-read with its parent, which follows events when it is an EVENTS one.
        if EVENTS in (resource.sync, root.sync):
            keys.append("events")
            checks.setdefault("events", functools.partial(_check, run, RESOURCES_BY_NAME["events"]))
        needed[name] = keys

    workers = max(1, min(8, run.settings.max_workers, len(checks)))
    with ThreadPoolExecutor(workers, thread_name_prefix="permissions") as pool:
        futures = {key: pool.submit(check) for key, check in checks.items()}
        failed = {key: need for key, f in futures.items() if (need := f.result()) is not None}
    unreadable = []
    for name in names:
        needs = tuple(dict.fromkeys(failed[k] for k in needed[name] if k in failed))
        if needs:
            unreadable.append(Unreadable(name, needs))
    return unreadable


def _first(run: Run, resource: Resource, parent_id: str | None = None) -> dict | None:
    """The first object of the resource's list, of the first connected account of a
    platform sync (the platform's own list of accounts is read as the platform)."""
    accounts = run.connected_accounts() if resource.object != "account" else None
    read = list_read(
        resource,
        account=accounts[0] if accounts else None,
        created=(run.settings.start_timestamp, None),
        parent_id=parent_id,
    )
    return run.client.first(read)


def _check(run: Run, resource: Resource, parent_id: str | None = None) -> Need | None:
    """None if the credential may read the resource's list, else what it needs."""
    try:
        _first(run, resource, parent_id)
    except StripePermissionError as exc:
        if exc.code == "account_invalid":
            return None  # the account, not a permission: the sync reports the account
        found = _STRIPE_PERMISSION.search(str(exc))
        return Need(resource.permission, found.group(1) if found else None)
    return None


def _check_read(run: Run, read: t.Any, permission: str) -> Need | None:
    """None if the credential may make the read, else the permission it needs."""
    try:
        run.client.retrieve(read)
    except StripePermissionError as exc:
        found = _STRIPE_PERMISSION.search(str(exc))
        return Need(permission, found.group(1) if found else None)
    return None


def _check_one_parent(run: Run, resource: Resource, parent: Resource) -> Need | None:
    """A per-parent list: read the list of the first parent, if the parent list has one."""
    try:
        first = _first(run, parent)
    except StripePermissionError:
        return None  # reported by the parent's own check
    return None if first is None else _check(run, resource, first["id"])


def unreadable_to_skip(run: Run, selected: t.Iterable[str], logger: t.Any) -> list[str]:
    """Before any stream starts: stop naming every unreadable stream, or name those to
    skip (`skip_unreadable_streams`), with a warning each."""
    if not run.settings.restricted:
        return []
    unreadable = find_unreadable(run, selected)
    if not unreadable:
        return []
    if not run.settings.skip_unreadable_streams:
        raise UnreadableStreamsError(
            f"The API key may not read {len(unreadable)} of the selected streams: "
            + "; ".join(str(u) for u in unreadable)
            + ". Give the restricted key these read permissions in the Stripe Dashboard, "
            f"deselect the streams, or set '{SKIP_SETTING}' to true to sync the others."
        )
    for item in unreadable:
        logger.warning("Skipping stream '%s' (setting '%s'): %s.", item.stream, SKIP_SETTING, item)
    return [item.stream for item in unreadable]
