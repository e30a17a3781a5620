"""The REPORT mode: Stripe's own reports (the Reports API), loaded as streams.

Stripe computes its reports itself, so they are the other side of a reconciliation:
`analytics/` compares them with the balance transactions the tap listed.

A sync reads `GET /v1/reporting/report_types/<type>` for the data Stripe has
(`data_available_start`/`_end`: the end trails real time), then runs the report over
whole UTC days from the bookmark up to the last whole day available: the rest of a
calendar month at once where the month is over, day by day in the month under way. Runs are
created several at once (`POST /v1/reporting/report_runs`), read until they are no longer
`pending` (at most `report_timeout_seconds`), and each run's CSV is downloaded from the
URL Stripe gives (files.stripe.com). Interval by interval, in order, the records are
written and the bookmark moves to the interval's end: a run cut short resumes there.

Money arrives in major units (`12.34`) and is stored in Stripe's minor units (`1234`),
as every other stream stores it. A platform's connected accounts (`account_ids`) are
covered by one run for all of them where the report lists each row's account
(`connected_account` column), else by one run per account (`parameters[connected_account]`).
Report calls are not counted against Stripe's read allocation.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tap_stripe_connect.api import file_read, report_run_create, report_run_read, report_type_read
from tap_stripe_connect.errors import StripePermissionError, TapError
from tap_stripe_connect.money import minor_units
from tap_stripe_connect.settings import format_time

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterator

    from tap_stripe_connect.resources import Report
    from tap_stripe_connect.state.bookmarks import UnitState
    from tap_stripe_connect.sync.run import Run

DAY = 86_400
#: Report runs in flight at once, at most.
RUNS_AT_ONCE = 8
#: Seconds between reads of pending runs: the first, and the most.
FIRST_WAIT, LONGEST_WAIT = 0.5, 10.0


class ReportError(TapError):
    """A report run failed, was refused, or stayed pending too long."""


def day(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def next_month(ts: int) -> int:
    d = datetime.fromtimestamp(ts, tz=timezone.utc)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp())


def intervals(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as report intervals: to the end of each UTC month that is over, then
    day by day in the month under way (the first may start within a day, as Stripe's data
    may). Intervals never cross a month, so each lies within one month of the models."""
    found = []
    cursor = start
    while cursor < end:
        month_end = next_month(cursor)
        stop = month_end if month_end <= end else min(cursor // DAY * DAY + DAY, end)
        found.append((cursor, stop))
        cursor = stop
    return found


def time_field(text: str) -> str | None:
    """A report's `2025-03-01 12:34:56` (UTC) as RFC 3339."""
    text = text.strip()
    if not text:
        return None
    if len(text) == 19 and text[10] == " ":
        # Stripe's own form, checked by the C parser (`strptime` took most of a report
        # row's CPU): the same text is then the RFC 3339 time.
        try:
            exact = datetime.fromisoformat(text).isoformat(sep=" ") == text  # not `12:34+01`
        except ValueError:
            exact = False
        if exact:
            return f"{text[:10]}T{text[11:]}Z"
    parsed = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return format_time(int(parsed.timestamp()))


@dataclass
class Job:
    """One report run: an interval, for one connected account or for every one."""

    interval: tuple[int, int]
    account: str | None
    run_id: str = ""
    created: float = 0.0
    rows: list[dict] | None = None

    def about(self, report_type: str) -> str:
        start, end = self.interval
        who = f", account {self.account}" if self.account else ""
        return f"{report_type}, {day(start)} to {day(end)} (end excluded){who}"


@dataclass
class ReportSync:
    """The sync of one report stream, in one run."""

    run: Run
    report: Report
    state: UnitState
    logger: logging.Logger
    #: The connected accounts of a platform run (None: the credential's own account).
    accounts: list[str] | None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    jobs_done: int = field(default=0)

    @property
    def name(self) -> str:
        return self.report.name

    @property
    def platform(self) -> bool:
        """Whether the reports are a platform's, of its connected accounts."""
        return self.accounts is not None

    @property
    def report_type(self) -> str:
        return self.report.connected_type if self.accounts is not None else self.report.report_type

    @property
    def owner(self) -> str | None:
        return self.run.account_id

    def records(self) -> Iterator[dict]:
        client = self.run.client
        if self.accounts is not None and not self.accounts:
            return
        about = client.retrieve(
            report_type_read(self.report_type, stream=self.name, platform=self.platform)
        )
        if about is None:
            raise ReportError(
                f"Stripe has no report type {self.report_type} for stream '{self.name}' "
                "(it needs a live or test account with balance reports): deselect the stream."
            )
        available_start = int(about["data_available_start"])
        available_end = int(about["data_available_end"]) // DAY * DAY
        start = self.state.bookmark()
        if start is None:
            start = self.run.settings.start_timestamp
            start = available_start if start is None else start // DAY * DAY
        start = max(start, available_start)
        planned = intervals(start, available_end)
        if not planned:
            self.logger.info(
                "Stream '%s': nothing new in Stripe's %s (data available up to %s).",
                self.name, self.report_type, day(available_end),
            )
            return
        self.logger.info(
            "Stream '%s': Stripe's %s from %s to %s (%d report interval(s)).",
            self.name, self.report_type, day(start), day(available_end), len(planned),
        )
        per_run = max(1, RUNS_AT_ONCE // max(1, self.runs_per_interval))
        for first in range(0, len(planned), per_run):
            window = planned[first : first + per_run]
            jobs = [Job(interval, account) for interval in window for account in self.targets]
            self.complete(jobs)
            for interval in window:
                for job in jobs:
                    if job.interval == interval:
                        yield from job.rows or ()
                # The records of the interval are written: the bookmark moves to its end.
                self.state.mark_synced(interval[1])

    @property
    def targets(self) -> list[str | None]:
        """Whom each interval's runs are for: every account at once, or one by one."""
        if self.accounts is None or self.report.all_accounts_in_one_run:
            return [None]
        return list(self.accounts)

    @property
    def runs_per_interval(self) -> int:
        return len(self.targets)

    def parameters(self, job: Job) -> tuple[tuple[str, t.Any], ...]:
        start, end = job.interval
        params: list[tuple[str, t.Any]] = [("interval_start", start), ("interval_end", end)]
        if job.account:
            params.append(("connected_account", job.account))
        if not self.report.fixed_columns:
            columns = [column for column, _, _ in self.report.columns]
            if self.accounts is not None:
                columns.append("connected_account")
            params.append(("columns", columns))
        return tuple(params)

    def complete(self, jobs: list[Job]) -> None:
        """Create the jobs' runs, wait for them, and read each one's rows.

        The requests of the jobs go out together (each waits for its answer in a thread of
        its own): one after another, a platform's 32 days of three reports took ~50 s at
        Stripe's 300 ms an answer, longer than the rest of a 200-account sync.
        """
        workers = max(1, min(len(jobs), self.run.settings.max_workers))
        with ThreadPoolExecutor(workers, thread_name_prefix="report") as pool:
            self._complete(jobs, pool)

    def _create(self, job: Job) -> None:
        created, _ = self.run.client.answer(
            report_run_create(self.report_type, self.parameters(job), stream=self.name,
                              platform=self.platform)
        )
        job.run_id, job.created = str(created["id"]), self.clock()

    def _read(self, job: Job) -> dict | None:
        """The run as Stripe has it now; a succeeded run's rows read into the job."""
        run = self.run.client.retrieve(
            report_run_read(job.run_id, stream=self.name, platform=self.platform)
        )
        if (run or {}).get("status") == "succeeded":
            job.rows = self.rows(job, run or {})
        return run

    def _complete(self, jobs: list[Job], pool: ThreadPoolExecutor) -> None:
        list(pool.map(self._create, jobs))
        pending = list(jobs)
        wait = FIRST_WAIT
        timeout = self.run.settings.report_timeout_seconds
        # Runs still pending are said at INFO once a progress interval, like progress lines.
        interval, said = self.run.settings.progress_interval_seconds, self.clock()
        while pending:
            self.sleep(wait)
            wait = min(wait * 1.5, LONGEST_WAIT)
            for job, run in zip(list(pending), pool.map(self._read, pending), strict=True):
                status = (run or {}).get("status")
                if status == "succeeded":
                    pending.remove(job)
                elif status == "failed" or run is None:
                    why = (run or {}).get("error") or "Stripe no longer has the run"
                    raise ReportError(
                        f"Stripe's report run {job.run_id} ({job.about(self.report_type)}) "
                        f"failed for stream '{self.name}': {why}. Run the tap again later; "
                        f"the stream resumes at {day(job.interval[0])}."
                    )
                elif self.clock() - job.created > timeout:
                    raise ReportError(
                        f"Stripe's report run {job.run_id} ({job.about(self.report_type)}) was "
                        f"still pending after {timeout:g}s (setting 'report_timeout_seconds') "
                        f"for stream '{self.name}': run the tap again later (the stream "
                        f"resumes at {day(job.interval[0])}), or raise the setting."
                    )
            if pending:
                due = bool(interval) and self.clock() - said >= interval
                said = self.clock() if due else said
                self.logger.log(
                    logging.INFO if due else logging.DEBUG,
                    "Stream '%s': %d of Stripe's report runs pending (%s, ...).",
                    self.name, len(pending), pending[0].about(self.report_type),
                )

    def rows(self, job: Job, run: dict) -> list[dict]:
        """The records of a succeeded run's CSV."""
        result = run.get("result") or {}
        url = result.get("url")
        if not url:
            raise ReportError(
                f"Stripe's report run {job.run_id} ({job.about(self.report_type)}) succeeded "
                f"without a file for stream '{self.name}'. Run the tap again later."
            )
        _, response = self.run.client.answer(
            file_read(str(url), stream=self.name, platform=self.platform)
        )
        content = response.content
        start, end = job.interval
        common = {
            "interval_start": format_time(start),
            "interval_end": format_time(end),
            "updated": format_time(end),
        }
        wanted = set(self.accounts or ())
        records = []
        reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
        for line, row in enumerate(reader, start=2):
            account = job.account or row.get("connected_account") or self.owner
            if self.accounts is not None and account not in wanted:
                continue  # another shard's account
            try:
                record = {**self.record(row), **common, "account_id": account}
                if "id" not in record:  # a summary's row: its interval, currency and category
                    record["id"] = (f"{day(start)}..{day(end)}:{record['currency']}:"
                                    f"{record['category']}")
                records.append(record)
            except (KeyError, ValueError) as exc:
                raise ReportError(
                    f"Line {line} of the CSV of Stripe's report run {job.run_id} "
                    f"({job.about(self.report_type)}) is not what stream '{self.name}' "
                    f"expects ({type(exc).__name__}: {exc})."
                ) from None
        return records

    def record(self, row: dict[str, str]) -> dict:
        currency = (row.get("currency") or "").lower()
        record: dict[str, t.Any] = {}
        for column, name, kind in self.report.columns:
            text = row[column]
            if kind == "money":
                record[name] = minor_units(text, currency)
            elif kind == "time":
                record[name] = time_field(text)
            elif name == "currency":
                record[name] = currency
            else:
                record[name] = text if text != "" else None
        return record


def sync(sync: ReportSync) -> Iterator[dict]:
    """The stream's records; with `skip_unreadable_streams`, a report Stripe refuses or
    fails ends the stream with a warning (the bookmark stays at the last interval loaded)."""
    try:
        yield from sync.records()
    except (ReportError, StripePermissionError) as exc:
        if not sync.run.settings.skip_unreadable_streams:
            raise
        sync.logger.warning(
            "Skipping the rest of stream '%s' (setting 'skip_unreadable_streams'): %s",
            sync.name, exc,
        )
