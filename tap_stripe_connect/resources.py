"""The table of Stripe resources the tap syncs.

Everything that differs between streams is a field of `Resource`; everything that is
the same lives once, in the client (`api/`) or the sync modes (`sync/`). Adding a
resource is one entry in `RESOURCES` plus `python scripts/generate_schemas.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Sync modes (`Resource.sync`); docs/incremental.md's stream table explains each.
EVENTS = "events"  # a full listing, then each object changed since, from the Events API
CREATED = "created"  # objects never change: list those created since the bookmark
FULL_TABLE = "full_table"  # Stripe sends no usable events: list everything on every run
PARENT = "parent"  # listed with each parent record (a child stream)
#: `GET /v1/events` takes at most 20 `types[]`.
MAX_EVENT_TYPES = 20
#: Stripe keeps events for 30 days.
EVENT_RETENTION = 30 * 24 * 3600


def events_kept(since: int, now: int | None) -> bool:
    """Whether Stripe still keeps every event created since `since` (now: Stripe's time,
    None before any response: assumed kept)."""
    return now is None or since >= now - EVENT_RETENTION


@dataclass(frozen=True)
class NamedBy:
    """Events of another object whose embedded lines name objects of a resource."""

    #: The event types (of the other object) whose lines are read.
    types: tuple[str, ...]
    #: The child stream of those lines (its parent's `embedded_in` list, paged past 10).
    lines: str
    #: The field of a line that names an object of the resource.
    field: str


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
    #: A list without `created` windows (`created_filter=False`) whose endpoint still takes
    #: `created[gte]`: a full listing asks only for objects since `start_date` with it
    #: (`GET /v1/invoiceitems` filters on the items' `date`).
    start_filter: bool = False
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
    #: False when Stripe sends no event as one is created (`checkout.session`,
    #: `balance_transaction`): incremental syncs then list the objects created since the
    #: bookmark, in an account whose events show no change only once that listing is
    #: `quiet_account_interval_seconds` old (`Unit.quiet_since`).
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
    #: Objects changed without an event of their own, named by another object's events.
    named_by: NamedBy | None = None
    #: In a run with `account_ids`: one unit per connected account, whose record is that
    #: account itself (`GET /v1/account` as it), kept current by its own events.
    each_account: bool = False

    @property
    def feed_types(self) -> tuple[str, ...]:
        """The event types the stream reads: its own, and those naming its objects."""
        return self.event_types + (self.named_by.types if self.named_by else ())

    @property
    def retrieve_path(self) -> str:
        """`GET /v1/<resource>/<id>`: used to re-fetch objects from events."""
        return (self.retrieve or self.path) + "/{id}"


def _events(prefix: str, names: str) -> tuple[str, ...]:
    """`_events("coupon", "created deleted")` -> ("coupon.created", "coupon.deleted")."""
    return tuple(f"{prefix}.{name}" for name in names.split())


# One entry per stream; fields left out take the defaults above.
# fmt: off
RESOURCES: tuple[Resource, ...] = (
    Resource(
        "charges", "charge", "/v1/charges", permission="Charges",
        # Dispute and refund events carry those objects; they change the charge they name.
        event_types=_events("charge", "captured expired failed pending refunded succeeded "
                            "updated dispute.created dispute.updated dispute.closed "
                            "dispute.funds_reinstated dispute.funds_withdrawn refund.updated"),
    ),
    Resource(
        "customers", "customer", "/v1/customers", permission="Customers",
        event_types=_events("customer", "created updated deleted"),
        delete_events=("customer.deleted",),
    ),
    Resource(
        "invoices", "invoice", "/v1/invoices", permission="Invoices",
        # `invoice.upcoming` carries no id and is deliberately absent.
        event_types=_events("invoice", "created deleted finalization_failed finalized "
                            "marked_uncollectible overdue paid payment_action_required "
                            "payment_failed payment_succeeded sent updated voided will_be_due"),
        delete_events=("invoice.deleted",),
    ),
    Resource(
        "subscriptions", "subscription", "/v1/subscriptions", permission="Subscriptions",
        # Without status=all Stripe hides cancelled subscriptions from the list.
        list_params=(("status", "all"),),
        # `customer.subscription.deleted` is a cancellation: the object still exists.
        event_types=_events("customer.subscription", "created deleted paused "
                            "pending_update_applied pending_update_expired resumed "
                            "trial_will_end updated"),
    ),
    Resource(
        "invoice_line_items", "line_item", "/v1/invoices/{parent_id}/lines", sync=PARENT,
        parent="invoices", embedded_in="lines", created_filter=False, permission="Invoices",
    ),
    Resource(
        "subscription_items", "subscription_item", "/v1/subscription_items", sync=PARENT,
        parent="subscriptions", embedded_in="items", created_filter=False,
        list_params=(("subscription", "{parent_id}"),), permission="Subscriptions",
    ),
    Resource(
        "invoice_items", "invoiceitem", "/v1/invoiceitems", permission="Invoices",
        # Invoice items carry `date`, not `created`: listed without `created` windows, but
        # from `start_date` (the list's `created` filter applies to `date`). Stripe has
        # `invoiceitem.created`/`deleted` but no event
        # when an item is pulled into an invoice: the invoice's events list it in its lines
        # (`invoice_item`). A pending item's update has no event at all (docs/incremental.md,
        # Known limits).
        created_filter=False, start_filter=True,
        event_types=_events("invoiceitem", "created deleted"),
        delete_events=("invoiceitem.deleted",),
        named_by=NamedBy(_events("invoice", "created updated deleted"), "invoice_line_items",
                         "invoice_item"),
    ),
    Resource(
        "payment_intents", "payment_intent", "/v1/payment_intents", permission="PaymentIntents",
        event_types=_events("payment_intent", "amount_capturable_updated canceled created "
                            "partially_funded payment_failed processing requires_action succeeded"),
    ),
    Resource(
        "setup_intents", "setup_intent", "/v1/setup_intents", permission="SetupIntents",
        event_types=_events("setup_intent",
                            "canceled created requires_action setup_failed succeeded"),
    ),
    Resource(
        # `GET /v1/payment_methods` lists Treasury payment methods only; a customer's are
        # listed per customer, one request each, hence not selected by default.
        "payment_methods", "payment_method", "/v1/customers/{parent_id}/payment_methods",
        created_filter=False, list_per="customers", retrieve="/v1/payment_methods",
        selected_by_default=False, permission="PaymentMethods",
        # A detached payment method has left the customer: the stream holds attached ones.
        event_types=_events("payment_method", "attached automatically_updated detached updated"),
        delete_events=("payment_method.detached",),
    ),
    Resource(
        "refunds", "refund", "/v1/refunds", permission="Refunds",
        event_types=("charge.refund.updated", "refund.created", "refund.updated"),
    ),
    Resource(
        "disputes", "dispute", "/v1/disputes", permission="Disputes",
        event_types=_events("charge.dispute",
                            "closed created funds_reinstated funds_withdrawn updated"),
    ),
    # No events; a transaction is written once (docs/incremental.md, Known limits: `status`).
    Resource("balance_transactions", "balance_transaction", "/v1/balance_transactions",
             sync=CREATED, creation_event=False, permission="Balance"),
    Resource(
        "payouts", "payout", "/v1/payouts", permission="Payouts",
        event_types=_events("payout",
                            "canceled created failed paid reconciliation_completed updated"),
    ),
    Resource("transfers", "transfer", "/v1/transfers", permission="Transfers",
             event_types=_events("transfer", "created reversed updated")),
    # `application_fee.refund.updated` carries a fee refund, not the fee.
    Resource("application_fees", "application_fee", "/v1/application_fees",
             permission="Application fees",
             event_types=_events("application_fee", "created refunded")),
    Resource("products", "product", "/v1/products", permission="Products",
             event_types=_events("product", "created deleted updated"),
             delete_events=("product.deleted",)),
    Resource(
        "prices", "price", "/v1/prices", permission="Prices",
        event_types=_events("price", "created deleted updated"),
        delete_events=("price.deleted",),
        # Without `active`, Stripe lists active prices only (archived ones on request).
        list_variants=(("active", "true"), ("active", "false")),
        # Stripe returns `tiers` only when asked; events never carry it, so an event's
        # price is fetched again (see `sync.events.record_from_event`).
        expand=("tiers",),
    ),
    Resource("plans", "plan", "/v1/plans", permission="Prices", expand=("tiers",),
             event_types=_events("plan", "created deleted updated"),
             delete_events=("plan.deleted",)),
    Resource("coupons", "coupon", "/v1/coupons", permission="Coupons",
             event_types=_events("coupon", "created deleted updated"),
             delete_events=("coupon.deleted",)),
    Resource("promotion_codes", "promotion_code", "/v1/promotion_codes",
             permission="Promotion codes",
             event_types=_events("promotion_code", "created updated")),
    Resource("credit_notes", "credit_note", "/v1/credit_notes", permission="Credit notes",
             event_types=_events("credit_note", "created updated voided")),
    Resource(
        "credit_note_line_items", "credit_note_line_item", "/v1/credit_notes/{parent_id}/lines",
        sync=PARENT, parent="credit_notes", embedded_in="lines", created_filter=False,
        permission="Credit notes",
    ),
    Resource("tax_rates", "tax_rate", "/v1/tax_rates", permission="Tax rates",
             event_types=_events("tax_rate", "created updated")),
    Resource(
        "checkout_sessions", "checkout.session", "/v1/checkout/sessions",
        permission="Checkout Sessions", creation_event=False,
        event_types=_events("checkout.session",
                            "async_payment_failed async_payment_succeeded completed expired"),
    ),
    Resource(
        "subscription_schedules", "subscription_schedule", "/v1/subscription_schedules",
        permission="Subscriptions",
        event_types=_events("subscription_schedule",
                            "aborted canceled completed created expiring released updated"),
    ),
    # Events never change; Stripe drops them after 30 days, the warehouse keeps them.
    Resource("events", "event", "/v1/events", sync=CREATED, permission="Events"),
    # Connected accounts of a platform. With `account_ids`, each account is read as itself
    # and kept current by its own `account.updated` (Stripe lists a connected account's
    # events only with its `Stripe-Account`). Without, the credential's accounts are listed
    # whole: its own events carry no `account.updated` of them and no event tells when one
    # is created or disconnected.
    Resource("accounts", "account", "/v1/accounts", sync=FULL_TABLE, permission="Connect",
             each_account=True, event_types=("account.updated",)),
)
# fmt: on

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
        if (r.sync == EVENTS or r.each_account) != bool(r.event_types):
            problems.append("EVENTS and `each_account` streams, and only they, list event types")
        if len(r.feed_types) > MAX_EVENT_TYPES:
            problems.append(f"more than {MAX_EVENT_TYPES} event types (one `types[]` request)")
        if not set(r.delete_events) <= set(r.event_types):
            problems.append("delete events must be among the event types")
        if not r.creation_event and (r.sync not in (EVENTS, CREATED) or not r.created_filter):
            problems.append("objects created without an event are listed by `created`")
        if r.sync == CREATED and not r.created_filter:
            problems.append("CREATED needs a `created` filter")
        if r.list_variants and not r.created_filter:
            problems.append("`list_variants` are read by `created` windows")
        if r.named_by and (r.named_by.lines not in names or r.sync != EVENTS):
            problems.append("`named_by` names an existing child stream, for an EVENTS stream")
        if r.list_per and (r.list_per not in names or r.sync != EVENTS):
            problems.append("`list_per` names an existing stream, for an EVENTS stream")
        if problems:
            raise ValueError(f"resource {r.name!r}: " + "; ".join(problems))


check_table(RESOURCES)


# -- Stripe's own reports (the Reports API) -------------------------------------------------

#: What the credential needs for report streams, as the Dashboard names it.
REPORT_PERMISSION = "Report runs and report types"
FILES_PERMISSION = "Files"


@dataclass(frozen=True)
class Report:
    """A stream of one of Stripe's reports: runs over whole UTC days (whole months for the
    past), each run's CSV loaded as records (see `sync/reports.py`).

    Report calls are not counted against Stripe's read allocation.
    """

    #: Stream name.
    name: str
    #: The report type of one account (`connected_type`: of a platform's connected ones).
    report_type: str
    #: The columns asked for (`parameters[columns][]`; None: the report's fixed columns),
    #: each with the record field and its kind: "string", "money" (major units in the CSV,
    #: minor units in the record) or "time" (`YYYY-MM-DD HH:MM:SS` UTC).
    columns: tuple[tuple[str, str, str], ...]
    primary_key: tuple[str, ...] = ("account_id", "id")
    #: Whether the CSV lists its columns without being asked (`*.summary.1`).
    fixed_columns: bool = False
    #: A platform's connected accounts: one run for all of them, the account in column
    #: `connected_account` (False: one run per account, `parameters[connected_account]`).
    all_accounts_in_one_run: bool = True
    selected_by_default: bool = True

    @property
    def connected_type(self) -> str:
        """The report type over a platform's connected accounts (Stripe's prefix)."""
        return "connected_account_" + self.report_type


# fmt: off
#: A balance transaction's columns, first in both itemized reports (keyed by its `id`).
BALANCE_TRANSACTION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("balance_transaction_id", "id", "string"), ("created_utc", "created", "time"),
    ("available_on_utc", "available_on", "time"), ("currency", "currency", "string"),
    ("gross", "gross", "money"), ("fee", "fee", "money"), ("net", "net", "money"),
    ("reporting_category", "reporting_category", "string"),
)

REPORTS: tuple[Report, ...] = (
    Report(
        "report_balance_activity", "balance_change_from_activity.itemized.3",
        columns=(
            *BALANCE_TRANSACTION_COLUMNS,
            ("source_id", "source_id", "string"), ("description", "description", "string"),
            ("automatic_payout_id", "automatic_payout_id", "string"),
        ),
    ),
    Report(
        # Per currency and interval: starting_balance, activity_gross, activity_fee,
        # activity, payouts, ending_balance. `id`: `<interval start>..<interval
        # end>:<currency>:<category>` (UTC days).
        "report_balance_summary", "balance.summary.1",
        columns=(
            ("category", "category", "string"), ("description", "description", "string"),
            ("net_amount", "net_amount", "money"), ("currency", "currency", "string"),
        ),
        fixed_columns=True, all_accounts_in_one_run=False,
    ),
    Report(
        # The balance transactions each automatic payout settled, by the payout's arrival
        # (`automatic_payout_effective_at`) in the interval: the activity report's
        # `automatic_payout_id` is empty for a transaction reported before its payout.
        "report_payout_reconciliation", "payout_reconciliation.itemized.5",
        columns=(
            *BALANCE_TRANSACTION_COLUMNS,
            ("automatic_payout_id", "automatic_payout_id", "string"),
            ("automatic_payout_effective_at_utc", "automatic_payout_effective_at", "time"),
        ),
    ),
)
# fmt: on

REPORTS_BY_NAME: dict[str, Report] = {r.name: r for r in REPORTS}
