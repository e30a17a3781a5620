"""The client's HTTP transport: requests' adapter, with direct connections made lean, and
`Wire`, the client's session (how a request is prepared and sent).

A platform run makes ~28 requests for a connected account's ~450 objects, most of them a
short page, so the CPU of one request counts: requests' adapter and urllib3 take ~250 us
of it, Python's own `http.client` ~100. `Transport` is a requests adapter (mounted on the
client's session, so responses, errors and tests' scripted answers are requests' own)
that sends a request on a kept-alive `http.client` connection of its own pool, and hands
anything else to requests' adapter: a request through a proxy, or with a client
certificate. Both trust the CA bundle requests would (`REQUESTS_CA_BUNDLE`, else
certifi's). The connection is opened here; its request and answer go
through the process's one I/O thread (`api/exchanges.py`).
"""

from __future__ import annotations

import collections
import http.client
import os
import re
import select
import ssl
import threading
import time
import typing as t
import zlib
from datetime import timedelta
from urllib.parse import urlsplit

import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    get_encoding_from_headers,
    resolve_proxies,
    select_proxy,
)
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

from tap_stripe_connect.api.exchanges import Answer, Exchange, answer_of, wires

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

class Wire:
    """The client's requests: prepared and sent on one session, through `Transport`."""

    def __init__(self, max_workers: int, timeout: float) -> None:
        self.timeout = timeout
        self.session = requests.Session()
        # Up to `max_workers` requests are in flight at once, each holding a connection:
        # a pool of requests' default 10 would close (and reopen) the rest.
        adapter = Transport(pool_maxsize=max(10, max_workers))
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        #: What requests' session adds to every request (`Accept-Encoding`, ...), taken once.
        self.base_headers = {name: str(value) for name, value in self.session.headers.items()}
        #: Of each scheme and host: its proxies and the CA bundle to trust, from the environment.
        self._environment: dict[tuple[str, str], tuple[dict[str, str], bool | str]] = {}

    def prepare(
        self, method: str, url: str, headers: dict[str, str], data: str | None, *, own: bool
    ) -> requests.PreparedRequest:
        """Not `Session.prepare_request`: it merges cookies and reads ~/.netrc for every
        request (~80 us of CPU), and neither has a place on Stripe's API. A GET of a URL of
        the tap's own making (`own`: no body) is not even checked and quoted again (~50 us)."""
        request = requests.PreparedRequest()
        headers = {**self.base_headers, **headers}
        if own:
            request.method, request.url = method, url
            request.headers = CaseInsensitiveDict(headers)
        else:
            request.prepare(method, url, headers=headers, data=data)
        return request

    def send(self, request: requests.PreparedRequest) -> requests.Response:
        """One request on the wire, through the session's adapter (its connection pool).

        Not `Session.send`: its cookies, hooks and redirects have no place on Stripe's API
        (a redirect is answered as the error it is here, its credential not sent on), and
        they cost ~100 us of CPU a request.
        """
        started = time.perf_counter()
        proxies, verify = self.environment_for(request)
        response = self.session.get_adapter(request.url or "").send(
            request,
            stream=True,
            timeout=self.timeout,
            verify=verify,
            cert=None,
            proxies=proxies,
        )
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        return response

    def environment_for(
        self, request: requests.PreparedRequest
    ) -> tuple[dict[str, str], bool | str]:
        """The proxies and the CA bundle (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`) the
        environment gives the request's host, as `Session.send` would take them. requests
        reads the environment (all of it) for every request, ~1% of a sync's CPU; a run
        asks a host or two, in one environment."""
        where = urlsplit(request.url or "")[:2]
        found = self._environment.get(where)
        if found is None:
            proxies = resolve_proxies(request, dict(self.session.proxies), self.session.trust_env)
            verify = self.session.merge_environment_settings(
                request.url, {}, stream=True, verify=True, cert=None
            )["verify"]
            found = (proxies, True if verify is None else verify)
            self._environment[where] = found
        return found


#: A pool's host: scheme, name, port.
Key = tuple[str, str, int]


class Transport(requests.adapters.HTTPAdapter):
    """requests' adapter, sending direct requests on its own `http.client` connections."""

    def __init__(self, pool_maxsize: int) -> None:
        super().__init__(pool_maxsize=pool_maxsize)
        self.pool_maxsize = pool_maxsize
        self._idle: dict[Key, collections.deque[http.client.HTTPConnection]] = (
            collections.defaultdict(collections.deque)
        )
        self._lock = threading.Lock()
        self._tls: dict[bool | str, ssl.SSLContext] = {}

    def send(  # type: ignore[override]  # noqa: PLR0917 (requests' signature)
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | None = None,
        verify: bool | str = True,
        cert: t.Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = request.url or ""
        plain = isinstance(timeout, (int, float)) and verify is not False and not cert
        if not plain or not stream or (proxies and select_proxy(url, dict(proxies))):
            return super().send(request, stream, timeout, verify, cert, proxies)
        return self.send_direct(request, float(t.cast("float", timeout)), verify)

    def send_direct(
        self, request: requests.PreparedRequest, timeout: float, verify: bool | str = True
    ) -> requests.Response:
        """`verify`: True (certifi's bundle, as requests trusts) or a CA bundle's path."""
        parts = urlsplit(request.url or "")
        https = parts.scheme == "https"
        key = (parts.scheme, parts.hostname or "", parts.port or (443 if https else 80))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        method = request.method or "GET"
        out = request_bytes(method, target, host_header(key), request.headers, request.body)
        connection, reused = self.take(key, timeout, verify)
        try:
            exchange = send(connection, out, timeout, method)
            if exchange is None and reused:
                # The server closed the kept-alive connection as the request went out (its
                # idle timeout): nothing was answered, so it goes again on a new one.
                connection, _ = self.take(key, timeout, verify, reuse=False)
                exchange = send(connection, out, timeout, method)
            if exchange is None:
                raise http.client.RemoteDisconnected("the server closed the connection")
            if not exchange.head_read:  # else a body cut short is the body's error (`Body`)
                if exchange.error is not None:
                    raise exchange.error
                if exchange.timed_out:
                    raise TimeoutError(f"no answer in {timeout:g} s")
                raise http.client.RemoteDisconnected("the connection ended within the answer")
            answer = answer_of(exchange)
        except TimeoutError as exc:  # socket.timeout: connecting, or waiting for the answer
            connected = connection.sock is not None
            connection.close()
            error = (
                requests.exceptions.ReadTimeout if connected else requests.exceptions.ConnectTimeout
            )
            raise error(exc, request=request) from exc
        except ssl.SSLError as exc:  # a certificate not trusted, mostly
            connection.close()
            raise requests.exceptions.SSLError(exc, request=request) from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise requests.exceptions.ConnectionError(exc, request=request) from exc
        # The answer is in memory: the connection goes back now if it is at its end and open.
        if answer.reusable:
            self.give_back(key, connection)
        else:
            connection.close()
        response = requests.Response()
        response.status_code = answer.status
        response.reason = answer.reason
        response.headers = CaseInsensitiveDict(answer.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.url = request.url or ""
        response.request = request
        response.connection = self
        response.raw = Body(answer, response.headers.get("Content-Encoding") or "")
        return response

    # -- the pool ------------------------------------------------------------------------

    def take(
        self, key: Key, timeout: float, verify: bool | str = True, *, reuse: bool = True
    ) -> tuple[http.client.HTTPConnection, bool]:
        """A kept-alive connection to the host, or a new one (connected on its first use);
        and whether it was kept alive."""
        while reuse:
            with self._lock:
                idle = self._idle[key]
                if not idle:
                    break
                connection = idle.pop()
            # Outside the lock: a system call lets other threads run, and they would wait.
            if not dropped(connection):
                return connection, True
            connection.close()
        scheme, host, port = key
        if scheme == "https":
            tls = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=self.tls_context(verify)
            )
            return tls, False
        return http.client.HTTPConnection(host, port, timeout=timeout), False

    def tls_context(self, verify: bool | str) -> ssl.SSLContext:
        """What a connection trusts: certifi's bundle (True), or the bundle (a file) or the
        directory of certificates `verify` names, as requests would load it."""
        context = self._tls.get(verify)
        if context is None:
            if not isinstance(verify, str):
                context = ssl.create_default_context(cafile=DEFAULT_CA_BUNDLE_PATH)
            elif os.path.isdir(verify):
                context = ssl.create_default_context(capath=verify)
            else:
                context = ssl.create_default_context(cafile=verify)
            self._tls[verify] = context
        return context

    def give_back(self, key: Key, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle[key]
            if len(idle) < self.pool_maxsize:
                idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            connections = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for connection in connections:
            connection.close()
        super().close()


def send(
    connection: http.client.HTTPConnection, out: bytes, timeout: float, method: str
) -> Exchange | None:
    """The request sent on the connection (connected first, if new) and its answer read by
    the I/O thread; None when the connection turned out closed before any answer (a reset,
    or its end, as the request went out)."""
    if connection.sock is None:
        connection.timeout = timeout
        connection.connect()  # TCP and TLS handshakes here, blocking, within the timeout
        connection.sock.setblocking(False)  # type: ignore[attr-defined]  # only the I/O thread waits on it
    exchange = wires().exchange(connection.sock, out, timeout, bodiless=method == "HEAD")
    if not exchange.answered and (exchange.ended or isinstance(exchange.error, CLOSED)):
        connection.close()
        return None
    return exchange


#: A connection that went away as the request was sent.
CLOSED = (ConnectionResetError, BrokenPipeError)
#: What a request's line and headers may not hold (a line break would start another header).
CONTROL = re.compile(r"[\x00-\x20\x7f]")
BREAK = re.compile(r"[\r\n]")


def host_header(key: Key) -> str:
    """`Host`, as `http.client` writes it: the port only when not the scheme's own."""
    scheme, host, port = key
    if ":" in host:
        host = f"[{host}]"
    return host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"


def request_bytes(
    method: str, target: str, host: str, headers: Mapping[str, t.Any], body: t.Any
) -> bytes:
    """A request's bytes on the wire, as `http.client` writes them: `Host` unless given,
    `Content-Length` for a body (and for a POST without one), latin-1 text."""
    if CONTROL.search(target) or CONTROL.search(method):
        raise http.client.InvalidURL(f"the request can't hold control characters: {target!r}")
    lines = [f"{method} {target} HTTP/1.1"]
    names = {name.lower() for name in headers}
    if "host" not in names:
        lines.append(f"Host: {host}")
    for name, value in headers.items():
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if BREAK.search(name) or BREAK.search(text):
            raise ValueError(f"the header {name!r} holds a line break")
        lines.append(f"{name}: {text}")
    if isinstance(body, str):
        body = body.encode("latin-1")  # http.client's encoding of a text body
    if "content-length" not in names and "transfer-encoding" not in names:
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        elif method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


def dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether the server closed a kept-alive connection (it reads as ready: at its end)."""
    if connection.sock is None:
        return False  # not connected yet
    try:
        poller = select.poll()  # not `select.select`: no limit on the descriptor's number
        poller.register(connection.sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class Body:
    """A response's body as requests reads it (`stream`), read whole already: gzip and
    deflate decoded; a body cut short is the error requests turns into its own."""

    def __init__(self, answer: Answer, encoding: str) -> None:
        self.answer = answer
        self.encoding = encoding.strip().lower()

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        content, cut = self.answer.body, self.answer.cut
        if isinstance(cut, TimeoutError):  # the head came, then the server was silent
            raise ReadTimeoutError(None, None, f"read timed out: {cut}")  # type: ignore[arg-type]
        if content is None:
            raise ProtocolError(f"the response ended early: {cut!r}", cut)
        encoding = self.encoding
        if content and encoding in ("gzip", "deflate"):
            try:
                # gzip: its header and trailer; deflate: zlib's (or raw, as some servers).
                wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
                content = zlib.decompress(content, wbits)
            except zlib.error:
                try:
                    content = zlib.decompress(content, -zlib.MAX_WBITS)
                except zlib.error as exc:
                    raise DecodeError(f"the {encoding} body could not be decoded: {exc}") from exc
        yield content

    def close(self) -> None:
        """Nothing to do: the connection went back (or was closed) as the answer was read."""

    def release_conn(self) -> None:
        """Nothing to do: the connection went back (or was closed) as the answer was read."""
