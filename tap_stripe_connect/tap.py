"""The tap: its settings, its streams, and a run of them."""

from __future__ import annotations

import contextlib
import functools
import gc
import sys
import threading
import typing as t
from dataclasses import dataclass

from singer_sdk.exceptions import ConfigValidationError

from tap_stripe_connect.api import StripeClient
from tap_stripe_connect.api.auth import (
    StripeKeyAuthenticator,
    StripeOAuthAuthenticator,
    build_authenticator,
    connected_account,
    secrets_in,
)
from tap_stripe_connect.errors import (
    ConfigError,
    OutputError,
    TapError,
    install_redaction,
    redact,
    register_secrets,
)
from tap_stripe_connect.inputs import check_catalog, check_state, config_problems
from tap_stripe_connect.output.progress import Progress
from tap_stripe_connect.output.writer import (
    LockedStateWriter,
    LockedWriter,
    exit_after,
    exit_soon,
    write_out,
)
from tap_stripe_connect.sdk_compat import CompatStream, CompatTap
from tap_stripe_connect.settings import CONFIG_SCHEMA, DEFAULTS, Settings, format_time
from tap_stripe_connect.state.bookmarks import Bookmarks, Checkpoints, accounts_in_state
from tap_stripe_connect.state.bookmarks import load_state as load_bookmarks
from tap_stripe_connect.stop import (
    GRACE_SECONDS,
    CancelledError,
    Stop,
    exit_code,
    quiet_stopped_streams,
    signal_name,
)
from tap_stripe_connect.streams import stream_classes
from tap_stripe_connect.sync.permissions import unreadable_to_skip
from tap_stripe_connect.sync.run import Run
from tap_stripe_connect.versions import API_VERSIONS, DEFAULT_API_VERSION, unsupported

if t.TYPE_CHECKING:
    import collections
    from collections.abc import Iterator

    from singer_sdk.streams import Stream

    from tap_stripe_connect.streams import StripeStream


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run CPython's cycle collector less often while a sync lasts; undone at the end.

    A sync allocates trees of dicts and lists (parsed pages) that hold no reference
    cycles, yet with the default threshold (a collection every 700 allocations) the
    collector ran ~600 times in a 20,000-record sync and took ~18% of its CPU, mostly
    walking the catalog, schemas and modules again. Those are frozen (left out of
    collections), and young objects are collected every 20,000 allocations instead.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(20_000, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


class StreamRun:
    """One top-level stream of a run, synced as one or many (account, stream) units.

    Its SCHEMA is written before its first unit, its progress markers finalized (and
    its end reported) after its last.
    """

    def __init__(self, stream: Stream, progress: Progress, units: int) -> None:
        self.stream = stream
        self.progress = progress
        self.left = units
        self._started = False
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self.progress.stream_started(self.stream.name)
            if self.stream.selected:
                t.cast("CompatStream", self.stream).write_schema_once()

    def end(self) -> None:
        with self._lock:
            self.left -= 1
            if self.left:
                return
        self.stream.finalize_state_progress_markers()
        for done in (self.stream, *self.stream.descendent_streams):
            self.progress.stream_finished(done.name)


@dataclass
class StreamJob:
    """A scheduler job: a top-level stream (with its children) for one account, or for
    all its accounts one after another (`account` None)."""

    stream_run: StreamRun
    account: str | None = None

    @property
    def name(self) -> str:
        return self.stream_run.stream.name

    def run(self) -> None:
        self.stream_run.begin()
        try:
            self.stream_run.stream.sync({"account_id": self.account} if self.account else None)
        except CancelledError:
            raise  # not a failure of the stream: the run was asked to stop
        except OutputError as exc:
            # Nothing read from now on could reach the target: no unit or page starts.
            t.cast("StripeStream", self.stream_run.stream).run.client.stop.fail(exc)
            raise
        except Exception as exc:
            self.stream_run.progress.stream_failed(self.name, redact(str(exc)))
            raise
        finally:
            t.cast("StripeStream", self.stream_run.stream).run.unit_finished(self.account)
        self.stream_run.end()


def stream_jobs(streams: list[Stream], accounts: list[str] | None, progress: Progress) -> list:
    """The jobs of a run: one per stream, or one per (account, stream) for connected accounts.

    Account-major order: the scheduler takes the first job of the account with the fewest
    jobs running, so units of different accounts run together, each in its own budget.
    """
    whole = [s for s in streams if accounts is None or s.partitions is None]
    parted = [s for s in streams if s not in whole]
    jobs: list[StreamJob] = [StreamJob(StreamRun(s, progress, 1)) for s in whole]
    runs = [StreamRun(s, progress, len(accounts or ())) for s in parted]
    jobs += [StreamJob(run, account) for account in accounts or () for run in runs]
    return jobs


class TapStripeConnect(CompatTap):
    """Stripe payments and billing data, kept equal to Stripe."""

    name = "tap-stripe-connect"

    config_jsonschema = CONFIG_SCHEMA

    message_writer_class = LockedWriter

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        #: Asked by SIGTERM/SIGINT (`on_signal`); the client and the scheduler heed it.
        self.stop = Stop()
        self.syncing = False
        self._deadline: threading.Timer | None = None
        if isinstance(kwargs.get("catalog"), dict):
            check_catalog(kwargs["catalog"], [t.cast("t.Any", c).name for c in stream_classes()])
        super().__init__(*args, **kwargs)
        register_secrets(secrets_in(self.config))
        # The SDK has configured its log handlers by now; filter them too.
        install_redaction()
        quiet_stopped_streams()
        # STATE only under the run lock.
        self.use_state_writer(LockedStateWriter(self.message_writer))
        self.streams_started = False  # whether a stream began (a failure has state to keep)

    # -- settings ------------------------------------------------------------------------

    def check_settings(self, config: dict[str, t.Any], *, raise_errors: bool = True) -> list[str]:
        """Before the SDK's check (which also fills in defaults): one line naming each bad
        setting, unknown settings included, and never a secret's value."""
        register_secrets(secrets_in(config))
        self.append_builtin_config(self.config_jsonschema)
        problems = config_problems(config, self.config_jsonschema)
        if problems and raise_errors:
            raise ConfigError(f"Invalid settings: {'; '.join(problems)}.")
        for problem in problems:
            self.logger.warning("Invalid setting: %s", problem)
        return problems

    def settings_rejected(self, exc: ConfigValidationError) -> t.NoReturn:
        raise ConfigError(f"Invalid settings: {'; '.join(exc.errors)}.") from None

    def load_state(self, state: dict[str, t.Any]) -> None:
        """A STATE this tap cannot resume from ends the run before anything is written."""
        check_state(state)
        super().load_state(state)
        load_bookmarks(t.cast("dict", self.state), state)

    def discover_streams(self) -> list:
        # Each API version has its own schemas: records are converted and typed by them.
        api_version = str(self.config.get("api_version") or DEFAULT_API_VERSION)
        if api_version not in API_VERSIONS:  # --discover lets the SDK skip validation
            raise ConfigError(f"Invalid settings: {unsupported(api_version)}.")
        return [cls(tap=self) for cls in stream_classes(api_version)]

    @functools.cached_property
    def bookmarks(self) -> Bookmarks:
        """Every bookmark of the run: the one owner of their moves (state/bookmarks.py)."""
        return Bookmarks(t.cast("dict", self.state))

    @functools.cached_property
    def checkpoints(self) -> Checkpoints:
        """When the run writes a STATE: when something moved, at an interval growing with it."""
        return Checkpoints(self.bookmarks, self.write_state)

    def write_state(self) -> int:
        """A STATE of the run's state now (unless the same as the last); its bytes."""
        writer = self.state_writer
        if isinstance(writer, LockedStateWriter):
            return writer.write(self.state)
        writer.write_state(self.state)
        return 0

    @functools.cached_property
    def settings(self) -> Settings:
        config = dict(self.config)
        # Classic Connect with the platform's key: the account `connect` saved, read with
        # `Stripe-Account` (no per-account token).
        if account := connected_account(config):
            config["account_id"] = account
        return Settings.from_config(config)

    # -- what a run shares ---------------------------------------------------------------

    @functools.cached_property
    def authenticator(self) -> StripeKeyAuthenticator | StripeOAuthAuthenticator:
        return build_authenticator(self.config)

    @functools.cached_property
    def client(self) -> StripeClient:
        """The one Stripe client of the run; it tells progress of each request."""
        client = StripeClient(
            self.settings,
            self.authenticator,
            # Once per run: the SDK looks the version up in the package metadata on every
            # call, ~1 ms, which was ~3% of a sync's CPU when done for every request.
            user_agent=f"tap-stripe-connect/{self.plugin_version}",
            stop=self.stop,
        )
        client.on_request = self.progress.observe_request
        client.on_retry = self.progress.observe_retry
        return client

    @functools.cached_property
    def run(self) -> Run:
        return Run(self.client, self.settings, self.logger)

    @property
    def retries_by_stream(self) -> collections.Counter[str]:
        return self.client.retries_by_stream

    @functools.cached_property
    def progress(self) -> Progress:
        """Progress lines while the run lasts and the summary table at its end."""
        progress = Progress(self.logger, self.settings.progress_interval_seconds)
        if isinstance(self.message_writer, LockedWriter):
            self.message_writer.observer = progress.observe_message
        return progress

    # -- a run ---------------------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        """SIGTERM or SIGINT: stop the run without losing what was read (see stop.py).

        The first signal stops new units and pages; the run then writes its records and
        the last STATE and exits with 143 (SIGTERM) or 130 (SIGINT), within
        `GRACE_SECONDS` at the latest. A second signal exits at once.
        """
        code = exit_code(signum)
        if not self.stop.request(signum):
            self.logger.warning(
                "%s again: exiting now (exit code %d); the last STATE written covers "
                "everything written before it.", signal_name(signum), code,
            )
            exit_soon(code)
            return
        if not self.syncing:
            raise CancelledError(signum)
        self.logger.warning(
            "%s: stopping; no new page starts, those under way end, then the records and "
            "the STATE are written (exit code %d; a second signal exits at once).",
            signal_name(signum), code,
        )
        self._deadline = exit_after(GRACE_SECONDS, code, functools.partial(self.last_words, signum))

    def last_words(self, signum: int) -> None:
        """`GRACE_SECONDS` after a signal, responses still awaited: what was read, the
        STATE, and the line the CLI would have written."""
        self.flush_output(True)
        self.logger.warning("Not ended %.0f s after the signal: exiting now.", GRACE_SECONDS)
        sys.stderr.write(f"tap-stripe-connect: {CancelledError(signum)}\n")

    def run_discovery(self) -> str:
        """The catalog (~1.8 MB) on stdout, as the SDK writes it, but whole: through
        `write_out`, which finishes a write cut short (see output/writer.py)."""
        catalog_text = self.catalog_json_text
        write_out(f"{catalog_text}\n".encode())
        return catalog_text

    def run_sync(self) -> None:
        """Sync, with progress lines while it runs and a summary table at the end."""
        self.progress.start()
        failed = True
        self.syncing = True
        try:
            with fewer_collections():
                self.sync_selected()
            failed = False
        finally:
            self.flush_output(failed)
            # No table of zeros above an error that came before any stream started (a
            # setting, the credential, the account check): the error is the whole story.
            self.progress.stop(
                failed=failed, stopped=self.stop.signum is not None, table=self.streams_started
            )
            self.syncing = False
            if self._deadline is not None:
                self._deadline.cancel()  # ended in time
        # A signal came after the last request: the run is complete, and cancelled still.
        self.stop.check()

    def flush_output(self, failed: bool) -> None:
        """Write the records threads collected and have not written yet (`LockedWriter`).

        After a failure, also the state as it is: listings write STATE at most once a
        second (see state/bookmarks.py), and what they completed since then is written,
        so the next run need not read it again.
        """
        writer = self.message_writer
        try:
            if isinstance(writer, LockedWriter):
                writer.flush()
            if failed and self.streams_started:
                self.checkpoints.now()
        except (OSError, OutputError):
            if not failed:  # after a failure, its own error says more
                raise

    def check_start_date(self) -> None:
        """A `start_date` after Stripe's current time would sync nothing, every run: say so.

        Stripe's time is known from the account read's `Date` header (never this machine's
        clock); without it (no answer carried one) nothing is checked."""
        start, now = self.settings.start_timestamp, self.run.client.clock.now()
        if start is not None and now is not None and start > now:
            raise ConfigError(
                f"Setting 'start_date' ({format_time(start)}) is after Stripe's current time "
                f"({format_time(now)}): no object can have been created since. Set an earlier "
                "start_date, or leave it out to sync all history."
            )

    def sync_selected(self) -> None:
        """Sync the selected streams, several at once, through one writer.

        The SDK's `sync_all` runs streams one after another; this runs the same steps
        (progress-marker reset, `Stream.sync`, `finalize_state_progress_markers`) for
        several top-level streams in parallel. Children sync inside their parent.
        """
        # Check the settings the SDK's JSON Schema cannot express before any request.
        _ = self.client
        self.prepare_sync_state()
        if self.state:
            self.checkpoints.now()
        self.run.read_account()
        self.run.require_account()
        self.check_start_date()
        # Restricted keys: every selected stream readable before any starts (or skipped).
        selected = [s.name for s in self.streams.values() if s.selected]
        for name in unreadable_to_skip(self.run, selected, self.logger):
            self.streams[name].selected = False
        streams = [
            stream
            for stream in self.streams.values()
            if (stream.selected or stream.has_selected_descendents)
            and not stream.parent_stream_type
        ]
        for account in self.run.no_longer_connected(accounts_in_state(self.state)):
            self.logger.warning(
                "Account %s is no longer connected to the platform (GET /v1/accounts no "
                "longer lists it): not synced; its rows stay in the warehouse and its "
                "STATE is kept.",
                account,
            )
        # One events read per account feeds these streams, from the oldest of their bookmarks.
        feeding = [t.cast("StripeStream", s) for s in streams if s.selected]
        self.run.feed_bookmarks = lambda account: [
            s.feed_bookmark(account) for s in feeding if s.uses_feed(account)
        ]
        if self.settings.quiet_account_events_interval_seconds:
            # Of the streams kept current by events alone: those that also list what Stripe
            # creates without an event wait longer in a quiet account, and would end every rest.
            self.run.rests.events_bookmarks = lambda account: [
                s.feed_bookmark(account)
                for s in feeding
                if s.reads_events(account) and s.resource.creation_event
            ]
            self.run.rests.was_quiet = self.bookmarks.quiet
            self.run.rests.found_quiet = self.bookmarks.set_quiet
            self.run.rests.on_rest = self.progress.account_rested
        else:
            self.bookmarks.forget_quiet()
        jobs = stream_jobs(streams, self.run.connected_accounts(), self.progress)
        self.run.expect_units(job.account for job in jobs)
        # Many accounts: a unit per worker (each account has its own budget); one account:
        # streams share the workers with their `created` windows.
        per_job = 1 if len(jobs) > len(streams) else 4
        workers = max(1, self.settings.max_workers // per_job)
        self.run.scheduler.parallel = min(len(jobs), workers) or 1
        self.run.scheduler.eager = per_job == 1
        self.run.scheduler.floor = min(self.run.scheduler.parallel, DEFAULTS["max_workers"])
        self.streams_started = True
        try:
            self.run.scheduler.run(jobs)
        except Exception:
            # Stopped by a signal: the units it stopped failed with `CancelledError`, and any
            # other failure is named in the log already.
            self.stop.check()
            if len(failed := self.progress.failures) > 1:
                # Every failed stream's own cause, not only the first one's.
                causes = "; ".join(f"'{name}': {why}" for name, why in failed.items())
                raise TapError(f"{len(failed)} streams failed: {causes}") from None
            raise
        finally:
            self.run.close()
        # The last STATE (checkpoints wait an interval between two).
        self.checkpoints.now()
        for stream in self.streams.values():
            stream.log_sync_costs()
        if failed := self.run.failed_accounts:
            names = "; ".join(f"{a}: {why}" for a, why in failed.items())
            raise TapError(
                f"{len(failed)} account(s) failed and were skipped (the others "
                f"completed and their state was kept): {names}"
            )


if __name__ == "__main__":
    TapStripeConnect.cli()
