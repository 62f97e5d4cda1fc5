"""``HttpClient``'s own HTTP/1.1 path for a plain ``http://`` service: keep-alive sockets in a
small pool, each request written with one ``sendall`` and its answer parsed by ``httptools``
(uvicorn's parser, already a dependency).

Why: ``httpx`` spends about 0.8 ms of CPU per request on its models, h11 and the connection
pool; this path about 0.1 ms (``bench/guarded.py``: the app's CPU per guarded call). It is
used only where ``httpx`` would do nothing more: ``http://`` without a proxy from the
environment and without a ``client`` or ``transport`` given (TLS, proxies and test
transports stay on ``httpx``).

The same contract as ``httpx`` for ``HttpClient``: failures raise ``httpx``'s exceptions
(``ConnectError`` / ``ConnectTimeout``, ``ReadTimeout`` / ``WriteTimeout``, ``ReadError`` /
``WriteError``, ``RemoteProtocolError``: each a ``TransportError``, which
``billing.client.retry`` retries), ``timeout`` bounds the connect and every read and write,
and an answer has ``status_code``, ``headers`` (lower-case names), ``text``,
``reason_phrase`` and ``json()``. A connection the server closed while it sat idle in the
pool (keep-alive timeout) is noticed when the request on it gets no answer byte: the
request is sent once more on a new connection at once (safe: every write carries its
``Idempotency-Key``, reads change nothing), as ``httpcore`` does.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
import weakref
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import getproxies, proxy_bypass_environment

import httptools
import httpx

IDLE_SECONDS = 4.0  # a pooled connection idle longer is closed, not reused (uvicorn closes at 5 s)
MAX_IDLE = 64  # pooled connections kept open at most (idle ones; busy ones are not limited)
USER_AGENT = "billing-client"


def usable(base_url: str) -> bool:
    """True when this path can stand in for ``httpx``: ``http://`` and no proxy applies."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = getproxies()
    if "http" in proxies or "all" in proxies:
        return bool(proxy_bypass_environment(parts.hostname, proxies))
    return True


class Response:
    """What ``billing.client.http.answer`` reads of an answer (``httpx.Response``'s names)."""

    __slots__ = ("status_code", "headers", "content", "reason_phrase")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes, reason_phrase: str):
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.reason_phrase = reason_phrase

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Reader:
    """httptools callbacks: one answer's status text, headers and body."""

    __slots__ = ("reason", "headers", "body", "complete", "started", "headers_done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.parser: Any = None
        self.headers_done = False
        self.keep_alive = False
        self.reason = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.complete = False
        self.started = False

    def on_message_begin(self) -> None:
        self.started = True

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # False once the parser moved past it


class _Conn:
    __slots__ = ("sock", "used_at", "fresh")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.used_at = time.monotonic()
        self.fresh = True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class RawHttp:
    """Keep-alive connections to one ``http://host:port[/prefix]`` (thread-safe: a request
    takes a connection from the pool, or opens one, and puts it back when answered)."""

    def __init__(self, base_url: str, timeout: float | None = 10.0):
        parts = urlsplit(base_url)
        self.address = (parts.hostname, parts.port or 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self.host = host if parts.port is None else f"{host}:{parts.port}"
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._closed = False
        _POOLS.add(self)

    def _after_fork(self) -> None:
        """In a forked child: the parent's connections are not this process's to use."""
        self._lock = threading.Lock()
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()  # the child's copy of the descriptor only

    # ------------------------------------------------------------------ the pool
    def _take(self) -> _Conn:
        now = time.monotonic()
        stale = []
        conn = None
        with self._lock:
            while self._idle:
                candidate = self._idle.pop()
                if now - candidate.used_at < IDLE_SECONDS:
                    conn = candidate
                    break
                stale.append(candidate)
        for old in stale:
            old.close()
        return conn if conn is not None else self._connect()

    def _give(self, conn: _Conn) -> None:
        conn.used_at = time.monotonic()
        conn.fresh = False
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> _Conn:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {self.host}: {exc}") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"connecting to {self.host}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.timeout is not None and not _kernel_timeouts(sock, self.timeout):
            sock.settimeout(self.timeout)  # pragma: no cover - a platform without SO_RCVTIMEO
        else:
            sock.settimeout(None)
        return _Conn(sock)

    def close(self) -> None:
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for conn in idle:
            conn.close()

    # --------------------------------------------------------------- a request
    def request(self, method: str, url: str, content: str | bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        """Send one request and read its whole answer."""
        body = None if content is None else content.encode() if isinstance(content, str) else content
        data = self._head(method, url, body, headers or {}) + (body or b"")
        conn = self._take()
        while True:
            try:
                return self._exchange(conn, data)
            except _Stale:
                conn.close()
                conn = self._connect()  # once: a fresh connection never raises _Stale
            except BaseException:
                conn.close()
                raise

    def _head(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        target = self.prefix + (url if url.isascii() else quote(url, safe="/:@!$&'()*+,;=%?~"))
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}", f"User-Agent: {USER_AGENT}",
                 "Accept: */*"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise httpx.LocalProtocolError(f"illegal header {name!r}")
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        try:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        except UnicodeEncodeError:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    def _exchange(self, conn: _Conn, data: bytes) -> Response:
        sock = conn.sock
        try:
            sock.sendall(data)
        except (BlockingIOError, TimeoutError) as exc:
            raise httpx.WriteTimeout(f"sending to {self.host}: timed out") from exc
        except OSError as exc:
            if not conn.fresh:
                raise _Stale() from exc
            raise httpx.WriteError(f"sending to {self.host}: {exc}") from exc
        reader = _Reader()
        parser = reader.parser = httptools.HttpResponseParser(reader)
        while not reader.complete:
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, TimeoutError) as exc:
                raise httpx.ReadTimeout(f"reading from {self.host}: timed out") from exc
            except OSError as exc:
                if not reader.started and not conn.fresh:
                    raise _Stale() from exc
                raise httpx.ReadError(f"reading from {self.host}: {exc}") from exc
            if not chunk:
                if not reader.started and not conn.fresh:
                    raise _Stale()
                if reader.headers_done and _ends_at_close(reader):
                    reader.complete = True  # a body delimited by the end of the connection
                    conn.close()
                    break
                raise httpx.RemoteProtocolError("Server disconnected without sending a complete response.")
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserUpgrade as exc:  # pragma: no cover - never asked for
                raise httpx.RemoteProtocolError(f"unexpected upgrade from {self.host}") from exc
            except httptools.HttpParserError as exc:
                raise httpx.RemoteProtocolError(f"bad answer from {self.host}: {exc}") from exc
        response = Response(parser.get_status_code(), reader.headers, b"".join(reader.body),
                            reader.reason.decode("latin-1"))
        if reader.keep_alive and conn.sock.fileno() >= 0:
            self._give(conn)
        else:
            conn.close()
        return response


_POOLS: "weakref.WeakSet[RawHttp]" = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for pool in list(_POOLS):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections_after_fork)


class _Stale(Exception):
    """A pooled connection the server had closed: no byte of an answer came back."""


def _ends_at_close(reader: _Reader) -> bool:
    return "content-length" not in reader.headers and "transfer-encoding" not in reader.headers


def _kernel_timeouts(sock: socket.socket, seconds: float) -> bool:
    """Bound each read and write by ``seconds`` in the kernel (SO_RCVTIMEO / SO_SNDTIMEO): the
    socket stays blocking, one system call per read (``settimeout`` polls before each)."""
    whole = int(seconds)
    value = struct.pack("ll", whole, max(1 if whole == 0 else 0, int((seconds - whole) * 1_000_000)))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    except (OSError, AttributeError):  # pragma: no cover
        return False
    return True
