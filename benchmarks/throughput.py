"""Throughput of a full sync against the local Stripe emulator (issue 7).

    .venv/bin/python benchmarks/throughput.py                  # A, B, C, R1, R2
    .venv/bin/python benchmarks/throughput.py --scenarios A,B  # a subset
    .venv/bin/python benchmarks/throughput.py --memory         # peak RSS, 5,000 vs 100,000
    .venv/bin/python benchmarks/throughput.py --profile A      # py-spy profile of the tap
    .venv/bin/python benchmarks/throughput.py --scenarios C --timeline C  # requests over time

Each scenario starts the emulator (`python -m tests.emulator`) in its own process, warms
its JSON cache, then runs the tap's CLI for the four core streams (children deselected)
into a sink that counts RECORD lines. Scenarios:

- A: no latency, no limits; the tap's own limits set very high: bound by CPU.
- B: 100+-30 ms latency, 25 requests/s globally and per endpoint, test key.
- C: 250+-50 ms latency, 100 requests/s globally, 25 per endpoint, live key; the tap's
  `max_requests_per_second` set to the account's 100. C90: the same at the tap's default
  for live keys (90/s, which leaves room for the account's other clients).
- R1: a bare extraction loop (one thread per stream: requests, json, one JSON line per
  object to /dev/null; no limiter), in A's conditions: the machine's practical limit.
- R2: this tap with `max_workers: 1`, in A's conditions.

objects/s is measured from the first line the process writes (the tap: its first SCHEMA
message, after start-up) to its exit; "wall" includes interpreter start-up. Peak RSS is
the tap process's own `ru_maxrss` (from `os.wait4`). The script prints figures; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CORE = ("charges", "customers", "invoices", "subscriptions")
TEST_KEY = "sk_test_emulator"
LIVE_KEY = "sk_live_benchmark0000000000"
HIGH = 1_000_000  # "no limit" for the tap's own limiter
RECORD = b'{"type":"RECORD"'


@dataclass
class Scenario:
    name: str
    latency: tuple[float, float] = (0.0, 0.0)
    rate: float | None = None
    endpoint_rate: float | None = None
    key: str = TEST_KEY
    tap_config: dict = field(default_factory=dict)

    @property
    def ceiling(self) -> float | None:
        """Objects/s the emulator's limits allow (100 objects per request)."""
        rates = [r for r in (self.rate, self.endpoint_rate and self.endpoint_rate * len(CORE)) if r]
        return min(rates) * 100 if rates else None


UNLIMITED = {"max_requests_per_second": HIGH, "max_requests_per_second_per_endpoint": HIGH}
SCENARIOS = {
    "A": Scenario("A", tap_config=UNLIMITED),
    "B": Scenario("B", latency=(100, 30), rate=25, endpoint_rate=25),
    # The tap is told the account's budget, as A is told there is none. Its default for
    # live keys is 90/s (room for the account's other clients): "C90" runs with that.
    "C": Scenario(
        "C",
        latency=(250, 50),
        rate=100,
        endpoint_rate=25,
        key=LIVE_KEY,
        tap_config={"max_requests_per_second": 100},
    ),
    "C90": Scenario("C90", latency=(250, 50), rate=100, endpoint_rate=25, key=LIVE_KEY),
}


# -- the emulator -------------------------------------------------------------------------


class EmulatorProcess:
    """`python -m tests.emulator` in its own process, controlled over HTTP."""

    def __init__(self, objects: int, seed: int, scenario: Scenario) -> None:
        argv = [
            PYTHON,
            "-m",
            "tests.emulator",
            "--port",
            "0",
            "--objects",
            str(objects),
            "--seed",
            str(seed),
            "--api-key",
            TEST_KEY,
            "--api-key",
            LIVE_KEY,
        ]
        mean, jitter = scenario.latency
        if mean or jitter:
            argv += ["--latency", f"{mean:g},{jitter:g}"]
        if scenario.rate:
            argv += ["--rate-limit", f"{scenario.rate:g}"]
        if scenario.endpoint_rate:
            argv += ["--endpoint-rate-limit", f"{scenario.endpoint_rate:g}"]
        self.scenario = scenario
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = match.group(1)

    def control(self, action: str, body: dict | None = None) -> object:
        method = "POST" if body is not None else "GET"
        data = json.dumps(body).encode() if body is not None else None
        # The emulator's own http:// URL, read from its first line of output.
        url = f"{self.url}/_emulator/{action}"
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            return json.loads(response.read())["result"]

    def warm(self) -> None:
        """Serve every page once, so that the emulator's JSON cache is as warm for the
        first run as for the last; then restore the scenario's latency and limits."""
        self.control("set_latency", {"mean_ms": 0, "jitter_ms": 0})
        self.control("set_rate_limit", {"global_rps": None, "endpoint_rps": None})
        bare_loop(self.url, TEST_KEY, os.devnull)
        mean, jitter = self.scenario.latency
        self.control("set_latency", {"mean_ms": mean, "jitter_ms": jitter})
        self.control(
            "set_rate_limit",
            {"global_rps": self.scenario.rate, "endpoint_rps": self.scenario.endpoint_rate},
        )
        self.control("clear_requests", {})

    def cpu(self) -> float:
        """User + system seconds the emulator process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- R1: the bare extraction loop ----------------------------------------------------------


def bare_loop(url: str, key: str, out_path: str) -> int:
    """One thread per stream: page the list, parse, write one JSON line per object."""
    import requests  # here, so that the benchmark's own start-up stays light

    counts: collections.Counter[str] = collections.Counter()
    out = open(out_path, "w")  # noqa: SIM115 (shared by the threads, closed below)
    lock = threading.Lock()

    def read(stream: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        params: dict = {"limit": 100}
        if stream == "subscriptions":
            params["status"] = "all"
        while True:
            response = session.get(f"{url}/v1/{stream}", params=params, timeout=60)
            response.raise_for_status()
            body = json.loads(response.content)
            lines = "".join(json.dumps(obj) + "\n" for obj in body["data"])
            with lock:
                out.write(lines)
            counts[stream] += len(body["data"])
            if not body["has_more"] or not body["data"]:
                return
            params["starting_after"] = body["data"][-1]["id"]

    threads = [threading.Thread(target=read, args=(s,)) for s in CORE]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.close()
    return sum(counts.values())


# -- running a process and measuring it ----------------------------------------------------


@dataclass
class Run:
    label: str
    records: int
    seconds: float  # first output line to exit
    wall: float  # process start to exit
    peak_rss_mb: float
    returncode: int
    cpu: float = 0.0  # user + system seconds of the measured process
    emulator_cpu: float = 0.0  # the same for the emulator, over the run
    requests: int = 0
    failed: int = 0
    throttled: int = 0
    max_global_1s: int = 0
    max_endpoint_1s: int = 0
    ceiling: float | None = None
    stderr_tail: str = ""
    first_output: float = 0.0  # time.time() of the first output line (the timeline's 0)

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def measure(label: str, argv: list[str], env: dict | None = None) -> Run:
    """Run `argv`; count RECORD lines on its stdout; time it; take its peak RSS."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL, env=env
        )
        first: list[float] = []
        first_wall: list[float] = []
        count = 0
        last = b""
        stream = proc.stdout
        assert stream is not None
        while chunk := stream.read1(1 << 20):
            if not first:
                first.append(time.monotonic())
                first_wall.append(time.time())
            # A RECORD marker may straddle two chunks: count on the joined edge too.
            joined = last + chunk
            count += joined.count(RECORD) - last.count(RECORD)
            last = joined[-(len(RECORD) - 1) :]
        _, status, usage = os.wait4(proc.pid, 0)
        ended = time.monotonic()
        proc.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        tail = errors.read()[-3000:].decode("utf-8", "replace")
    if label.startswith("R1"):  # the bare loop prints its own count
        count = int(tail.strip().splitlines()[-1]) if proc.returncode == 0 else 0
    return Run(
        label,
        count,
        ended - (first[0] if first else started),
        ended - started,
        usage.ru_maxrss / 1024,
        proc.returncode,
        usage.ru_utime + usage.ru_stime,
        stderr_tail=tail,
        first_output=first_wall[0] if first_wall else 0.0,
    )


def request_stats(emu: EmulatorProcess, run: Run) -> None:
    """Requests, failures, 429s and the most requests seen in any one-second window."""
    records = emu.control("requests")
    assert isinstance(records, list)
    run.requests = len(records)
    run.failed = sum(1 for r in records if r["status"] >= 400)
    run.throttled = sum(1 for r in records if r["status"] == 429)
    served = [r for r in records if r["status"] != 429]  # what counted against the limits
    run.max_global_1s = max_in_window([r["time"] for r in served])
    from tap_stripe_connect.api.limiter import endpoint_of

    by_endpoint: dict[str, list[float]] = collections.defaultdict(list)
    for r in served:
        by_endpoint[endpoint_of(r["method"], r["path"])].append(r["time"])
    run.max_endpoint_1s = max((max_in_window(ts) for ts in by_endpoint.values()), default=0)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most timestamps in any half-open window of `window` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- the tap ------------------------------------------------------------------------------


def catalog_for(workdir: Path, config_path: Path) -> Path:
    """Discover, then select the four core streams and deselect every other stream."""
    found = subprocess.run(
        [PYTHON, "-m", "tap_stripe_connect", "--config", str(config_path), "--discover"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    catalog = json.loads(found.stdout)
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = entry["tap_stream_id"] in CORE
    path = workdir / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def tap_argv(
    workdir: Path, emu: EmulatorProcess, extra: dict, name: str, profile: Path | None = None
) -> list[str]:
    config = {"api_key": emu.scenario.key, "api_url": emu.url, **emu.scenario.tap_config, **extra}
    config_path = workdir / f"config-{name}.json"
    config_path.write_text(json.dumps(config))
    catalog = workdir / "catalog.json"
    if not catalog.exists():
        catalog_for(workdir, config_path)
    argv = [
        PYTHON,
        "-m",
        "tap_stripe_connect",
        "--config",
        str(config_path),
        "--catalog",
        str(catalog),
    ]
    if profile is not None:
        spy = Path(PYTHON).with_name("py-spy")
        argv = [
            str(spy),
            "record",
            "--format",
            "raw",
            "--rate",
            "250",
            "--gil",
            "--nonblocking",
            "--output",
            str(profile),
            "--",
            *argv,
        ]
    return argv


def run_scenario(name: str, args: argparse.Namespace, workdir: Path) -> list[Run]:
    scenario = SCENARIOS["A" if name in ("R1", "R2") else name]
    runs = []
    with EmulatorProcess(args.objects, args.seed, scenario) as emu:
        emu.warm()
        emulator_cpu = emu.cpu()
        if name == "R1":
            argv = [PYTHON, __file__, "--bare-loop", emu.url, scenario.key]
            run = measure("R1 bare loop", argv)
        else:
            extra = {"max_workers": 1} if name == "R2" else {}
            label = "R2 max_workers=1" if name == "R2" else name
            profile = workdir / f"profile-{name}.txt" if name == args.profile else None
            run = measure(label, tap_argv(workdir, emu, extra, name, profile))
            if profile is not None:
                print_profile(profile)
        run.emulator_cpu = emu.cpu() - emulator_cpu
        request_stats(emu, run)
        if name == args.timeline:
            print_timeline(emu, run)
        run.ceiling = scenario.ceiling
        runs.append(run)
        expected = args.objects * len(CORE)
        if run.returncode or run.records != expected:
            print(
                f"!! {run.label}: exit {run.returncode}, {run.records} of {expected} "
                f"records\n{run.stderr_tail}",
                file=sys.stderr,
            )
    return runs


def print_profile(path: Path, top: int = 25) -> None:
    """Self time per function (samples holding the GIL), from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frame = re.sub(r":\d+\)$", ")", stack.split(";")[-1])
        frame = re.sub(
            r"\(/.*?site-packages/|\(/.*?/lib/python3\.\d+/|\(" + re.escape(str(ROOT)) + "/",
            "(",
            frame,
        )
        own[frame] += int(count)
        total += int(count)
    print(f"\nprofile {path.name}: self time, {total} samples holding the GIL")
    for frame, count in own.most_common(top):
        print(f"  {count / total:6.1%}  {frame}")


def print_timeline(emu: EmulatorProcess, run: Run, step: float = 0.1) -> None:
    """Per endpoint and `step` seconds from the tap's first output line: requests the
    emulator received, and requests in flight (received, not yet answered) at the step's
    end; then when each endpoint's first and last request came and its last answer left.
    (The emulator counts a request against its limits after the latency, so "received" is
    a little before the budget counted it.)"""
    records = emu.control("requests")
    assert isinstance(records, list)
    from tap_stripe_connect.api.limiter import endpoint_of

    by_endpoint: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for r in records:
        at = r["time"] - run.first_output
        by_endpoint[endpoint_of(r["method"], r["path"])].append((at, at + r["duration"]))
    for spans in by_endpoint.values():
        spans.sort()  # the log is in the order of the answers
    names = sorted(by_endpoint, key=lambda e: by_endpoint[e][0][0])
    end = max(done for spans in by_endpoint.values() for _, done in spans)
    short = [n.split("/")[-1][:10] for n in names]
    print(f"\ntimeline of {run.label} (s from the first output line; received / in flight)")
    print(f"{'t':>5} " + " ".join(f"{n:>10}" for n in short) + f" {'all':>7}")
    steps = int(end / step) + 2
    start = min(at for spans in by_endpoint.values() for at, _ in spans)
    for i in range(int(start / step) - 1, steps):
        lo, hi = i * step, (i + 1) * step
        cells, total_in, total_flight = [], 0, 0
        for n in names:
            spans = by_endpoint[n]
            received = sum(1 for at, _ in spans if lo <= at < hi)
            flying = sum(1 for at, done in spans if at < hi <= done)
            total_in += received
            total_flight += flying
            cells.append(f"{received:>4} / {flying:>3}")
        print(f"{lo:>5.1f} " + " ".join(cells) + f" {total_in:>3}/{total_flight:>3}")
    for n in names:
        spans = by_endpoint[n]
        print(
            f"  {n}: {len(spans)} requests, first at {spans[0][0]:.3f} s, last received "
            f"{spans[-1][0]:.3f} s, last answered {max(d for _, d in spans):.3f} s"
        )
        if len(spans) > 25:
            # Against a budget of 25 a second (C's per endpoint): how long after the request
            # 25 before it, + 1 s, each came. The limiter's margin for latency jitter is
            # ~0.05-0.07 s of it; more is time the budget had room and no request was ready.
            late = sorted(spans[k][0] - spans[k - 25][0] - 1.0 for k in range(25, len(spans)))
            print(
                f"    after the request 25 before + 1 s: median {late[len(late) // 2]:.3f} s, "
                f"the last request {spans[-1][0] - spans[-26][0] - 1.0:.3f} s"
            )
    print(f"  the tap exited at {run.seconds:.3f} s")


# -- report -------------------------------------------------------------------------------


def print_table(runs: list[Run], objects: int) -> None:
    by_label = {r.label: r for r in runs}
    r1 = by_label.get("R1 bare loop")
    header = (
        f"{'scenario':<18} {'objects':>8} {'s':>7} {'wall s':>7} {'objects/s':>10} "
        f"{'% ceiling':>9} {'requests':>8} {'req/100':>7} {'failed':>6} {'429s':>5} "
        f"{'max/s':>5} {'max/s/ep':>8} {'peak RSS MB':>11} {'CPU s':>6} {'emu CPU s':>9}"
    )
    print(f"\n{objects} objects per stream, {len(CORE)} streams\n")
    print(header)
    print("-" * len(header))
    for run in runs:
        ceiling = run.ceiling or (
            r1.rate if r1 and run.label in ("A", "R2 max_workers=1") else None
        )
        percent = f"{run.rate / ceiling:.0%}" if ceiling else "-"
        per100 = f"{run.requests / max(1, run.records) * 100:.2f}"
        print(
            f"{run.label:<18} {run.records:>8} {run.seconds:>7.2f} {run.wall:>7.2f} "
            f"{run.rate:>10.0f} {percent:>9} {run.requests:>8} {per100:>7} "
            f"{run.failed:>6} {run.throttled:>5} {run.max_global_1s:>5} "
            f"{run.max_endpoint_1s:>8} {run.peak_rss_mb:>11.1f} {run.cpu:>6.2f} "
            f"{run.emulator_cpu:>9.2f}"
        )
    print(
        "\n(% ceiling: of the emulator's limits x 100 objects per request; for A and R2, of "
        "R1. req/100: requests per 100 objects, account probe included.)"
    )
    a, b, c, c90 = (by_label.get(n) for n in ("A", "B", "C", "C90"))
    print("\nTargets:")
    if a and r1:
        print(f"  A >= 70% of R1:                       {a.rate / r1.rate:6.0%}")
    if b:
        print(f"  B >= 90% of 2,500 objects/s, 0 failed: {b.rate / 2500:6.0%}, {b.failed} failed")
    if c:
        line = f"  C >= 60% of 10,000 objects/s:          {c.rate / 10000:6.0%}"
        if a:
            line += f"   (or >= 90% of A: {c.rate / a.rate:.0%})"
        print(line)
    if c90:
        print(f"  C90 (tap default 90/s; its own ceiling 9,000): {c90.rate / 10000:6.0%} of 10,000")


def memory(args: argparse.Namespace, workdir: Path) -> None:
    print("\nPeak RSS of the tap in scenario A, by objects per stream")
    results = []
    for objects in (5000, 100_000):
        with EmulatorProcess(objects, args.seed, SCENARIOS["A"]) as emu:
            emu.warm()
            run = measure(f"A {objects}", tap_argv(workdir, emu, {}, f"memory-{objects}"))
            expected = objects * len(CORE)
            if run.returncode or run.records != expected:
                print(
                    f"!! exit {run.returncode}, {run.records} of {expected} records\n"
                    f"{run.stderr_tail}",
                    file=sys.stderr,
                )
            results.append(run)
            print(
                f"  {objects:>7} per stream: {run.records:>7} records in {run.seconds:6.1f} s "
                f"({run.rate:5.0f}/s), peak RSS {run.peak_rss_mb:6.1f} MB",
                flush=True,
            )
    small, large = results
    print(f"  growth: {large.peak_rss_mb / small.peak_rss_mb - 1:+.0%} (target: within 20%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios",
        default="A,B,C,C90,R1,R2",
        help="comma-separated subset of A,B,C,C90,R1,R2",
    )
    parser.add_argument("--objects", type=int, default=5000, help="objects per stream")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also compare peak RSS in A at 5,000 and 100,000 per stream",
    )
    parser.add_argument(
        "--profile",
        metavar="SCENARIO",
        help="run the tap under py-spy in this scenario (needs py-spy)",
    )
    parser.add_argument(
        "--timeline",
        metavar="SCENARIO",
        help="print this scenario's requests over time, per endpoint (from the emulator's log)",
    )
    parser.add_argument("--bare-loop", nargs=2, metavar=("URL", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_loop:  # R1, run as its own process by `measure`
        print("start", flush=True)  # marks the start of extraction for `measure`
        count = bare_loop(*args.bare_loop, os.devnull)
        print(count, file=sys.stderr)
        return
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    order = [n for n in ("R1", "A", "R2", "B", "C", "C90") if n in names]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in order:
            runs += run_scenario(name, args, workdir)
            print(f"  {runs[-1].label}: {runs[-1].rate:.0f} objects/s", flush=True)
        if runs:
            print_table(runs, args.objects)
        if args.memory:
            memory(args, workdir)


if __name__ == "__main__":
    main()
