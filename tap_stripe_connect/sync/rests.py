"""Quiet connected accounts whose events read waits this run (setting
`quiet_account_events_interval_seconds`; docs/platforms.md, "Reads")."""

from __future__ import annotations

import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_stripe_connect.settings import Settings
    from tap_stripe_connect.sync.feed import EventFeed


class Rests:
    """Which quiet connected accounts rest this run, decided once per account.

    What STATE says of an account's last events read (`was_quiet`), where a new read's
    finding is told (`found_quiet`), the bookmarks of the account's streams kept current by
    its events alone (`events_bookmarks`: the time of its last events read) and who is told
    of a rest (`on_rest`) are set by the tap.
    """

    def __init__(self, settings: Settings, now: Callable[[], int | None]) -> None:
        self.settings = settings
        #: Stripe's time, from this run's responses (never this machine's clock).
        self.now = now
        self.was_quiet: Callable[[str], bool] = lambda account: False
        self.events_bookmarks: Callable[[str | None], list[int | None]] = lambda account: []
        self.found_quiet: Callable[[str, bool], None] = lambda account, quiet: None
        self.on_rest: Callable[[str], None] = lambda account: None
        self._resting: dict[str, bool] = {}
        self._deciding = threading.Lock()

    def feed_read(self, feed: EventFeed) -> None:
        """An account's events were read: quiet when they held no event."""
        if feed.account is not None and self.settings.quiet_account_events_interval_seconds:
            self.found_quiet(feed.account, not feed.found)

    def resting(self, account: str | None) -> bool:
        """Whether a connected account's events read (and what waits on it) waits this run.

        An account whose last events read found no event (quiet, in STATE) is read again
        once the oldest bookmark of its streams kept current by events alone is
        `quiet_account_events_interval_seconds` old by Stripe's clock; until then its units
        that use its events write nothing and keep their bookmarks, so the next read starts
        where the last ended.
        """
        interval = self.settings.quiet_account_events_interval_seconds
        if account is None or not interval:
            return False
        with self._deciding:
            rest = self._resting.get(account)
            if rest is None:
                rest = self._resting[account] = self._rests(account, interval)
                if rest:
                    self.on_rest(account)
        return rest

    def _rests(self, account: str, interval: int) -> bool:
        if not self.was_quiet(account):
            return False
        now = self.now()
        bookmarks = [b for b in self.events_bookmarks(account) if b is not None]
        return now is not None and bool(bookmarks) and now - min(bookmarks) < interval
