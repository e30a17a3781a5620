"""The client's HTTP transport (api/transport.py, api/exchanges.py), against small HTTP/1.1
servers of its own: kept-alive connections, a connection the server closed, gzip, chunked and
close-delimited bodies, TLS, many requests in flight on the one I/O thread, and a proxy."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import socket
import ssl
import subprocess
import threading
import typing as t
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from tap_stripe_connect.api import StripeClient
from tap_stripe_connect.api.auth import StripeKeyAuthenticator
from tap_stripe_connect.api.reads import list_read
from tap_stripe_connect.resources import RESOURCES_BY_NAME
from tap_stripe_connect.settings import Settings

KEY = "sk_test_transportK3y5ecretValue"
PAGES = 5


def page(after: str | None) -> dict:
    """Page after `after` of a list of PAGES pages of one charge each, newest first."""
    index = 0 if after is None else int(after.removeprefix("ch_")) + 1
    charge = {"id": f"ch_{index}", "object": "charge", "created": 1_700_000_000 - index}
    return {"object": "list", "url": "/v1/charges", "has_more": index < PAGES - 1,
            "data": [charge]}  # fmt: skip


class Server(http.server.ThreadingHTTPServer):
    """Answers every GET with the page its query asks for; counts connections and requests."""

    daemon_threads = True

    def __init__(
        self,
        *,
        gzipped: bool = False,
        close_after_each: bool = False,
        framing: str = "length",
        padding: int = 0,
    ) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.gzipped, self.close_after_each = gzipped, close_after_each
        # How a body's end is told: "length" (Content-Length), "chunked", or "close" (none:
        # the body ends with the connection, as HTTP/1.0 servers do).
        self.framing = framing
        self.padding = padding  # bytes of metadata on each charge: a body of many TLS records
        self.connections = 0
        self.request_lines: list[str] = []
        self.closed = threading.Semaphore(0)  # released as a connection is closed
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def shutdown_request(self, request: t.Any) -> None:
        super().shutdown_request(request)
        self.closed.release()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless a side says otherwise
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:
        self.server.request_lines.append(self.requestline)
        query = parse_qs(urlsplit(self.path).query)
        answer = page((query.get("starting_after") or [None])[0])
        if self.server.padding:
            answer["data"][0]["metadata"] = {"padding": "x" * self.server.padding}
        body = json.dumps(answer).encode()
        if self.server.gzipped:
            body = gzip.compress(body)
        framing = self.server.framing
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if framing == "length":
            self.send_header("Content-Length", str(len(body)))
        elif framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Request-Id", "req_transport")
        if self.server.gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        if framing == "chunked":
            # Chunks of 7 bytes in writes of their own, and a chunk extension once.
            for at in range(0, len(body), 7):
                piece = body[at : at + 7]
                extension = ";name=value" if at == 0 else ""
                self.wfile.write(b"%x%s\r\n%s\r\n" % (len(piece), extension.encode(), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)
        self.wfile.flush()
        if self.server.close_after_each:
            # Closed as an idle connection is, without a `Connection: close` first.
            self.close_connection = True


    def log_message(self, *_: t.Any) -> None:
        pass


@pytest.fixture
def servers() -> t.Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def client_of(url: str) -> StripeClient:
    settings = Settings.from_config(
        {"api_key": KEY, "api_url": url, "max_retries": 2, "request_timeout": 10}
    )
    return StripeClient(settings, StripeKeyAuthenticator({"api_key": KEY}))


CHARGES = list_read(RESOURCES_BY_NAME["charges"])


def test_the_pages_of_a_list_are_read_on_one_kept_alive_connection(servers):
    servers.append(server := Server())
    ids = [charge["id"] for charge in client_of(server.url).list(CHARGES)]
    assert ids == [f"ch_{i}" for i in range(PAGES)]
    assert len(server.request_lines) == PAGES
    assert server.connections == 1


def test_a_kept_alive_connection_the_server_closed_is_not_used_again(servers):
    servers.append(server := Server(close_after_each=True))
    client = client_of(server.url)
    for _ in range(3):
        assert client.first(CHARGES) is not None
        assert server.closed.acquire(timeout=120)  # the server has closed it (a wait, not a limit)
    assert not client.retries_by_stream, "a request was retried"
    assert len(server.request_lines) == server.connections == 3


def test_a_gzipped_body_is_read(servers):
    servers.append(server := Server(gzipped=True))
    assert len(list(client_of(server.url).list(CHARGES))) == PAGES


def test_a_chunked_body_is_read(servers):
    servers.append(server := Server(framing="chunked", gzipped=True))
    ids = [charge["id"] for charge in client_of(server.url).list(CHARGES)]
    assert ids == [f"ch_{i}" for i in range(PAGES)]
    assert server.connections == 1  # each answer read to its end: the connection kept


def test_a_body_that_ends_with_the_connection_is_read(servers):
    servers.append(server := Server(framing="close"))
    ids = [charge["id"] for charge in client_of(server.url).list(CHARGES)]
    assert ids == [f"ch_{i}" for i in range(PAGES)]
    assert server.connections == PAGES  # a connection the server closed is not used again


def test_many_requests_in_flight_each_get_their_own_answer(servers):
    """64 threads ask at once, through the one I/O thread: every page goes to its asker."""
    servers.append(server := Server())
    client = client_of(server.url)
    pages: dict[int, list[str]] = {}

    def ask(index: int) -> None:
        first = client.first(replace(CHARGES, after=f"ch_{index - 1}" if index else None))
        pages[index] = [first["id"]] if first else []

    for _ in range(8):
        threads = [threading.Thread(target=ask, args=(i % PAGES,)) for i in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert pages == {i: [f"ch_{i}"] for i in range(PAGES)}
    assert len(server.request_lines) == 8 * 64
    assert [th.name for th in threading.enumerate()].count("stripe-io") == 1


def test_a_proxy_of_the_environment_is_used(servers, monkeypatch):
    """Through a proxy, requests' own adapter sends: the proxy gets every request."""
    servers.append(api := Server())
    servers.append(proxy := Server())
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert len(list(client_of(api.url).list(CHARGES))) == PAGES
    assert api.request_lines == []
    assert len(proxy.request_lines) == PAGES
    assert all(line.startswith(f"GET {api.url}/v1/charges?") for line in proxy.request_lines)


class Listener:
    """A local server of raw sockets: each connection (counted) to `handle` on a thread."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(sock,), daemon=True).start()

    def handle(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:  # as the `servers` fixture ends an http.server's
        pass

    def server_close(self) -> None:
        self.listener.close()


class Tunnel(Listener):
    """An HTTPS proxy: each CONNECT becomes a tunnel to the local `port` (counted)."""

    def __init__(self, port: int) -> None:
        self.port, self.tunnels = port, 0
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        assert head.startswith(b"CONNECT "), head
        self.tunnels += 1
        upstream = socket.create_connection(("127.0.0.1", self.port))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(source: socket.socket, sink: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)



def tls_server(servers: list[Server], tmp_path, **options: t.Any) -> tuple[Server, str]:
    """A server of HTTPS with a self-signed certificate, and the certificate's file."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    servers.append(server := Server(**options))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    return server, str(cert)


def test_pages_of_many_tls_records_are_read_over_https(servers, tmp_path, monkeypatch):
    """TLS on the lean path: the certificate trusted (as requests' bundle would trust
    Stripe's), bodies of ~300 KB (each many TLS records) read whole, on one connection."""
    from tap_stripe_connect.api import transport

    server, cert = tls_server(servers, tmp_path, padding=300_000)
    monkeypatch.setattr(transport, "DEFAULT_CA_BUNDLE_PATH", cert)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # else theirs is trusted
        monkeypatch.delenv(name, raising=False)
    client = client_of(f"https://127.0.0.1:{server.server_address[1]}")
    charges = list(client.list(CHARGES))
    assert [charge["id"] for charge in charges] == [f"ch_{i}" for i in range(PAGES)]
    assert all(len(charge["metadata"]["padding"]) == 300_000 for charge in charges)
    assert server.connections == 1


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_ca_bundle_named_by_the_environment_is_trusted(servers, tmp_path, monkeypatch, variable):
    """A CA bundle of the environment (a company's own CA, a gateway's certificate) is
    trusted as requests trusts it, on the lean path (one connection for every page) and
    through a proxy."""
    server, cert = tls_server(servers, tmp_path)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy",
                 "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, cert)
    url = f"https://127.0.0.1:{server.server_address[1]}"
    assert len(list(client_of(url).list(CHARGES))) == PAGES
    assert server.connections == 1
    # Through a proxy (requests' adapter sends): the tunnel's end is the same server.
    servers.append(proxy := Tunnel(server.server_address[1]))  # type: ignore[arg-type]
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert len(list(client_of(url).list(CHARGES))) == PAGES
    assert proxy.tunnels >= 1


def test_a_server_whose_certificate_is_not_trusted_is_refused(servers, tmp_path, caplog):
    """TLS is verified on the lean path too: a self-signed certificate ends the request
    before it is sent (and the key with it), at the first try (another cannot help), with
    a line that says what to set."""
    from tap_stripe_connect.errors import TapError

    server, _ = tls_server(servers, tmp_path)
    settings = Settings.from_config(
        {"api_key": KEY, "api_url": f"https://127.0.0.1:{server.server_address[1]}",
         "max_retries": 3, "request_timeout": 10}
    )  # fmt: skip
    client = StripeClient(settings, StripeKeyAuthenticator({"api_key": KEY}))
    with pytest.raises(TapError, match=r"is not trusted.*REQUESTS_CA_BUNDLE"):
        client.first(CHARGES)
    assert server.request_lines == []
    assert "Retrying" not in caplog.text


class Scripted(Listener):
    """A server that reads each request's head and answers with the bytes it is given."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        super().__init__()

    def handle(self, sock: socket.socket) -> None:
        with sock:
            received = b""
            while True:
                while b"\r\n\r\n" not in received:
                    data = sock.recv(65536)
                    if not data:
                        return
                    received += data
                received = received.split(b"\r\n\r\n", 1)[1]
                sock.sendall(self.answer)


def test_an_answers_head_is_read_as_http_reads_it():
    """A 100 Continue before the answer, a folded header, spaces around values, a header
    twice, and `Connection: close`: the status, the headers and the body as HTTP means them,
    and the connection not used again."""
    body = json.dumps(page(f"ch_{PAGES - 2}")).encode()
    server = Scripted(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 Fine Today\r\n"
        b"Content-Type:   application/json  \r\n"
        b"Request-Id: req_\r\n"
        b"\tfolded\r\n"
        b"X-Twice: first\r\n"
        b"X-Twice: second\r\n"
        b"Connection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    client = client_of(server.url)
    try:
        for _ in range(2):
            parsed, response = client.call(CHARGES)
            assert parsed["data"][0]["id"] == f"ch_{PAGES - 1}"
            assert (response.status_code, response.reason) == (200, "Fine Today")
            assert response.headers["content-type"] == "application/json"
            assert response.headers["Request-Id"] == "req_ folded"
            assert response.headers["X-Twice"] == "second"
        assert server.connections == 2
    finally:
        server.listener.close()
