"""What a request costs in CPU and thread switches when many are in flight (issue 25), two ways.

    .venv/bin/python benchmarks/request_switches.py
    .venv/bin/python benchmarks/request_switches.py --threads 32,64,128 --rounds 2
    .venv/bin/python benchmarks/request_switches.py --modes client --checkout <worktree>

K threads each list one page of 16 charges in a loop against the emulator (a process of
its own, 30 +-10 ms a response) and decode it as the tap does (`api/body.parse`):

- `threads`: each thread sends and reads on its own kept-alive `http.client` connection
  (what the tap's client did before `api/exchanges.py`: every send and read lets the GIL
  go, and the thread then queues for it behind the others);
- `io`: one I/O thread sends every request and reads every answer (a selector over all
  the connections) and hands each thread its whole body: the thread wakes once a request;
- `client`: the tap's own `StripeClient.list` (no budget), of this checkout or of
  `--checkout` (another worktree, to compare two versions side by side).

Printed per K: user and system CPU per request, voluntary and involuntary context
switches per request (`getrusage`), requests/s. A probe of a design, not of the tap: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tap_stripe_connect.api.body import parse  # noqa: E402 (after the path)

PATH = "/v1/charges?limit=100"


class Answers:
    """One thread sending every request and reading every answer (Content-Length bodies)."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.request = (
            f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Accept-Encoding: identity\r\n\r\n"
        ).encode()
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.new: list[tuple[socket.socket, dict]] = []
        self.wake_read, self.wake = socket.socketpair()
        self.wake_read.setblocking(False)
        self.selector.register(self.wake_read, selectors.EVENT_READ, None)
        threading.Thread(target=self.loop, daemon=True).start()

    def ask(self, sock: socket.socket) -> bytes:
        """Send the request on `sock` and wait for the whole body."""
        slot: dict = {"done": threading.Event(), "buffer": bytearray()}
        with self.lock:
            self.new.append((sock, slot))
        self.wake.send(b"x")
        slot["done"].wait()
        return bytes(slot["body"])

    def loop(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    self.wake_read.recv(4096)
                    with self.lock:
                        new, self.new = self.new, []
                    for sock, slot in new:
                        sock.sendall(self.request)
                        self.selector.register(sock, selectors.EVENT_READ, slot)
                    continue
                slot, sock = key.data, key.fileobj
                buffer = slot["buffer"]
                try:
                    buffer += sock.recv(1 << 18)
                except BlockingIOError:  # a wake-up with nothing to read yet
                    continue
                if "length" not in slot:
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    head = bytes(buffer[:end]).decode("latin-1").lower()
                    found = re.search(r"content-length: (\d+)", head)
                    slot["length"], slot["start"] = int(found.group(1)) if found else 0, end + 4
                start, length = slot["start"], slot["length"]
                if len(buffer) >= start + length:
                    self.selector.unregister(sock)
                    slot["body"] = buffer[start : start + length]
                    slot["done"].set()


def measure(mode: str, threads: int, requests: int, *, host: str, port: int, key: str) -> str:
    answers = Answers(host, port, key) if mode == "io" else None
    client_list = tap_client(f"http://{host}:{port}", key) if mode == "client" else None

    def own_connection() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "identity"}
        for _ in range(requests):
            connection.request("GET", PATH, headers=headers)
            parse(connection.getresponse().read())

    def through_io_thread() -> None:
        assert answers is not None
        sock = socket.create_connection((host, port))
        sock.setblocking(False)
        for _ in range(requests):
            parse(answers.ask(sock))

    def through_client() -> None:
        assert client_list is not None
        for _ in range(requests):
            client_list()

    work = {"io": through_io_thread, "client": through_client}.get(mode, own_connection)
    pool = [threading.Thread(target=work) for _ in range(threads)]
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    n = threads * requests
    return (
        f"{mode:<8} K={threads:<4} user {(after.ru_utime - before.ru_utime) / n * 1e6:4.0f} us"
        f"  system {(after.ru_stime - before.ru_stime) / n * 1e6:4.0f} us"
        f"  switches {(after.ru_nvcsw - before.ru_nvcsw) / n:4.1f} voluntary"
        f" {(after.ru_nivcsw - before.ru_nivcsw) / n:3.1f} involuntary"
        f"  {n / wall:5.0f} requests/s"
    )


def tap_client(url: str, key: str) -> t.Callable[[], list]:
    """The tap's client (of the checkout first on the path), listing the one page."""
    from tap_stripe_connect.api.reads import list_read
    from tap_stripe_connect.resources import RESOURCES_BY_NAME
    from tap_stripe_connect.tap import TapStripeConnect

    config = {
        "api_key": key,
        "api_url": url,
        "max_requests_per_second": 100_000,
        "max_requests_per_second_per_endpoint": 100_000,
        "max_workers": 256,
    }
    client = TapStripeConnect(config=config, validate_config=False).client
    read = list_read(RESOURCES_BY_NAME["charges"], account=None)
    return lambda: list(client.list(read))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="32,64,128", help="comma-separated K")
    parser.add_argument("--requests", type=int, default=100, help="per thread")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--modes", default="threads,io", help="of threads, io, client")
    parser.add_argument(
        "--checkout", default=str(ROOT), help="the tap's checkout for mode client (a worktree)"
    )
    args = parser.parse_args()
    emulator = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.emulator", "--port", "0", "--objects", "16"),
            *("--warm", "--latency", "30,10"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        found = re.search(
            r"listening on http://([\d.]+):(\d+) \(key (\S+)\)", emulator.stdout.readline()
        )
        if found is None:
            sys.exit("the emulator did not start")
        host, port, key = found.group(1), int(found.group(2)), found.group(3)
        for _ in range(args.rounds):
            for threads in (int(k) for k in args.threads.split(",")):
                for mode in args.modes.split(","):
                    # A process each: the I/O thread and the threads of a run end with it.
                    print(
                        subprocess.run(
                            [
                                *(sys.executable, __file__, "--one", mode, str(threads)),
                                *(str(args.requests), host, str(port), key, args.checkout),
                            ],
                            check=True,
                            capture_output=True,
                            text=True,
                        ).stdout.strip(),
                        flush=True,
                    )
    finally:
        emulator.terminate()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        mode, threads, requests, host, port, key, checkout = sys.argv[2:9]
        sys.path.insert(0, checkout)
        for name in [name for name in sys.modules if name.startswith("tap_stripe_connect")]:
            del sys.modules[name]  # the checkout's own, not this one's (`parse` above)
        print(measure(mode, int(threads), int(requests), host=host, port=int(port), key=key))
    else:
        main()
