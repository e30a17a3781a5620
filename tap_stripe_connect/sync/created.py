"""The CREATED mode: objects that never change once made (balance transactions, events).

A first sync lists everything; later ones list only what was created since the bookmark,
less the lag (a new object can appear in the list a little after its `created` time), or
nothing yet in an account whose events show no change (`Unit.quiet_since`).
"""

from __future__ import annotations

import typing as t

from tap_stripe_connect.sync.listing import list_all

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_stripe_connect.sync.feed import EventFeed
    from tap_stripe_connect.sync.unit import Unit


def sync(unit: Unit) -> Iterator[dict]:
    bookmark = unit.state.bookmark()
    since = None if bookmark is None else bookmark - unit.settings.event_lag_seconds
    if bookmark is not None and unit.resting():
        return iter(())  # a quiet account's events wait, and what waits on them
    if since is not None and unit.resource.object == "event":
        # The account's events were read once for its events-based streams: the `events`
        # stream takes its new ones from there when they reach back to its bookmark.
        feed = unit.run.feed(unit.account)
        if feed.covers(since, unit.resource):
            return from_feed(unit, feed, since)
    if bookmark is not None and unit.quiet_since(bookmark):
        return iter(())
    return list_all(unit, since=since)


def from_feed(unit: Unit, feed: EventFeed, since: int) -> Iterator[dict]:
    start = unit.settings.start_timestamp
    for event in feed.events(since if start is None else max(since, start)):
        yield unit.shape(event, feed.started)
    unit.mark_synced(feed.started)
