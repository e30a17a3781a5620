"""1 tap process for every account vs 2 shard processes at once (issue 14), CPU-bound.

    .venv/bin/python benchmarks/shards.py               # 100 accounts x 80 objects, 3 rounds
    .venv/bin/python benchmarks/shards.py --accounts 40 --objects 200 --rounds 5

The workload: a Connect platform (the emulator, `--accounts` connected accounts, every
default stream), no latency and no rate limits, the tap told its budgets are 1,000,000
requests/s (as scenario A of benchmarks/throughput.py): each run is bound by CPU. Measured,
side by side in alternating rounds after a warm-up run:

- one: `account_ids: ["*"]`, one process syncing every account;
- shards: `account_shard: "1/2"` and `"2/2"`, two processes started together.

Aggregate throughput = records of the phase (RECORD lines written, both processes' for
`shards`) / wall time from the start to the end of the last process.

The emulator shares the 2 cores. So that it is not what is measured, the tap talks to a
page cache in front of it (this file, `--serve`): responses are rendered once by the
emulator (the warm-up run) and replayed as bytes; the emulator's clock is frozen so the
tap asks for the same pages every run. A request the cache has not seen (`misses`) goes to
the emulator. Printed per phase: the tap processes' CPU time (user + system, from
`os.wait4`) and the cache process's, so the share of the machine the tap had is visible.
It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
#: The tap's own budgets, as in scenario A: the emulator enforces none.
UNLIMITED = 1_000_000
#: Headers a replayed response carries besides Content-Length and Date.
KEPT_HEADERS = ("Content-Type", "Request-Id", "Stripe-Version", "Stripe-Should-Retry")
TICKS = os.sysconf("SC_CLK_TCK")
#: The emulated platform's own account id (tests/emulator/connect.py).
PLATFORM = "acct_platform0emulator"


# -- the page cache (its own process) ------------------------------------------------------


def serve(accounts: int, objects: int) -> int:
    """The emulated platform with a cache of its responses in front; runs until SIGTERM.

    The cache is a bare asyncio server that answers a page it has seen with its stored
    bytes (status line and headers included): it takes a small share of the 2 cores the
    tap processes need, so the figures measure the tap, not the replay.
    """
    import asyncio
    import email.utils

    import requests

    sys.path.insert(0, str(ROOT))
    from tests.emulator.connect import ConnectPlatform

    platform = ConnectPlatform(accounts=accounts, objects=objects, freeze_clock=True).start()
    date = email.utils.formatdate(platform.clock(), usegmt=True)
    pages: dict[tuple, bytes] = {}
    counts = {"hits": 0, "misses": 0}
    session = requests.Session()
    keyed = (b"stripe-account", b"authorization", b"stripe-version")

    def fetch(path: str, headers: dict[str, str]) -> tuple[bytes, bool]:
        """One answer of the emulator, rendered as the bytes of a whole response."""
        got = session.get(platform.url + path, headers=headers, timeout=60)
        head = [f"HTTP/1.1 {got.status_code} {got.reason}"]
        head += [f"{k}: {got.headers[k]}" for k in KEPT_HEADERS if k in got.headers]
        head += [f"Date: {date}", f"Content-Length: {len(got.content)}", "", ""]
        return "\r\n".join(head).encode() + got.content, got.status_code == 200

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                lines = request.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                key = (path, *(headers.get(name) for name in keyed))
                page = pages.get(key)
                if page is None:
                    counts["misses"] += 1
                    sent = {k.decode(): v.decode() for k, v in headers.items() if k != b"host"}
                    page, ok = await loop.run_in_executor(None, fetch, path.decode(), sent)
                    if ok:
                        pages[key] = page
                else:
                    counts["hits"] += 1
                writer.write(page)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGUSR1, lambda: print(json.dumps(counts), flush=True))
        print(f"listening on http://{host}:{port} key {platform.platform_key}", flush=True)
        async with server:
            await stopping.wait()

    asyncio.run(main())
    platform.stop()
    return 0


# -- the measurement -----------------------------------------------------------------------


class Cache:
    """The `--serve` process, and what it says about hits and misses."""

    def __init__(self, accounts: int, objects: int) -> None:
        argv = [PYTHON, __file__, "--serve", "--accounts", str(accounts),
                "--objects", str(objects)]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"listening on (\S+) key (\S+)", line)
        if not found:
            self.proc.kill()
            raise SystemExit(f"the emulator did not start: {line!r}")
        self.url, self.key = found.groups()

    def counts(self) -> dict[str, int]:
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        return json.loads(self.proc.stdout.readline())

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def start_tap(cache: Cache, workdir: Path, name: str, shard: str | None) -> tuple:
    config = {
        "api_key": cache.key,
        "api_url": cache.url,
        "account_ids": ["*"],
        "max_requests_per_second": UNLIMITED,
        "max_requests_per_second_per_endpoint": UNLIMITED,
        "progress_interval_seconds": 0,
        **({"account_shard": shard} if shard else {}),
    }
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config))
    out = (workdir / f"{name}.out").open("wb")
    err = (workdir / f"{name}.err").open("wb")
    # Output to files: reading it here would take CPU from the tap.
    proc = subprocess.Popen(
        [PYTHON, "-m", "tap_stripe_connect", "--config", str(path)],
        cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return proc, out, err


def records_in(path: Path) -> tuple[int, set[str]]:
    count = 0
    accounts: set[str] = set()
    with path.open("rb") as lines:
        for line in lines:
            if line.startswith(b'{"type":"RECORD"'):
                count += 1
                record = json.loads(line)["record"]
                # `accounts` records are the platform's (account_id): the account is the id.
                owner = record.get("account_id")
                accounts.add(record["id"] if owner == PLATFORM else owner)
    return count, accounts


def phase(cache: Cache, workdir: Path, shards: list[str | None]) -> dict:
    """Processes started together (one per shard; None: every account), until the last ends."""
    before_hits = cache.counts()
    cache_cpu = cache.cpu()
    started = time.monotonic()
    running = [
        (start_tap(cache, workdir, f"run{i}", shard), shard) for i, shard in enumerate(shards)
    ]
    cpu: list[float] = []
    failed = []
    for (proc, out, err), shard in running:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.close()
        err.close()
        cpu.append(usage.ru_utime + usage.ru_stime)
        if proc.returncode != 0:
            failed.append(f"{shard or 'all'}: exit {proc.returncode}")
    wall = time.monotonic() - started
    after = cache.counts()
    records = 0
    per_process = []
    for i in range(len(shards)):
        count, accounts = records_in(workdir / f"run{i}.out")
        records += count
        per_process.append(accounts)
    if failed:
        tail = (workdir / "run0.err").read_text()[-2000:]
        raise SystemExit(f"a tap run failed ({', '.join(failed)}):\n{tail}")
    return {
        "wall": wall,
        "records": records,
        "rate": records / wall,
        "tap_cpu": sum(cpu),
        "cpu_per_process": cpu,
        "load": os.getloadavg()[0],
        "cache_cpu": cache.cpu() - cache_cpu,
        "misses": after["misses"] - before_hits["misses"],
        "requests": after["hits"] + after["misses"] - before_hits["hits"] - before_hits["misses"],
        "accounts": per_process,
    }


def show(name: str, result: dict) -> str:
    machine = 2 * result["wall"]
    return (
        f"  {name:<22} records {result['records']:>8,}  wall {result['wall']:6.2f}s  "
        f"{result['rate']:>8,.0f} records/s  tap CPU {result['tap_cpu']:6.2f}s "
        f"({result['tap_cpu'] / machine:4.0%} of 2 cores)  cache CPU {result['cache_cpu']:5.2f}s "
        f"({result['cache_cpu'] / machine:4.0%})  requests {result['requests']:,} "
        f"(misses {result['misses']})  load {result['load']:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # 100 accounts split 51/49 between 2 shards (40 split 19/21: at most 1.9x).
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--objects", type=int, default=80, help="objects per core stream")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (one, shards)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.accounts, args.objects)
    cache = Cache(args.accounts, args.objects)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            warm = phase(cache, workdir, [None])
            print(
                f"shards: {args.accounts} accounts x {args.objects} objects per core stream, "
                f"default streams, no latency or limits, {os.cpu_count()} CPUs"
            )
            print(show("warm-up (fills cache)", warm))
            ones, twos = [], []
            for round_ in range(1, args.rounds + 1):
                ones.append(phase(cache, workdir, [None]))
                print(show(f"round {round_}: 1 process", ones[-1]))
                twos.append(phase(cache, workdir, ["1/2", "2/2"]))
                print(show(f"round {round_}: 2 shards", twos[-1]))
    finally:
        cache.stop()
    one = statistics.median(r["rate"] for r in ones)
    two = statistics.median(r["rate"] for r in twos)
    last = twos[-1]["accounts"]
    disjoint = not (last[0] & last[1])
    complete = sorted(last[0] | last[1]) == sorted(ones[-1]["accounts"][0])
    same = all(r["records"] == ones[0]["records"] for r in ones + twos)
    # Each round's two phases ran back to back: their ratio is the least disturbed by
    # other load on a shared machine.
    paired = [b["rate"] / a["rate"] for a, b in zip(ones, twos, strict=True)]
    print(
        f"  median aggregate throughput: 1 process {one:,.0f} records/s, 2 shard processes "
        f"{two:,.0f} records/s: {two / one:.2f}x (target >= 1.7x); per round "
        f"{', '.join(f'{r:.2f}x' for r in paired)}, median {statistics.median(paired):.2f}x"
    )
    # Without other load, a CPU-bound process ends when its CPU time is spent, one core
    # each: 1 process takes its CPU time, 2 shards the larger of theirs.
    projected = statistics.median(
        one_run["tap_cpu"] / max(two_run["cpu_per_process"])
        for one_run, two_run in zip(ones, twos, strict=True)
    )
    print(
        f"  from CPU time alone (each process on a core of its own, nothing else running): "
        f"{projected:.2f}x"
    )
    print(
        f"  shards disjoint: {disjoint}, together every account: {complete} "
        f"({len(last[0])} + {len(last[1])}), same records every run: {same}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
