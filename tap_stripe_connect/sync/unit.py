"""One unit of work: one stream of one account, and what its sync mode needs.

A sync mode (`listing`, `events`, `created`, `full_table`, `children`) is a function of
a `Unit`: it reads through the run's client, shapes records, and keeps the unit's state.
The stream it writes for is seen only through `StreamOutput`, so the modes import no
stream and no tap, and a scheduler can hand out (account, stream) units freely.
"""

from __future__ import annotations

import functools
import typing as t
from dataclasses import dataclass, field

from tap_stripe_connect.errors import StripePermissionError

if t.TYPE_CHECKING:
    import logging

    from tap_stripe_connect.api import StripeClient
    from tap_stripe_connect.output.records import Records
    from tap_stripe_connect.resources import Resource
    from tap_stripe_connect.settings import Settings
    from tap_stripe_connect.state.bookmarks import UnitState
    from tap_stripe_connect.sync.run import Run

# Far beyond any `created`: the upper bound of a listing before Stripe's time is known.
FAR_FUTURE = 2**33


class StreamOutput(t.Protocol):
    """What a sync mode may ask of the stream it writes for."""

    @property
    def table_version(self) -> int | None: ...

    def use_table_version(self, version: int | None) -> None:
        """Tag this stream's (and its children's) records with a table version."""

    def activate_table_version(self) -> None:
        """Write ACTIVATE_VERSION for this stream and its selected children."""

    def prefetch_children(self, parents: list[dict], account: str | None) -> None:
        """Start fetching the child lists that overflow these parents' embedded pages."""

    def children_gone(self) -> bool:
        """Whether a child list of this run was gone when read (its parent deleted)."""

    def uses_feed(self, account: str | None) -> bool:
        """Whether this stream's incremental units of `account` use the account's events."""


@dataclass
class Unit:
    run: Run
    resource: Resource
    #: The connected account read (a platform sync's partition); None: the credential's.
    account: str | None
    state: UnitState
    records: Records
    out: StreamOutput
    logger: logging.Logger
    #: What a listing skipped (parents deleted while read): it then activates no table
    #: version, which would delete what it did not read.
    skipped: list[str] = field(default_factory=list)

    @property
    def client(self) -> StripeClient:
        return self.run.client

    @property
    def settings(self) -> Settings:
        return self.run.settings

    @property
    def name(self) -> str:
        return self.resource.name

    def now(self) -> int | None:
        """Stripe's time, or None before any response."""
        return self.client.clock.now()

    @functools.cached_property
    def owner(self) -> str | None:
        """The account the records come from (`account_id` of every record).

        A connected account read as itself is a row of the platform's account list, as
        when the list is read whole.
        """
        if self.resource.each_account:
            return self.run.account_id
        return self.run.owner_of(self.account)

    def shape(self, obj: dict, updated: int | None, *, deleted_at: int | None = None) -> dict:
        return self.records.shape(obj, updated, self.owner, deleted_at=deleted_at)

    def resting(self) -> bool:
        """Whether the unit waits this run with its bookmark where it is: it uses the events
        of a quiet connected account whose events read waits (`Run.resting`)."""
        # (The `events` stream, too: it takes its new events from the account's feed.)
        return self.run.resting(self.account) and (
            self.out.uses_feed(self.account) or self.resource.object == "event"
        )

    def quiet_since(self, bookmark: int) -> bool:
        """Whether a listing of the objects created since `bookmark` may wait for a later run.

        Stripe sends no event as a balance transaction or a Checkout Session is created, so
        only a listing finds new ones. Most come with other events of the account (a charge,
        a payout, a customer); in an account with no event at all since the bookmark (less
        the lag) the listing waits until the bookmark is `quiet_account_interval_seconds`
        old by Stripe's clock. The bookmark then stays put: the next listing starts there.
        """
        interval = self.settings.quiet_account_interval_seconds
        if self.resource.creation_event or not interval:
            return False
        since = bookmark - self.settings.event_lag_seconds
        feed = self.run.feed(self.account)
        try:
            if not feed.covers(since, self.resource):
                return False
        except StripePermissionError:
            return False  # a key without the Events permission: list, as without a feed
        return feed.started is not None and feed.started - bookmark < interval and feed.quiet(since)

    def mark_synced(self, started: int | None) -> None:
        """Move the bookmark to the start of this read, also when nothing changed."""
        if started is None:
            started = self.now()
        if started is not None:
            self.state.mark_synced(started)
