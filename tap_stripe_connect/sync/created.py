"""The CREATED mode: objects that never change once made (balance transactions, events).

A first sync lists everything; later ones list only what was created since the bookmark,
less the lag (a new object can appear in the list a little after its `created` time).
"""

from __future__ import annotations

import typing as t

from tap_stripe_connect.sync.listing import list_all

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_stripe_connect.sync.unit import Unit


def sync(unit: Unit) -> Iterator[dict]:
    bookmark = unit.state.bookmark()
    since = None if bookmark is None else bookmark - unit.settings.event_lag_seconds
    return list_all(unit, since=since)
