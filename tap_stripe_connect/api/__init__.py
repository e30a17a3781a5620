"""Stripe's API: one client for every request (auth, paging, budgets, retries, errors).

Nothing here imports a stream, a sync mode or the tap: the rest of the package calls in.
"""

from tap_stripe_connect.api.client import StripeClient
from tap_stripe_connect.api.clock import StripeClock
from tap_stripe_connect.api.reads import (
    Kind,
    Read,
    events_read,
    feed_read,
    file_read,
    files_read,
    list_read,
    report_run_create,
    report_run_read,
    report_type_read,
    retrieve_read,
)

__all__ = [
    "Kind",
    "Read",
    "StripeClient",
    "StripeClock",
    "events_read",
    "feed_read",
    "file_read",
    "files_read",
    "list_read",
    "report_run_create",
    "report_run_read",
    "report_type_read",
    "retrieve_read",
]
