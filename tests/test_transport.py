"""The client's HTTP transport (api/transport.py), against small HTTP/1.1 servers of its own:
kept-alive connections, a connection the server closed, gzip bodies, and a proxy."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import typing as t
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

    def __init__(self, *, gzipped: bool = False, close_after_each: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.gzipped, self.close_after_each = gzipped, close_after_each
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
        body = json.dumps(page((query.get("starting_after") or [None])[0])).encode()
        if self.server.gzipped:
            body = gzip.compress(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", "req_transport")
        if self.server.gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
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


def test_a_server_whose_certificate_is_not_trusted_is_refused(servers, tmp_path):
    """TLS is verified on the lean path too: a self-signed certificate ends the request
    before it is sent (and the key with it)."""
    import ssl
    import subprocess

    from tap_stripe_connect.errors import TapError

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    servers.append(server := Server())
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    settings = Settings.from_config(
        {"api_key": KEY, "api_url": f"https://127.0.0.1:{server.server_address[1]}",
         "max_retries": 0, "request_timeout": 10}
    )  # fmt: skip
    client = StripeClient(settings, StripeKeyAuthenticator({"api_key": KEY}))
    with pytest.raises(TapError, match="SSLError"):
        client.first(CHARGES)
    assert server.request_lines == []
