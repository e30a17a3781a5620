"""The table of Stripe resources the tap syncs.

Everything that differs between streams is a field of `Resource`; everything that is
the same lives once in `client.py`. Adding a resource is one entry in `RESOURCES` plus
`python scripts/generate_schemas.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Sync modes (`Resource.sync`); the README's stream table explains each.
EVENTS = "events"  # a full listing, then each object changed since, from the Events API
CREATED = "created"  # objects never change: list those created since the bookmark
FULL_TABLE = "full_table"  # Stripe sends no usable events: list everything on every run
PARENT = "parent"  # listed with each parent record (a child stream)
#: `GET /v1/events` takes at most 20 `types[]`.
MAX_EVENT_TYPES = 20


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
    #: How the stream is kept current: EVENTS, CREATED, FULL_TABLE or PARENT (children).
    sync: str = EVENTS
    #: False when Stripe sends no event as one is created (`checkout.session`): incremental
    #: syncs then also list the objects created since the bookmark.
    creation_event: bool = True
    #: A list that exists only per object of another stream
    #: (`/v1/customers/{parent_id}/payment_methods`): that stream. A full listing walks its
    #: ids; changes come from this resource's own events, as for any EVENTS stream.
    list_per: str | None = None
    #: The path of one object (`GET <retrieve>/<id>`) when it is not the list path.
    retrieve: str | None = None
    #: Whether the stream is selected when no catalog says otherwise.
    selected_by_default: bool = True
    #: Query parameters of which a full listing reads each value in turn, for lists that
    #: leave objects out unless asked (`GET /v1/prices` lists active prices only).
    list_variants: tuple[tuple[str, str], ...] = ()

    @property
    def retrieve_path(self) -> str:
        """`GET /v1/<resource>/<id>`: used to re-fetch objects from events."""
        return (self.retrieve or self.path) + "/{id}"


def _events(prefix: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{n}" for n in names)


RESOURCES: tuple[Resource, ...] = (
    Resource(
        name="charges",
        object="charge",
        path="/v1/charges",
        # Dispute and refund events carry those objects; they change the charge they name.
        event_types=_events(
            "charge",
            "captured",
            "expired",
            "failed",
            "pending",
            "refunded",
            "succeeded",
            "updated",
            "dispute.created",
            "dispute.updated",
            "dispute.closed",
            "dispute.funds_reinstated",
            "dispute.funds_withdrawn",
            "refund.updated",
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
        sync=PARENT,
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
        sync=PARENT,
    ),
    Resource(
        name="invoice_items",
        object="invoiceitem",
        path="/v1/invoiceitems",
        # Invoice items carry `date`, not `created`: listed whole, without `created` windows
        # (and without `start_date`).
        created_filter=False,
        # Stripe has `invoiceitem.created`/`deleted` but no event when an item is updated or
        # pulled into an invoice (its `invoice` changes): only a full listing stays exact.
        sync=FULL_TABLE,
        permission="Invoices",
    ),
    Resource(
        name="payment_intents",
        object="payment_intent",
        path="/v1/payment_intents",
        event_types=_events(
            "payment_intent",
            "amount_capturable_updated",
            "canceled",
            "created",
            "partially_funded",
            "payment_failed",
            "processing",
            "requires_action",
            "succeeded",
        ),
        permission="PaymentIntents",
    ),
    Resource(
        name="setup_intents",
        object="setup_intent",
        path="/v1/setup_intents",
        event_types=_events(
            "setup_intent", "canceled", "created", "requires_action", "setup_failed", "succeeded"
        ),
        permission="SetupIntents",
    ),
    Resource(
        name="payment_methods",
        object="payment_method",
        # `GET /v1/payment_methods` lists Treasury payment methods only; a customer's are
        # listed per customer, one request each, hence not selected by default.
        path="/v1/customers/{parent_id}/payment_methods",
        created_filter=False,
        list_per="customers",
        retrieve="/v1/payment_methods",
        # A detached payment method has left the customer: the stream holds attached ones.
        event_types=_events(
            "payment_method", "attached", "automatically_updated", "detached", "updated"
        ),
        delete_events=("payment_method.detached",),
        permission="PaymentMethods",
        selected_by_default=False,
    ),
    Resource(
        name="refunds",
        object="refund",
        path="/v1/refunds",
        event_types=("charge.refund.updated", "refund.created", "refund.updated"),
        permission="Refunds",
    ),
    Resource(
        name="disputes",
        object="dispute",
        path="/v1/disputes",
        event_types=_events(
            "charge.dispute", "closed", "created", "funds_reinstated", "funds_withdrawn", "updated"
        ),
        permission="Disputes",
    ),
    Resource(
        name="balance_transactions",
        object="balance_transaction",
        path="/v1/balance_transactions",
        # No events; a transaction is written once (see README for `status`).
        sync=CREATED,
        permission="Balance",
    ),
    Resource(
        name="payouts",
        object="payout",
        path="/v1/payouts",
        event_types=_events(
            "payout", "canceled", "created", "failed", "paid", "reconciliation_completed", "updated"
        ),
        permission="Payouts",
    ),
    Resource(
        name="transfers",
        object="transfer",
        path="/v1/transfers",
        event_types=_events("transfer", "created", "reversed", "updated"),
        permission="Transfers",
    ),
    Resource(
        name="application_fees",
        object="application_fee",
        path="/v1/application_fees",
        # `application_fee.refund.updated` carries a fee refund, not the fee.
        event_types=_events("application_fee", "created", "refunded"),
        permission="Application fees",
    ),
    Resource(
        name="products",
        object="product",
        path="/v1/products",
        event_types=_events("product", "created", "deleted", "updated"),
        delete_events=("product.deleted",),
        permission="Products",
    ),
    Resource(
        name="prices",
        object="price",
        path="/v1/prices",
        event_types=_events("price", "created", "deleted", "updated"),
        delete_events=("price.deleted",),
        # Without `active`, Stripe lists active prices only (archived ones on request).
        list_variants=(("active", "true"), ("active", "false")),
        # Stripe returns `tiers` only when asked; events never carry it, so an event's
        # price is fetched again (see `StripeStream.record_from_event`).
        expand=("tiers",),
        permission="Prices",
    ),
    Resource(
        name="plans",
        object="plan",
        path="/v1/plans",
        event_types=_events("plan", "created", "deleted", "updated"),
        delete_events=("plan.deleted",),
        expand=("tiers",),
        permission="Prices",
    ),
    Resource(
        name="coupons",
        object="coupon",
        path="/v1/coupons",
        event_types=_events("coupon", "created", "deleted", "updated"),
        delete_events=("coupon.deleted",),
        permission="Coupons",
    ),
    Resource(
        name="promotion_codes",
        object="promotion_code",
        path="/v1/promotion_codes",
        event_types=_events("promotion_code", "created", "updated"),
        permission="Promotion codes",
    ),
    Resource(
        name="credit_notes",
        object="credit_note",
        path="/v1/credit_notes",
        event_types=_events("credit_note", "created", "updated", "voided"),
        permission="Credit notes",
    ),
    Resource(
        name="credit_note_line_items",
        object="credit_note_line_item",
        path="/v1/credit_notes/{parent_id}/lines",
        created_filter=False,
        parent="credit_notes",
        embedded_in="lines",
        permission="Credit notes",
        sync=PARENT,
    ),
    Resource(
        name="tax_rates",
        object="tax_rate",
        path="/v1/tax_rates",
        event_types=_events("tax_rate", "created", "updated"),
        permission="Tax rates",
    ),
    Resource(
        name="checkout_sessions",
        object="checkout.session",
        path="/v1/checkout/sessions",
        event_types=_events(
            "checkout.session",
            "async_payment_failed",
            "async_payment_succeeded",
            "completed",
            "expired",
        ),
        creation_event=False,
        permission="Checkout Sessions",
    ),
    Resource(
        name="subscription_schedules",
        object="subscription_schedule",
        path="/v1/subscription_schedules",
        event_types=_events(
            "subscription_schedule",
            "aborted",
            "canceled",
            "completed",
            "created",
            "expiring",
            "released",
            "updated",
        ),
        permission="Subscriptions",
    ),
    Resource(
        name="events",
        object="event",
        path="/v1/events",
        # Events never change; Stripe drops them after 30 days, the warehouse keeps them.
        sync=CREATED,
        permission="Events",
    ),
    Resource(
        name="accounts",
        object="account",
        path="/v1/accounts",
        # Connected accounts of a platform. Only `account.updated` exists: no event when one
        # is created, rejected or disconnected, so a full listing each run stays exact.
        sync=FULL_TABLE,
        permission="Connect",
    ),
)

RESOURCES_BY_NAME: dict[str, Resource] = {r.name: r for r in RESOURCES}


def check_table(resources: tuple[Resource, ...]) -> None:
    """The table's rules, checked on import: a broken entry fails at once, by name."""
    names = {r.name for r in resources}
    for r in resources:
        problems = []
        if r.sync not in (EVENTS, CREATED, FULL_TABLE, PARENT):
            problems.append(f"unknown sync {r.sync!r}")
        if (r.sync == PARENT) != (r.parent is not None) or (r.parent and r.parent not in names):
            problems.append("children (sync PARENT) and only they name an existing parent")
        if (r.sync == EVENTS) != bool(r.event_types):
            problems.append("EVENTS streams, and only they, list event types")
        if len(r.event_types) > MAX_EVENT_TYPES:
            problems.append(f"more than {MAX_EVENT_TYPES} event types (one `types[]` request)")
        if not set(r.delete_events) <= set(r.event_types):
            problems.append("delete events must be among the event types")
        if r.sync == CREATED and not r.created_filter:
            problems.append("CREATED needs a `created` filter")
        if r.list_variants and not r.created_filter:
            problems.append("`list_variants` are read by `created` windows")
        if r.list_per and (r.list_per not in names or r.sync != EVENTS):
            problems.append("`list_per` names an existing stream, for an EVENTS stream")
        if problems:
            raise ValueError(f"resource {r.name!r}: " + "; ".join(problems))


check_table(RESOURCES)
