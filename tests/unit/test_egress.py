"""One webhook attempt against endpoints that misbehave on purpose, served on loopback."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

from worker.net import egress
from worker.net.addresses import resolve_checked
from worker.net.egress import ANSWER_BYTES, Egress, tls_context

Handler = Callable[[socket.socket], None]
DEADLINE = 1.0


class Endpoint:
    """A TCP server whose every connection is handled by `handler`; counts connections."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        endpoint = self
        self.connections = 0
        self.requests: list[bytes] = []

        class Serve(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                endpoint.connections += 1
                sock = self.request
                if tls is not None:
                    try:
                        sock = tls.wrap_socket(sock, server_side=True)
                    except (ssl.SSLError, OSError):
                        return
                with contextlib.suppress(OSError):
                    handler(sock)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Serve)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def read_request(self, sock: socket.socket) -> bytes:
        """One whole request (headers and a Content-Length body, however the client's segments
        fall), recorded; b"" when the client closed the connection first."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        self.requests.append(head + b"\r\n\r\n" + body)
        return self.requests[-1]


@pytest.fixture
def endpoints() -> Iterator[Callable[..., Endpoint]]:
    made: list[Endpoint] = []

    def make(handler: Callable[[Endpoint, socket.socket], None], **kwargs: Any) -> Endpoint:
        holder: list[Endpoint] = []
        made.append(Endpoint(lambda sock: handler(holder[0], sock), **kwargs))
        holder.append(made[-1])
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.server.shutdown()
        endpoint.server.server_close()


def post(url: str, *, allow_private: bool = True, context: ssl.SSLContext | None = None
         ) -> tuple[egress.Answer, float]:
    started = time.monotonic()
    answer = Egress(per_destination=4, allow_private=allow_private, context=context).post(
        url, b'{"type": "job.succeeded"}', {"content-type": "application/json"},
        deadline=DEADLINE)
    return answer, time.monotonic() - started


def test_an_endpoint_that_trickles_is_cut_at_the_deadline(endpoints: Any) -> None:
    def trickle(endpoint: Endpoint, sock: socket.socket) -> None:
        endpoint.read_request(sock)
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
            sock.send(bytes([byte]))
            time.sleep(0.3)  # every byte well within any per-read timeout

    answer, took = post(f"http://127.0.0.1:{endpoints(trickle).port}/hook")
    assert answer.error == "timed out" and took < DEADLINE + 1.0


def test_an_endless_answer_is_read_a_few_kib_only(endpoints: Any) -> None:
    def endless(endpoint: Endpoint, sock: socket.socket) -> None:
        endpoint.read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:  # until the client closes the connection
            sock.sendall(b"1000\r\n" + b"x" * 4096 + b"\r\n")

    answer, took = post(f"http://127.0.0.1:{endpoints(endless).port}/hook")
    assert answer.delivered and answer.status == 200 and took < DEADLINE


def test_a_redirect_is_a_failure_and_is_not_followed(endpoints: Any) -> None:
    target = endpoints(lambda e, s: (e.read_request(s), s.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")))

    def redirect(endpoint: Endpoint, sock: socket.socket) -> None:
        endpoint.read_request(sock)
        sock.sendall(f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target.port}/\r\n"
                     "Content-Length: 0\r\n\r\n".encode())

    answer, _ = post(f"http://127.0.0.1:{endpoints(redirect).port}/hook")
    assert answer.error == "HTTP 302" and target.connections == 0


def test_no_cookie_is_carried_to_the_next_delivery(endpoints: Any) -> None:
    def sets_a_cookie(endpoint: Endpoint, sock: socket.socket) -> None:
        while endpoint.read_request(sock):
            sock.sendall(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=stolen\r\n"
                         b"Content-Length: 0\r\n\r\n")

    endpoint = endpoints(sets_a_cookie)
    client = Egress(per_destination=4, allow_private=True)
    for _ in range(2):
        assert client.post(f"http://127.0.0.1:{endpoint.port}/hook", b"{}", {},
                           deadline=DEADLINE).delivered
    assert len(endpoint.requests) == 2
    assert all(b"cookie" not in request.lower() for request in endpoint.requests)


def test_a_name_that_does_not_resolve_is_a_failure_to_retry() -> None:
    answer, _ = post("https://nothing.invalid/hook", allow_private=False)
    assert answer.error == "its name does not resolve"


def test_an_internal_address_is_refused_without_connecting(endpoints: Any) -> None:
    endpoint = endpoints(lambda e, s: None)
    for host in ("127.0.0.1", socket.gethostname(), "localhost"):
        answer, _ = post(f"http://{host}:{endpoint.port}/hook", allow_private=False)
        assert answer.error.startswith("refused: ")
        assert "not public" in answer.error or "local name" in answer.error
    assert endpoint.connections == 0


def test_the_connection_goes_to_the_address_that_was_checked(
    endpoints: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name is resolved once, by the check; the connection uses that answer (no rebinding):
    here the check's answer for hooks.test is this machine's loopback endpoint."""
    endpoint = endpoints(lambda e, s: (e.read_request(s), s.sendall(
        b"HTTP/1.1 204 No Content\r\n\r\n")))
    checked: list[str] = []

    def check(host: str, port: int, *, allow_private: bool) -> list[Any]:
        checked.append(host)
        return resolve_checked("127.0.0.1", port, allow_private=True)

    monkeypatch.setattr(egress, "resolve_checked", check)
    answer, _ = post(f"http://hooks.test:{endpoint.port}/hook")
    assert answer.delivered and checked == ["hooks.test"]
    assert b"Host: hooks.test" in endpoint.requests[0]


@pytest.fixture(scope="module")
def certificates() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    return ca, server


def test_tls_checks_the_certificate_and_a_trickled_handshake_ends_by_the_deadline(
    endpoints: Any, certificates: tuple[trustme.CA, ssl.SSLContext],
) -> None:
    ca, server = certificates
    trusted = tls_context()
    ca.configure_trust(trusted)
    ok = endpoints(lambda e, s: (e.read_request(s), s.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: " + str(ANSWER_BYTES * 4).encode() + b"\r\n\r\n"
        + b"y" * ANSWER_BYTES * 4)), tls=server)
    assert post(f"https://127.0.0.1:{ok.port}/hook", context=trusted)[0].delivered
    assert post(f"https://127.0.0.1:{ok.port}/hook")[0].error == "TLS failed"  # unknown CA

    def slow_hello(endpoint: Endpoint, sock: socket.socket) -> None:
        sock.recv(4096)  # the ClientHello; the ServerHello comes a byte at a time
        for byte in b"\x16\x03\x03\x00\x50" + b"\x02" * 80:
            sock.send(bytes([byte]))
            time.sleep(0.3)

    answer, took = post(f"https://127.0.0.1:{endpoints(slow_hello).port}/hook", context=trusted)
    assert answer.error == "timed out" and took < DEADLINE + 1.0
