"""A loopback HTTP/1.1 server that answers from a script, for the client's own HTTP path
(``billing.client.wire``) where an httpx transport cannot stand in: lost answers, dropped
keep-alive connections, chunked bodies (holds no tests itself)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httptools

OK = {"granted": True, "reservation_id": "rsv_1", "decision": {"allowed": True}}


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def _json(status: int, body: dict, extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n{extra}\r\n"
            ).encode() + data


ANSWERS = {
    "ok": _json(200, OK),
    "503": _json(503, {"error": {"type": "api_error", "code": "service_unavailable", "message": "busy"}}),
    "in_use": _json(409, {"error": {"type": "idempotency_error", "code": "idempotency_key_in_use", "message": "x"}}),
    "404": _json(404, {"error": {"type": "invalid_request_error", "code": "customer_not_found", "message": "no",
                                 "request_id": "req_404"}}),
    "502": b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nbad gateway",
    "ok_close": _json(200, OK, "connection: close\r\n"),
    "until_close": b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"granted": false}',
    "torn_head": b"HTTP/1.1 200 OK\r\ncontent-le",
    "chunked": (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b'{"granted": true,', b' "n": 2}')) + b"0\r\n\r\n"),
}


class ScriptedServer:
    """Answers each request with the next step of ``script`` (then ``ok``): a key of
    ``ANSWERS``; ``lost`` (read the request, close without answering); ``ok_then_drop`` (answer,
    then close the kept-alive connection, as a server's idle timeout does); ``silent`` (never
    answer). ``requests``: (connection number, target, headers, body) of each request."""

    def __init__(self, script: list[str] | None = None):
        self.script = list(script or [])
        self.requests: list[tuple[int, str, dict[str, str], bytes]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        with conn:
            while True:
                request = _Request()
                parser = httptools.HttpRequestParser(request)
                while not request.done:
                    data = conn.recv(65536)
                    if not data:
                        return
                    parser.feed_data(data)
                with self._lock:
                    self.requests.append((number, request.url.decode(), request.headers, request.body))
                    step = self.script.pop(0) if self.script else "ok"
                if step == "lost":
                    return
                if step == "silent":
                    while conn.recv(65536):
                        pass
                    return
                conn.sendall(ANSWERS["ok" if step == "ok_then_drop" else step])
                if step in ("ok_then_drop", "ok_close", "until_close", "torn_head"):
                    return

    def close(self) -> None:
        self._stop = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        except OSError:
            pass
        self._sock.close()


@contextmanager
def scripted(script: list[str] | None = None) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script)
    try:
        yield server
    finally:
        server.close()
