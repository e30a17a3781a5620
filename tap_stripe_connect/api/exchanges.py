"""One I/O thread for every direct request in flight: it sends a request's bytes and reads
its whole answer, so the thread that asked wakes once a request.

A platform run has ~50-250 units in flight. A thread that sends and reads on its own socket
lets the GIL go at every system call and then queues for it behind the others: ~15 context
switches a request at 128 in flight, where one thread waiting on all the sockets at once
(a selector) hands each asker its answer with ~3 (`benchmarks/request_switches.py`).

Of HTTP this thread reads only where an answer ends (its head, then `Content-Length`,
chunks, or the connection's end); the asking thread reads the head and body (`Answer`):
a few string splits, where `http.client` parses a head with the `email` package (~60 us).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import os
import re
import selectors
import socket
import ssl
import threading
import time
import typing as t

#: Bytes asked of a socket at once (a page of 100 objects is ~100-300 KB).
READ_SIZE = 1 << 18
#: How often the thread looks for an exchange whose server has been silent too long.
TICK = 0.1
#: In a head lowercased, ending with its last header's CRLF.
LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n")
CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked")
#: A read or a send that would wait: the selector says when to try again.
WOULD_WAIT = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Exchange:
    """A request on the wire: its bytes out, its answer's bytes in, and how it ended."""

    __slots__ = (
        "bodiless", "body_start", "chunk", "complete", "deadline", "done", "end", "ended",
        "error", "head_start", "length", "out", "received", "registered", "scanned", "sock",
        "timed_out", "timeout",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, out: bytes, timeout: float, *, bodiless: bool) -> None:
        self.sock = sock
        self.out = memoryview(out)
        self.timeout = timeout
        self.bodiless = bodiless  # a HEAD: its answer has no body, whatever its head says
        self.deadline = 0.0
        self.received = bytearray()
        self.done = threading.Lock()
        self.done.acquire()  # released by the I/O thread as the exchange ends
        self.registered = 0  # the events the selector watches for it
        self.head_start = 0  # where the answer's (final) head starts: after any 1xx heads
        self.scanned = 0  # how far the head's end was looked for
        self.body_start = -1
        self.length: int | None = None  # Content-Length; None: until the connection's end
        self.chunk = -1  # chunked: where the next chunk's size line starts
        self.end = -1  # where the answer ends, once it was read whole
        self.complete = False  # the answer was read whole
        self.ended = False  # the server closed the connection
        self.timed_out = False  # the server was silent for `timeout` seconds
        self.error: OSError | None = None

    @property
    def answered(self) -> bool:
        """Whether any of an answer came (else the request may go again on a new connection)."""
        return bool(self.received)

    @property
    def head_read(self) -> bool:
        return self.body_start >= 0

    @property
    def reusable(self) -> bool:
        """The connection is at the end of this answer and still open."""
        return self.complete and not self.ended and len(self.received) == self.end

    def frame(self) -> bool:
        """Whether the answer was read whole (or is not HTTP: `http.client` then says what)."""
        buffer = self.received
        while self.body_start < 0:
            end = buffer.find(b"\r\n\r\n", self.scanned)
            if end < 0:
                self.scanned = max(self.head_start, len(buffer) - 3)
                return False
            head = bytes(buffer[self.head_start : end + 2]).lower()
            if not head.startswith(b"http/"):
                self.end = len(buffer)
                return True
            status = head[9:12]
            if status[:1] == b"1" and status != b"101":  # 100 Continue: the answer follows
                self.head_start = self.scanned = end + 4
                continue
            self.body_start = end + 4
            if self.bodiless or status in (b"204", b"304"):
                self.length = 0
            elif CHUNKED.search(head):
                self.chunk = self.body_start
            else:
                found = LENGTH.search(head)
                self.length = int(found.group(1)) if found else None
        if self.chunk >= 0:
            return self.chunks_read()
        if self.length is None:
            return False  # the body ends with the connection
        if len(buffer) - self.body_start < self.length:
            return False
        self.end = self.body_start + self.length
        return True

    def chunks_read(self) -> bool:
        buffer = self.received
        while True:
            line_end = buffer.find(b"\r\n", self.chunk)
            if line_end < 0:
                return False
            try:
                size = int(bytes(buffer[self.chunk : line_end]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.end = len(buffer)
                return True
            if size == 0:  # the last chunk; then trailer lines, if any, and an empty line
                if buffer[line_end + 2 : line_end + 4] == b"\r\n":
                    self.end = line_end + 4
                    return True
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return False
                self.end = trailer_end + 4
                return True
            following = line_end + 2 + size + 2
            if len(buffer) < following:
                return False
            self.chunk = following


class Wires:
    """The I/O thread, and the exchanges it carries."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._selector.register(self._wake_in, READ, None)
        self._new: collections.deque[Exchange] = collections.deque()
        self._active: dict[Exchange, None] = {}
        self._sleeping = False
        self._thread = threading.Thread(target=self._run, name="stripe-io", daemon=True)
        self._thread.start()

    def exchange(
        self, sock: socket.socket, out: bytes, timeout: float, *, bodiless: bool = False
    ) -> Exchange:
        """Send `out` on the (non-blocking, connected) socket and wait for the whole answer,
        the connection's end, an error, or `timeout` seconds of the server's silence."""
        exchange = Exchange(sock, out, timeout, bodiless=bodiless)
        self._new.append(exchange)
        # The thread looks at new exchanges after every wait, and marks itself asleep before
        # it looks: a wake-up is only needed while it may be waiting (a system call saved).
        if self._sleeping:
            with contextlib.suppress(OSError):  # BlockingIOError: wake-ups wait to be read
                self._wake_out.send(b"\0")
        exchange.done.acquire()
        return exchange

    def _run(self) -> None:
        checked = time.monotonic()
        while True:
            self._sleeping = True
            wait = 0.0 if self._new else (TICK if self._active else None)
            events = self._selector.select(wait)
            self._sleeping = False
            now = time.monotonic()
            for key, mask in events:
                if key.data is None:
                    try:
                        while self._wake_in.recv(4096):
                            pass
                    except OSError:
                        pass
                    continue
                self._step(key.data, mask, now)
            while self._new:
                exchange = self._new.popleft()
                self._active[exchange] = None
                self._step(exchange, WRITE, now)
            if now - checked >= TICK:
                checked = now
                for exchange in [e for e in self._active if e.deadline <= now]:
                    exchange.timed_out = True
                    self._finish(exchange)

    def _step(self, exchange: Exchange, mask: int, now: float) -> None:
        """Send what is left of the request, or read what came of the answer."""
        sock = exchange.sock
        try:
            if exchange.out:
                if mask & WRITE:
                    while exchange.out:
                        exchange.out = exchange.out[sock.send(exchange.out) :]
            elif mask & READ:
                read(exchange)
                exchange.complete = exchange.frame()
        except WOULD_WAIT:
            pass
        except OSError as exc:  # reset, broken pipe, TLS errors: the asker says what it was
            exchange.error = exc
        except Exception as exc:  # a fault here must not leave the asker waiting
            exchange.error = OSError(f"the answer could not be read: {exc!r}")
        if exchange.complete or exchange.ended or exchange.error is not None:
            self._finish(exchange)
            return
        exchange.deadline = now + exchange.timeout
        self._watch(exchange, WRITE if exchange.out else READ)

    def _watch(self, exchange: Exchange, want: int) -> None:
        """The selector told to watch the exchange's socket for `want`."""
        if exchange.registered == want:
            return
        try:
            if exchange.registered:
                self._selector.modify(exchange.sock, want, exchange)
            else:
                self._selector.register(exchange.sock, want, exchange)
        except (KeyError, ValueError, OSError) as exc:  # a socket closed under it
            exchange.error = OSError(f"the connection could not be watched: {exc!r}")
            self._finish(exchange)
            return
        exchange.registered = want

    def _finish(self, exchange: Exchange) -> None:
        if exchange.registered:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(exchange.sock)
            exchange.registered = 0
        self._active.pop(exchange, None)
        exchange.done.release()


def read(exchange: Exchange) -> None:
    """What the socket has of the answer, up to the connection's end."""
    sock = exchange.sock
    tls = isinstance(sock, ssl.SSLSocket)
    try:
        while True:
            data = sock.recv(READ_SIZE)
            if not data:
                exchange.ended = True
                return
            exchange.received += data
            if not tls and len(data) < READ_SIZE:
                return  # the rest, if any, when the selector says so: no empty read
    except WOULD_WAIT:  # TLS: a record is read at a time, until none is left
        pass


class _Shared:
    wires: Wires | None = None
    lock = threading.Lock()


def wires() -> Wires:
    """The process's one I/O thread, started at its first use."""
    found = _Shared.wires
    if found is None:
        with _Shared.lock:
            if _Shared.wires is None:
                _Shared.wires = Wires()
            found = _Shared.wires
    return found


def _forget_in_child() -> None:
    # A forked child has none of its parent's threads: it starts an I/O thread of its own.
    _Shared.wires = None
    _Shared.lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


class Answer(t.NamedTuple):
    """An exchange's answer, read: what `requests.Response` is made of."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    #: The body (chunks joined, not decoded); None when it was cut short (`cut`).
    body: bytes | None
    #: Why the body was cut short: the connection ended or broke, or the server fell silent.
    cut: Exception | None
    #: The connection may carry the next request: the answer read to its end, and kept open.
    reusable: bool


def answer_of(exchange: Exchange) -> Answer:
    """The answer's status, headers and body; `http.client`'s errors for an answer whose
    head is not HTTP (the caller has checked that the head was read)."""
    buffer = exchange.received
    head = bytes(buffer[exchange.head_start : exchange.body_start - 4]).decode("iso-8859-1")
    status_line, *lines = head.split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.strip().partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise http.client.BadStatusLine(status_line)
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and headers:  # a folded line continues the header
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip(), value.strip(" \t")))
    tokens = ",".join(v for n, v in headers if n.lower() == "connection").lower()
    keep_alive = (
        "close" not in tokens
        and (version != "HTTP/1.0" or "keep-alive" in tokens)
        and (exchange.length is not None or exchange.chunk >= 0)
    )
    body: bytes | None = None
    cut: Exception | None = None
    start = exchange.body_start
    if exchange.complete:
        if exchange.chunk >= 0:
            try:
                body = dechunked(buffer, start)
            except ValueError as exc:
                cut = http.client.IncompleteRead(b"", None)
                cut.__cause__ = exc
        else:  # one copy (a bytearray's slice would be a second)
            with memoryview(buffer) as view:
                body = bytes(view[start : start + (exchange.length or 0)])
    elif exchange.timed_out:
        cut = TimeoutError("the server fell silent within the body")
    elif exchange.error is not None:
        cut = exchange.error
    elif exchange.length is None and exchange.chunk < 0:
        with memoryview(buffer) as view:  # the body ends with the connection: all of it
            body = bytes(view[start:])
    else:
        cut = http.client.IncompleteRead(bytes(buffer[start:]), exchange.length)
    reusable = keep_alive and body is not None and exchange.reusable
    return Answer(int(code), reason, headers, body, cut, reusable)


def dechunked(buffer: bytearray, position: int) -> bytes:
    """A chunked body's chunks joined (trailers dropped); ValueError when not chunks."""
    body = bytearray()
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            raise ValueError("a chunk's size line has no end")
        size = int(bytes(buffer[position:line_end]).split(b";", 1)[0].strip(), 16)
        if size == 0:
            return bytes(body)
        body += buffer[line_end + 2 : line_end + 2 + size]
        position = line_end + 2 + size + 2
