"""Streams made from the resource table: one thin class per `Resource`, no per-stream code.

A stream says which resource it is; its records come from the sync mode the resource
table names (sync/), read for one (account, stream) `Unit` at a time.
"""

from __future__ import annotations

import functools
import typing as t

from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_stripe_connect.errors import StripeAuthError, StripePermissionError
from tap_stripe_connect.output.records import Records, with_extra_column
from tap_stripe_connect.resources import (
    CREATED,
    EVENTS,
    FULL_TABLE,
    REPORTS,
    RESOURCES,
    RESOURCES_BY_NAME,
    Report,
    Resource,
)
from tap_stripe_connect.sdk_compat import CompatStream
from tap_stripe_connect.state.bookmarks import LockedStateManager, UnitState
from tap_stripe_connect.sync import created, events, full_table, reports
from tap_stripe_connect.sync.children import EmbeddedLists
from tap_stripe_connect.sync.unit import Unit
from tap_stripe_connect.versions import DEFAULT_API_VERSION, load_schema

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_stripe_connect.state.bookmarks import Bookmarks, Checkpoints
    from tap_stripe_connect.sync.run import Run

#: The sync mode of each kind of top-level resource (children: `StripeChildStream`).
MODES: dict[str, Callable[[Unit], Iterator[dict]]] = {
    EVENTS: events.sync,
    CREATED: created.sync,
    FULL_TABLE: full_table.sync,
}


class StripeStream(CompatStream):
    """A Stripe list endpoint described by a `Resource`."""

    resource: t.ClassVar[Resource]

    # Stripe objects carry no update time; `updated` is the Stripe time from which the
    # record is known current (docs/incremental.md).
    replication_key = "updated"

    # Records are shaped by `output.records`; they already match the schema: times are
    # RFC 3339 strings, fractions Decimals (written as JSON numbers), and fields the
    # schema does not name are allowed by it. The SDK's default (RECURSIVE) conformance
    # walks every nested value of every record again and took ~45% of the CPU of a sync.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: t.Any, **kwargs: t.Any) -> None:
        if tap.config.get("keep_undeclared_fields"):
            # Declared at discovery, so that targets create the column (`schema` is the
            # class's dict: see `stream_class`).
            self.__dict__["schema"] = with_extra_column(load_schema(self.resource.name))
        super().__init__(tap, **kwargs)

    @property
    def run(self) -> Run:
        return t.cast("Run", t.cast("t.Any", self.tap).run)

    # Bookmarks are the run's `Bookmarks` (state/bookmarks.py), one entry per connected
    # account; the SDK's entry of a stream is the stream's own, never one per account.
    state_partitioning_keys: t.ClassVar[list[str]] = []

    def new_state_manager(self, **kwargs: t.Any) -> LockedStateManager:
        # Streams sync in parallel and share one state dict (see state/).
        return LockedStateManager(**kwargs)

    @property
    def bookmarks(self) -> Bookmarks:
        return t.cast("Bookmarks", t.cast("t.Any", self.tap).bookmarks)

    @property
    def checkpoints(self) -> Checkpoints:
        return t.cast("Checkpoints", t.cast("t.Any", self.tap).checkpoints)

    def write_state_message(self) -> None:
        # The SDK asks after each unit (and each parent's children): a STATE only when a
        # bookmark moved, at the run's interval (see `Checkpoints`).
        self.checkpoints.maybe()

    @functools.cached_property
    def records(self) -> Records:
        return Records(self.schema, stream=self.name, logger=self.logger)

    @functools.cached_property
    def every_property_selected(self) -> bool:  # type: ignore[override]
        """Whether the catalog selects every property (the mask is fixed for a run)."""
        return all(selected for breadcrumb, selected in self.mask.items() if breadcrumb)

    @property
    def partitions(self) -> list[dict] | None:
        accounts = self.run.connected_accounts()
        if accounts is None:
            return None
        return [{"account_id": account} for account in accounts]

    def get_replication_key_signpost(self, context: Context | None = None) -> None:
        # The SDK's signpost caps bookmarks at this machine's clock; no bookmark comes from
        # a record here (see `Bookmarks.advance`), only from Stripe times the tap took.
        return None

    def unit_state(self, context: Context | None) -> UnitState:
        account = (context or {}).get("account_id")
        return UnitState(
            self.bookmarks,
            self.name,
            account,
            # A connected account read as itself keeps a bookmark in its events.
            bookmarked=self.selected
            and (self.replication_key is not None or bool(self.resource.each_account and account)),
            checkpoints=self.checkpoints,
        )

    def reads_events(self, account: str | None) -> bool:
        """Whether the stream's units read the account's events (its feed) when bookmarked."""
        resource = self.resource
        return resource.sync == EVENTS or bool(resource.each_account and account)

    def uses_feed(self, account: str | None) -> bool:
        """Whether the stream's units use the account's feed when bookmarked: to sync through
        events, or (objects created without an event) to know whether a listing may wait."""
        interval = self.run.settings.quiet_account_interval_seconds
        return self.reads_events(account) or bool(interval and not self.resource.creation_event)

    def feed_bookmark(self, account: str | None) -> int | None:
        """The bookmark of this stream's unit of `account` (None: it lists instead)."""
        context = {"account_id": account} if account else None
        return self.unit_state(context).bookmark_of(self.run.account_id)

    def unit(self, context: Context | None) -> Unit:
        """The (account, stream) unit of work a context names."""
        self.run.ensure_account()
        state = self.unit_state(context)
        account = (context or {}).get("account_id")
        other = state.claim(self.run.account_id)
        if other:
            self.logger.warning(
                "The state of stream '%s' is account %s's, not %s's: syncing %s from "
                "start_date.", self.name, other, self.run.account_id, self.run.account_id,
            )
        return Unit(self.run, self.resource, account, state, self.records, self, self.logger)

    def get_records(self, context: Context | None) -> Iterable[dict]:
        account = (context or {}).get("account_id")
        if account and self.run.account_lost(account):
            return ()  # named once already; its state stays as it was
        unit = self.unit(context)
        # A connected account read as itself: its record, then its own events.
        mode = EVENTS if self.reads_events(unit.account) else self.resource.sync
        records = MODES[mode](unit)
        if unit.account and self.run.platform:
            return self.one_of_many_accounts(unit, records)
        return records

    def one_of_many_accounts(self, unit: Unit, records: Iterator[dict]) -> Iterator[dict]:
        """The records of one connected account of a platform sync."""
        try:
            yield from records
        except (StripeAuthError, StripePermissionError) as exc:
            # One connected account failing must not stop the others. Its bookmark stays
            # where it was (it moves only once a read is wholly written), so nothing is lost
            # when it works again.
            self.run.report_account_failure(str(unit.account), exc)

    def get_child_context(self, record: dict, context: Context | None) -> dict:
        """What a child needs from its parent: the id (the embedded page is kept aside)."""
        child_context: dict = {"parent_id": record["id"]}
        if record.get("_sdc_deleted_at"):
            child_context["parent_deleted_at"] = record["_sdc_deleted_at"]
        for child in self.child_streams:
            if isinstance(child, StripeChildStream) and child.selected:
                child.lists.remember(record)
        if context and context.get("account_id"):
            child_context["account_id"] = context["account_id"]
        return child_context

    # -- what the sync modes ask of the stream (sync.unit.StreamOutput) -----------------

    def use_table_version(self, version: int | None) -> None:
        for stream in (self, *self.descendent_streams):
            t.cast("CompatStream", stream).table_version = version

    def activate_table_version(self) -> None:
        """After a complete listing: rows the listing did not contain are gone from Stripe.

        Deletions older than Stripe's 30 days of events (or before a first sync) leave no
        event; an ACTIVATE_VERSION message lets targets drop the rows of earlier versions.
        It is written only once every record of the listing has been written.
        """
        version = t.cast("int", self.table_version)
        for stream in (self, *self.descendent_streams):
            stream = t.cast("CompatStream", stream)
            if stream.selected and (stream.schema_written or not stream.schema_once):
                stream.write_activate_version(version)

    def children_gone(self) -> bool:
        return any(
            isinstance(child, StripeChildStream) and child.selected and bool(child.lists.gone)
            for child in self.child_streams
        )

    def prefetch_children(self, parents: list[dict], account: str | None) -> None:
        """Start fetching child lists that overflow their parent's embedded page."""
        for child in self.child_streams:
            if isinstance(child, StripeChildStream) and child.selected:
                for parent in parents:
                    child.lists.prefetch(parent, account)


class StripeChildStream(StripeStream):
    """A list embedded in its parent (`invoice.lines`, `subscription.items`)."""

    # Children are re-read with their parent; their state never grows per parent.
    replication_key = None  # type: ignore[assignment]
    state_partitioning_keys: t.ClassVar[list[str]] = []
    # The SDK syncs a child once per parent and would repeat its SCHEMA each time; once
    # per run is what targets need.
    schema_once = True

    @functools.cached_property
    def records(self) -> Records:
        # Every child names its parent (`line_item.invoice`); Stripe's credit note lines
        # do not, so the tap adds the field the schema has for it.
        parent = RESOURCES_BY_NAME[t.cast("str", self.resource.parent)].object
        return Records(self.schema, parent_field=parent, stream=self.name, logger=self.logger)

    @functools.cached_property
    def lists(self) -> EmbeddedLists:
        return EmbeddedLists(self.resource, self.run, self.records)

    def get_records(self, context: Context | None) -> Iterable[dict]:
        context = context or {}
        return self.lists.records(
            context["parent_id"], context.get("account_id"), context.get("parent_deleted_at")
        )


class StripeReportStream(StripeStream):
    """One of Stripe's reports (`resources.REPORTS`), run over whole days (sync/reports.py).

    A platform's connected accounts are one unit: one run covers them all (or one run per
    account, in the same unit), and the bookmark is the end of the last interval loaded.
    """

    report: t.ClassVar[Report]

    def __init__(self, tap: t.Any, **kwargs: t.Any) -> None:
        # Reports have fixed columns: no `_sdc_extra` column (`keep_undeclared_fields`).
        CompatStream.__init__(self, tap, **kwargs)

    @property
    def partitions(self) -> list[dict] | None:
        return None

    def reads_events(self, account: str | None) -> bool:
        return False

    def uses_feed(self, account: str | None) -> bool:
        return False

    def get_child_context(self, record: dict, context: Context | None) -> dict:
        return {}  # no child streams

    def get_records(self, context: Context | None) -> Iterable[dict]:
        self.run.ensure_account()
        state = self.unit_state(None)
        other = state.claim(self.run.account_id)
        if other:
            self.logger.warning(
                "The state of stream '%s' is account %s's, not %s's: loading %s's reports "
                "from start_date.", self.name, other, self.run.account_id, self.run.account_id,
            )
        accounts = self.run.connected_accounts()
        per_account = accounts and not self.report.all_accounts_in_one_run
        if per_account and not self.run.settings.report_runs_per_account:
            self.logger.warning(
                "Skipping stream '%s' for %d connected accounts: it takes one of Stripe's "
                "report runs per account and interval on the platform's rate limit. Set "
                "'report_runs_per_account': true to run them (the platform's "
                "reconciliation needs them); the stream resumes at its bookmark.",
                self.name, len(accounts or ()),
            )
            return ()
        sync = reports.ReportSync(self.run, self.report, state, self.logger, accounts)
        return reports.sync(sync)


def report_schema(report: Report) -> dict:
    """A report stream's JSON Schema, from its columns."""
    text: dict[str, t.Any] = {"type": ["string", "null"]}
    time: dict[str, t.Any] = {"type": ["string", "null"], "format": "date-time"}
    money: dict[str, t.Any] = {"type": ["integer", "null"]}
    kinds: dict[str, dict[str, t.Any]] = {"string": text, "money": money, "time": time}
    properties: dict[str, t.Any] = {"account_id": {"type": ["string"]}, "id": dict(text)}
    properties.update({name: dict(kinds[kind]) for _, name, kind in report.columns})
    for name in ("interval_start", "interval_end", "updated"):
        properties[name] = dict(time)
    for name in report.primary_key:
        properties[name] = {**properties[name], "type": ["string"]}
    return {"type": "object", "properties": properties}


def report_class(report: Report) -> type:
    attrs: dict[str, t.Any] = {
        "name": report.name,
        "report": report,
        "primary_keys": list(report.primary_key),
        "schema": report_schema(report),
        "selected_by_default": report.selected_by_default,
    }
    return type(f"{report.name.title().replace('_', '')}Stream", (StripeReportStream,), attrs)


def stream_class(
    resource: Resource,
    parent: type[StripeStream] | None = None,
    api_version: str = DEFAULT_API_VERSION,
) -> type:
    """A stream class for one table entry, with its schema in the API version."""
    base = StripeChildStream if resource.parent else StripeStream
    attrs: dict[str, t.Any] = {
        "name": resource.name,
        "resource": resource,
        "primary_keys": list(resource.primary_key),
        "schema": load_schema(resource.name, api_version),
        "selected_by_default": resource.selected_by_default,
    }
    if resource.sync == FULL_TABLE:
        # Listed whole on every run: no bookmark, and FULL_TABLE in the catalog.
        attrs["replication_key"] = None
    if parent is not None:
        attrs["parent_stream_type"] = parent
    return type(f"{resource.name.title().replace('_', '')}Stream", (base,), attrs)


def stream_classes(api_version: str = DEFAULT_API_VERSION) -> list[type]:
    """Classes for every resource, parents before children."""
    classes: dict[str, type] = {}
    for resource in RESOURCES:
        parent = classes.get(resource.parent) if resource.parent else None
        classes[resource.name] = stream_class(resource, parent, api_version)
    # Stripe's reports do not depend on the API version.
    return list(classes.values()) + [report_class(report) for report in REPORTS]
