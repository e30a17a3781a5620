"""The PARENT mode: lists embedded in their parent (`invoice.lines`, `subscription.items`).

Stripe embeds at most 10 items; the rest are paged from the child's own endpoint,
starting after the last embedded one. Those are fetched in the background as soon as the
parent is read, so that they are ready when the SDK syncs the child after its parent.
"""

from __future__ import annotations

import threading
import typing as t

from tap_stripe_connect.api import list_read
from tap_stripe_connect.errors import StripeNotFoundError

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Iterable, Iterator
    from concurrent.futures import Future

    from tap_stripe_connect.api import StripeClient
    from tap_stripe_connect.api.reads import Read
    from tap_stripe_connect.output.records import Records
    from tap_stripe_connect.resources import Resource
    from tap_stripe_connect.sync.run import Run


def child_list(
    client: StripeClient,
    read: Read,
    parent_id: str,
    logger: logging.Logger,
    consequence: str,
    *,
    stream: str | None = None,
) -> list[dict] | None:
    """A parent's own list (an invoice's lines, ...); None when the parent is gone.

    A 404 means the same wherever a child list is read: Stripe has no such object any
    more (`resource_missing`: deleted since it was listed), said in a warning naming the
    `stream` that reads it and what it does instead (`consequence`), or Stripe does not
    know the URL, which no listing may take for "no data": the error goes on and the
    stream fails.
    """
    try:
        return list(client.list(read))
    except StripeNotFoundError as exc:
        logger.warning(
            "Stream '%s': skipped the list of %s, gone since it was listed (%s): %s",
            stream or read.name, parent_id, consequence, exc,
        )
        return None


class EmbeddedLists:
    """Per parent id: the parent's embedded first page, and the rest being fetched.

    Kept out of the SDK's context, which the SDK copies into logs and metrics.
    """

    def __init__(self, resource: Resource, run: Run, records: Records) -> None:
        self.resource = resource
        self.run = run
        self.shaping = records
        self._lock = threading.Lock()
        self._embedded: dict[str, dict] = {}
        self._rest: dict[str, Future] = {}
        #: Parents whose list was gone when read: the listing activates no table version.
        self.gone: list[str] = []

    def remember(self, parent: dict) -> None:
        """Keep the parent record's embedded page until the child is synced for it."""
        with self._lock:
            self._embedded[parent["id"]] = parent.get(self.resource.embedded_in or "") or {}

    def prefetch(self, parent: dict, account: str | None) -> None:
        """Fetch, in the background, the items past the parent's embedded page."""
        embedded = parent.get(self.resource.embedded_in or "") or {}
        if embedded.get("has_more") and parent.get("_sdc_deleted_at") is None:
            future = self.run.background.submit(self.rest, parent["id"], embedded, account)
            with self._lock:
                self._rest[parent["id"]] = future

    def rest(self, parent_id: str, embedded: dict, account: str | None) -> list[dict]:
        """The items past a parent's embedded page; none if the parent is gone since."""
        items = child_list(
            self.run.client, self.rest_read(parent_id, embedded, account), parent_id,
            self.shaping.logger, "no ACTIVATE_VERSION this run; its first 10 items are written",
        )
        if items is None:
            with self._lock:
                self.gone.append(parent_id)
        return items or []

    def rest_read(self, parent_id: str, embedded: dict, account: str | None) -> t.Any:
        items = embedded.get("data") or []
        after = items[-1]["id"] if items else None
        return list_read(self.resource, account=account, parent_id=parent_id, after=after)

    def records(
        self, parent_id: str, account: str | None, deleted_at: str | None
    ) -> Iterator[dict]:
        """The child records of one parent: embedded ones first, then the rest."""
        with self._lock:
            embedded = self._embedded.pop(parent_id, None) or {}
            rest = self._rest.pop(parent_id, None)
        owner = self.run.owner_of(account)
        for item in embedded.get("data") or []:
            record = self.shaping.shape(item, None, owner, parent_id=parent_id)
            if deleted_at:
                # Stripe sends no event for the lines of a deleted draft invoice.
                record["_sdc_deleted_at"] = deleted_at
            yield record
        if deleted_at:
            return
        if rest is not None:
            remaining: Iterable[dict] = rest.result()
        elif embedded and not embedded.get("has_more"):
            return
        else:
            remaining = self.rest(parent_id, embedded, account)
        for item in remaining:
            yield self.shaping.shape(item, None, owner, parent_id=parent_id)
