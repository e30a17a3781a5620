"""The PARENT mode: lists embedded in their parent (`invoice.lines`, `subscription.items`).

Stripe embeds at most 10 items; the rest are paged from the child's own endpoint,
starting after the last embedded one. Those are fetched in the background as soon as the
parent is read, so that they are ready when the SDK syncs the child after its parent.
"""

from __future__ import annotations

import threading
import typing as t

from tap_stripe_connect.api import list_read

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from concurrent.futures import Future

    from tap_stripe_connect.output.records import Records
    from tap_stripe_connect.resources import Resource
    from tap_stripe_connect.sync.run import Run


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

    def remember(self, parent: dict) -> None:
        """Keep the parent record's embedded page until the child is synced for it."""
        with self._lock:
            self._embedded[parent["id"]] = parent.get(self.resource.embedded_in or "") or {}

    def prefetch(self, parent: dict, account: str | None) -> None:
        """Fetch, in the background, the items past the parent's embedded page."""
        embedded = parent.get(self.resource.embedded_in or "") or {}
        if embedded.get("has_more") and parent.get("_sdc_deleted_at") is None:
            future = self.run.background.submit(
                lambda: list(self.run.client.list(self.rest_read(parent["id"], embedded, account)))
            )
            with self._lock:
                self._rest[parent["id"]] = future

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
            remaining = self.run.client.list(self.rest_read(parent_id, embedded, account))
        for item in remaining:
            yield self.shaping.shape(item, None, owner, parent_id=parent_id)
