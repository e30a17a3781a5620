"""What one read asks Stripe for: a small, typed description the client carries out.

A `Read` says which kind of request it is (a list, the events, one object, the
account or a v2 list), its path and parameters, the connected account it is made for
(sent as `Stripe-Account` or `Stripe-Context`) and the stream it serves (named in errors,
counted in progress). The functions below build the reads of a resource from the
resource table; nothing else decides what a request looks like.
"""

from __future__ import annotations

import enum
import typing as t
from dataclasses import dataclass, replace

from tap_stripe_connect.resources import FILES_PERMISSION, REPORT_PERMISSION

if t.TYPE_CHECKING:
    from tap_stripe_connect.resources import Resource

PAGE_SIZE = 100  # Stripe's maximum `limit`.

Params = tuple[tuple[str, t.Any], ...]

# How Stripe's read allocation counts a request (`Read.allotment`). Stripe allots each
# account (and a platform, for its connected accounts) 500 reads a month per transaction
# over a rolling 30 days, 10,000 at least; writes have no allocation, and the Reporting
# API (report runs, their files) is left out.
READ, WRITE, REPORTING = "read", "write", "reporting"


class Kind(enum.Enum):
    LIST = "list"  # a list object, paged with `starting_after`
    EVENTS = "events"  # `GET /v1/events`: a list of events
    RETRIEVE = "retrieve"  # one object
    ACCOUNT = "account"  # `GET /v1/account`: the credential's own account
    V2_LIST = "v2_list"  # a v2 list (`/v2/...`), paged by following `next_page_url`
    CREATE = "create"  # a POST of a form (`POST /v1/reporting/report_runs`)
    FILE = "file"  # a file's contents, from the absolute URL Stripe gave (a report's CSV)


@dataclass(frozen=True)
class Read:
    kind: Kind
    path: str
    params: Params = ()
    #: The connected account read (`Stripe-Account`, or a `Stripe-Context` path relative
    #: to setting `account_id`); None: the credential's own.
    account: str | None = None
    #: The stream the read serves, named in errors and counted in progress; None: the
    #: tap's own reads (the account).
    stream: str | None = None
    #: Stripe's object name and the permission a restricted key needs (for errors).
    object: str = "object"
    permission: str = ""
    #: Every listed object must carry an integer `created` (a `created`-windowed list).
    created: bool = False
    limit: int = PAGE_SIZE
    after: str | None = None
    #: Made by the credential's account for itself, without `Stripe-Account` even when
    #: setting 'account_id' is set (a platform's report runs cover its connected accounts).
    as_itself: bool = False

    @property
    def method(self) -> str:
        return "POST" if self.kind is Kind.CREATE else "GET"

    @property
    def allotment(self) -> str:
        """`READ` (counted in Stripe's read allocation), `WRITE` (a POST: not) or
        `REPORTING` (the Reporting API and a report's file: left out of it)."""
        if self.kind is Kind.CREATE:
            return WRITE
        if self.kind is Kind.FILE or self.path.startswith("/v1/reporting/"):
            return REPORTING
        return READ

    @property
    def listing(self) -> bool:
        return self.kind in (Kind.LIST, Kind.EVENTS)

    @property
    def v2(self) -> bool:
        return self.kind is Kind.V2_LIST

    @property
    def name(self) -> str:
        """What errors call the read: its stream, or the object read."""
        return self.stream or self.object

    def query(self, after: str | None = None) -> list[tuple[str, t.Any]]:
        """The query string's pairs (a list value repeats its key, as `expand[]`)."""
        pairs: list[tuple[str, t.Any]] = []
        if self.v2:
            pairs.append(("limit", self.limit))
        if self.listing:
            pairs.append(("limit", self.limit))
            if after or self.after:
                pairs.append(("starting_after", after or self.after))
        for key, value in self.params:
            values = value if isinstance(value, (list, tuple)) else [value]
            pairs += [(key, v) for v in values if v is not None]
        return pairs

    def first_only(self) -> Read:
        """The same list, one object: enough to learn whether it may be read."""
        return replace(self, limit=1)


def _fill(text: str, parent_id: str | None) -> str:
    return text.replace("{parent_id}", str(parent_id))


def _about(resource: Resource, account: str | None, stream: str | None) -> dict[str, t.Any]:
    return {
        "account": account,
        "stream": stream or resource.name,
        "object": resource.object,
        "permission": resource.permission,
    }


def list_read(
    resource: Resource,
    *,
    account: str | None = None,
    created: tuple[int | None, int | None] = (None, None),
    variant: tuple[str, str] | None = None,
    parent_id: str | None = None,
    after: str | None = None,
    stream: str | None = None,
) -> Read:
    """A list of `resource`, within `created` = [gte, lt) when the list filters on it."""
    params: list[tuple[str, t.Any]] = []
    if resource.expand:
        params.append(("expand[]", [f"data.{field}" for field in resource.expand]))
    params += [(key, _fill(value, parent_id)) for key, value in resource.list_params]
    if variant:
        params.append(variant)
    if resource.created_filter:
        gte, lt = created
        params += [("created[gte]", gte), ("created[lt]", lt)]
    elif resource.start_filter:  # no windows, but from `start_date` (created[0])
        params.append(("created[gte]", created[0]))
    return Read(
        Kind.LIST,
        _fill(resource.path, parent_id),
        tuple((k, v) for k, v in params if v is not None),
        after=after,
        # Lists of one parent's objects (`{parent_id}`) are not windowed by `created`.
        created=resource.created_filter and "{parent_id}" not in resource.path,
        **_about(resource, account, stream),
    )


def events_read(resource: Resource, since: int, *, account: str | None = None) -> Read:
    """The events that change `resource`, created at or after `since`, newest first."""
    params = (("types[]", list(resource.feed_types)), ("created[gte]", since))
    return Read(Kind.EVENTS, "/v1/events", params, **_about(resource, account, None))


def feed_read(resource: Resource, since: int, *, account: str | None = None) -> Read:
    """Every event of an account created at or after `since`, newest first (no `types[]`):
    one read feeds all of the account's events-based streams. It is made for (and named
    after) the stream that needed it first."""
    params = (("created[gte]", since),)
    return Read(Kind.EVENTS, "/v1/events", params, **_about(resource, account, None))


def retrieve_read(
    resource: Resource, object_id: str, *, account: str | None = None, stream: str | None = None
) -> Read:
    """`GET /v1/<resource>/<id>`, expanded as the resource's lists are.

    A connected account read as itself (`Stripe-Account: acct_x`) is `GET /v1/account`:
    its own account list does not hold it.
    """
    params = (("expand[]", list(resource.expand)),) if resource.expand else ()
    path = resource.retrieve_path.replace("{id}", object_id)
    if resource.object == "account" and account is not None and object_id == account:
        path = ACCOUNT.path
    return Read(Kind.RETRIEVE, path, params, **_about(resource, account, stream))


def v2_accounts_read() -> Read:
    """`GET /v2/core/accounts`: the accounts of a platform that uses Accounts v2 (closed
    ones left out, as Stripe does by default)."""
    return Read(Kind.V2_LIST, "/v2/core/accounts", object="v2.core.account",
                permission="Accounts v2")


def _report_about(stream: str, platform: bool) -> dict[str, t.Any]:
    """A report read is the account's own (`Stripe-Account` when setting 'account_id' names
    it), or a platform's for its connected accounts (never `Stripe-Account`)."""
    return {
        "stream": stream,
        "object": "reporting.report_run",
        "permission": f"{REPORT_PERMISSION}' (write) and the '{FILES_PERMISSION}",
        "as_itself": platform,
    }


def report_type_read(report_type: str, *, stream: str, platform: bool = False) -> Read:
    """`GET /v1/reporting/report_types/<type>`: the data available, `data_available_*`."""
    return Read(Kind.RETRIEVE, f"/v1/reporting/report_types/{report_type}",
                **_report_about(stream, platform))


def report_run_create(report_type: str, parameters: Params, *, stream: str,
                      platform: bool = False) -> Read:
    """`POST /v1/reporting/report_runs`: `parameters` as (name, value) pairs, a list value
    repeating `parameters[<name>][]`."""
    form: list[tuple[str, t.Any]] = [("report_type", report_type)]
    for name, value in parameters:
        key = f"parameters[{name}]" + ("[]" if isinstance(value, (list, tuple)) else "")
        form.append((key, value))
    return Read(Kind.CREATE, "/v1/reporting/report_runs", tuple(form),
                **_report_about(stream, platform))


def report_run_read(run_id: str, *, stream: str, platform: bool = False) -> Read:
    """`GET /v1/reporting/report_runs/<id>`: the run's status and, once done, its file."""
    return Read(Kind.RETRIEVE, f"/v1/reporting/report_runs/{run_id}",
                **_report_about(stream, platform))


def file_read(url: str, *, stream: str, platform: bool = False) -> Read:
    """A file's contents at the URL Stripe gave (`https://files.stripe.com/...`)."""
    return Read(Kind.FILE, url, **_report_about(stream, platform))


def files_read(*, stream: str, platform: bool = False) -> Read:
    """`GET /v1/files?limit=1`: whether the credential may read files."""
    return Read(Kind.LIST, "/v1/files", limit=1, **_report_about(stream, platform))


#: The credential's own account: Stripe's clock, its id and its mode.
ACCOUNT = Read(Kind.ACCOUNT, "/v1/account", object="account", permission="Account")
