"""singer-sdk's per-page and per-parent log lines, moved to DEBUG.

A sync of every stream logged ~600 lines of which a user reads none: a METRIC line per
request and per parent, "Pagination stopped after 0 pages" for every parent with no
children, "Beginning sync ... with context keys" per parent, two "Beginning sync" /
"Starting incremental sync" lines per stream, and "Stream is assumed to be
unsorted, progress is not resumable" for streams this tap does resume (a listing records
the `created` ranges it completed, see `state/listing.py`; an events read restarts from
its bookmark). They stay available at DEBUG (`TAP_STRIPE_CONNECT_LOGLEVEL=debug`).
"""

from __future__ import annotations

import logging

_CHATTER = (
    "METRIC: %s",
    "Pagination stopped after %d pages because no records were found in the last response",
    "Beginning sync of '%s' in %s mode with context keys: %s",
    "Stream is assumed to be unsorted, progress is not resumable if interrupted",
    # Two lines per stream and one per child (~60 of a plain run's INFO lines): the
    # progress lines and the summary table say which streams ran, and how.
    "Beginning sync of '%s' in %s mode",
    "Starting incremental sync of '%s' with bookmark value: %s",
    "Added '%s' as child stream to '%s'",
)


def to_debug(record: logging.LogRecord) -> bool:
    """A log filter's answer for a record it moves to DEBUG: the record becomes a DEBUG
    one, shown only where its logger is enabled at DEBUG."""
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def filter_root_handlers(log_filter: logging.Filter) -> None:
    """Filter every handler of the root logger (the SDK's console one, or Meltano's)."""
    for handler in logging.getLogger().handlers:
        if log_filter not in handler.filters:
            handler.addFilter(log_filter)


class ChatterFilter(logging.Filter):
    """On a handler: the SDK's chatter becomes a DEBUG record, shown only at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in _CHATTER or to_debug(record)


_FILTER = ChatterFilter()


def quiet_chatter() -> None:
    """The SDK's chatter at DEBUG: on every handler of the root logger, and on the tap's logger."""
    filter_root_handlers(_FILTER)
    # On the tap's own logger too: the SDK logs "Added ... as child stream" while the tap is
    # made, before the tap can filter the handlers the SDK sets up then.
    tap_logger = logging.getLogger("tap-stripe-connect")
    if _FILTER not in tap_logger.filters:
        tap_logger.addFilter(_FILTER)
    # The SDK's METRIC lines (a timer and a counter per request, and per parent for each
    # child stream: ~4% of a platform run's CPU) reach only these handlers, which drop
    # them below DEBUG: then they are not made at all.
    metrics = logging.getLogger(METRICS)
    if not metrics.isEnabledFor(logging.DEBUG) and all(
        _FILTER in h.filters for h in _handlers_of(metrics)
    ):
        metrics.setLevel(logging.WARNING)


METRICS = "singer_sdk.metrics"


def _handlers_of(logger: logging.Logger) -> list[logging.Handler]:
    """Every handler a record of `logger` reaches."""
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        handlers += current.handlers
        current = current.parent if current.propagate else None
    return handlers
