"""Stopping a run on SIGTERM or SIGINT, without losing what was read.

Meltano, Dagster, Kubernetes and a terminal's Ctrl-C stop a tap with SIGTERM or SIGINT.
On the first signal the run stops where it is: no unit of work and no page starts any
more (every request goes through the client, which asks `Stop.check` first), the pages
already on their way end, their records are written, then the last STATE (it covers only
what was written before it), and the process exits with 128 + the signal's number (143
for SIGTERM, 130 for SIGINT), as a shell reports a process a signal ended: Meltano,
Dagster and Kubernetes record the run as failed, not as a success.

If the run has not ended `GRACE_SECONDS` after the signal (a response that takes long),
it exits then: every record collected is written, then the STATE, under the run lock, so
no line is cut short (`output/writer.py`, `exit_soon`). A second signal exits at once,
with the same code; the STATE last written still covers only what was written before it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from tap_stripe_connect.errors import OutputError, TapError
from tap_stripe_connect.logs import filter_root_handlers, to_debug

#: Seconds from the first signal to the exit at the latest (then within 5 s in all).
GRACE_SECONDS = 4.0


def exit_code(signum: int) -> int:
    """128 + the signal's number: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class CancelledError(TapError):
    """The run was stopped by a signal before it ended."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = exit_code(signum)
        super().__init__(
            f"Stopped by {signal_name(signum)} before the sync ended: the records read so "
            "far and the STATE covering them were written; run the tap again with that "
            "STATE to go on from there."
        )


class Stop:
    """Whether the run was asked to stop, shared by the client, the scheduler and the tap."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None
        #: Why the run stopped, if no signal stopped it (stdout could not be written).
        self.error: TapError | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, signum: int) -> bool:
        """Ask the run to stop; True the first time."""
        first = not self._event.is_set()
        if first:
            self.signum = signum
            self._event.set()
        return first

    def fail(self, error: TapError) -> None:
        """Stop the run for `error` (no unit or page starts any more): what is read could
        not be written. A signal that came first keeps its own stop."""
        if not self._event.is_set():
            self.error = error
            self._event.set()

    def check(self) -> None:
        """Raise `CancelledError` if the run was asked to stop (before a page or a unit
        starts), or the error it was stopped for."""
        if self._event.is_set():
            if self.error is not None:
                raise self.error
            raise CancelledError(self.signum or signal.SIGTERM)

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the run is asked to stop meanwhile."""
        self._event.wait(max(0.0, seconds))


#: What singer-sdk logs at ERROR for any exception out of a stream's sync.
_SDK_STREAM_ERROR = "An unhandled error occurred while syncing '%s'"


class StoppedStreamFilter(logging.Filter):
    """On a handler: the SDK's ERROR line for a stream a stop ended (it is no error, or
    the run's one error: stdout closed) becomes a DEBUG record, shown only at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        stopped = isinstance(sys.exc_info()[1], (CancelledError, OutputError))
        if record.msg != _SDK_STREAM_ERROR or not stopped:
            return True
        return to_debug(record)


_STOPPED_STREAM = StoppedStreamFilter()


def quiet_stopped_streams() -> None:
    """The SDK's ERROR line for a stopped stream at DEBUG, on every root handler."""
    filter_root_handlers(_STOPPED_STREAM)
