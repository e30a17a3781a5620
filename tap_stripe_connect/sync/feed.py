"""One `GET /v1/events` read per account per run, feeding every events-based stream of it.

Stripe's event list filters on `created` and (optionally) on type. One read per stream
(each with its own `types[]`) cost an account ~20 requests on a run where nothing had
changed; one read without types, from the oldest bookmark of the account's streams,
costs one. The first unit that needs an account's events reads them (the others wait);
each unit then walks the events of its own types from its own bookmark.

The events are kept as JSON lines, in memory up to `SPOOL_BYTES` and in a temporary file
beyond (30 days of a busy account can be 100k+ events; a platform run reads thousands of
accounts, most with few events, and an open file each would exhaust the process's file
descriptors), with an index: per event its place and its `created`, per type the events
of that type. A unit parses only its own events. The run lets an account's feed go when
the last unit of the account ends (`Run.unit_finished`).
"""

from __future__ import annotations

import array
import heapq
import os
import tempfile
import threading
import typing as t

from tap_stripe_connect.api import feed_read
from tap_stripe_connect.api.body import encode, parse

#: Bytes of events an account's feed keeps in memory before it moves them to a file.
SPOOL_BYTES = 1 << 20

if t.TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator

    from tap_stripe_connect.api import StripeClient
    from tap_stripe_connect.resources import Resource


class EventFeed:
    """The events of one account since the oldest bookmark of its events-based streams."""

    def __init__(
        self,
        client: StripeClient,
        account: str | None,
        since: Callable[[], int | None],
        on_read: Callable[[EventFeed], None] | None = None,
    ) -> None:
        self._client = client
        self.account = account
        self._since_of = since
        #: Told once the events are read (whether the account is quiet: `found`).
        self._on_read = on_read
        self._lock = threading.Lock()
        self._done = False
        self._error: BaseException | None = None
        #: The `created` the read starts at; None: no stream of the account needs events.
        self.since: int | None = None
        #: Stripe's time at the first page: every unit fed by it bookmarks this time.
        self.started: int | None = None
        self._memory = bytearray()
        self._file: t.IO[bytes] | None = None
        self._offsets = array.array("q")  # per event (in order read): start in the file
        self._created = array.array("q")  # per event: its `created`
        self._by_type: dict[str, array.array] = {}  # per type: the events of that type

    def covers(self, since: int, resource: Resource) -> bool:
        """Whether the feed holds every event from `since` on (read now, for `resource`,
        if no stream needed it before)."""
        with self._lock:
            if not self._done:
                self._done = True
                try:
                    self._read(resource)
                except BaseException as exc:
                    self._error = exc
            if self._error is not None:
                raise self._error
        return self.since is not None and since >= self.since

    def _read(self, resource: Resource) -> None:
        since = self._since_of()
        if since is None:
            return
        offset = 0
        for page in self._client.pages(feed_read(resource, since, account=self.account)):
            if self.started is None:
                self.started = self._client.clock.now()
            lines = []
            for event in page:
                line = encode(event) + b"\n"
                lines.append(line)
                index = len(self._created)
                self._offsets.append(offset)
                self._created.append(int(event["created"]))
                kind = self._by_type.get(event["type"])
                if kind is None:
                    kind = self._by_type[event["type"]] = array.array("q")
                kind.append(index)
                offset += len(line)
            self._keep(b"".join(lines))
        self._offsets.append(offset)  # the end of the last event
        if self._file is not None:
            self._file.flush()
        if self.started is None:  # no event at all: the (empty) answer's time
            self.started = self._client.clock.now()
        self.since = since
        if self._on_read is not None:
            self._on_read(self)

    @property
    def found(self) -> bool:
        """Whether the read found any event (of any type; False: a quiet account)."""
        return bool(self._created)

    def quiet(self, since: int) -> bool:
        """Whether the account has no event at all created at or after `since`."""
        return not self._created or self._created[0] < since

    def _keep(self, lines: bytes) -> None:
        if self._file is None and len(self._memory) + len(lines) > SPOOL_BYTES:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by `close`)
            self._file.write(self._memory)
            self._memory = bytearray()
        if self._file is None:
            self._memory += lines
        else:
            self._file.write(lines)

    def _event(self, start: int, end: int) -> dict:
        if self._file is None:
            return t.cast("dict", parse(bytes(self._memory[start:end])))
        return t.cast("dict", parse(os.pread(self._file.fileno(), end - start, start)))

    def events(self, since: int, types: Collection[str] | None = None) -> Iterator[dict]:
        """The events of `types` (None: all) created at or after `since`, newest first."""
        if types is None:
            order: t.Iterable[int] = range(len(self._created))
        else:
            order = heapq.merge(*(self._by_type[k] for k in set(types) if k in self._by_type))
        for index in order:
            if self._created[index] < since:
                return  # newest first (the client's order guard checked it)
            yield self._event(self._offsets[index], self._offsets[index + 1])

    def close(self) -> None:
        self._memory = bytearray()
        if self._file is not None:
            self._file.close()
