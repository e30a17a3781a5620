"""Every bookmark, listing and table version of a run, and the STATE messages that carry them.

`Bookmarks` is the only code that reads or changes the tap's part of the state dict, and
`Bookmarks.advance` is the only place a bookmark moves. A bookmark is always a Stripe time
the tap took itself at the start of a read (the `created` of the feed's first page, the
`Date` of a listing's first response) and moves only once everything that read wrote is
on stdout: a record's own fields (`product.updated`) never move it. The SDK's own
bookmark paths (per-record increments, finalisation, signposts) are switched off in
`sdk_compat.CompatStream` and `LockedStateManager`.

Two layouts, both in one STATE (see docs/state.md):

- the credential's own account: the SDK's, one entry per stream in `bookmarks`
  (`replication_key_value` as RFC 3339, `table_version`, `listing`, `account_id`);
- connected accounts of a platform (`account_ids`): one row per account under `accounts`,
  its streams' bookmarks as Unix times in the column order of `accounts.streams`:
  `[base, offset, offset, ...]`, each stream's bookmark `base + offset` (`null`: none).
  The streams of an account mostly share the start of its events read, so a row of 25
  streams is ~80 bytes, where the SDK's partition dicts took ~2,500. Unfinished listings
  (a few at a time) go under `accounts.units`.

A STATE in the SDK's layout (every release before this one) is read: partitions of
`{"account_id": ...}` are moved into rows when loaded.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import typing as t

from tap_stripe_connect.sdk_compat import StreamStateManager
from tap_stripe_connect.settings import format_time, parse_time
from tap_stripe_connect.state.listing import LISTING, Listing, StateError
from tap_stripe_connect.state.lock import RUN_LOCK

if t.TYPE_CHECKING:
    from collections.abc import Callable

# The manager's operations on the shared dict (tests/test_sdk_compat.py checks they exist).
LOCKED_METHODS = (
    "get_context_state",
    "write_replication_key_signpost",
    "finalize_state",
    "finalize_progress_markers",
    "get_state_partitions",
)
# The account a stream's own (unpartitioned) entry belongs to: a project that switches
# credentials to another account keeps its state, and the old account's bookmark would
# skip everything the new account changed before it.
ACCOUNT = "account_id"
REPLICATION_KEY = "updated"
#: The top-level STATE key of the connected accounts' bookmarks.
ACCOUNTS = "accounts"
TABLE_VERSION = "table_version"
#: Under `accounts`: the connected accounts whose last events read found no event
#: (`{"acct_...": 1}`), kept while setting `quiet_account_events_interval_seconds` is on.
QUIET = "quiet"

# -- checkpoints: how often a STATE is written ----------------------------------------------
#: At most four STATEs a second, and less often as it grows: `STATE_BYTES_PER_SECOND` of
#: STATE at most. A full sync writes ~3-5 MB/s of records, so STATE is a few percent of
#: the bytes; and the time to encode it (msgspec, >100 MB/s) or for a target to read it
#: grows with its bytes, so it is a fraction of a percent of the run's time. A single
#: account's STATE (a few KB) goes out four times a second, as often as its four
#: parallel listings each checkpointed once a second before: a killed first sync reads
#: little again.
CHECKPOINT_SECONDS = 0.25
STATE_BYTES_PER_SECOND = 100_000


def _is_int(value: t.Any) -> t.TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# -- rows: one account's bookmarks ----------------------------------------------------------


def decode_row(row: list | None, width: int) -> list[int | None]:
    """`[base, offset, ...]` -> one Unix time (or None) per column."""
    values: list[int | None] = [None] * width
    if not row:
        return values
    base = row[0]
    for index, offset in enumerate(row[1 : width + 1]):
        values[index] = None if offset is None else base + offset
    return values


def encode_row(values: list[int | None]) -> list | None:
    """One Unix time (or None) per column -> `[base, offset, ...]` (None: no bookmark)."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    base = max(known)
    last = max(i for i, v in enumerate(values) if v is not None)
    return [base, *(None if v is None else v - base for v in values[: last + 1])]


def check_accounts(state: t.Mapping[str, t.Any], advice: str = "") -> None:
    """StateError (one line naming the entry) for an `accounts` entry this tap cannot read."""
    section = state.get(ACCOUNTS)
    if section is None:
        return
    if not isinstance(section, dict):
        raise StateError(f"STATE entry '{ACCOUNTS}' is not an object.{advice}")
    streams = section.get("streams", [])
    if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
        raise StateError(f"STATE entry {ACCOUNTS}.streams is not a list of names.{advice}")
    rows = section.get("bookmarks", {})
    if not isinstance(rows, dict):
        raise StateError(f"STATE entry {ACCOUNTS}.bookmarks is not an object.{advice}")
    for account, row in rows.items():
        if not (
            isinstance(row, list)
            and row
            and _is_int(row[0])
            and len(row) <= len(streams) + 1
            and all(v is None or _is_int(v) for v in row[1:])
        ):
            raise StateError(
                f"STATE entry {ACCOUNTS}.bookmarks.{account} is not a row of Unix times "
                f"[base, offset, ...] for the {len(streams)} streams of {ACCOUNTS}.streams."
                f"{advice}"
            )
    if not isinstance(section.get(QUIET, {}), dict):
        raise StateError(f"STATE entry {ACCOUNTS}.{QUIET} is not an object.{advice}")
    units = section.get("units", {})
    if not isinstance(units, dict) or not all(isinstance(u, dict) for u in units.values()):
        raise StateError(f"STATE entry {ACCOUNTS}.units is not an object of objects.{advice}")
    for account, streams_of in units.items():
        for stream, entry in streams_of.items():
            where = f"{ACCOUNTS}.units.{account}.{stream}"
            if not isinstance(entry, dict):
                raise StateError(f"STATE entry {where} is not an object.{advice}")
            check_unit_entry(entry, where, advice)


def check_unit_entry(entry: t.Mapping[str, t.Any], where: str, advice: str = "") -> None:
    """StateError (one line naming the entry) for a unit's table version or listing this tap
    cannot read: the one check of both, for either layout (the SDK's entries, `accounts`)."""
    version = entry.get(TABLE_VERSION)
    if version is not None and not _is_int(version):
        raise StateError(f"STATE entry {where}.table_version is not an integer.{advice}")
    if LISTING in entry:
        try:
            Listing.from_state(entry[LISTING], f"{where}.{LISTING}")
        except StateError as exc:
            raise StateError(f"{exc}{advice}") from None


def load_state(into: dict, given: t.Mapping[str, t.Any]) -> None:
    """Take the `accounts` entry of a given STATE (the SDK copies only `bookmarks`), and
    move the SDK's per-account partitions (the layout of earlier releases) into rows."""
    with RUN_LOCK:
        if isinstance(given.get(ACCOUNTS), dict):
            into[ACCOUNTS] = copy.deepcopy(dict(given[ACCOUNTS]))
        store = Bookmarks(into)
        for stream, entry in list((into.get("bookmarks") or {}).items()):
            partitions = entry.get("partitions") if isinstance(entry, dict) else None
            if not isinstance(partitions, list):
                continue
            kept = []
            for partition in partitions:
                context = partition.get("context") or {}
                account = context.get(ACCOUNT)
                if set(context) != {ACCOUNT} or not isinstance(account, str):
                    kept.append(partition)
                    continue
                store.adopt(stream, account, partition)
            if kept:
                entry["partitions"] = kept
            else:
                entry.pop("partitions")


class Bookmarks:
    """The bookmarks, listings and table versions of every (stream, account) of a run.

    Every method holds the run lock: units change their own entries while others write
    STATE. `generation` counts the changes, so a checkpoint knows whether anything moved.
    """

    def __init__(self, state: dict) -> None:
        self.state = state
        self.generation = 0
        self._columns: dict[str, int] = {}
        self._columns_of: list | None = None

    # -- the credential's own account: the SDK's entry per stream ------------------------

    def _entry(self, stream: str) -> dict:
        return t.cast("dict", self.state.setdefault("bookmarks", {}).setdefault(stream, {}))

    # -- connected accounts: a row each --------------------------------------------------

    def _section(self) -> dict:
        section = self.state.get(ACCOUNTS)
        if section is None:
            section = self.state[ACCOUNTS] = {"streams": [], "bookmarks": {}}
        section.setdefault("streams", [])
        section.setdefault("bookmarks", {})
        return t.cast("dict", section)

    def _column(self, stream: str, *, add: bool) -> int | None:
        streams: list[str] = self._section()["streams"]
        if streams is not self._columns_of or len(self._columns) != len(streams):
            self._columns = {name: index for index, name in enumerate(streams)}
            self._columns_of = streams
        column = self._columns.get(stream)
        if column is None and add:
            column = self._columns[stream] = len(streams)
            streams.append(stream)
        return column

    def _unit(self, stream: str, account: str, *, create: bool) -> dict | None:
        units: dict[str, dict] | None = self._section().get("units")
        if units is None:
            if not create:
                return None
            units = self._section()["units"] = {}
        of_account: dict | None = units.get(account)
        if of_account is None:
            if not create:
                return None
            of_account = units[account] = {}
        entry = of_account.get(stream)
        if entry is None and create:
            entry = of_account[stream] = {}
        return t.cast("dict | None", entry)

    def _tidy_unit(self, stream: str, account: str) -> None:
        units = self._section().get("units") or {}
        of_account = units.get(account) or {}
        if of_account.get(stream) == {}:
            del of_account[stream]
        if account in units and not of_account:
            del units[account]
        if "units" in self._section() and not units:
            del self._section()["units"]

    def adopt(self, stream: str, account: str, partition: dict) -> None:
        """An SDK partition entry of an earlier release (`load_state`)."""
        value = partition.get("replication_key_value")
        if value is not None:
            self._set(stream, account, parse_time(value))
        for key in (LISTING, TABLE_VERSION):
            if partition.get(key) is not None:
                t.cast("dict", self._unit(stream, account, create=True))[key] = partition[key]

    def _set(self, stream: str, account: str, value: int) -> None:
        column = t.cast("int", self._column(stream, add=True))
        rows = self._section()["bookmarks"]
        width = len(self._section()["streams"])
        values = decode_row(rows.get(account), width)
        values[column] = value
        rows[account] = encode_row(values)

    # -- what units read and change ------------------------------------------------------

    def bookmark(self, stream: str, account: str | None) -> int | None:
        """Where the last sync of this (stream, account) got to (a Stripe time), or None."""
        with RUN_LOCK:
            if account is None:
                value = self._entry(stream).get("replication_key_value")
                return None if value is None else parse_time(value)
            column = self._column(stream, add=False)
            if column is None:
                return None
            row = self._section()["bookmarks"].get(account)
            if not row or column + 1 >= len(row) or row[column + 1] is None:
                return None
            return int(row[0] + row[column + 1])

    def advance(self, stream: str, account: str | None, started: int) -> None:
        """Move the bookmark to `started`, the Stripe time at which a read that is now
        wholly written began: the one place a bookmark moves."""
        with RUN_LOCK:
            if account is None:
                entry = self._entry(stream)
                entry["replication_key"] = REPLICATION_KEY
                entry["replication_key_value"] = format_time(started)
            else:
                self._set(stream, account, int(started))
            self.generation += 1

    def owner(self, stream: str) -> str | None:
        """The account the stream's own entry belongs to (`claim`)."""
        with RUN_LOCK:
            return t.cast("str | None", self._entry(stream).get(ACCOUNT))

    def claim(self, stream: str, account: str) -> str | None:
        """Mark the stream's own entry as `account`'s; another account's state is dropped
        (returned: the other account, else None)."""
        with RUN_LOCK:
            entry = self._entry(stream)
            previous = entry.get(ACCOUNT)
            if previous != account:
                entry[ACCOUNT] = account
                self.generation += 1
            if previous is None or previous == account:
                return None
            for key in ("replication_key_value", "progress_markers", LISTING, TABLE_VERSION):
                entry.pop(key, None)
            return str(previous)

    def _value(self, stream: str, account: str | None, key: str) -> t.Any:
        if account is None:
            return self._entry(stream).get(key)
        return (self._unit(stream, account, create=False) or {}).get(key)

    def _put(self, stream: str, account: str | None, key: str, value: t.Any) -> None:
        if account is None:
            entry = self._entry(stream)
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
        elif value is None:
            (self._unit(stream, account, create=False) or {}).pop(key, None)
            self._tidy_unit(stream, account)
        else:
            t.cast("dict", self._unit(stream, account, create=True))[key] = value
        self.generation += 1

    def table_version(self, stream: str, account: str | None) -> int | None:
        with RUN_LOCK:
            return t.cast("int | None", self._value(stream, account, TABLE_VERSION))

    def set_table_version(self, stream: str, account: str | None, version: int | None) -> None:
        with RUN_LOCK:
            if self._value(stream, account, TABLE_VERSION) != version:
                self._put(stream, account, TABLE_VERSION, version)

    def listing(self, stream: str, account: str | None) -> Listing | None:
        with RUN_LOCK:
            entry = self._value(stream, account, LISTING)
        return None if entry is None else Listing.from_state(entry)

    def drop_listing(self, stream: str, account: str | None) -> None:
        with RUN_LOCK:
            if self._value(stream, account, LISTING) is not None:
                self._put(stream, account, LISTING, None)

    def complete(
        self,
        stream: str,
        account: str | None,
        started: int,
        version: int | None,
        covers: tuple[int, int],
    ) -> None:
        """Record a written `created` range of an unfinished listing."""
        with RUN_LOCK:
            current = self._value(stream, account, LISTING)
            listing = (
                Listing.from_state(current) if current is not None else Listing(started, version)
            )
            listing.complete(*covers)
            self._put(stream, account, LISTING, listing.to_state())

    def finish_listing(
        self, stream: str, account: str | None, started: int | None, *, bookmarked: bool
    ) -> None:
        """The listing is complete: its start becomes the bookmark, in the same STATE."""
        with RUN_LOCK:
            had_listing = self._value(stream, account, LISTING) is not None
            if had_listing:
                self._put(stream, account, LISTING, None)
                if started is not None and bookmarked:
                    self.advance(stream, account, started)

    def accounts(self) -> set[str]:
        """The connected accounts that have an entry in STATE."""
        with RUN_LOCK:
            section = self.state.get(ACCOUNTS) or {}
            return set(section.get("bookmarks") or ()) | set(section.get("units") or ())

    # -- quiet accounts (setting `quiet_account_events_interval_seconds`) ----------------

    def quiet(self, account: str) -> bool:
        """Whether the connected account's last events read found no event."""
        with RUN_LOCK:
            return account in ((self.state.get(ACCOUNTS) or {}).get(QUIET) or ())

    def set_quiet(self, account: str, quiet: bool) -> None:
        """What the account's events read found: no event (quiet), or some (busy)."""
        with RUN_LOCK:
            section = self._section()
            marks: dict[str, int] = section.setdefault(QUIET, {})
            if quiet == (account in marks):
                if not marks:
                    del section[QUIET]
                return
            if quiet:
                marks[account] = 1
            else:
                del marks[account]
            if not marks:
                del section[QUIET]
            self.generation += 1

    def forget_quiet(self) -> None:
        """The setting is off: no account is known quiet any more (a run with it on learns
        again, from each account's next events read)."""
        with RUN_LOCK:
            section = self.state.get(ACCOUNTS)
            if isinstance(section, dict) and section.pop(QUIET, None) is not None:
                self.generation += 1


def accounts_in_state(state: t.Mapping[str, t.Any]) -> set[str]:
    """The connected accounts that have an entry in STATE."""
    return Bookmarks(t.cast("dict", state)).accounts() if state.get(ACCOUNTS) else set()


# -- checkpoints ----------------------------------------------------------------------------


class Checkpoints:
    """When a STATE is written: only when a bookmark, listing or version moved, and at an
    interval that grows with the STATE's size.

    After each STATE the next one waits at least `CHECKPOINT_SECONDS`, and the time to
    write `size / STATE_BYTES_PER_SECOND` bytes (the clock does not time the write itself:
    it includes the records flushed before the STATE, and a reader that is slow). A
    platform of 10,000 accounts (~1.3 MB of STATE) writes one every ~13 s, a single
    account up to four a second. What a killed run reads again is bounded by the interval.
    """

    def __init__(
        self,
        store: Bookmarks,
        write: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        min_seconds: float = CHECKPOINT_SECONDS,
        bytes_per_second: float = STATE_BYTES_PER_SECOND,
    ) -> None:
        self.store = store
        self._write = write
        self._clock = clock
        self.min_seconds = min_seconds
        self.bytes_per_second = bytes_per_second
        self._next = self._last = -math.inf  # the clock's time of the next, last STATE
        self._size_wait = 0.0  # the wait the last STATE's size asks for
        self._listed: set[str] = set()  # streams whose listing progress went out once
        self._written: int | None = None  # the store's generation in the last STATE
        #: Held while a STATE is encoded and written: one at a time (taken before the
        #: run lock, never while holding it).
        self._turn = threading.Lock()
        #: STATE messages written and their bytes (the summary and benchmarks print them).
        self.messages = 0
        self.bytes = 0

    def changed(self) -> bool:
        return self._written != self.store.generation

    def maybe(self, *, first_of: str | None = None) -> None:
        """Write a STATE if something moved and the interval has passed.

        `first_of`: the first progress of a stream's listing in this run. It goes out
        without the floor of `min_seconds` (not without the wait the STATE's size asks
        for), so a run killed early keeps a little of every stream's listing.
        """
        # Asked after every page of every unit: without a lock when nothing moved or no
        # STATE is due (a move it misses is in the next STATE, at the latest the run's last).
        if not self.changed() or not self._due(first_of):
            return
        if not self._turn.acquire(blocking=False):
            return  # another thread writes a STATE now
        try:
            if self.changed() and self._due(first_of):
                if first_of is not None:
                    self._listed.add(first_of)
                self._now()
        finally:
            self._turn.release()

    def _due(self, first_of: str | None) -> bool:
        """Whether a STATE is due: the interval has passed, or this is a stream's first
        listing progress and the wait the last STATE's size asks for has passed."""
        now = self._clock()
        if now >= self._next:
            return True
        return (
            first_of is not None
            and first_of not in self._listed
            and now >= self._last + self._size_wait
        )

    def now(self) -> None:
        """Write a STATE now (the start and the end of a run, and after a failure)."""
        if RUN_LOCK.held():  # `_turn` is taken before the run lock, never after it
            self._now()
            return
        with self._turn:
            self._now()

    def _now(self) -> None:
        # Not under the run lock: the writer takes it to encode the state, and writes the
        # records before the STATE without it (output/writer.py). A change after the
        # generation is read goes out in this STATE or the next one.
        generation = self.store.generation
        size = self._write()
        with RUN_LOCK:
            self._last = self._clock()
            self._written = generation
            if size:
                self.messages += 1
                self.bytes += size
            self._size_wait = size / self.bytes_per_second
            self._next = self._last + max(self.min_seconds, self._size_wait)


# -- the SDK's state manager, kept from moving bookmarks ------------------------------------


def _locked(method: Callable) -> Callable:
    def call(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        with RUN_LOCK:
            return method(self, *args, **kwargs)

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class LockedStateManager(StreamStateManager):
    """The SDK's state manager of a stream, which moves no bookmark.

    Streams keep no SDK partitions (`state_partitioning_keys = []`): the SDK's entry of
    a stream is the stream's own. Its operations on the shared dict hold the run lock;
    bookmarks are `Bookmarks`'s, so the SDK's starting values and increments are not
    written (a record's own fields never move a bookmark).
    """

    @property
    def stream_state(self) -> dict:
        with RUN_LOCK:
            return StreamStateManager.stream_state.fget(self)  # type: ignore[attr-defined, no-any-return]

    def write_starting_replication_value(self, *args: t.Any, **kwargs: t.Any) -> None:
        # The tap reads its bookmarks from `Bookmarks`; the SDK's copy would only add
        # bytes to every STATE of the run.
        return

    def increment_state(self, *args: t.Any, **kwargs: t.Any) -> None:
        return  # see `Bookmarks.advance`


for _name in LOCKED_METHODS:
    if _name not in LockedStateManager.__dict__:
        setattr(LockedStateManager, _name, _locked(getattr(StreamStateManager, _name)))


class UnitState:
    """The state of one (stream, account) unit, in the run's `Bookmarks`."""

    def __init__(
        self,
        store: Bookmarks,
        stream: str,
        account: str | None,
        *,
        bookmarked: bool,
        checkpoints: Checkpoints,
    ) -> None:
        self.store = store
        self.stream = stream
        self.account = account
        #: Whether the stream keeps a bookmark (children and full-table streams do not).
        self.bookmarked = bookmarked
        self.checkpoints = checkpoints

    def claim(self, account: str | None) -> str | None:
        """Mark the stream's own entry as `account`'s; another account's state is dropped.

        Returns the other account whose bookmark, listing and table version were dropped
        (this account then syncs as for the first time), else None. Connected accounts'
        entries are keyed by their account already.
        """
        if account is None or self.account:
            return None
        return self.store.claim(self.stream, account)

    def bookmark(self) -> int | None:
        """Where the last sync of this unit got to (a Stripe time), or None."""
        return self.store.bookmark(self.stream, self.account)

    def bookmark_of(self, account: str | None) -> int | None:
        """The bookmark, unless the stream's own entry is another account's (`claim`)."""
        if not self.account and self.store.owner(self.stream) not in (None, account):
            return None
        return self.bookmark()

    def table_version(self) -> int | None:
        return self.store.table_version(self.stream, self.account)

    def set_table_version(self, version: int | None) -> None:
        self.store.set_table_version(self.stream, self.account, version)

    def mark_synced(self, started: int) -> None:
        """Move the bookmark to the start of this read, also when nothing changed."""
        if self.bookmarked:
            self.store.advance(self.stream, self.account, started)
            self.checkpoints.maybe()

    # -- an unfinished listing (see listing.py) --------------------------------------------

    def listing(self) -> Listing | None:
        return self.store.listing(self.stream, self.account)

    def drop_listing(self) -> None:
        self.store.drop_listing(self.stream, self.account)

    def checkpoint(self, started: int, version: int | None, covers: tuple[int, int]) -> None:
        """Record a written `created` range of the listing; emit STATE now and then."""
        self.store.complete(self.stream, self.account, started, version, covers)
        self.checkpoints.maybe(first_of=self.stream)

    def finish_listing(self, started: int | None) -> None:
        """The listing is complete: its start becomes the bookmark, in the same STATE."""
        self.store.finish_listing(self.stream, self.account, started, bookmarked=self.bookmarked)
