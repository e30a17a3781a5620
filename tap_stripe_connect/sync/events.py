"""The EVENTS mode: a full listing first, then each object changed since, from events.

Stripe objects carry no update time and lists filter on `created` only: what changed
comes from the Events API, which keeps 30 days. Each changed object is written once, in
its newest state; a delete event (or an object gone when fetched) writes a delete marker.

The events come from the account's feed (feed.py: one read for all its streams), or from
a read of the stream's own when the feed does not reach back to its bookmark (a listing
resumed after a killed run began before it).
"""

from __future__ import annotations

import itertools
import typing as t

from tap_stripe_connect.api import events_read, list_read, retrieve_read
from tap_stripe_connect.api.clock import DATE_RESOLUTION
from tap_stripe_connect.resources import RESOURCES_BY_NAME, events_kept
from tap_stripe_connect.settings import parse_time
from tap_stripe_connect.sync.children import child_list
from tap_stripe_connect.sync.listing import list_all
from tap_stripe_connect.sync.unit import FAR_FUTURE

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_stripe_connect.resources import Resource
    from tap_stripe_connect.sync.unit import Unit


def sync(unit: Unit) -> Iterator[dict]:
    """A full listing without a bookmark; the changes since it with one."""
    bookmark = unit.state.bookmark()
    if bookmark is None:
        return full_listing(unit)
    if unit.resting():
        return iter(())  # a quiet account's events wait: the bookmark stays
    return changes_since(unit, bookmark)


def full_listing(unit: Unit) -> Iterator[dict]:
    if unit.resource.each_account and unit.account:
        yield from account_itself(unit)
        return
    listed = yield from list_all(unit)
    if listed.resumed and listed.started is not None:
        # Objects that changed while the killed run was down, read now rather than by the
        # next run: the bookmark is still the start of the listing.
        yield from changes_since(unit, listed.started)


def changes_since(unit: Unit, bookmark: int) -> Iterator[dict]:
    """The newest state of each object changed since the bookmark, once, from events.

    Events are read from the bookmark minus a lag, because Stripe's event list is
    eventually consistent: an event can appear a little after its `created` time.
    """
    since = bookmark - unit.settings.event_lag_seconds
    # Changes belong to the table version of the last complete listing.
    unit.out.use_table_version(unit.state.table_version())
    seen: set[str] = set()
    start_date = unit.settings.start_timestamp
    feed = unit.run.feed(unit.account)
    events: Iterator[dict]
    if feed.covers(since, unit.resource):
        events, started = feed.events(since, unit.resource.feed_types), feed.started
    else:
        events = iter(unit.client.list(events_read(unit.resource, since, account=unit.account)))
        # The first page tells Stripe's time, which says whether events since `since` are
        # still kept.
        first = next(events, None)
        started = unit.now()
        events = itertools.chain([first] if first is not None else [], events)
    if events_expired(unit, since, started):
        unit.out.use_table_version(None)
        yield from full_listing(unit)
        return
    for event in events:
        # Events are newest first: the first one seen for an object is its latest state.
        for object_id in changed_object_ids(unit, event):
            if object_id in seen:
                continue
            seen.add(object_id)
            record = record_from_event(unit, event, object_id)
            created = record.get("created")
            if start_date is None or created is None or parse_time(created) >= start_date:
                yield record
    if not unit.resource.creation_event:
        if unit.quiet_since(bookmark):
            return  # nothing changed: the bookmark stays for the listing that waits
        yield from created_since(unit, since, started, seen)
    unit.mark_synced(started)


def created_since(unit: Unit, since: int, started: int | None, seen: set[str]) -> Iterator[dict]:
    """Objects created since `since` that no event announced (no creation event)."""
    upper = (started or FAR_FUTURE) + DATE_RESOLUTION + 1
    start = unit.settings.start_timestamp
    lower = since if start is None else max(since, start)
    read = list_read(unit.resource, account=unit.account, created=(lower, upper))
    for obj in unit.client.list(read):
        if obj["id"] not in seen:
            seen.add(obj["id"])
            yield unit.shape(obj, started)


def events_expired(unit: Unit, since: int, now: int | None) -> bool:
    """Whether events since `since` may already be gone (Stripe keeps 30 days)."""
    if events_kept(since, now):
        return False
    unit.logger.warning(
        "Stream '%s': its bookmark is older than the 30 days of events Stripe keeps "
        "(less the %ss lag); re-reading every object of the stream instead.",
        unit.name,
        unit.settings.event_lag_seconds,
    )
    return True


def account_itself(unit: Unit) -> Iterator[dict]:
    """A connected account's own record: the first sync of its unit.

    Under `account_ids: ["*"]` the run's listing of the accounts already holds it (no
    request); else it is read as the account itself.
    """
    listed = unit.run.listed_account(str(unit.account))
    account: dict | None
    started: int | None
    if listed is not None:
        account, started = listed
    else:
        started = unit.now()
        read = retrieve_read(unit.resource, str(unit.account), account=unit.account)
        account = unit.client.retrieve(read)
        started = started or unit.now()
    start_date = unit.settings.start_timestamp
    # As in a listing of the accounts: those created before `start_date` are left out.
    created = (account or {}).get("created")
    if account is not None and (start_date is None or created is None or created >= start_date):
        yield unit.shape(account, started)
    unit.mark_synced(started)


def changed_object_ids(unit: Unit, event: dict) -> list[str]:
    """The objects of this stream an event changed: its own, or those its lines name."""
    resource = unit.resource
    obj = event["data"]["object"]
    own = changed_object_id(resource, obj)
    if own is not None:
        return [own]
    named = resource.named_by
    if named is None or event["type"] not in named.types:
        return []
    lines = RESOURCES_BY_NAME[named.lines]
    embedded = obj.get(str(lines.embedded_in)) or {}
    listed = embedded.get("data") or []
    if embedded.get("has_more") and isinstance(obj.get("id"), str):
        # Embedded lists stop at 10 items: the rest come from the lines' own endpoint.
        read = list_read(lines, account=unit.account, parent_id=obj["id"])
        # (Deleted since: its payload's lines are all there is.)
        listed = child_list(
            unit.client, read, obj["id"], unit.logger, "the lines its event carries are used",
            stream=unit.name,
        ) or listed
    return [line[named.field] for line in listed if isinstance(line.get(named.field), str)]


def changed_object_id(resource: Resource, obj: dict) -> str | None:
    """The id of the object of this stream that an event's payload changed.

    Some events carry another object that names ours in a field of the same name:
    `charge.dispute.created` carries the dispute, whose `charge` is the charge.
    """
    if obj.get("object") == resource.object:
        return t.cast("str | None", obj.get("id"))
    related = obj.get(resource.object)
    return related if isinstance(related, str) else None


def left_parent(resource: Resource, obj: dict) -> bool:
    """For a `list_per` stream: the object belongs to no parent any more (detached)."""
    if not resource.list_per:
        return False
    return not obj.get(RESOURCES_BY_NAME[resource.list_per].object)


def record_from_event(unit: Unit, event: dict, object_id: str) -> dict:
    resource = unit.resource
    obj = event["data"]["object"]
    gone = event["type"] in resource.delete_events or left_parent(resource, obj)
    deleted_at = event["created"] if gone else None
    # Event payloads are never expanded: a stream that expands fields fetches the object
    # again, so records from lists and from events have one shape.
    stale = (
        obj.get("id") != object_id
        or event.get("api_version") != unit.settings.api_version
        or bool(resource.expand)
    )
    if deleted_at is None and stale:
        # Payloads are rendered in the API version of the event's day, and related events
        # carry another object: fetch ours so every record has one shape.
        read = retrieve_read(resource, object_id, account=unit.account)
        fetched = unit.client.retrieve(read)
        # Stripe answers 404, or 200 with `deleted: true`, for an object deleted since.
        if fetched is None or fetched.get("deleted") or left_parent(resource, fetched):
            deleted_at = event["created"]
        else:
            obj = fetched
    return unit.shape(obj, event["created"], deleted_at=deleted_at)
