"""The state of each (stream, account) unit: its bookmark, table version and listing.

This is the only code that reads or changes the state dict of a run. Every access holds
the run lock: units of work change their own entries while others write STATE.
"""

from __future__ import annotations

import math
import time
import typing as t

from tap_stripe_connect.sdk_compat import StreamStateManager
from tap_stripe_connect.settings import format_time, parse_time
from tap_stripe_connect.state.listing import LISTING, Listing
from tap_stripe_connect.state.lock import RUN_LOCK

if t.TYPE_CHECKING:
    from collections.abc import Callable

# The manager's operations on the shared dict (tests/test_sdk_compat.py checks they exist).
LOCKED_METHODS = (
    "get_context_state",
    "write_starting_replication_value",
    "write_replication_key_signpost",
    "increment_state",
    "finalize_state",
    "finalize_progress_markers",
    "get_state_partitions",
)
# The account a stream's own (unpartitioned) entry belongs to: a project that switches
# credentials to another account keeps its state, and the old account's bookmark would
# skip everything the new account changed before it.
ACCOUNT = "account_id"
FULL_TABLE = "FULL_TABLE"  # the SDK's name of the replication method
# A STATE message holds every stream's state: one per page of 100 records took ~3% of a
# sync's CPU (and as much of a target's). One per second per listing bounds what a killed
# run reads again to a second or so of work.
CHECKPOINT_SECONDS = 1.0


def accounts_in_state(state: t.Mapping[str, t.Any]) -> set[str]:
    """The connected accounts that have an entry (a stream's partition) in STATE."""
    with RUN_LOCK:
        return {
            str(account)
            for entry in (state.get("bookmarks") or {}).values()
            for partition in entry.get("partitions") or ()
            if (account := (partition.get("context") or {}).get("account_id"))
        }


def _locked(method: Callable) -> Callable:
    def call(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        with RUN_LOCK:
            return method(self, *args, **kwargs)

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class LockedStateManager(StreamStateManager):
    """The SDK's state manager; each operation on the shared dict holds the run lock."""

    @property
    def stream_state(self) -> dict:
        with RUN_LOCK:
            return StreamStateManager.stream_state.fget(self)  # type: ignore[attr-defined, no-any-return]

    _partitions: list | None = None  # the stream's list of partition entries, indexed
    _index: dict[tuple, dict] | None = None

    def get_context_state(self, context: t.Any) -> dict:
        # The SDK finds a partition's entry by comparing it with every entry of the stream:
        # with an entry per connected account, each of a unit's lookups scanned them all
        # (quadratic in the accounts of a run). Entries are indexed by their context; the
        # index holds while the list is the same one, of the same length.
        with RUN_LOCK:
            partition = self.get_state_partition_context(context) if context else None
            if not partition:
                return StreamStateManager.get_context_state(self, context)
            key = tuple(sorted(partition.items()))
            listed = (self.tap_state.get("bookmarks") or {}).get(self.stream_name, {})
            partitions = listed.get("partitions")
            index = self._index
            if (
                index is None
                or partitions is not self._partitions
                or len(index) != len(partitions or ())
            ):
                index = self._reindex(partitions)
            try:
                entry = index.get(key) if index is not None else None
            except TypeError:
                entry = None
            if entry is None or entry.get("context") != partition:
                entry = StreamStateManager.get_context_state(self, context)
                self._index = None  # it may have added an entry: indexed on the next call
            return entry

    def _reindex(self, partitions: list | None) -> dict[tuple, dict] | None:
        index: dict[tuple, dict] = {}
        for entry in partitions or ():
            context = entry.get("context")
            if not isinstance(context, dict):
                return None  # the SDK's lookup says what is wrong with such a STATE
            try:
                index[tuple(sorted(context.items()))] = entry
            except TypeError:  # a value that is no key (a list, an object)
                return None
        if len(index) != len(partitions or ()):
            return None  # duplicate entries: the SDK's lookup names them
        self._partitions, self._index = partitions, index
        return index

    def write_starting_replication_value(
        self, context: t.Any, replication_method: str, *args: t.Any, **kwargs: t.Any
    ) -> None:
        # The SDK writes no starting value for a full-table stream. A child stream syncs
        # once per parent (~20,000 times in a platform run of 100 accounts), and taking the
        # run lock only to find that out queued every parent's children behind STATE and
        # record writes.
        if replication_method == FULL_TABLE:
            return
        with RUN_LOCK:
            super().write_starting_replication_value(context, replication_method, *args, **kwargs)


for _name in LOCKED_METHODS:
    if _name not in LockedStateManager.__dict__:
        setattr(LockedStateManager, _name, _locked(getattr(StreamStateManager, _name)))


class Throttle:
    """At most one STATE per `CHECKPOINT_SECONDS` for the listings of one stream."""

    def __init__(self, seconds: float = CHECKPOINT_SECONDS) -> None:
        self.seconds = seconds
        self._last = -math.inf  # monotonic time of the last checkpoint STATE

    def due(self) -> bool:
        """Whether a STATE may be written now (if so, the clock restarts)."""
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True


class FirstThenShared(Throttle):
    """A stream's first listing checkpoint at once, the next ones on the run's throttle.

    Every STATE holds every unit's state, so what a killed run reads again is bounded by
    the time since the last STATE of any stream. In a platform run of 100 accounts (~2,600
    entries, up to ~280 KB a STATE) one a second per stream made 186 STATEs, 33 MB for the
    tap to encode and the target to read; shared, 50 and 5 MB.
    """

    def __init__(self, shared: Throttle) -> None:
        super().__init__()
        self.shared = shared

    def due(self) -> bool:
        if self._last == -math.inf:
            self._last = time.monotonic()
            return True
        return self.shared.due()


class UnitState:
    """The state entry of one stream, or of one account's partition of it."""

    def __init__(
        self,
        manager: StreamStateManager,
        context: t.Mapping[str, t.Any] | None,
        *,
        bookmarked: bool,
        write_state: Callable[[], None],
        throttle: Throttle,
    ) -> None:
        self.manager = manager
        self.context = context
        #: Whether the stream keeps a bookmark (children and full-table streams do not).
        self.bookmarked = bookmarked
        self._write_state = write_state
        self._throttle = throttle

    def _entry(self) -> dict:
        return t.cast("dict", self.manager.get_context_state(self.context))

    def claim(self, account: str | None) -> str | None:
        """Mark the stream's own entry as `account`'s; another account's state is dropped.

        Returns the other account whose bookmark, listing and table version were dropped
        (this account then syncs as for the first time), else None. Partitions are keyed
        by their account already.
        """
        if account is None or self.context:
            return None
        with RUN_LOCK:
            entry = self._entry()
            previous = entry.get(ACCOUNT)
            entry[ACCOUNT] = account
            if previous is None or previous == account:
                return None
            for key in ("replication_key_value", "progress_markers", LISTING, "table_version"):
                entry.pop(key, None)
            return str(previous)

    def bookmark(self) -> int | None:
        """Where the last sync of this unit got to (a Stripe time), or None."""
        with RUN_LOCK:
            value = self._entry().get("replication_key_value")
        return None if value is None else parse_time(value)

    def bookmark_of(self, account: str | None) -> int | None:
        """The bookmark, unless the stream's own entry is another account's (`claim`)."""
        with RUN_LOCK:
            entry = self._entry()
            value = entry.get("replication_key_value")
            other = entry.get(ACCOUNT)
        if value is None or (not self.context and other not in (None, account)):
            return None
        return parse_time(value)

    def table_version(self) -> int | None:
        with RUN_LOCK:
            return t.cast("int | None", self._entry().get("table_version"))

    def set_table_version(self, version: int | None) -> None:
        with RUN_LOCK:
            self._entry()["table_version"] = version

    def mark_synced(self, started: int) -> None:
        """Move the bookmark to the start of this read, also when nothing changed."""
        if self.bookmarked:
            self.manager.increment_state(
                {"updated": format_time(started)}, context=self.context, replication_key="updated"
            )

    def forget_progress(self) -> None:
        """A failed unit keeps its bookmark where it was: nothing is lost when it works."""
        with RUN_LOCK:
            self._entry().pop("progress_markers", None)

    # -- an unfinished listing (see listing.py) --------------------------------------------

    def listing(self) -> Listing | None:
        with RUN_LOCK:
            entry = self._entry().get(LISTING)
        return None if entry is None else Listing.from_state(entry)

    def drop_listing(self) -> None:
        with RUN_LOCK:
            self._entry().pop(LISTING, None)

    def checkpoint(self, started: int, version: int | None, covers: tuple[int, int]) -> None:
        """Record a written `created` range of the listing; emit STATE now and then."""
        with RUN_LOCK:
            entry = self._entry()
            current = entry.get(LISTING)
            listing = (
                Listing.from_state(current) if current is not None else Listing(started, version)
            )
            listing.complete(*covers)
            entry[LISTING] = listing.to_state()
            self.manager.is_flushed = False
            if self._throttle.due():
                self._write_state()

    def finish_listing(self, started: int | None) -> None:
        """The listing is complete: its start becomes the bookmark, in the same STATE."""
        with RUN_LOCK:
            entry = self._entry()
            had_listing = entry.pop(LISTING, None) is not None
            if had_listing and started is not None and self.bookmarked:
                entry["replication_key"] = "updated"
                entry["replication_key_value"] = format_time(started)
