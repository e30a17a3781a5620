"""A local Stripe API emulator for tests and benchmarks (not shipped in the wheel).

    from tests.emulator import Emulator

    with Emulator(objects=200, seed=7) as emu:
        requests.get(f"{emu.url}/v1/charges", headers={"Authorization": f"Bearer {emu.api_key}"})

See `server.py` (HTTP behaviour, faults, rate limits), `store.py` (data, mutations,
events), `generate.py` (deterministic Stripe-shaped objects, API version 2024-06-20) and
`billing.py` (the streams beyond charges, customers, invoices and subscriptions). Objects are
kept in the 2024-06-20 shape (`emu.objects()` returns that); a request with
`Stripe-Version: 2026-10-28.endive`, and events of that version, get them in that version's
shape (`versions.py`).
Every stream of the tap is served; `emu.update(stream, id, changes)`, `emu.create(stream,
...)` and `emu.delete(stream, id)` work for any of them, with the events Stripe sends.
Run it as a separate process with `python -m tests.emulator --port 12111`.
"""

from tests.emulator.generate import API_VERSION, DEFAULT_CLOCK
from tests.emulator.server import DEFAULT_KEY, Emulator, RequestRecord
from tests.emulator.store import EVENT_RETENTION, STREAMS, ApiError, Store

__all__ = [
    "API_VERSION",
    "DEFAULT_CLOCK",
    "DEFAULT_KEY",
    "EVENT_RETENTION",
    "STREAMS",
    "ApiError",
    "Emulator",
    "RequestRecord",
    "Store",
]
