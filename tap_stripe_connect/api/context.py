"""Which account a request is for: the `Stripe-Account` or `Stripe-Context` header.

`Stripe-Account: acct_x` reads a connected account with the platform's key. Stripe's
newer `Stripe-Context` supersedes it: a `/`-joined path of account ids
(`acct_parent/acct_child`) that also reaches the accounts of an organization and the
accounts of a connected account; organization keys (`sk_org_...`) must send it on every
request (and `Stripe-Version`, which every request of the tap carries).

Under `Stripe-Context`, setting `account_id` is the context the entries of
`account_ids` are relative to: `account_id: acct_platform` with
`account_ids: ["acct_a"]` sends `Stripe-Context: acct_platform/acct_a`. Records carry the
addressed account's id, the last element of the path (`addressed`).
"""

from __future__ import annotations

import typing as t

STRIPE_ACCOUNT = "Stripe-Account"
STRIPE_CONTEXT = "Stripe-Context"
AUTO = "auto"
HEADERS = (AUTO, STRIPE_ACCOUNT, STRIPE_CONTEXT)
ORGANIZATION_KEY_PREFIX = "sk_org_"


def is_organization_key(api_key: str | None) -> bool:
    return bool(api_key) and str(api_key).startswith(ORGANIZATION_KEY_PREFIX)


def header_name(setting: str | None, api_key: str | None) -> str:
    """The header `account_header` chooses; `auto`: `Stripe-Context` for organization keys."""
    if setting in (STRIPE_ACCOUNT, STRIPE_CONTEXT):
        return setting
    return STRIPE_CONTEXT if is_organization_key(api_key) else STRIPE_ACCOUNT


def header_value(name: str, base: str | None, account: str | None) -> str | None:
    """The value sent for a read of `account` (None: the key's own, or `base`'s)."""
    if name == STRIPE_CONTEXT and base and account:
        return f"{base.rstrip('/')}/{account.lstrip('/')}"
    return account or base


def addressed(account: str | None) -> str | None:
    """The account a `Stripe-Context` path addresses: its last element."""
    if not account:
        return account
    return account.rstrip("/").rsplit("/", 1)[-1]


def sent_account(headers: t.Mapping[str, str]) -> str | None:
    """The account a request was sent for, by either header."""
    return headers.get(STRIPE_CONTEXT) or headers.get(STRIPE_ACCOUNT)


def header_problem(config: t.Mapping[str, t.Any]) -> str | None:
    """What keeps `account_header` from addressing the configured accounts, or None."""
    setting = config.get("account_header") or AUTO
    api_key = config.get("api_key")
    name = header_name(setting, api_key)
    paths = [
        str(a)
        for a in [config.get("account_id"), *(config.get("account_ids") or ())]
        if a and "/" in str(a)
    ]
    if is_organization_key(api_key):
        if name != STRIPE_CONTEXT:
            return (
                "setting 'account_header' is Stripe-Account, but organization keys "
                "(sk_org_...) address accounts with Stripe-Context only: set it to "
                "Stripe-Context or auto"
            )
        wanted = [str(a) for a in config.get("account_ids") or ()]
        if not config.get("account_id") and (not wanted or "*" in wanted):
            return (
                "organization keys (sk_org_...) act for no account of their own: set "
                "setting 'account_id' to the account to read (acct_...), or to the "
                "platform whose connected accounts setting 'account_ids' lists"
                + (' (["*"])' if "*" in wanted else "")
                + ", as Stripe-Context paths such as acct_platform or acct_platform/acct_..."
            )
    if name == STRIPE_ACCOUNT and paths:
        return (
            f"'{paths[0]}' is a Stripe-Context path (acct_parent/acct_child), which "
            "Stripe-Account cannot address: set setting 'account_header' to Stripe-Context"
        )
    return None
