"""A loopback webhook receiver for the webhook tests: an HTTP server on 127.0.0.1 that
answers each POST with the next scripted status (200 once the script runs out), optionally
after a delay, and keeps every request (path, headers, body). While it runs, webhook
endpoints may point at private addresses (``BILLING_WEBHOOK_ALLOW_PRIVATE_TARGETS=1``, set
here explicitly: by default 127.0.0.1 is refused, billing.alerts.targets)."""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0):
        self.statuses = list(statuses or [])
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = outer.statuses.pop(0) if outer.statuses else 200
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hooks") -> str:
        return self.base + path

    def at(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for p, h, b in self.received if p == path]

    def __enter__(self) -> "Receiver":
        self.allowed_before = os.environ.get(ALLOW)
        allow_private_targets("1")
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        allow_private_targets(self.allowed_before)


ALLOW = "BILLING_WEBHOOK_ALLOW_PRIVATE_TARGETS"


def allow_private_targets(value: str | None) -> None:
    """Set (or, with None, unset) the setting for this process and the children it starts."""
    from billing.config import get_settings

    if value is None:
        os.environ.pop(ALLOW, None)
    else:
        os.environ[ALLOW] = value
    get_settings.cache_clear()
