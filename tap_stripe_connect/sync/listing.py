"""Full listings: every object of a stream, by `created` windows read in parallel.

Records carry `updated` = the Stripe time at which the listing began, which is also
where the next incremental sync picks up. A listing records each `created` range it has
written (state/listing.py), so a killed first sync resumes where it stopped.
"""

from __future__ import annotations

import functools
import itertools
import typing as t
from dataclasses import dataclass

from tap_stripe_connect.api import list_read
from tap_stripe_connect.api.clock import DATE_RESOLUTION
from tap_stripe_connect.api.limiter import endpoint_of
from tap_stripe_connect.resources import CREATED, EVENT_RETENTION, EVENTS, RESOURCES_BY_NAME
from tap_stripe_connect.settings import format_time
from tap_stripe_connect.state.listing import gaps
from tap_stripe_connect.sync.children import child_list
from tap_stripe_connect.sync.unit import FAR_FUTURE
from tap_stripe_connect.sync.windows import Window, list_windows

if t.TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Iterator

    from tap_stripe_connect.state.listing import Listing
    from tap_stripe_connect.sync.unit import Unit


@dataclass
class Listed:
    """How a listing went: when it began (Stripe's time) and whether it was resumed."""

    started: int | None
    resumed: bool


def pages_of(objects: Iterable[dict], size: int = 100) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for obj in objects:
        batch.append(obj)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def list_all(unit: Unit, since: int | None = None) -> Generator[dict, None, Listed]:
    """Every object created at or after `start_date` (and `since`), each once.

    `since` makes a partial listing, which carries no table version: the incremental
    sync of CREATED streams, whose objects never change once written.
    """
    started = unit.now()
    # A listing a killed run left unfinished goes on where its last STATE left off.
    resumed = resumable_listing(unit, started)
    if resumed is not None:
        started = resumed.started
        unit.out.use_table_version(resumed.table_version)
    batches = listing_batches(unit, started, since, resumed)
    started = yield from write_batches(unit, batches, started)
    # Not after a list was skipped (its parent gone since): rows not read would go.
    complete = not (unit.skipped or unit.out.children_gone())
    if (version := unit.out.table_version) is not None and complete:
        unit.out.activate_table_version()
        unit.state.set_table_version(version)
    unit.state.finish_listing(started)
    unit.mark_synced(started)
    return Listed(started, resumed is not None)


def write_batches(
    unit: Unit, batches: Iterable[list[dict]], started: int | None
) -> Generator[dict, None, int | None]:
    """Shape and yield each batch; record in state the `created` range each completes."""
    resource = unit.resource
    # A table version covers the whole table, so it cannot serve a table that holds
    # several accounts' partitions, nor CREATED streams: their listings after the first
    # are partial, and `events` keeps what Stripe dropped.
    versioned = not unit.run.platform and resource.sync != CREATED
    for batch in batches:
        if started is None:  # no response had been seen before this read began
            started = unit.now()
        if versioned and unit.out.table_version is None:
            unit.out.use_table_version(int(started or 0) * 1000)
        unit.out.prefetch_children(batch, unit.account)
        for obj in batch:
            yield unit.shape(obj, started)
        # Resumed after the batch's last yield: its records (and their children's) are
        # written, so the `created` range it completes can go into STATE.
        covers = getattr(batch, "covers", None)
        # (Variants read the same `created` ranges: no range is done before the last.)
        if covers is not None and started is not None and not resource.list_variants:
            unit.state.checkpoint(started, unit.out.table_version, covers)
    return started


def listing_batches(
    unit: Unit, started: int | None, since: int | None, resumed: Listing | None
) -> Iterable[list[dict]]:
    resource = unit.resource
    if resource.list_per:
        return per_parent_batches(unit)
    if not resource.created_filter:
        since_start = (unit.settings.start_timestamp, None)  # `start_filter` lists take it
        return pages_of(unit.client.list(list_read(resource, account=unit.account,
                                                   created=since_start)))
    lower = max(unit.settings.start_timestamp or 0, since or 0)
    # Objects created after the read began reach the next sync through events.
    upper = (started or FAR_FUTURE) + DATE_RESOLUTION + 1
    endpoint = endpoint_of("GET", resource.path)
    limiter = unit.client.limiter_for(unit.account)
    floor = unit.run.earliest_created(unit.account)
    ranges = gaps(lower, upper, resumed.done) if resumed else [(lower, upper)]
    # Stripe lists some objects only when asked for them (archived prices): the `created`
    # range is then read once per entry of `list_variants`.
    batches = itertools.chain.from_iterable(
        list_windows(
            functools.partial(window_records, unit, variant),
            [Window(a, b, floor) for a, b in ranges],
            unit.run.window_workers,
            may_split=functools.partial(unit.run.may_split, limiter, endpoint),
            eager=lambda: limiter.responses_slow,
        )
        for variant in resource.list_variants or (None,)
    )
    return once_each(batches) if resource.list_variants else batches


def once_each(batches: Iterable[list[dict]]) -> Iterator[list[dict]]:
    """Each object once, though the variants of a listing can list it twice: a price
    archived between the `active=true` and `active=false` listings is in both. The first
    copy is written; the change after it comes from its event, as any change during a
    listing does."""
    seen: set[str] = set()
    for batch in batches:
        fresh = [obj for obj in batch if obj["id"] not in seen]
        seen.update(obj["id"] for obj in fresh)
        if fresh:
            yield fresh


def window_records(unit: Unit, variant: tuple[str, str] | None, window: Window) -> Iterator[dict]:
    """One `created` window of a listing (of one of its `list_variants`)."""
    start = unit.settings.start_timestamp
    lower = window.lower if start is None else max(window.lower, start)
    read = list_read(
        unit.resource, account=unit.account, created=(lower, window.upper), variant=variant
    )
    return unit.client.list(read)


def per_parent_batches(unit: Unit) -> Iterator[list[dict]]:
    """A `list_per` listing: the list of every object of the parent stream.

    Parent ids are paged from the parent's list (whatever `start_date`: the objects' own
    `created` decides); the lists of each page of 100 parents are read in the background,
    in parallel.
    """
    parents = RESOURCES_BY_NAME[str(unit.resource.list_per)]
    start = unit.settings.start_timestamp or 0
    for page in pages_of(unit.client.list(list_read(parents, account=unit.account))):
        lists = [unit.run.background.submit(list_of_parent, unit, p["id"]) for p in page]
        yield [obj for f in lists for obj in f.result() if obj["created"] >= start]


def list_of_parent(unit: Unit, parent_id: str) -> list[dict]:
    read = list_read(unit.resource, account=unit.account, parent_id=parent_id)
    objects = child_list(
        unit.client, read, parent_id, unit.logger, "no ACTIVATE_VERSION this run"
    )
    if objects is None:
        unit.skipped.append(parent_id)
    return objects or []


def resumable_listing(unit: Unit, now: int | None) -> Listing | None:
    """The unfinished listing recorded in this unit's state, if it can still be used."""
    listing = unit.state.listing()
    if listing is None:
        return None
    bookmark = unit.state.bookmark()
    lag = unit.settings.event_lag_seconds
    # Events must still reach back to the listing's start (Stripe keeps 30 days), with a
    # day to spare for the rest of the listing.
    too_old = (
        unit.resource.sync == EVENTS
        and now is not None
        and listing.started - lag < now - EVENT_RETENTION + 86400
    )
    stale = bookmark is not None and listing.started < bookmark
    if too_old or stale or not unit.resource.created_filter:
        unit.logger.warning(
            "Stream '%s': the interrupted listing in STATE began too long ago to "
            "resume; listing the stream from the start.",
            unit.name,
        )
        unit.state.drop_listing()
        return None
    unit.logger.info(
        "Stream '%s': resuming the listing begun at %s; %d `created` range(s) of it "
        "were already written.",
        unit.name,
        format_time(listing.started),
        len(listing.done),
    )
    return listing
