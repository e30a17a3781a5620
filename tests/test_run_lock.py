"""No request to Stripe is made while `Run._lock` is held: other units ask the run
(`account_lost`, `report_account_failure`, `feed`) while one waits for a response, and
would wait for it, or for its retries, too."""

from __future__ import annotations

import logging

from tap_stripe_connect.settings import Settings
from tap_stripe_connect.stop import Stop
from tap_stripe_connect.sync.run import Run


class Clock:
    def now(self) -> int:
        return 1_767_225_600


class Client:
    """Every read asks whether the run's lock is held at that moment."""

    def __init__(self) -> None:
        self.run: Run | None = None
        self.stop = Stop()
        self.clock = Clock()
        self.authenticator = None
        self.own_account_id: str | None = None
        self.held_during: list[str] = []

    def responses_slow(self) -> bool:
        return False

    def _request(self, what: str) -> None:
        assert self.run is not None
        if self.run._lock.locked():
            self.held_during.append(what)

    def account(self, address: str | None = None) -> dict:
        self._request("GET /v1/account")
        return {"id": "acct_platform", "livemode": False}

    def list(self, read):
        self._request(f"GET {read.path}")
        yield from ({"id": f"acct_{n}", "object": "account"} for n in range(3))


def test_reading_the_account_and_listing_the_connected_ones_hold_no_run_lock():
    client = Client()
    settings = Settings.from_config({"api_key": "sk_test_runlock", "account_ids": ["*"]})
    run = Run(client, settings, logging.getLogger("test-run-lock"))  # type: ignore[arg-type]
    client.run = run
    run.ensure_account()  # a stream synced on its own reads the account
    assert run.connected_accounts() == ["acct_0", "acct_1", "acct_2"]
    assert run.listed_account("acct_1") == (
        {"id": "acct_1", "object": "account"}, 1_767_225_600
    )
    assert client.held_during == []
    assert run.account_id == "acct_platform"
