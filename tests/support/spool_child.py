"""A process that makes one guarded call and is killed (SIGKILL) at a commit: before the
request is sent, or after the service answered but before the answer is read.

    python tests/support/spool_child.py BASE_URL API_KEY SPOOL_DIR before_send|after_send CUSTOMER METER

``background``: the client sends its commits in the background (``background_commits=True``),
the commit requests hang, and the process kills itself as soon as ``guarded_call`` returned.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.support and billing

import httpx  # noqa: E402

from billing.client import HttpClient, guarded_call  # noqa: E402
from tests.support.sdk_shapes import anthropic_message  # noqa: E402


class KillAtCommit(httpx.HTTPTransport):
    def __init__(self, point: str):
        super().__init__()
        self.point = point

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/quota/commit":
            return super().handle_request(request)
        if self.point == "background":
            time.sleep(600)  # never answered: killed meanwhile
        if self.point == "before_send":
            os.kill(os.getpid(), signal.SIGKILL)
        response = super().handle_request(request)
        response.read()  # the service committed and answered
        os.kill(os.getpid(), signal.SIGKILL)
        return response


def main() -> None:
    base, key, spool, point, customer, meter = sys.argv[1:7]
    client = HttpClient(base, key, spool_dir=spool, transport=KillAtCommit(point),
                        background_commits=point == "background")
    out = guarded_call(client, customer, meter, lambda model: anthropic_message(model="claude-sonnet-4-5"))
    if point == "background":
        assert out.queued == len(out.commits) >= 1, out.commits
        os.kill(os.getpid(), signal.SIGKILL)  # at once: nothing fsynced or sent for sure
    print("not killed", flush=True)


if __name__ == "__main__":
    main()
