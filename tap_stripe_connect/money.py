"""Amounts: Stripe's API counts in minor units (cents), its report CSVs in major units."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

#: Currencies Stripe counts without minor units (`amount=500` jpy is ¥500).
ZERO_DECIMAL = frozenset({
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd",
    "vuv", "xaf", "xof", "xpf",
})
#: Currencies Stripe counts in thousandths.
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def decimals(currency: str) -> int:
    currency = currency.lower()
    if currency in ZERO_DECIMAL:
        return 0
    return 3 if currency in THREE_DECIMAL else 2


def minor_units(text: str, currency: str) -> int | None:
    """A report's `12.34` usd as the API's `1234` (`500` jpy stays `500`); None if empty.

    ValueError when the text is not an amount, or has more decimals than the currency.
    """
    text = text.strip().replace(",", "")
    if not text:
        return None
    try:
        scaled = Decimal(text).scaleb(decimals(currency))
    except InvalidOperation:
        raise ValueError(f"not an amount: {text[:40]!r}") from None
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{text!r} has more decimals than {currency.upper()} has")
    return int(scaled)
