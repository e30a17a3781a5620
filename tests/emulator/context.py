"""`Stripe-Context`, organization keys and Accounts v2, for `ConnectPlatform`.

- An organization key (`ORGANIZATION_KEY`, `sk_org_...`) reads the platform and its
  connected accounts of the organization. Like Stripe, it is refused without
  `Stripe-Version`, and without `Stripe-Context` ("Please include the Stripe-Context
  header ..."); it addresses the platform as `acct_platform` and a connected account as
  `acct_platform/acct_connected`.
- The platform's own key honours `Stripe-Context: acct_connected` as it honours
  `Stripe-Account`.
- `GET /v2/core/accounts` lists every account of the platform not closed (v1 accounts
  with the merchant configuration, accounts created through Accounts v2 with theirs),
  paged by `limit` and an opaque `page` token in `next_page_url`, `created` in RFC 3339.
  Accounts created through Accounts v2 are not in `GET /v1/accounts`.
"""

from __future__ import annotations

import secrets
import time
import typing as t

ORGANIZATION_KEY = "sk_org_test_emulator"
PLATFORM_ID = "acct_platform0emulator"

Refusal = tuple[int, dict]


def _error(status: int, message: str, code: str | None = None) -> Refusal:
    error: dict[str, t.Any] = {"type": "invalid_request_error", "message": message}
    if code:
        error["code"] = code
    return status, {"error": error}


def no_access(token_mask: str, account: str) -> Refusal:
    return _error(
        403,
        f"The provided key '{token_mask}' does not have access to account '{account}' (or "
        "that account does not exist). Application access may have been revoked.",
        "account_invalid",
    )


def addressed(
    *,
    organization: bool,
    stripe_account: str | None,
    stripe_context: str | None,
    stripe_version: str | None,
    token_mask: str,
) -> tuple[str | None, Refusal | None]:
    """The connected account a request is for (None: the platform itself), or why Stripe
    refuses it."""
    if organization:
        if not stripe_version:
            return None, _error(
                400,
                "Organization API keys require the Stripe-Version header on every request.",
            )
        if not stripe_context:
            return None, _error(
                400,
                "Please include the Stripe-Context header with your target account when "
                "using an Organization API key.",
            )
        if stripe_account:
            return None, _error(
                400,
                "Organization API keys address accounts with the Stripe-Context header; "
                "do not send Stripe-Account.",
            )
        path = stripe_context.split("/")
        if path[0] != PLATFORM_ID or len(path) > 2:
            return None, no_access(token_mask, path[-1])
        return (path[1] if len(path) == 2 else None), None
    if stripe_context is None:
        return stripe_account, None
    path = stripe_context.split("/")
    if stripe_account and stripe_account != path[-1]:
        return None, _error(400, "Stripe-Account and Stripe-Context name different accounts.")
    if path == [PLATFORM_ID]:
        return None, None
    if len(path) != 1:
        return None, no_access(token_mask, path[-1])
    return path[0], None


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


class AccountsV2:
    """The platform's accounts as `GET /v2/core/accounts` lists them."""

    def __init__(self) -> None:
        #: Applied configurations of accounts created through Accounts v2, by id.
        self.created_v2: dict[str, list[str]] = {}
        self._pages: dict[str, int] = {}  # page token -> offset
        #: `GET /v2/core/accounts` requests served.
        self.requests = 0

    def configurations(self, account_id: str) -> list[str]:
        return self.created_v2.get(account_id, ["merchant"])

    def in_v1_list(self, account_id: str) -> bool:
        return account_id not in self.created_v2

    def answer(
        self,
        query: dict[str, list[str]],
        listed: list[str],
        describe: t.Callable[[str], dict],
    ) -> Refusal:
        self.requests += 1
        arg = {k: v[-1] for k, v in query.items()}
        unknown = set(arg) - {"limit", "page"}
        if unknown:
            return _error(400, f"Received unknown parameter: {sorted(unknown)[0]}")
        text = arg.get("limit") or "10"
        limit = int(text) if text.isdigit() else 0
        if not 1 <= limit <= 100:
            return _error(400, "Invalid limit: must be between 1 and 100")
        start = 0
        if token := arg.get("page"):
            if token not in self._pages:
                return _error(400, "Invalid page token.")
            start = self._pages[token]
        page = listed[start : start + limit]
        next_url = None
        if start + limit < len(listed):
            token = "page_" + secrets.token_hex(8)
            self._pages[token] = start + limit
            next_url = f"/v2/core/accounts?limit={limit}&page={token}"
        data = []
        for account_id in page:
            described = describe(account_id)
            data.append(
                {
                    "id": account_id,
                    "object": "v2.core.account",
                    "applied_configurations": self.configurations(account_id),
                    "closed": False,
                    # Include-dependent fields are null in lists (no `include` there).
                    "configuration": None,
                    "contact_email": described.get("email"),
                    "created": rfc3339(int(described.get("created") or 0)),
                    "dashboard": "full",
                    "defaults": None,
                    "display_name": described.get("name"),
                    "identity": None,
                    "livemode": False,
                    "metadata": {},
                    "requirements": None,
                }
            )
        return 200, {"data": data, "next_page_url": next_url, "previous_page_url": None}
