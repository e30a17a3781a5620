"""Reading a platform run's STATE as a target stores it (the layout of docs/state.md)."""

from __future__ import annotations


def account_bookmarks(state: dict, stream: str) -> dict[str, int]:
    """Per connected account, the bookmark of `stream` (a Unix time) in a STATE's rows:
    `accounts.bookmarks[account]` is `[base, offset per stream of accounts.streams...]`."""
    section = state.get("accounts") or {}
    streams = section.get("streams") or []
    if stream not in streams:
        return {}
    column = streams.index(stream) + 1
    return {
        account: row[0] + row[column]
        for account, row in (section.get("bookmarks") or {}).items()
        if column < len(row) and row[column] is not None
    }


def every_bookmark(state: dict) -> dict[tuple[str, str], int]:
    """(stream, account) -> bookmark, for every connected account's stream in a STATE."""
    streams = (state.get("accounts") or {}).get("streams") or []
    return {
        (stream, account): value
        for stream in streams
        for account, value in account_bookmarks(state, stream).items()
    }
