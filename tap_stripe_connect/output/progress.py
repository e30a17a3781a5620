"""What a person watching a run sees: a progress line per stream, then a summary table.

`Progress` counts, per stream, the records and deletes written (from the tap's message
writer), the requests sent and the retries (from the client, which knows the stream each
request serves). Streams sync in parallel threads, so every count happens under one lock.

While the run lasts, a background thread logs one line per active stream every
`progress_interval_seconds`; when it ends, one log record carries the summary table as
its message and the same numbers as `extra` fields, so singer-sdk's structured (JSON)
logging, which Meltano asks for, carries them as data:

    Progress charges: 1,200 records so far (240.0 records/s); requests: 13, retries: 0

It also counts the reads of each account (`reads` of the summary): Stripe allots an
account's reads by its transactions (a platform's, for its connected accounts, by theirs),
so what a schedule costs is reads per account per run. The summary keeps them bounded for
10,000 accounts: totals, the spread per account and the `TOP_ACCOUNTS` most read; each
read's own METRIC line (`http_request_count`, context `account_id`) has the rest.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import typing as t
from dataclasses import dataclass

from tap_stripe_connect.api.reads import READ, WRITE

if t.TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_INTERVAL = 10
#: The most read connected accounts the summary names.
TOP_ACCOUNTS = 5


@dataclass
class StreamCounts:
    """One stream's numbers so far."""

    records: int = 0
    deletes: int = 0
    requests: int = 0
    retries: int = 0
    started: float | None = None
    finished: float | None = None

    def duration(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return max(0.0, (self.finished if self.finished is not None else now) - self.started)

    def as_dict(self, now: float) -> dict[str, t.Any]:
        return {
            "records": self.records,
            "deletes": self.deletes,
            "requests": self.requests,
            "retries": self.retries,
            "duration_seconds": round(self.duration(now), 3),
        }


class Progress:
    """Thread-safe counters for one run, a periodic reporter, and the final summary."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        # None: the default; 0: no progress lines (the summary stays).
        self.interval = float(DEFAULT_INTERVAL if interval is None else interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, StreamCounts] = {}
        self._other_requests = 0
        self._other_retries = 0
        #: Reads (Stripe's allocation counts them) by connected account (None: the
        #: credential's own); requests it leaves out: the Reporting API's, and writes.
        self._reads: collections.Counter[str | None] = collections.Counter()
        self._reporting = 0
        self._writes = 0
        #: Quiet connected accounts whose events read waited this run.
        self._rested = 0
        #: Stream -> the one-line cause it failed with.
        self.failures: dict[str, str] = {}
        self._started: float | None = None
        self._finished: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- counting (any thread) -----------------------------------------------------------

    def _counts(self, stream: str) -> StreamCounts:
        counts = self._streams.get(stream)
        if counts is None:
            counts = self._streams[stream] = StreamCounts(started=self._clock())
        return counts

    def observe_message(self, message: t.Any) -> None:
        """Count a Singer message the tap writes; only RECORD messages count."""
        record = getattr(message, "record", None)
        stream = getattr(message, "stream", None)
        if record is None or stream is None or getattr(message, "type", "RECORD") != "RECORD":
            return
        deleted = bool(record.get("_sdc_deleted_at")) if isinstance(record, dict) else False
        with self._lock:
            counts = self._counts(stream)
            counts.records += 1
            counts.deletes += deleted

    def observe_request(
        self, stream: str | None, account: str | None = None, allotment: str = READ
    ) -> None:
        """Count a request sent for `stream` (None: the tap's own, such as the account), for
        `account` (None: the credential's own), as Stripe's read allocation counts it
        (`Read.allotment`: a read, a write, or the Reporting API's)."""
        with self._lock:
            if allotment == READ:
                self._reads[account] += 1
            elif allotment == WRITE:
                self._writes += 1
            else:
                self._reporting += 1
            if stream is None:
                self._other_requests += 1
            else:
                self._counts(stream).requests += 1

    def observe_retry(self, stream: str | None) -> None:
        with self._lock:
            if stream is None:
                self._other_retries += 1
            else:
                self._counts(stream).retries += 1

    def account_rested(self, account: str) -> None:
        """A quiet connected account's events read waits this run."""
        with self._lock:
            self._rested += 1

    def stream_started(self, stream: str) -> None:
        with self._lock:
            counts = self._counts(stream)
            counts.finished = None

    def stream_failed(self, stream: str, cause: str) -> None:
        """A stream failed: its own cause goes to the log now and to the summary table."""
        with self._lock:
            self.failures.setdefault(stream, cause)
            self._counts(stream).finished = self._clock()
        self.logger.error("Stream '%s' failed: %s", stream, cause)

    def stream_finished(self, stream: str) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams[stream].finished = self._clock()

    # -- reporting -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the clock and, with an interval > 0, the progress lines."""
        self._started = self._clock()
        self._stop.clear()
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._report_loop, name="progress", daemon=True)
            self._thread.start()

    def stop(
        self, *, failed: bool = False, stopped: bool = False, table: bool = True
    ) -> dict[str, t.Any]:
        """Stop the progress lines; log the summary table (unless `table` is false: no
        stream started); return the summary."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._finished = self._clock()
        summary = self.summary(failed=failed, stopped=stopped)
        if not table:
            return summary
        self.logger.info(
            "%s",
            render_table(summary),
            extra={"summary": summary},
        )
        return summary

    def _report_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def report(self) -> None:
        """One progress line for each stream that is still syncing and has done something:
        a stream waiting for its turn (no request sent, no record) has nothing to report."""
        now = self._clock()
        with self._lock:
            active = [
                (name, StreamCounts(**vars(c)))
                for name, c in sorted(self._streams.items())
                if c.finished is None and (c.requests or c.records)
            ]
        for name, counts in active:
            elapsed = counts.duration(now)
            rate = counts.records / elapsed if elapsed > 0 else 0.0
            self.logger.info(
                "Progress %s: %s records so far (%.1f records/s); requests: %s, retries: %s",
                name,
                f"{counts.records:,}",
                rate,
                f"{counts.requests:,}",
                f"{counts.retries:,}",
                extra={
                    "stream_name": name,
                    "progress": {
                        "stream": name,
                        "records": counts.records,
                        "deletes": counts.deletes,
                        "records_per_second": round(rate, 1),
                        "requests": counts.requests,
                        "retries": counts.retries,
                        "elapsed_seconds": round(elapsed, 1),
                    },
                },
            )

    def summary(self, *, failed: bool = False, stopped: bool = False) -> dict[str, t.Any]:
        """Per stream: records, deletes, requests, retries, duration; plus totals.
        `stopped`: a signal stopped the run (its status says so, whatever else)."""
        now = self._finished if self._finished is not None else self._clock()
        with self._lock:
            streams = {name: c.as_dict(now) for name, c in sorted(self._streams.items())}
            other_requests, other_retries = self._other_requests, self._other_retries
        duration = now - self._started if self._started is not None else 0.0
        total = {
            "records": sum(s["records"] for s in streams.values()),
            "deletes": sum(s["deletes"] for s in streams.values()),
            "requests": sum(s["requests"] for s in streams.values()) + other_requests,
            "retries": sum(s["retries"] for s in streams.values()) + other_retries,
            "duration_seconds": round(duration, 3),
        }
        with self._lock:
            failures = dict(self.failures)
            reads = self._reads_summary()
        return {
            "status": "stopped" if stopped else "failed" if failed or failures else "succeeded",
            "streams": streams,
            "total": total,
            "reads": reads,
            "failures": failures,
        }

    def _reads_summary(self) -> dict[str, t.Any]:
        """The run's reads as Stripe's allocations count them (under the lock)."""
        per_account = sorted(
            ((n, a) for a, n in self._reads.items() if a is not None), key=lambda x: (-x[0], x[1])
        )
        counts = sorted(n for n, _ in per_account)
        connected = sum(counts)

        def rank(share: float) -> int:  # nearest rank
            return counts[max(0, math.ceil(share * len(counts)) - 1)] if counts else 0

        return {
            "total": connected + self._reads[None],
            "own": self._reads[None],
            "connected": connected,
            "accounts": len(counts),
            "per_account": {
                "mean": round(connected / len(counts), 2) if counts else 0,
                "median": rank(0.5),
                "p99": rank(0.99),
                "max": counts[-1] if counts else 0,
            },
            "top": {a: n for n, a in per_account[:TOP_ACCOUNTS]},
            "rested_accounts": self._rested,
            "reporting": self._reporting,
            "writes": self._writes,
        }


COLUMNS = ("records", "deletes", "requests", "retries")


def render_table(summary: dict[str, t.Any]) -> str:
    """The summary as a plain-text table (first line says how the run ended)."""
    rows = [
        (name, *(f"{c[k]:,}" for k in COLUMNS), f"{c['duration_seconds']:.1f}s")
        for name, c in summary["streams"].items()
    ]
    total = summary["total"]
    rows.append(("total", *(f"{total[k]:,}" for k in COLUMNS), f"{total['duration_seconds']:.1f}s"))
    header = ("stream", *COLUMNS, "duration")
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]

    def line(row: tuple) -> str:
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(v).rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    verb = {"failed": "failed", "stopped": "stopped"}.get(summary.get("status", ""), "finished")
    lines = [f"Sync {verb}: {total['records']:,} records in {total['duration_seconds']:.1f}s"]
    lines += [line(header), *(line(row) for row in rows[:-1])]
    lines += ["-" * len(line(header)), line(rows[-1])]
    lines += reads_lines(summary.get("reads"))
    failures = summary.get("failures") or {}
    if failures:
        lines.append(f"{len(failures)} stream(s) failed:")
        lines += [f"  {name}: {cause}" for name, cause in sorted(failures.items())]
    return "\n".join(lines)


def reads_lines(reads: dict[str, t.Any] | None) -> list[str]:
    """What the run cost in Stripe's read allocations, under the table."""
    if not reads:
        return []
    text = f"Reads: {reads['total']:,}"
    if reads["accounts"]:
        spread = reads["per_account"]
        most = ", ".join(f"{a} {n:,}" for a, n in reads["top"].items())
        text += (
            f" ({reads['own']:,} as the platform itself; {reads['connected']:,} for "
            f"{reads['accounts']:,} connected accounts, per account mean {spread['mean']:g}, "
            f"median {spread['median']:,}, p99 {spread['p99']:,}, max {spread['max']:,}; "
            f"most: {most})"
        )
    elif reads["rested_accounts"]:
        text += " (as the platform itself; no connected account read)"
    lines = [text]
    if reads["reporting"] or reads["writes"]:
        lines.append(
            f"Not counted as reads: {reads['reporting']:,} Reporting API request(s), "
            f"{reads['writes']:,} write(s)."
        )
    if reads["rested_accounts"]:
        lines.append(
            f"Quiet accounts whose events read waited: {reads['rested_accounts']:,} "
            "(setting 'quiet_account_events_interval_seconds')."
        )
    return lines
