"""Checks on what a user hands the tap: settings, STATE, catalog and the files holding them.

Each check raises (or returns) messages that fit on one line, name the setting, file or
STATE entry at fault, and never repeat the value of a secret setting. They run before the
tap sends a request or writes a message, so bad input leaves stdout empty.
"""

from __future__ import annotations

import difflib
import json
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

from jsonschema import Draft7Validator

from tap_stripe_connect.api.context import header_problem
from tap_stripe_connect.errors import TapError
from tap_stripe_connect.settings import LOCAL_HOSTS, AccountShard, is_time
from tap_stripe_connect.state.bookmarks import check_accounts, check_unit_entry
from tap_stripe_connect.state.listing import StateError

# Settings singer-sdk itself reads, whether or not the tap's schema lists them.
SDK_SETTINGS = frozenset(
    {
        "stream_maps",
        "stream_map_config",
        "faker_config",
        "flattening_enabled",
        "flattening_max_depth",
        "flattening_max_key_length",
        "flattening_separator",
        "batch_config",
        "emit_activate_version_messages",
        "user_agent",
    }
)
# Numeric settings that only make sense above (or at least at) a bound: (bound, inclusive).
BOUNDS: dict[str, tuple[float, bool]] = {
    "request_timeout": (0, False),
    "max_retries": (0, True),
    "max_retry_seconds": (0, True),
    "max_workers": (1, True),
    "event_lag_seconds": (5, True),
    "quiet_account_interval_seconds": (0, True),
    "quiet_account_events_interval_seconds": (0, True),
    "max_requests_per_second": (0, False),
    "max_requests_per_second_per_endpoint": (0, False),
    "max_requests_per_second_total": (0, False),
    "progress_interval_seconds": (0, True),
    "report_timeout_seconds": (0, False),
}
# Numeric settings with an upper bound too (inclusive), and why.
CEILINGS: dict[str, tuple[float, str]] = {
    "quiet_account_events_interval_seconds": (
        7 * 86400,
        "7 days: Stripe keeps events 30 days, and a quiet account's events read that waits "
        "longer, with a few missed runs, would find them gone and list the account whole",
    ),
}
# Settings holding URLs that credentials are sent to.
URL_SETTINGS = ("api_url", "oauth_url")
#: Why a bound of `BOUNDS` is what it is, where a user could not guess it.
WHY_BOUND = {
    "event_lag_seconds": (
        "Stripe's event list is eventually consistent: an event can appear a few seconds "
        "after later ones, and a shorter lag could skip it for good"
    ),
}

_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


# Checked in order: bool before int, since a bool is an int in Python.
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "an object"),
)


def kind(value: t.Any) -> str:
    """What a JSON value is, in words, without showing it."""
    if value is None:
        return "null"
    return next((name for cls, name in _KINDS if isinstance(value, cls)), "a value")


def _schema_problem(error: t.Any, where: str, *, secret: bool) -> str:
    """One setting's schema error as a phrase (a secret's value never shown)."""
    if error.validator == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else list(expected)
        words = " or ".join(_TYPE_NAMES.get(e, e) for e in expected if e != "null")
        return f"setting '{where}' must be {words}, not {kind(error.instance)}"
    if error.validator == "enum" and not secret:
        # `api_version`: only versions the tap has schemas for.
        choices = " or ".join(repr(v) for v in error.validator_value)
        return f"setting '{where}' must be {choices}, not {str(error.instance)[:40]!r}"
    if secret:
        return f"setting '{where}' has an invalid value"
    return f"setting '{where}': {error.message[:120]}"


def config_problems(config: t.Mapping[str, t.Any], schema: dict) -> list[str]:
    """Everything wrong with the settings, one short phrase each."""
    properties: dict[str, dict] = schema.get("properties") or {}
    known = set(properties) | SDK_SETTINGS
    problems: list[str] = []
    for name in config:
        if name not in known:
            guess = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            problems.append(f"unknown setting '{name}'{hint}")
    wrong: set[str] = set()
    for error in sorted(Draft7Validator(schema).iter_errors(dict(config)), key=str):
        path = [str(p) for p in error.absolute_path]
        if not path:
            continue  # not about one setting (e.g. the config is not an object)
        name = path[0]
        wrong.add(name)
        where = ".".join(path)
        secret = bool(properties.get(name, {}).get("secret"))
        problems.append(_schema_problem(error, where, secret=secret))
    for name, (bound, inclusive) in BOUNDS.items():
        value = config.get(name)
        if name in wrong or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        too_small = value < bound or (value == bound and not inclusive)
        if too_small:
            relation = "at least" if inclusive else "more than"
            why = f" ({WHY_BOUND[name]})" if name in WHY_BOUND else ""
            problems.append(f"setting '{name}' must be {relation} {bound:g}, not {value:g}{why}")
        elif name in CEILINGS and value > CEILINGS[name][0]:
            ceiling, why = CEILINGS[name]
            problems.append(f"setting '{name}' must be at most {ceiling:g}, not {value:g} ({why})")
    for name in URL_SETTINGS:
        value = config.get(name)
        if name in wrong or not isinstance(value, str) or not value:
            continue
        if problem := url_problem(name, value):
            problems.append(problem)
    start = config.get("start_date")
    if "start_date" not in wrong and isinstance(start, str) and start and not is_time(start):
        problems.append(
            f"setting 'start_date' is not a date ({start[:40]!r}): use an ISO 8601 date or "
            "date-time such as 2024-01-01 or 2024-01-01T00:00:00Z"
        )
    if "account_shard" not in wrong and (problem := account_shard_problem(config)):
        problems.append(problem)
    if not wrong & {"account_header", "account_id", "account_ids", "api_key"} and (
        problem := header_problem(config)
    ):
        problems.append(problem)
    return problems


def url_problem(name: str, value: str) -> str | None:
    """What is wrong with a URL credentials are sent to: not http(s), or plain http to a
    host other than this machine. One check for the tap's run and `connect`."""
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        return f"setting '{name}' is not an http(s) URL"
    if url.scheme == "http" and url.hostname not in LOCAL_HOSTS:
        return (
            f"setting '{name}' must use https: credentials are sent to it (plain http "
            "is accepted only for a local emulator)"
        )
    return None


def account_shard_problem(config: t.Mapping[str, t.Any]) -> str | None:
    """What is wrong with `account_shard`: its form, its numbers, or nothing to shard."""
    value = config.get("account_shard")
    if value in (None, ""):
        return None
    try:
        AccountShard.parse(value)
    except ValueError as exc:
        return str(exc)
    if not config.get("account_ids"):
        return (
            "setting 'account_shard' shards the connected accounts of setting 'account_ids', "
            'which is not set: set it too (["*"]: every connected account)'
        )
    return None


# -- STATE -----------------------------------------------------------------------------------

_ADVICE = (
    " Pass the value of the last STATE message the target saved (a JSON object with "
    "'bookmarks'), or no --state at all for a full sync."
)


def check_state(state: t.Any) -> None:
    """Raise StateError (one line, naming the entry) for a STATE this tap cannot resume.

    Unknown keys are left alone (the SDK and targets may add some); what this tap reads
    (bookmarks, partitions, table versions and listings) must have the right shape.
    """
    if not isinstance(state, dict):
        raise StateError(f"The STATE is {kind(state)}, not a JSON object.{_ADVICE}")
    bookmarks = state.get("bookmarks", {})
    if not isinstance(bookmarks, dict):
        raise StateError(f"STATE entry 'bookmarks' is {kind(bookmarks)}, not an object.{_ADVICE}")
    for stream, stream_state in bookmarks.items():
        where = f"bookmarks.{stream}"
        _check_entry(stream_state, where)
        partitions = stream_state.get("partitions", [])
        if not isinstance(partitions, list):
            raise StateError(f"STATE entry {where}.partitions is not a list.{_ADVICE}")
        for index, partition in enumerate(partitions):
            _check_entry(partition, f"{where}.partitions[{index}]")
            if not isinstance(partition.get("context", {}), dict):
                raise StateError(
                    f"STATE entry {where}.partitions[{index}].context is not an object.{_ADVICE}"
                )
    check_accounts(state, _ADVICE)


def _check_entry(entry: t.Any, where: str) -> None:
    if not isinstance(entry, dict):
        raise StateError(f"STATE entry {where} is {kind(entry)}, not an object.{_ADVICE}")
    value = entry.get("replication_key_value")
    if value is not None and not is_time(value):
        shown = repr(value[:40]) if isinstance(value, str) else kind(value)
        raise StateError(
            f"STATE entry {where}.replication_key_value is not a date-time ({shown}); this "
            f"tap's bookmarks look like '2026-01-01T00:00:00Z'.{_ADVICE}"
        )
    check_unit_entry(entry, where, _ADVICE)


# -- catalog ---------------------------------------------------------------------------------


class CatalogError(TapError):
    """The catalog given with `--catalog` cannot be used."""


def check_catalog(catalog: t.Any, known: t.Collection[str]) -> None:
    """The catalog's shape, and that every stream it selects is one this tap has."""
    if catalog is None:
        return
    advice = " Run the tap with --discover for a catalog of its streams."
    if not isinstance(catalog, dict) or not isinstance(catalog.get("streams"), list):
        raise CatalogError(f"The catalog is not an object with a 'streams' list.{advice}")
    unknown: list[str] = []
    for index, entry in enumerate(catalog["streams"]):
        if not isinstance(entry, dict):
            raise CatalogError(f"Catalog entry streams[{index}] is not an object.{advice}")
        name = entry.get("tap_stream_id") or entry.get("stream")
        if not isinstance(name, str):
            raise CatalogError(f"Catalog entry streams[{index}] has no 'tap_stream_id'.{advice}")
        metadata = entry.get("metadata", [])
        if not isinstance(metadata, list) or not all(
            isinstance(m, dict) and isinstance(m.get("metadata", {}), dict) for m in metadata
        ):
            raise CatalogError(f"The metadata of catalog stream '{name}' is not a list.{advice}")
        if name not in known and _selected(metadata):
            unknown.append(name)
    if unknown:
        names = ", ".join(f"'{n}'" for n in unknown)
        raise CatalogError(f"The catalog selects stream(s) this tap lacks: {names}.{advice}")


def _selected(metadata: list[dict]) -> bool:
    root: dict = next((m.get("metadata", {}) for m in metadata if m.get("breadcrumb") == []), {})
    if root.get("selected") is not None:
        return bool(root["selected"])
    return bool(root.get("selected-by-default")) or root.get("inclusion") == "automatic"


# -- the files named on the command line -----------------------------------------------------

_FILE_FLAGS = {"--config": "settings", "--state": "STATE", "--catalog": "catalog"}


def check_input_files(args: t.Sequence[str]) -> None:
    """Each `--config`, `--state` and `--catalog` file exists and holds a JSON object."""
    for index, arg in enumerate(args):
        flag, has_value, value = arg.partition("=")
        if flag not in _FILE_FLAGS:
            continue
        if not has_value:
            if index + 1 >= len(args):
                continue  # click reports the missing value
            value = args[index + 1]
        if flag == "--config" and value == "ENV":
            continue
        what = _FILE_FLAGS[flag]
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise TapError(f"Cannot read the {what} file {value} ({flag}): {reason}.") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            where = (
                f" (line {exc.lineno}, column {exc.colno})"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
            raise (StateError if flag == "--state" else TapError)(
                f"The {what} file {value} ({flag}) is not valid JSON{where}."
                + (_ADVICE if flag == "--state" else "")
            ) from None
        if not isinstance(data, dict):
            raise (StateError if flag == "--state" else TapError)(
                f"The {what} file {value} ({flag}) holds {kind(data)}, not a JSON object."
                + (_ADVICE if flag == "--state" else "")
            )


__all__ = [
    "CatalogError",
    "StateError",
    "check_catalog",
    "check_input_files",
    "check_state",
    "config_problems",
]
