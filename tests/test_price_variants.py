"""Prices are listed twice, `active=true` then `active=false` (Stripe lists archived
prices only when asked): a price archived between the two listings is in both, and is
written once."""

from __future__ import annotations

import collections

from tap_stripe_connect.sync import events
from tests.emulator import Emulator
from tests.test_sync_modes import Harness


def test_a_price_archived_between_the_two_listings_is_written_once():
    with Emulator(objects=60, seed=81) as emu:
        harness = Harness(emu)
        unit = harness.unit("prices")
        price = next(p for p in emu.objects("prices") if p["active"])
        client = harness.run.client
        listing = client.list
        archived: list[str] = []

        def list_archiving(read):
            # The `active=true` listing is over: the price is archived before the other.
            if ("active", "false") in read.params and not archived:
                emu.update("prices", price["id"], {"active": False})
                archived.append(price["id"])
            return listing(read)

        client.list = list_archiving  # type: ignore[method-assign]
        records = harness.sync(events.sync, unit)
        assert archived, "the `active=false` listing never began"
        written = collections.Counter(r["id"] for r in records)
        assert written[price["id"]] == 1, written[price["id"]]
        assert set(written) == {p["id"] for p in emu.objects("prices")}
        assert max(written.values()) == 1
