"""Stripe's Reports API over the emulator's own balance transactions.

`Reports` serves, for one account (`Emulator`) or for a platform's connected accounts
(`ConnectPlatform`, without `Stripe-Account`):

- `GET /v1/reporting/report_types/{type}`: `data_available_start` (the UTC day of the
  oldest balance transaction) and `data_available_end` (the start of the emulated clock's
  UTC day, less `lag_days`: Stripe's reports trail real time);
- `POST /v1/reporting/report_runs` (form-encoded `report_type`, `parameters[...]`) and
  `GET /v1/reporting/report_runs/{id}`: a run is `pending` for `pending_polls` reads, then
  `succeeded` with a `result` file (or `failed`, with `fail_runs`; or pending for ever,
  with `pending_polls = None`);
- `GET /v1/files/{id}/contents`: the CSV, computed when the run was created; `GET /v1/files`
  (a list, for the permission check).

Report types (the balance report, by the balance transaction's `created`; the activity
sections leave out automatic payouts, which the summary shows as `payouts`):
- `balance_change_from_activity.itemized.3` / `connected_account_balance_change_from_activity
  .itemized.3` (one run for every connected account; column `connected_account`);
- `balance.summary.1` / `connected_account_balance.summary.1` (`parameters[connected_account]`):
  rows `category, description, net_amount, currency` for `starting_balance`,
  `activity_gross`, `activity_fee`, `activity`, `payouts` and `ending_balance`;
- `payout_reconciliation.itemized.5` / `connected_account_payout_reconciliation.itemized.5`
  (one run for every connected account): the balance transactions each automatic payout
  settled (the store's ground truth, `settled()`), listed by the payout's arrival date
  (`automatic_payout_effective_at`) within the interval.
Money is written in major units (`12.34`; zero-decimal currencies without decimals).

`extra` holds balance transactions Stripe's reports list that the API does not (a test's
"missing in the warehouse"); `refuse` makes every run's creation answer with that error.
"""

from __future__ import annotations

import csv
import io
import itertools
import threading
import typing as t
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from tests.emulator.generate import DAY
from tests.emulator.store import ApiError

if t.TYPE_CHECKING:
    from collections.abc import Callable

ACTIVITY = "balance_change_from_activity.itemized.3"
SUMMARY = "balance.summary.1"
CONNECTED_ACTIVITY = "connected_account_balance_change_from_activity.itemized.3"
CONNECTED_SUMMARY = "connected_account_balance.summary.1"
PAYOUTS = "payout_reconciliation.itemized.5"
CONNECTED_PAYOUTS = "connected_account_payout_reconciliation.itemized.5"
SINGLE_TYPES = (ACTIVITY, SUMMARY, PAYOUTS)
PLATFORM_TYPES = (CONNECTED_ACTIVITY, CONNECTED_SUMMARY, CONNECTED_PAYOUTS)
#: Currencies Stripe writes without minor units (a subset, as in Stripe's list).
ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg",
                          "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"})
#: The columns an itemized run may ask for (a subset of Stripe's 69).
ACTIVITY_COLUMNS = ("balance_transaction_id", "created_utc", "created", "available_on_utc",
                    "available_on", "currency", "gross", "fee", "net", "reporting_category",
                    "source_id", "description", "automatic_payout_id",
                    "automatic_payout_effective_at_utc", "automatic_payout_effective_at")
#: Permission names a restricted key's readable set holds to use the Reports API.
REPORT_PERMISSION, FILES_PERMISSION = "report_runs", "files"


def major(amount: int, currency: str) -> str:
    """Minor units as a CSV's decimal amount: `-1234` usd -> `-12.34`, `500` jpy -> `500`."""
    if currency in ZERO_DECIMAL:
        return str(amount)
    return str((Decimal(amount) / 100).quantize(Decimal("0.01")))


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Run:
    id: str
    report_type: str
    parameters: dict[str, t.Any]
    created: int
    file_id: str
    polls_left: int | None
    status: str = "pending"


@dataclass
class Reports:
    """The Reports API of one account or of a platform's connected accounts."""

    #: The balance transactions of each account the reports cover (`{account: [txn]}`).
    ledgers: Callable[[], dict[str, list[dict]]]
    now: Callable[[], int]
    #: {account: {balance transaction id: the automatic payout that settled it}}.
    settled: Callable[[], dict[str, dict[str, dict]]] = dict
    #: Whether these are a platform's reports (the `connected_account_*` types).
    platform: bool = False
    #: Reads of a run that answer `pending` before it succeeds (None: never succeeds).
    pending_polls: int | None = 1
    fail_runs: bool = False
    #: Whole days `data_available_end` trails the clock's day.
    lag_days: int = 0
    #: Balance transactions in the reports only, by account.
    extra: dict[str, list[dict]] = field(default_factory=dict)
    #: (status, message, code) every report run's creation answers with, when set.
    refuse: tuple[int, str, str | None] | None = None
    runs: dict[str, Run] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    #: Run ids in the order they were created, with their parameters (for tests).
    created_runs: list[tuple[str, dict]] = field(default_factory=list)
    #: What changes when the ledgers do (their sizes): they are copied again only then, so
    #: that a run's many report calls do not take the accounts' CPU and store locks.
    version: Callable[[], t.Hashable] | None = None
    _cache: tuple[t.Hashable, dict[str, list[dict]]] | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def types(self) -> tuple[str, ...]:
        return PLATFORM_TYPES if self.platform else SINGLE_TYPES

    def add_to_report(self, account: str, txn: dict) -> None:
        """A balance transaction Stripe's reports list, absent from the API's lists."""
        with self._lock:
            self.extra.setdefault(account, []).append(txn)

    # -- HTTP ------------------------------------------------------------------------------

    def serve(self, method: str, path: str, form: dict[str, list[str]],
              readable: set[str] | None, base_url: str) -> tuple[int, bytes | dict, str]:
        """(status, JSON object or CSV bytes, content type) of one Reports API request."""
        files = path.startswith("/v1/files")
        needed = FILES_PERMISSION if files else REPORT_PERMISSION
        if readable is not None and needed not in readable:
            rak = "rak_file_read" if files else "rak_report_run_write"
            raise ApiError(403, "The provided key does not have the required permissions for "
                           f"this endpoint. Having the '{rak}' permission would allow this "
                           "request to continue.")
        parts = path.strip("/").split("/")
        if self.refuse is not None and method == "POST":
            status, message, code = self.refuse
            raise ApiError(status, message, code=code)
        with self._lock:
            if parts[:3] == ["v1", "reporting", "report_types"] and len(parts) == 4:
                return 200, self.report_type(parts[3]), "application/json"
            if parts[:3] == ["v1", "reporting", "report_runs"] and method == "POST" \
                    and len(parts) == 3:
                return 200, self.create(form), "application/json"
            if parts[:3] == ["v1", "reporting", "report_runs"] and len(parts) == 4:
                return 200, self.poll(parts[3], base_url), "application/json"
            if parts == ["v1", "files"]:
                return 200, {"object": "list", "url": "/v1/files", "has_more": False,
                             "data": []}, "application/json"
            if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "contents":
                if parts[2] not in self.files:
                    raise ApiError(404, f"No such file upload: '{parts[2]}'",
                                   code="resource_missing")
                return 200, self.files[parts[2]], "text/csv"
        raise ApiError(404, f"Unrecognized request URL ({method}: {path}).")

    def _available(self) -> tuple[int, int]:
        txns = [x for rows in self._ledgers().values() for x in rows]
        oldest = min((x["created"] for x in txns), default=self.now())
        end = self.now() // DAY * DAY - self.lag_days * DAY
        return oldest // DAY * DAY, max(end, oldest // DAY * DAY)

    def _ledgers(self) -> dict[str, list[dict]]:
        key = (self.version(), sum(len(rows) for rows in self.extra.values())) \
            if self.version else None
        if key is not None and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        ledgers = {account: list(rows) for account, rows in self.ledgers().items()}
        for account, rows in self.extra.items():
            ledgers.setdefault(account, []).extend(rows)
        if key is not None:
            self._cache = (key, ledgers)
        return ledgers

    def report_type(self, name: str) -> dict:
        if name not in self.types:
            raise ApiError(404, f"No such report type: '{name}'", code="resource_missing")
        start, end = self._available()
        return {"id": name, "object": "reporting.report_type", "name": name,
                "version": int(name.rsplit(".", 1)[1]), "data_available_start": start,
                "data_available_end": end, "default_columns": [], "livemode": False,
                "updated": end}

    def create(self, form: dict[str, list[str]]) -> dict:
        report_type = (form.get("report_type") or [""])[-1]
        if report_type not in self.types:
            raise ApiError(400, f"Invalid report_type: {report_type!r}", param="report_type")
        params: dict[str, t.Any] = {}
        for key, values in form.items():
            if key.startswith("parameters[columns]"):
                params["columns"] = values
            elif key.startswith("parameters["):
                params[key[len("parameters["):-1]] = values[-1]
        try:
            start, end = int(params["interval_start"]), int(params["interval_end"])
        except (KeyError, ValueError):
            raise ApiError(400, "Missing required param: parameters[interval_start] and "
                           "parameters[interval_end].", param="parameters") from None
        params["interval_start"], params["interval_end"] = start, end
        low, high = self._available()
        if not low <= start < end <= high:
            raise ApiError(400, f"parameters[interval_end] must be at most the report type's "
                           f"data_available_end ({high}), and after interval_start, which "
                           f"must be at least data_available_start ({low}).",
                           param="parameters[interval_end]")
        run_id = f"frr_{next(self._ids):014d}"
        file_id = "file_" + run_id[4:]
        self.files[file_id] = self.render(report_type, params, start, end)
        run = Run(run_id, report_type, params, self.now(), file_id, self.pending_polls)
        self.runs[run_id] = run
        self.created_runs.append((report_type, dict(params)))
        return self._json(run, "")

    def poll(self, run_id: str, base_url: str) -> dict:
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(404, f"No such reporting.report_run: '{run_id}'",
                           code="resource_missing")
        if run.status == "pending" and run.polls_left is not None:
            if run.polls_left <= 0:
                run.status = "failed" if self.fail_runs else "succeeded"
            run.polls_left -= 1
        return self._json(run, base_url)

    def _json(self, run: Run, base_url: str) -> dict:
        done = run.status == "succeeded"
        return {
            "id": run.id, "object": "reporting.report_run", "created": run.created,
            "error": "The report could not be computed (emulated failure)."
            if run.status == "failed" else None,
            "livemode": False, "parameters": run.parameters, "report_type": run.report_type,
            "status": run.status, "succeeded_at": self.now() if done else None,
            "result": {
                "id": run.file_id, "object": "file", "purpose": "finance_report_run",
                "type": "csv", "size": len(self.files[run.file_id]), "created": run.created,
                "filename": f"{run.file_id}.csv",
                "url": f"{base_url}/v1/files/{run.file_id}/contents",
            } if done else None,
        }

    # -- the CSV files -----------------------------------------------------------------------

    def render(self, report_type: str, params: dict, start: int, end: int) -> bytes:
        ledgers = self._ledgers()
        wanted = params.get("connected_account")
        if wanted:
            ledgers = {wanted: ledgers.get(wanted, [])}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        settled = self.settled()
        if report_type in (ACTIVITY, CONNECTED_ACTIVITY, PAYOUTS, CONNECTED_PAYOUTS):
            columns = list(params.get("columns") or ACTIVITY_COLUMNS[:9])
            unknown = [c for c in columns if c not in ACTIVITY_COLUMNS
                       and not (self.platform and c == "connected_account")]
            if unknown:
                raise ApiError(400, f"Invalid columns: {', '.join(unknown)}",
                               param="parameters[columns]")
            writer.writerow(columns)
            if report_type in (PAYOUTS, CONNECTED_PAYOUTS):
                rows = [
                    (account, x) for account, txns in sorted(ledgers.items()) for x in txns
                    if x["id"] in settled.get(account, {})
                    and start <= settled[account][x["id"]]["arrival_date"] < end
                ]
            else:
                rows = [
                    (account, x) for account, txns in sorted(ledgers.items()) for x in txns
                    if start <= x["created"] < end and x["reporting_category"] != "payout"
                ]
            rows.sort(key=lambda r: (r[1]["created"], r[1]["id"]))
            for account, x in rows:
                payout = settled.get(account, {}).get(x["id"])
                writer.writerow([self._cell(c, account, x, payout) for c in columns])
        else:
            writer.writerow(["category", "description", "net_amount", "currency"])
            for account in sorted(ledgers):
                for row in summary(ledgers[account], start, end):
                    writer.writerow(row)
        return out.getvalue().encode()

    @staticmethod
    def _cell(column: str, account: str, x: dict, payout: dict | None) -> str:
        currency = x["currency"]
        effective = _utc(payout["arrival_date"]) if payout else None
        value: t.Any = {
            "balance_transaction_id": x["id"], "connected_account": account,
            "created_utc": _utc(x["created"]), "created": _utc(x["created"]),
            "available_on_utc": _utc(x["available_on"]), "available_on": _utc(x["available_on"]),
            "currency": currency, "gross": major(x["amount"], currency),
            "fee": major(x["fee"], currency), "net": major(x["net"], currency),
            "reporting_category": x["reporting_category"], "source_id": x["source"],
            "description": x["description"],
            "automatic_payout_id": payout["id"] if payout else None,
            "automatic_payout_effective_at_utc": effective,
            "automatic_payout_effective_at": effective,
        }[column]
        return "" if value is None else str(value)


def summary(txns: list[dict], start: int, end: int) -> list[list[str]]:
    """`balance.summary.1`'s rows for one account's transactions over [start, end)."""
    rows = []
    for currency in sorted({x["currency"] for x in txns if x["created"] < end}):
        mine = [x for x in txns if x["currency"] == currency]
        before = sum(x["net"] for x in mine if x["created"] < start)
        inside = [x for x in mine if start <= x["created"] < end]
        activity = [x for x in inside if x["reporting_category"] != "payout"]
        payouts = sum(x["net"] for x in inside if x["reporting_category"] == "payout")
        gross = sum(x["amount"] for x in activity)
        fee = -sum(x["fee"] for x in activity)
        net = sum(x["net"] for x in activity)
        for category, description, amount in (
            ("starting_balance", "Starting balance", before),
            ("activity_gross", "Activity before fees", gross),
            ("activity_fee", "Less fees", fee),
            ("activity", "Net balance change from activity", net),
            ("payouts", "Total payouts", payouts),
            ("ending_balance", "Ending balance", before + net + payouts),
        ):
            rows.append([category, description, major(amount, currency), currency])
    return rows
