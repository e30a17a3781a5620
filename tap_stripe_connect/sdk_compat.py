"""Every use of a private singer-sdk name (singer-sdk 0.54), and nowhere else.

The SDK's public hooks do not cover what this tap needs: streams that sync in parallel
(one locked state dict and writer), bookmarks from Stripe's clock, a table version set
after a listing began, and a record path without a walk that has nothing to do. Each
private name below is one the SDK may change in any release: `tests/test_sdk_compat.py`
fails when one of them is gone, changes its signature or (for the code copied here)
its source, so an upgrade is a known list of places to look at, not a silent break.

The rest of the package uses only the public names `CompatStream` and `CompatTap` give.
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone

import singer_sdk.singerlib as singer
from singer_sdk import Stream, Tap
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers._state import StateWriter
from singer_sdk.helpers._typing import conform_record_data_types
from singer_sdk.streams._state import StreamStateManager

if t.TYPE_CHECKING:
    from types import FrameType

    from singer_sdk.helpers.types import Context

__all__ = [
    "CompatStream",
    "CompatTap",
    "StateWriter",
    "StreamStateManager",
    "conform_record_data_types",
]


class CompatStream(Stream):
    """A stream with public names for the private SDK members the tap uses."""

    #: Write the SCHEMA message once per run (the SDK syncs a child once per parent).
    schema_once: bool = False
    schema_written = False

    @property
    def tap(self) -> Tap:
        return t.cast("Tap", self._tap)

    @property
    def table_version(self) -> int | None:
        """The `version` of the RECORD messages written (an ACTIVATE_VERSION's table)."""
        return self._stream_version

    @table_version.setter
    def table_version(self, version: int | None) -> None:
        self._stream_version = version

    def new_state_manager(self, **kwargs: t.Any) -> StreamStateManager:
        """The state manager of this stream (streams.py gives a locked one)."""
        return StreamStateManager(**kwargs)

    @property
    def state_manager(self) -> StreamStateManager:
        if self._state_manager is None:
            self._state_manager = self.new_state_manager(
                tap_name=self.tap_name,
                stream_name=self.name,
                tap_state=self._tap_state,
                state_partitioning_keys=self.state_partitioning_keys,
                is_sorted=self.is_sorted,
                check_sorted=self.check_sorted,
            )
        return self._state_manager

    def write_state_message(self) -> None:
        """Where the SDK writes a STATE (after each sync, every N records, on abort)."""
        Stream._write_state_message(self)

    def _write_state_message(self) -> None:
        self.write_state_message()

    def write_activate_version(self, version: int) -> None:
        self._write_activate_version_message(version)

    def write_schema_once(self) -> None:
        """The SCHEMA message now, and no more of this stream's in this run."""
        self.schema_once = True
        self._write_schema_message()

    def _write_schema_message(self) -> None:
        if self.schema_once and self.schema_written:
            return
        super()._write_schema_message()
        self.schema_written = True

    def _increment_stream_state(
        self, latest_record: dict, *, context: Context | None = None
    ) -> None:
        # The SDK moves a bookmark to the largest replication key of the records written.
        # A record's own fields must never move one (a product's `updated` can be later
        # than events the run has not read): bookmarks move in `state.bookmarks` only.
        return

    #: Whether the catalog selects every property (then no deselection walk is needed).
    every_property_selected: bool = False

    def _generate_record_messages(
        self, record: dict
    ) -> t.Generator[singer.RecordMessage, None, None]:
        """The SDK's own (singer-sdk 0.54), less a walk that has nothing to do.

        `pop_deselected_record_properties` visits every nested dict of every record to
        drop deselected properties: as much CPU as parsing the record. With the usual
        catalog, where every property is selected, it never drops anything.
        """
        if not self.every_property_selected:
            pop_deselected_record_properties(record, self.schema, self.mask)
        record = conform_record_data_types(
            stream_name=self.name,
            record=record,
            schema=self.effective_schema,
            level=self.TYPE_CONFORMANCE_LEVEL,
            logger=self.logger,
        )
        for stream_map in self.stream_maps:
            mapped_record = stream_map.transform(record)
            if mapped_record is not None:
                yield singer.RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped_record,
                    version=self._stream_version,
                    time_extracted=datetime.now(timezone.utc),
                )


class CompatTap(Tap):
    """A tap with public names for the private SDK members the tap uses."""

    def run_sync(self) -> None:
        """What `sync_all` does (tap.py syncs streams in parallel)."""
        raise NotImplementedError

    # The SDK marks `sync_all` final and syncs streams one at a time; syncing them in
    # parallel is the point of overriding it.
    def sync_all(self) -> None:  # type: ignore[misc]
        self.run_sync()

    def check_settings(self, config: dict[str, t.Any], *, raise_errors: bool = True) -> list[str]:
        """Problems with the settings, before the SDK's own check (tap.py names them)."""
        return []

    def settings_rejected(self, exc: ConfigValidationError) -> t.NoReturn:
        """The SDK's check found `exc` (tap.py says it in the tap's words)."""
        raise exc

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # The SDK's check also fills in defaults; the tap's runs first, on the raw config.
        problems = self.check_settings(self._config, raise_errors=raise_errors)
        try:
            return super()._validate_config(raise_errors=raise_errors) or problems
        except ConfigValidationError as exc:
            self.settings_rejected(exc)

    def prepare_sync_state(self) -> None:
        """The steps `sync_all` takes before its first stream, on the tap's state."""
        self._reset_state_progress_markers()
        self._set_compatible_replication_methods()

    def on_signal(self, signum: int) -> None:
        """SIGTERM or SIGINT arrived (in the main thread); tap.py stops the run."""
        raise NotImplementedError

    # The SDK installs this method as the handler of SIGTERM and SIGINT when the tap is
    # made (in the main thread); its own writes the state and calls `sys.exit(0)`, which
    # let a cancelled run go on syncing in its threads and end with exit code 0.
    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        self.on_signal(signum)

    def use_state_writer(self, writer: StateWriter) -> None:
        """Write every STATE message through `writer`."""
        self._state_writer = writer
