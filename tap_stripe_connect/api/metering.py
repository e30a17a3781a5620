"""singer-sdk's metrics for the client's requests, as the SDK's REST streams write them:
METRIC log lines with the requests of each read and the duration of each request."""

from __future__ import annotations

import typing as t

from singer_sdk import metrics

if t.TYPE_CHECKING:
    import requests

    from tap_stripe_connect.api.reads import Read

Counter = metrics.Counter
metrics_logger = metrics.get_metrics_logger()


def counter(read: Read) -> metrics.Counter:
    """The request counter of one read (logged when the read ends)."""
    meter = metrics.http_request_counter(read.name, endpoint=read.path)
    if read.account:
        meter.with_context({"account_id": read.account})
    return meter


def log_duration(read: Read, response: requests.Response) -> None:
    """How long Stripe took to answer (to the headers)."""
    tags: dict[str, t.Any] = {
        metrics.Tag.STREAM: read.name,
        metrics.Tag.ENDPOINT: read.path,
        metrics.Tag.HTTP_STATUS_CODE: response.status_code,
        metrics.Tag.STATUS: (
            metrics.Status.SUCCEEDED if response.status_code < 400 else metrics.Status.FAILED
        ),
    }
    if read.account:
        tags[metrics.Tag.CONTEXT] = {"account_id": read.account}
    point = metrics.Point(
        "timer",
        metric=metrics.Metric.HTTP_REQUEST_DURATION,
        value=response.elapsed.total_seconds(),
        tags=tags,
    )
    metrics.log(metrics_logger, point)
