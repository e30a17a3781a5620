"""`python -m tests.emulator`: serve the Stripe emulator until SIGINT/SIGTERM.

    python -m tests.emulator --port 12111 --objects 500
    python -m tests.emulator --connect --write-config emulator-connect.json

`--connect` plays connect.stripe.com (consent page, token exchange), a Stripe App's OAuth
install link and token endpoint (`oauth_flow: stripe_app`) and api.stripe.com for
a Connect platform with `--accounts` connected accounts, and writes the settings
`tap-stripe-connect connect` and the tap need to use it. Every account is answered inside
the platform's server (thousands of accounts); `POST /_emulator/accounts?count=N` connects
N more while it runs, `POST /_emulator/advance?seconds=S` moves every account's clock on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from tests.emulator.connect import ConnectPlatform
from tests.emulator.generate import DEFAULT_CLOCK
from tests.emulator.server import Emulator


def _pair(text: str) -> tuple[float, float]:
    mean, _, jitter = text.partition(",")
    return float(mean), float(jitter or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator",
                                     description="Local Stripe API v1 emulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111, help="0 picks a free port")
    parser.add_argument("--objects", type=int, default=50, help="objects per core stream")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clock", type=int, default=DEFAULT_CLOCK,
                        help="start time, Unix seconds (default 2026-01-01T00:00:00Z)")
    parser.add_argument("--freeze-clock", action="store_true",
                        help="do not let the emulator clock follow wall time")
    parser.add_argument("--latency", type=_pair, default=(0.0, 0.0), metavar="MEAN,JITTER",
                        help="per-response latency in ms, e.g. 100,30")
    parser.add_argument("--rate-limit", type=float, default=None,
                        help="requests/s per key and account")
    parser.add_argument("--endpoint-rate-limit", type=float, default=None,
                        help="requests/s per key, account and endpoint")
    parser.add_argument("--fail-rate", type=float, default=0.0,
                        help="probability of a random 500/503")
    parser.add_argument("--varied-pricing", action="store_true",
                        help="weekly and quarterly prices and discounted invoice lines too")
    parser.add_argument("--billing-schedule", action="store_true",
                        help="varied pricing with daily prices too, every period of every "
                             "subscription billed (trials, coupons, mid-period changes with "
                             "prorations, cancellations) after a recorded schedule")
    parser.add_argument("--api-key", action="append", default=None,
                        help="accepted secret key with full access (repeatable)")
    parser.add_argument("--connect", action="store_true",
                        help="play Stripe Connect: connect.stripe.com's consent page and token "
                             "exchange, and api.stripe.com for the connected accounts")
    parser.add_argument("--accounts", type=int, default=2,
                        help="with --connect: connected accounts to offer")
    parser.add_argument("--write-config", metavar="PATH",
                        help="with --connect: write the tap's settings for this emulator here")
    parser.add_argument("--warm", action="store_true",
                        help="render every object's JSON before serving (for benchmarks)")
    args = parser.parse_args(argv)
    if args.connect:
        return serve_connect(args)
    if args.write_config:
        parser.error("--write-config needs --connect")

    emulator = Emulator(
        objects=args.objects, seed=args.seed, clock=args.clock, freeze_clock=args.freeze_clock,
        latency=args.latency, rate_limit=args.rate_limit,
        endpoint_rate_limit=args.endpoint_rate_limit, fail_rate=args.fail_rate,
        api_keys=dict.fromkeys(args.api_key) if args.api_key else None,
        varied_pricing="schedule" if args.billing_schedule else args.varied_pricing,
        host=args.host, port=args.port,
    )
    stopping = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if args.warm:
        emulator.store.warm()
    emulator.start()
    print(f"Stripe emulator listening on {emulator.url} (key {emulator.api_key})", flush=True)
    try:
        while not stopping.wait(0.2):
            pass
    finally:
        started = time.monotonic()
        emulator.stop()
        print(f"Stripe emulator stopped ({emulator.request_count()} requests, "
              f"{time.monotonic() - started:.2f}s to stop)", file=sys.stderr, flush=True)
    return 0


def serve_connect(args: argparse.Namespace) -> int:
    platform = ConnectPlatform(
        accounts=args.accounts, objects=args.objects, seed=args.seed,
        consent_page=True, host=args.host, port=args.port,
        latency=args.latency, rate_limit=args.rate_limit,
        endpoint_rate_limit=args.endpoint_rate_limit,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    if args.warm:
        for emulator in platform.accounts.values():
            emulator.store.warm()
    platform.start()
    print(f"Stripe Connect emulator listening on {platform.url} (connect.stripe.com and "
          f"api.stripe.com; platform client_id {platform.client_id}, "
          f"{len(platform.account_ids)} connected accounts; Stripe App client_id "
          f"{platform.app_client_id}, secret key {platform.app_secret_key})", flush=True)
    if args.write_config:
        settings = {
            "client_id": platform.client_id,
            "client_secret": platform.platform_key,
            "oauth_url": platform.url,
            "api_url": platform.url,
        }
        fd = os.open(args.write_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(settings, out, indent=2)
        print(f"Settings for tap-stripe-connect written to {args.write_config}: next, in "
              f"another terminal: .venv/bin/tap-stripe-connect connect --config "
              f"{args.write_config}", flush=True)
    try:
        while not stopping.wait(0.2):
            pass
    finally:
        platform.stop()
        print("Stripe Connect emulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
