"""What the units of work of one run share: the client, the workers, the account."""

from __future__ import annotations

import collections
import functools
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

from tap_stripe_connect.api import list_read
from tap_stripe_connect.api.auth import StripeOAuthAuthenticator
from tap_stripe_connect.api.context import addressed, is_organization_key
from tap_stripe_connect.api.reads import v2_accounts_read
from tap_stripe_connect.errors import ConfigError, StripeAccountInvalidError
from tap_stripe_connect.resources import RESOURCES_BY_NAME, events_kept
from tap_stripe_connect.sync.feed import EventFeed
from tap_stripe_connect.sync.rests import Rests
from tap_stripe_connect.sync.scheduler import CpuLoad, Scheduler
from tap_stripe_connect.sync.windows import STRIPE_EPOCH

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    from tap_stripe_connect.api import StripeClient
    from tap_stripe_connect.api.limiter import RateLimiter
    from tap_stripe_connect.settings import Settings


#: The configurations of a v2 account whose own data a platform sync reads.
SYNCED_CONFIGURATIONS = frozenset({"merchant", "recipient"})


class Run:
    """One sync: its client, settings, background workers, scheduler and account(s)."""

    def __init__(
        self,
        client: StripeClient,
        settings: Settings,
        logger: logging.Logger,
    ) -> None:
        self.client = client
        self.settings = settings
        self.logger = logger
        #: The credential's own account, as `GET /v1/account` describes it.
        self.account: dict | None = None
        #: The first failure of each connected account that failed, by account.
        self.failed_accounts: dict[str, str] = {}
        #: Accounts the platform may no longer read: their other units make no request.
        self._lost_accounts: set[str] = set()
        self.scheduler = Scheduler(1, client.responses_slow, lambda: client.stop.requested)
        self.cpu_load = CpuLoad(0.25)  # how busy the sync keeps a CPU (see `cpu_bound`)
        #: Guards this object's fields; never held during a request (other units ask
        #: `account_lost` and the like while one waits for Stripe).
        self._lock = threading.Lock()
        #: Held while the credential's account or the connected accounts are read, once.
        self._reading_account = threading.Lock()
        self._reading_accounts = threading.Lock()
        self._account_read = False
        self._connected: list[str] | None = None
        self._listed = False
        #: The bookmarks of an account's streams that read its events (set by the tap).
        self.feed_bookmarks: Callable[[str | None], list[int | None]] = lambda account: []
        self._feeds: dict[str | None, EventFeed] = {}
        #: Which quiet connected accounts' events reads wait this run.
        self.rests = Rests(settings, client.clock.now)
        self._units_left: collections.Counter[str | None] = collections.Counter()
        #: The objects `account_ids: ["*"]` listed, and Stripe's time before the listing:
        #: an account's first sync takes its record from there (see `listed_account`).
        self._listed_objects: dict[str, dict] = {}
        self._listed_at: int | None = None

    def read_account(self) -> None:
        """Learn Stripe's time and the credential's account, from one request.

        An organization key has no account of its own: without setting `account_id`,
        the first account of `account_ids` is read instead.
        """
        first = None
        if is_organization_key(self.settings.api_key) and not self.settings.account_id:
            first = next((a for a in self.settings.account_ids if a != "*"), None)
        self.account = self.client.account(first)
        self._account_read = True
        self.client.own_account_id = self.account_id

    def ensure_account(self) -> None:
        """A stream synced on its own (SDK tests, dry runs) still needs its account."""
        with self._reading_account:
            if not self._account_read and not self.account_id:
                self.read_account()
            self.client.own_account_id = self.account_id

    @property
    def platform(self) -> bool:
        """Whether this run syncs connected accounts (`account_ids`), maybe none of them
        (a shard may hold no account): then nothing is read as the platform's own."""
        return bool(self.settings.account_ids)

    def connected_accounts(self) -> list[str] | None:
        """The connected accounts of a platform sync (`account_ids`; "*": every one), of
        this run's shard (`account_shard`), listed once per run; None: not a platform."""
        with self._reading_accounts:
            if not self._listed:
                connected = self._list_connected()
                with self._lock:
                    self._connected, self._listed = connected, True
            return self._connected

    def _list_connected(self) -> list[str] | None:
        wanted = self.settings.account_ids
        if not wanted:
            return None
        if "*" in wanted:
            listed = self._list_v2() if self.settings.account_list == "v2" else self._list_v1()
            every = listed + [a for a in wanted if a != "*" and a not in listed]
        else:
            every = list(dict.fromkeys(wanted))
        shard = self.settings.account_shard
        if shard is None:
            return every
        mine = [account for account in every if shard.holds(account)]
        self.logger.info(
            "Shard %s (setting 'account_shard'): %d of the %d connected accounts.",
            shard, len(mine), len(every),
        )
        return mine

    def _list_v1(self) -> list[str]:
        """`GET /v1/accounts`: its objects are the accounts' own first records."""
        accounts = RESOURCES_BY_NAME["accounts"]
        listed_at = self.client.clock.now()
        objects = {a["id"]: a for a in self.client.list(list_read(accounts))}
        with self._lock:  # the request is made outside the lock
            self._listed_at, self._listed_objects = listed_at, objects
        return list(objects)

    def _list_v2(self) -> list[str]:
        """`GET /v2/core/accounts` (`account_list: v2`): the accounts with data of their
        own, a merchant or recipient configuration; accounts that are only customers of
        the platform (their billing objects are the platform's) are left out."""
        listed: list[str] = []
        customers = 0
        for account in self.client.list(v2_accounts_read()):
            if set(account.get("applied_configurations") or ()) & SYNCED_CONFIGURATIONS:
                listed.append(str(account["id"]))
            else:
                customers += 1
        if customers:
            self.logger.info(
                "GET /v2/core/accounts: %d account(s) with only the customer configuration "
                "left out (their billing objects are the platform's, with customer_account).",
                customers,
            )
        return listed

    def listed_account(self, account_id: str) -> tuple[dict, int] | None:
        """The account as `GET /v1/accounts` listed it at the start of the run, with Stripe's
        time before that listing; once (None after, or when not listed)."""
        with self._lock:
            listed = self._listed_objects.pop(account_id, None)
        if listed is None or self._listed_at is None:
            return None
        return listed, self._listed_at

    def in_shard(self, account_id: str) -> bool:
        """Whether this run's shard holds the account (every account without a shard)."""
        shard = self.settings.account_shard
        return shard is None or shard.holds(account_id)

    @property
    def account_id(self) -> str | None:
        """The account records come from, unless a connected account is read (the last
        element of a `Stripe-Context` path)."""
        if self.settings.account_id:
            return addressed(self.settings.account_id)
        auth = self.client.authenticator
        if isinstance(auth, StripeOAuthAuthenticator) and auth.account_id:
            return str(auth.account_id)
        return (self.account or {}).get("id")

    def owner_of(self, account: str | None) -> str | None:
        """The `account_id` of the records of a unit for `account` (an entry of
        `account_ids`, maybe a `Stripe-Context` path; None: the run's own account)."""
        return addressed(account) or self.account_id

    def require_account(self) -> None:
        if self.connected_accounts() is None and not self.account_id:
            raise ConfigError(
                "Could not tell which Stripe account the credential belongs to (it may not "
                "read GET /v1/account, or the server does not serve it): set setting "
                "'account_id' to its id (acct_...)."
            )

    def report_account_failure(self, account_id: str, error: Exception) -> None:
        """One account failed: the others go on; the run fails at the end, naming it.

        Named once (one line per account, not per stream). When the platform may no
        longer read the account at all, its units not yet started are skipped without a
        request (see `account_lost`).
        """
        lost = isinstance(error, StripeAccountInvalidError)
        with self._lock:
            first = account_id not in self.failed_accounts
            self.failed_accounts.setdefault(account_id, str(error))
            if lost:
                self._lost_accounts.add(account_id)
        if first:
            self.logger.error(
                "Account %s failed and is skipped%s: %s",
                account_id,
                " (all its streams)" if lost else "",
                error,
            )

    def account_lost(self, account_id: str) -> bool:
        """Whether the platform lost access to the account earlier in this run."""
        with self._lock:
            return account_id in self._lost_accounts

    def no_longer_connected(self, in_state: t.Iterable[str]) -> list[str]:
        """Accounts of this shard with state, no longer listed by `GET /v1/accounts`
        (under `account_ids: ["*"]`): they left the platform."""
        if "*" not in self.settings.account_ids:
            return []
        listed = set(self.connected_accounts() or ())
        return sorted(a for a in set(in_state) if a not in listed and self.in_shard(a))

    # -- one events read per account ----------------------------------------------------

    def feed(self, account: str | None) -> EventFeed:
        """The events of an account, read once for all its events-based streams."""
        with self._lock:
            feed = self._feeds.get(account)
            if feed is None:
                feed = self._feeds[account] = EventFeed(
                    self.client, account, functools.partial(self.feed_since, account),
                    self.rests.feed_read,
                )
            return feed

    def resting(self, account: str | None) -> bool:
        """Whether a connected account's events read (and what waits on it) waits this run."""
        return self.rests.resting(account)

    def expect_units(self, accounts: t.Iterable[str | None]) -> None:
        """The account of each unit this run starts (its event feed goes with the last)."""
        with self._lock:
            self._units_left = collections.Counter(accounts)

    def unit_finished(self, account: str | None) -> None:
        """A unit ended: after an account's last, its events' memory and file, and its
        budget's record of requests, are let go (a platform run of thousands of accounts
        would otherwise hold them all: ~20 KB of budget an account)."""
        with self._lock:
            self._units_left[account] -= 1
            if self._units_left[account] > 0:
                return
            del self._units_left[account]
            feed = self._feeds.pop(account, None)
        if feed is not None:
            feed.close()
        if account is not None:
            self.client.forget_budget(account)

    def feed_since(self, account: str | None) -> int | None:
        """The oldest bookmark of the account's events-based streams, less the lag.

        Bookmarks older than Stripe's 30 days of events are left out: those streams list
        everything again instead. None: no stream of the account reads events this run.
        """
        lag = self.settings.event_lag_seconds
        now = self.client.clock.now()
        kept = [
            bookmark - lag
            for bookmark in self.feed_bookmarks(account)
            if bookmark is not None and events_kept(bookmark - lag, now)
        ]
        return min(kept, default=None)

    # -- shared workers ------------------------------------------------------------------

    @functools.cached_property
    def background(self) -> ThreadPoolExecutor:
        """Workers for child lists fetched ahead of their parent's record."""
        return ThreadPoolExecutor(self.settings.max_workers, thread_name_prefix="children")

    @property
    def window_workers(self) -> int:
        """Workers for one stream's `created` windows, sharing `max_workers` across streams."""
        return max(1, self.settings.max_workers // self.scheduler.parallel)

    def may_split(self, limiter: RateLimiter, endpoint: str) -> bool:
        """Whether a listing may split a `created` window for one more worker now."""
        return not (
            self.scheduler.may_start.is_set()
            or limiter.saturated(endpoint)
            or self.cpu_bound(limiter)
        )

    def cpu_bound(self, limiter: RateLimiter) -> bool:
        """Whether more `created` windows would only compete for the CPU.

        With fast responses and a busy CPU, another window adds thread switches and a
        partial page, not speed. With slow ones, a window split now is answered after
        a response time, when the CPU has caught up: waiting for the CPU to be idle left
        the last windows of a run to page alone (~10% of a run with 250 ms responses).
        """
        return not limiter.responses_slow and self.cpu_load.busy()

    def earliest_created(self, account: str | None) -> int:
        """The earliest `created` an account's objects plausibly carry (for estimates only).

        The account's own creation when the credential's account is read (a connected
        account's is when it was connected: older objects are still listed); else 2010.
        """
        created = (self.account or {}).get("created")
        if account or not isinstance(created, int):
            return STRIPE_EPOCH
        return created

    def close(self) -> None:
        for feed in self._feeds.values():
            feed.close()
        if "background" in self.__dict__:
            self.background.shutdown(wait=False, cancel_futures=True)
