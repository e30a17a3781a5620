"""The table of Stripe resources the tap syncs.

Everything that differs between streams is a field of `Resource`; everything that is
the same lives once in `client.py`. Adding a resource is one entry in `RESOURCES` plus
`python scripts/generate_schemas.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resource:
    """One Stripe resource, as the tap reads it."""

    #: Stream name (and schema file name).
    name: str
    #: Stripe's object name, also the OpenAPI component the schema is generated from.
    object: str
    #: List endpoint. `{parent_id}` is filled from the parent record for child lists.
    path: str
    #: Whether the list endpoint accepts `created[gte]`/`created[lt]`.
    created_filter: bool = True
    #: Extra query parameters every list request needs (e.g. `status=all`).
    list_params: tuple[tuple[str, str], ...] = ()
    #: Events whose `data.object` is this resource (incremental sync reads these).
    event_types: tuple[str, ...] = ()
    #: Event types that mean the object no longer exists.
    delete_events: tuple[str, ...] = ()
    #: Sub-objects requested with `expand[]`, typed as objects in the schema.
    expand: tuple[str, ...] = ()
    #: For child lists: the parent stream, and the parent's embedded list attribute
    #: that holds the first (at most 10) children.
    parent: str | None = None
    embedded_in: str | None = None
    #: `account_id` is part of every key: ids such as plan `gold` repeat across accounts.
    primary_key: tuple[str, ...] = ("account_id", "id")
    #: OAuth scope/permission name Stripe uses for restricted keys.
    permission: str = field(default="")

    @property
    def retrieve_path(self) -> str:
        """`GET /v1/<resource>/<id>`: used to re-fetch objects from events."""
        return self.path + "/{id}"


def _events(prefix: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{n}" for n in names)


RESOURCES: tuple[Resource, ...] = (
    Resource(
        name="charges",
        object="charge",
        path="/v1/charges",
        event_types=_events(
            "charge",
            "captured",
            "expired",
            "failed",
            "pending",
            "refunded",
            "succeeded",
            "updated",
        ),
        permission="Charges",
    ),
    Resource(
        name="customers",
        object="customer",
        path="/v1/customers",
        event_types=_events("customer", "created", "updated", "deleted"),
        delete_events=("customer.deleted",),
        permission="Customers",
    ),
    Resource(
        name="invoices",
        object="invoice",
        path="/v1/invoices",
        # `invoice.upcoming` carries no id and is deliberately absent.
        event_types=_events(
            "invoice",
            "created",
            "deleted",
            "finalization_failed",
            "finalized",
            "marked_uncollectible",
            "overdue",
            "paid",
            "payment_action_required",
            "payment_failed",
            "payment_succeeded",
            "sent",
            "updated",
            "voided",
            "will_be_due",
        ),
        delete_events=("invoice.deleted",),
        permission="Invoices",
    ),
    Resource(
        name="subscriptions",
        object="subscription",
        path="/v1/subscriptions",
        # Without status=all Stripe hides cancelled subscriptions from the list.
        list_params=(("status", "all"),),
        # `customer.subscription.deleted` is a cancellation: the object still exists.
        event_types=_events(
            "customer.subscription",
            "created",
            "deleted",
            "paused",
            "pending_update_applied",
            "pending_update_expired",
            "resumed",
            "trial_will_end",
            "updated",
        ),
        permission="Subscriptions",
    ),
    Resource(
        name="invoice_line_items",
        object="line_item",
        path="/v1/invoices/{parent_id}/lines",
        created_filter=False,
        parent="invoices",
        embedded_in="lines",
        permission="Invoices",
    ),
    Resource(
        name="subscription_items",
        object="subscription_item",
        path="/v1/subscription_items",
        created_filter=False,
        list_params=(("subscription", "{parent_id}"),),
        parent="subscriptions",
        embedded_in="items",
        permission="Subscriptions",
    ),
)

RESOURCES_BY_NAME: dict[str, Resource] = {r.name: r for r in RESOURCES}
