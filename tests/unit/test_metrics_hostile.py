"""The metrics server under idle, slow and many clients: bounded threads, probes answered."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from workflows_worker import metrics as metrics_module
from workflows_worker.metrics import MetricsServer, WorkerMetrics

Serve = Callable[[Callable[[], bool]], MetricsServer]
CAP = 8


def _get(server: MetricsServer, path: str, timeout: float = 5) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[MetricsServer] = []

    def start(health: Callable[[], bool]) -> MetricsServer:
        server = MetricsServer(WorkerMetrics().registry, health, host="127.0.0.1", port=0)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _connect(server: MetricsServer, opened: list[socket.socket], send: bytes = b"") -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    opened.append(sock)
    if send:
        sock.sendall(send)


def test_idle_and_trickling_connections_hold_no_thread_and_healthz_answers(
    serve: Serve, sockets: list[socket.socket]
) -> None:
    server = serve(lambda: True)
    assert _get(server, "/healthz") == (200, b"ok")
    before = threading.active_count()
    for _ in range(100):
        _connect(server, sockets)
    for _ in range(30):
        _connect(server, sockets, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    assert _get(server, "/healthz") == (200, b"ok")
    assert _get(server, "/metrics")[0] == 200
    # The probe's request was accepted after all of them, so each has had its chance at a thread.
    assert threading.active_count() <= before + CAP


def test_requests_past_the_cap_are_answered_503_at_once_and_the_rest_complete(
    serve: Serve,
) -> None:
    release = threading.Event()
    inside = threading.Semaphore(0)

    def slow_health() -> bool:
        inside.release()
        return release.wait(30)

    server = serve(slow_health)
    results: list[tuple[int, bytes]] = []
    callers = [
        threading.Thread(target=lambda: results.append(_get(server, "/healthz", 30)))
        for _ in range(CAP)
    ]
    for caller in callers:
        caller.start()
    for _ in range(CAP):
        assert inside.acquire(timeout=10), "every capped request reaches its handler"

    started = time.monotonic()
    assert _get(server, "/healthz", 5) == (503, b"503 Service Unavailable")
    assert time.monotonic() - started < 2

    release.set()
    for caller in callers:
        caller.join(10)
    assert results == [(200, b"ok")] * CAP
    # The slots are free again.
    assert _get(server, "/healthz") == (200, b"ok")


def test_a_connection_that_never_completes_its_request_is_closed(
    serve: Serve, sockets: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module._BoundedWSGIServer, "head_timeout", 0.3)
    server = serve(lambda: True)
    _connect(server, sockets, b"GET /metrics HTTP/1.1\r\n")
    sockets[-1].settimeout(5)
    started = time.monotonic()
    assert sockets[-1].recv(1024) == b""  # closed by the server, unanswered
    assert time.monotonic() - started < 4
    assert _get(server, "/healthz") == (200, b"ok")


def test_an_oversized_request_head_is_refused(serve: Serve, sockets: list[socket.socket]) -> None:
    server = serve(lambda: True)
    start = b"GET /healthz HTTP/1.1\r\nX: "
    # Exactly the limit: the server reads all of it, so its close sends no reset.
    limit = metrics_module._BoundedWSGIServer.max_head_bytes
    _connect(server, sockets, start + b"a" * (limit - len(start)))
    sockets[-1].settimeout(5)
    answer = sockets[-1].recv(1024)
    assert answer.startswith(b"HTTP/1.0 431 ")
