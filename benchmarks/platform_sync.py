"""A platform's full sync of many connected accounts (issue 14), against the local emulator.

    .venv/bin/python benchmarks/platform_sync.py                      # 100 accounts x 100 objects
    .venv/bin/python benchmarks/platform_sync.py --accounts 40 --objects 50
    .venv/bin/python benchmarks/platform_sync.py --a-rate 9000        # skip measuring scenario A
    .venv/bin/python benchmarks/platform_sync.py --tap-checkout ../main   # another checkout's tap
    .venv/bin/python benchmarks/platform_sync.py --profile tap.txt    # py-spy, raw, GIL samples

The emulator plays a Connect platform (`python -m tests.emulator --connect`) whose every
connected account answers with 100+-30 ms of latency (`--latency`) and its own limits
(25 requests/s, and 25 per endpoint). The tap syncs `account_ids: ["*"]` with its default
streams and settings into a sink that counts RECORD lines per stream. Printed: the wall time of the
sync beside the ideal `max(requests x latency / max_workers, records / A-rate)` (A-rate:
objects/s of benchmarks/throughput.py's scenario A, run just before and just after the
platform sync, side by side, their mean; or `--a-rate`),
and whether every account's objects came once with its `account_id`; the STATE it wrote
(bytes, messages, the largest one) for every run; the CPU seconds of
the tap, the emulator and this script's sink (all three share the machine's cores). Then
incremental runs, each from the last one's STATE: one at once (it reads again what changed
within `event_lag_seconds` of the full sync's start), one after the emulator's clock moved
on ten minutes with nothing changed (again the lag of the last start), then two with
nothing changed since: default settings, and `quiet_account_interval_seconds: 0`. Printed:
their requests per account (target: at most 2 plus one per page of changed data) and the
records they wrote. It asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import requests

from tap_stripe_connect.settings import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CORE = ("charges", "customers", "invoices", "subscriptions")
LATER = 600  # seconds of emulated time before the no-change runs


class _Record(msgspec.Struct):
    id: str | None = None
    account_id: str | None = None


class _Message(msgspec.Struct):
    stream: str
    record: _Record


RECORD = msgspec.json.Decoder(_Message)


def start_platform(accounts: int, objects: int, latency: int) -> tuple[subprocess.Popen, str]:
    argv = [
        PYTHON, "-m", "tests.emulator", "--connect", "--port", "0",
        "--accounts", str(accounts), "--objects", str(objects),
        "--latency", f"{latency},{latency * 3 // 10}",
        "--rate-limit", "25", "--endpoint-rate-limit", "25",
        "--warm",  # every object's JSON rendered before the run, as scenario A warms its own
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"listening on (\S+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return proc, found.group(1)


def run_tap(
    url: str,
    workdir: Path,
    max_workers: int | None,
    profile: Path | None = None,
    checkout: Path = ROOT,
    *,
    state: str | None = None,
    settings: dict | None = None,
) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.emulator.connect import PLATFORM_KEY

    config = workdir / "config.json"
    config.write_text(
        json.dumps(
            {
                "api_key": PLATFORM_KEY,
                "api_url": url,
                "account_ids": ["*"],
                **({"max_workers": max_workers} if max_workers else {}),
                "progress_interval_seconds": 0,
                **(settings or {}),
            }
        )
    )
    log = (workdir / "stderr.log").open("w+b")
    started = time.monotonic()
    sink_before = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    python = PYTHON if checkout == ROOT else str(checkout / ".venv" / "bin" / "python")
    argv = [python, "-m", "tap_stripe_connect", "--config", str(config)]
    if state is not None:
        (workdir / "state.json").write_text(state)
        argv += ["--state", str(workdir / "state.json")]
    if profile is not None:
        spy = Path(PYTHON).with_name("py-spy")
        argv = [str(spy), "record", "--format", "raw", "--rate", "100", "--gil", "--nonblocking",
                "--output", str(profile), "--", *argv]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=log,  # a file: a pipe read only at the end would fill up and stop the tap
    )
    records: collections.Counter[str] = collections.Counter()
    owners: dict[str, set[str]] = collections.defaultdict(set)
    seen: dict[str, set[tuple[str | None, str | None]]] = collections.defaultdict(set)
    last_state = None
    state_bytes = state_messages = state_largest = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(b'{"type":"STATE"'):
            last_state = line
            state_messages += 1
            state_bytes += len(line)
            state_largest = max(state_largest, len(line))
        elif line.startswith(b'{"type":"RECORD"'):
            # msgspec reads only the fields counted: the sink's own CPU (json.loads of
            # every record, ~10 s for 160,000) competed with the tap for the 2 cores.
            try:
                message = RECORD.decode(line)
            except msgspec.DecodeError as error:
                proc.kill()
                raise SystemExit(
                    f"the tap wrote a malformed RECORD line ({error}): {line[:1000]!r}"
                ) from None
            records[message.stream] += 1
            owners[message.stream].add(message.record.account_id)
            if message.stream in CORE:
                seen[message.stream].add((message.record.account_id, message.record.id))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    log.seek(0)
    stderr = log.read().decode(errors="replace")
    log.close()
    total = re.search(r"^total\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)", stderr, re.M)
    return {
        "seen": seen,
        "sink_cpu": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - sink_before,
        "returncode": proc.returncode,
        "cpu": usage.ru_utime + usage.ru_stime,
        "sys": usage.ru_stime,
        "switches": usage.ru_nvcsw,  # voluntary: a thread waited (a socket, a lock, the GIL)
        "rss_mb": usage.ru_maxrss / 1024,  # kB on Linux
        "wall": wall,
        "records": records,
        "owners": owners,
        "requests": int(total.group(3).replace(",", "")) if total else None,
        "stderr": stderr[-2000:],
        "state": json.dumps(json.loads(last_state)["value"]) if last_state else None,
        "state_bytes": state_bytes,
        "state_messages": state_messages,
        "state_largest": state_largest,
    }


def scenario_a(workdir: Path) -> float:
    """Objects/s of benchmarks/throughput.py's scenario A (CPU-bound, one account) now."""
    sys.path.insert(0, str(Path(__file__).parent))
    import throughput

    (run,) = throughput.run_scenario(
        "A", argparse.Namespace(objects=5000, seed=7, profile=None, timeline=None), workdir
    )
    return run.rate


def process_cpu(pid: int) -> float:
    """User + system seconds a running process has used (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--objects", type=int, default=100, help="objects per core stream")
    parser.add_argument("--latency", type=int, default=100, help="ms per response (+-30%%)")
    parser.add_argument(
        "--max-workers", type=int, help="the tap's setting (default: the tap's own default)"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="the full sync and one no-change run only (10,000 accounts: the rest takes long)",
    )  # fmt: skip
    parser.add_argument(
        "--a-rate", type=float, help="objects/s of scenario A (default: measured around the run)"
    )
    parser.add_argument("--verbose", action="store_true", help="print the tap's summary")
    parser.add_argument(
        "--tap-checkout",
        type=Path,
        default=ROOT,
        help="run the tap of another checkout (with its .venv) against this emulator",
    )
    parser.add_argument(
        "--profile", type=Path, help="record the tap with py-spy (raw, GIL samples) into this file"
    )
    args = parser.parse_args()
    latency = args.latency / 1000
    emulator, url = start_platform(args.accounts, args.objects, args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            before = process_cpu(emulator.pid)  # generating (and warming) its data
            checkout = args.tap_checkout.resolve()
            a_rates = [] if args.a_rate else [scenario_a(Path(tmp))]
            result = run_tap(url, Path(tmp), args.max_workers, args.profile, checkout)
            a_rates += [] if args.a_rate else [scenario_a(Path(tmp))]
            emulator_cpu = process_cpu(emulator.pid) - before
            incremental = functools.partial(
                run_tap, url, Path(tmp), args.max_workers, None, checkout
            )
            if args.quick:
                # Past the lag of the full sync's start, so that nothing is read again.
                requests.post(f"{url}/_emulator/advance?seconds={LATER}", timeout=30)
                quick = incremental(state=result["state"])
                requests.post(f"{url}/_emulator/advance?seconds={LATER}", timeout=30)
                quiet = {"default settings": incremental(state=quick["state"])}
                again = later = None
            else:
                again = incremental(state=result["state"])
                # Ten minutes pass (beyond the lag) and nothing changes: the first run then reads
                # again what changed within the lag of the last one's start, the next nothing.
                requests.post(f"{url}/_emulator/advance?seconds={LATER}", timeout=30)
                later = incremental(state=again["state"])
                quiet = {
                    name: incremental(state=later["state"], settings=settings)
                    for name, settings in (
                        ("default settings", None),
                        ("quiet_account_interval_seconds 0", {"quiet_account_interval_seconds": 0}),
                    )
                }
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
    if result["returncode"] != 0:
        print(result["stderr"])
        return 1
    records = sum(result["records"].values())
    sent = result["requests"] or 0
    a_rate = args.a_rate or sum(a_rates) / len(a_rates)
    # The most requests in flight: the setting, or the default of a platform run.
    workers = args.max_workers or DEFAULTS["max_workers_platform"]
    ideal = max(sent * latency / workers, records / a_rate)
    exact = all(
        result["records"][s] == args.accounts * args.objects
        and len(result["seen"][s]) == args.accounts * args.objects  # no object twice
        and len(result["owners"][s]) == args.accounts
        and None not in result["owners"][s]
        for s in CORE
    )
    print(
        f"platform: {args.accounts} accounts x {args.objects} objects per core stream, "
        f"{args.latency}+-{args.latency * 3 // 10} ms, 25 requests/s per account and per endpoint, "
        f"max_workers {args.max_workers or 'default'}"
    )
    print(f"  records {records:,}  requests {sent:,}  ({sent / args.accounts:.1f} per account)")
    measured = f" (before {a_rates[0]:,.0f}, after {a_rates[1]:,.0f})" if a_rates else " (given)"
    print(
        f"  ideal: max({sent:,} x {latency}s / {workers} workers, "
        f"{records:,} / A-rate {a_rate:,.0f}{measured})"
    )
    print(
        f"  wall {result['wall']:.1f}s  ideal {ideal:.1f}s  ratio {result['wall'] / ideal:.2f}x  "
        f"(CPU: tap {result['cpu']:.1f}s of which system {result['sys']:.1f}s, "
        f"emulator {emulator_cpu:.1f}s, "
        f"sink {result['sink_cpu']:.1f}s)  peak RSS {result['rss_mb']:.0f} MB  "
        f"tap CPU per record {result['cpu'] / max(records, 1) * 1e6:.0f} us, "
        f"{result['switches'] / max(sent, 1):.1f} voluntary switches per request"
    )
    if "--verbose" in sys.argv[1:]:
        print(result["stderr"])
    print(f"  core streams exact (every account's objects once, account_id on each): {exact}")

    def state_line(run: dict) -> str:
        return (
            f"STATE {run['state_bytes'] / 1e6:.2f} MB in {run['state_messages']} messages, "
            f"largest {run['state_largest'] / 1e6:.3f} MB"
        )

    print(f"  {state_line(result)}")

    # The run's own requests (its account, the account list) are counted with the accounts'.
    def show(name: str, run: dict) -> None:
        count = run["requests"] or 0
        print(
            f"  {name}: requests {count:,} ({count / args.accounts:.2f} per account), "
            f"records written {sum(run['records'].values()):,} "
            f"{dict(run['records'].most_common())}, wall {run['wall']:.1f}s, {state_line(run)}, "
            f"peak RSS {run['rss_mb']:.0f} MB"
        )

    print("incremental runs (target: at most 2 requests per account plus one per page of changes)")
    if again is not None and later is not None:
        show("at once after the full sync", again)
        show(f"{LATER // 60} minutes later", later)
    else:
        show(f"{LATER // 60} minutes after the full sync", quick)
    for name, run in quiet.items():
        show(f"right after that, nothing changed, {name}", run)
    print(
        "  (per account: the events; balance_transactions and the Checkout Sessions created "
        "since only when the account has events since, or its last listing is "
        "quiet_account_interval_seconds old; plus the run's own account and account-list pages)"
    )
    runs = [run for run in (again, later) if run] + list(quiet.values())
    return 0 if all(run["returncode"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
