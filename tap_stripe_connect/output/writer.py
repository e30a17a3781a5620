"""The one Singer writer of a run, for several threads.

Every message is written under `OUTPUT_LOCK` (lines never interleave). A STATE is encoded
under the run lock (see state/lock.py) and written after every thread's collected records:
whatever it covers is on stdout before it. The tap's STATE messages, the
SDK's signal handler's included, go through `LockedStateWriter`. Bytes reach stdout's file
through `write_out`, which finishes a write the kernel cut short.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter, encoder

from tap_stripe_connect.errors import OutputError
from tap_stripe_connect.sdk_compat import StateWriter
from tap_stripe_connect.state.lock import RUN_LOCK

if t.TYPE_CHECKING:
    from collections.abc import Callable

#: Seconds a forced exit waits for a message being written to end.
WRITE_WAIT_SECONDS = 1.0
#: Held while bytes go to stdout; taken after the run lock, never before it. A thread's
#: collected records are taken from it and written under this lock alone: bookmarks move
#: (under the run lock) while a chunk waits on a full pipe. A STATE is written under this
#: lock, after every thread's collected records: a chunk taken is always written by then.
OUTPUT_LOCK = threading.RLock()


class _Lines:
    """RECORD lines one thread has collected and not yet written."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data = bytearray()


class LockedWriter(MsgSpecWriter):
    """singer-sdk's msgspec writer for several threads: whole lines, STATE after records.

    Each thread collects its RECORD lines and writes them in chunks of `CHUNK` bytes,
    under `OUTPUT_LOCK` alone. Any other message (SCHEMA, STATE, ACTIVATE_VERSION) first
    writes every thread's collected lines, under `OUTPUT_LOCK` (and, but for a STATE, the
    run lock): whatever a STATE message covers is on stdout before it. Writing and
    flushing each record under the run lock made parallel streams queue for the lock (and
    for the GIL, released inside it for every write): ~30% of a sync's time; a chunk under
    the run lock held every bookmark's move while it waited on a full pipe (a platform
    run: 4-12% of its CPU a record).
    """

    #: Called with every message once it is written (the run's progress counts records).
    observer: Callable[[t.Any], None] | None = None
    CHUNK = 1 << 16

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()
        self._collected: list[_Lines] = []  # every thread's

    def write_message(self, message: t.Any) -> None:
        # Not `serialize_message`: it encodes into one buffer shared by every thread.
        line = encoder.encode(message.to_dict())
        self.write_line(line, record=getattr(message, "type", None) == "RECORD")
        if self.observer is not None:
            self.observer(message)

    def write_line(self, line: bytes, *, record: bool = False) -> None:
        """Write one encoded message (no newline): a RECORD collected, any other at once."""
        if record:
            lines = self._lines()
            with lines.lock:
                lines.data += line
                lines.data += b"\n"
                full = len(lines.data) >= self.CHUNK
            if full:
                with OUTPUT_LOCK:
                    self._write(lines)
        else:
            with RUN_LOCK, OUTPUT_LOCK:
                self.write_after_records(line)

    def write_after_records(self, line: bytes) -> None:
        """Write every thread's collected records, then `line`; the caller holds
        `OUTPUT_LOCK`. What a thread collected before the caller's snapshot of the state
        is written before the line (a thread's collector is listed before its first record)."""
        for lines in list(self._collected):
            self._write(lines)
        write_out(line + b"\n")

    def flush(self) -> None:
        """Write every record collected so far (at the end of a run, or of a failed one)."""
        with RUN_LOCK, OUTPUT_LOCK:
            for lines in self._collected:
                self._write(lines)
            sys.stdout.flush()

    def _lines(self) -> _Lines:
        lines: _Lines | None = getattr(self._local, "lines", None)
        if lines is None:
            lines = self._local.lines = _Lines()
            with RUN_LOCK:
                self._collected.append(lines)
        return lines

    @staticmethod
    def _write(lines: _Lines) -> None:
        """Write one thread's collected lines; the caller holds `OUTPUT_LOCK`."""
        with lines.lock:
            data, lines.data = lines.data, bytearray()
        if data:
            write_out(data)


def write_out(data: bytes | bytearray) -> None:
    """Write all of `data` to stdout now, whatever the kernel takes at a time.

    A write to a full pipe that a stop cuts short (SIGSTOP and SIGCONT: job control, a
    paused container, a debugger, a sampling profiler) writes part of the bytes, and
    Python's buffered stdout then lost the rest of them (CPython 3.11; tests/test_signals.py
    counted 612 broken lines in 43 MB): a line broken off and the next one glued to it.
    Here each short write is followed by one for the bytes it left, and a stdout another
    process made non-blocking is waited on. Whatever went through `sys.stdout` itself is
    flushed first, so the order holds. `OutputError` when stdout cannot take them (its
    reader closed it, a full disk).
    """
    stdout = sys.stdout
    try:
        stdout.flush()
        try:
            fd = stdout.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (a test's capture)
            stdout.buffer.write(data)
            stdout.flush()
            return
        with memoryview(data) as view:
            written = 0
            while written < len(view):
                try:
                    written += os.write(fd, view[written:])
                except BlockingIOError:
                    select.select([], [fd], [])
    except OSError as exc:  # EPIPE: the reader closed it; ENOSPC: a full disk
        raise OutputError(exc) from exc


class LockedStateWriter(StateWriter):
    """Writes the state, if it changed, while no other thread changes it.

    The SDK's writer compares the state with a deep copy of the last one written, turns
    the message into a dict (another deep copy) and encodes that. A platform run's state
    holds every account's every stream (100 accounts: ~2,600 entries), and those three
    walks took ~30% of the run's CPU. The state is encoded once, and the encoded line is
    what is compared: the same state encodes to the same bytes.
    """

    def __init__(self, message_writer: t.Any) -> None:
        super().__init__(message_writer)
        self._writer = message_writer
        self._last_line: bytes | None = None
        self._taken = 0  # snapshots encoded, in order
        self._out = 0  # the place of the last one written

    def write_state(self, state: t.Any) -> None:
        self.write(state)

    def write(self, state: t.Any) -> int:
        """Write a STATE unless it is the last one again; returns the bytes written.

        The state is encoded under the run lock (a snapshot), and written after every
        thread's collected records under `OUTPUT_LOCK` alone: those records can be MBs
        for a platform's ~50-250 units, and while they went out under the run lock every
        unit that moved a bookmark waited (in py-spy dumps of a 1,000-account run, 20-90
        threads at a time, in half of them). A STATE encoded earlier than one already
        written is not written after it.
        """
        with RUN_LOCK:
            if not isinstance(self._writer, LockedWriter):
                super().write_state(state)
                return 0
            line = encoder.encode({"type": "STATE", "value": state})
            if line == self._last_line:
                return 0
            self._last_line = line
            self._taken += 1
            place = self._taken
        with OUTPUT_LOCK:
            if place < self._out:
                return 0
            self._writer.write_after_records(line)
            self._out = place
        return len(line) + 1


def exit_soon(code: int, last_words: Callable[[], None] | None = None) -> None:
    """End the process with `code` from a thread of its own, once no message is being
    written (the run lock and `OUTPUT_LOCK` are free, or after `WRITE_WAIT_SECONDS` in
    all): `last_words` (write what is collected and the STATE) first, under both."""

    def end() -> None:
        until = time.monotonic() + WRITE_WAIT_SECONDS
        locked = RUN_LOCK.acquire(timeout=WRITE_WAIT_SECONDS) and OUTPUT_LOCK.acquire(
            timeout=max(0.0, until - time.monotonic())
        )
        try:
            if last_words is not None and locked:
                last_words()
        except Exception:  # noqa: S110 (the exit must happen)
            pass
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:  # noqa: S110
                pass
            os._exit(code)

    threading.Thread(target=end, name="exit", daemon=True).start()


def exit_after(seconds: float, code: int, last_words: Callable[[], None]) -> threading.Timer:
    """`exit_soon(code, last_words)` in `seconds`, unless the process ended before."""
    timer = threading.Timer(seconds, exit_soon, (code, last_words))
    timer.daemon = True
    timer.start()
    return timer
