"""The FULL_TABLE mode: Stripe sends no usable events, so every run lists everything.

Each complete listing carries a new table version; its ACTIVATE_VERSION lets targets
drop the rows Stripe no longer lists.
"""

from __future__ import annotations

import typing as t

from tap_stripe_connect.sync.listing import list_all

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tap_stripe_connect.sync.unit import Unit


def sync(unit: Unit) -> Iterator[dict]:
    return list_all(unit)
