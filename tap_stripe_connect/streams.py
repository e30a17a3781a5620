"""Streams made from the resource table: one class per `Resource`, no per-stream code."""

from __future__ import annotations

import typing as t
from concurrent.futures import Future

from tap_stripe_connect.client import StripeStream
from tap_stripe_connect.resources import FULL_TABLE, RESOURCES, RESOURCES_BY_NAME, Resource
from tap_stripe_connect.versions import DEFAULT_API_VERSION, load_schema

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from singer_sdk.helpers.types import Context


class StripeChildStream(StripeStream):
    """A list embedded in its parent (`invoice.lines`, `subscription.items`).

    Stripe embeds at most 10 items; the rest are paged from the child's own endpoint,
    starting after the last embedded one.
    """

    # Children are re-read with their parent; their state never grows per parent.
    replication_key = None  # type: ignore[assignment]
    state_partitioning_keys: t.ClassVar[list[str]] = []

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # Per parent id: the parent's embedded first page, and the rest being fetched.
        # Kept out of the context, which the SDK copies into logs and metrics.
        self.embedded: dict[str, dict] = {}
        self.rest: dict[str, Future] = {}
        self.schema_written = False

    def _write_schema_message(self) -> None:
        # The SDK syncs a child once per parent and would repeat its SCHEMA each time;
        # once per run is what targets need.
        if not self.schema_written:
            super()._write_schema_message()
            self.schema_written = True

    def shape(self, record: dict, updated: int | None, context: Context | None) -> dict:
        record = super().shape(record, updated, context)
        # Every child names its parent (`line_item.invoice`); Stripe's credit note lines
        # do not, so the tap adds the field the schema has for it.
        parent = RESOURCES_BY_NAME[t.cast("str", self.resource.parent)].object
        if record.get(parent) is None:
            record[parent] = (context or {}).get("parent_id")
        return record

    def prefetch(self, parent: dict, account_id: str | None = None) -> None:
        """Fetch, in the background, the items past the parent's embedded page."""
        embedded = parent.get(self.resource.embedded_in or "") or {}
        if embedded.get("has_more") and parent.get("_sdc_deleted_at") is None:
            self.rest[parent["id"]] = self.stripe_tap.background.submit(
                lambda: list(
                    self.request_records(
                        self.paging_context(parent["id"], embedded, account_id)
                    )
                )
            )

    @staticmethod
    def paging_context(parent_id: str, embedded: dict, account_id: str | None) -> dict:
        items = embedded.get("data") or []
        context: dict = {"parent_id": parent_id}
        if account_id:
            context["account_id"] = account_id
        if items:
            context["after"] = items[-1]["id"]
        return context

    def get_records(self, context: Context | None) -> Iterable[dict]:
        context = context or {}
        parent_id = context["parent_id"]
        embedded = self.embedded.pop(parent_id, None) or {}
        rest = self.rest.pop(parent_id, None)
        deleted_at = context.get("parent_deleted_at")
        for item in embedded.get("data") or []:
            # A copy: the item is also in the parent's record, written after its children,
            # which must not gain the child's own fields (`updated`, `account_id`, ...).
            record = self.shape(dict(item), None, context)
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
            remaining = self.request_records(
                self.paging_context(parent_id, embedded, context.get("account_id"))
            )
        for item in remaining:
            yield self.shape(item, None, context)


def _get_child_context(self: StripeStream, record: dict, context: Context | None) -> dict:
    """What a child needs from its parent: the id and the embedded first page."""
    child_context: dict = {"parent_id": record["id"]}
    if record.get("_sdc_deleted_at"):
        child_context["parent_deleted_at"] = record["_sdc_deleted_at"]
    for child in self.child_streams:
        if isinstance(child, StripeChildStream) and child.selected and child.resource.embedded_in:
            child.embedded[record["id"]] = record.get(child.resource.embedded_in) or {}
    if context and context.get("account_id"):
        child_context["account_id"] = context["account_id"]
    return child_context


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
        "path": resource.path,
        "primary_keys": list(resource.primary_key),
        "schema": load_schema(resource.name, api_version),
        "get_child_context": _get_child_context,
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
    return list(classes.values())


class ProbeStream(StripeStream):
    """A request outside the catalog: `GET /v1/account`, `GET /v1/accounts`.

    It goes through the same client (auth, limiter, retries, errors) as every stream.
    """

    schema: t.ClassVar[dict] = {"type": "object", "properties": {"id": {"type": "string"}}}
    replication_key = None  # type: ignore[assignment]

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        if self.path == "/v1/account":
            return {}
        return super().get_url_params(context, next_page_token)


def probe(tap: t.Any, path: str) -> ProbeStream:
    """A one-off reader of `path` (the account, or a platform's connected accounts)."""
    resource = Resource(
        name=path.rsplit("/", 1)[-1],
        object="account",
        path=path,
        created_filter=False,
        permission="Connect" if path.endswith("accounts") else "Account",
    )
    cls = type("ProbeStream", (ProbeStream,), {"resource": resource, "name": resource.name})
    return t.cast("ProbeStream", cls(tap=tap, path=path))
