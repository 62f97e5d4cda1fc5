"""The NATS JetStream server of the durable-log tests (``billing.ingest_log``).

Gated like PostgreSQL (``tests/support/db.py``): the tests run when
``BILLING_TEST_NATS_URL`` is set (``.ci/run`` sets it to ``nats://127.0.0.1:4222`` after
checking the server is up); without it they are skipped, unless ``BILLING_REQUIRE_NATS=1``
(CI), in which case they fail. A set but unreachable server always fails, never skips.
Each test gets a stream of its own (``t_<uuid>``), deleted after it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

NATS_ENV = "BILLING_TEST_NATS_URL"
REQUIRE_ENV = "BILLING_REQUIRE_NATS"


def nats_server_url() -> str:
    """The configured server URL; skips (or fails, when NATS is required) if unset."""
    url = os.environ.get(NATS_ENV, "").strip()
    if not url:
        if os.environ.get(REQUIRE_ENV, "").strip() in ("1", "true", "yes"):
            pytest.fail(f"{REQUIRE_ENV}=1 but {NATS_ENV} is not set: the NATS tests cannot run", pytrace=False)
        pytest.skip(f"{NATS_ENV} is not set")
    return url


async def _jetstream(url: str):
    import nats

    try:
        nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=0)
    except Exception as exc:  # set but unreachable: a failure, not a skip
        pytest.fail(f"{NATS_ENV} is set but the server is unreachable: {type(exc).__name__}: {exc}", pytrace=False)
    return nc, nc.jetstream()


async def _delete_stream(url: str, stream: str) -> None:
    from nats.js.errors import NotFoundError

    nc, js = await _jetstream(url)
    try:
        await js.delete_stream(stream)
    except NotFoundError:
        pass
    finally:
        await nc.close()


@contextmanager
def temporary_stream(url: str) -> Iterator[str]:
    """A fresh stream name (the stream is created by whoever uses it first), deleted after."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_delete_stream(url, name))  # also checks the server answers
    try:
        yield name
    finally:
        asyncio.run(_delete_stream(url, name))


def stream_messages(url: str, stream: str, subject: str) -> list[tuple[bytes, dict[str, str]]]:
    """(data, headers) of every message of ``stream`` on ``subject``, in order."""
    from nats.js.errors import NotFoundError

    async def read() -> list[tuple[bytes, dict[str, str]]]:
        nc, js = await _jetstream(url)
        out = []
        try:
            info = await js.stream_info(stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(stream, seq)
                except NotFoundError:
                    continue
                if msg.subject == subject:
                    out.append((msg.data or b"", dict(msg.headers or {})))
        finally:
            await nc.close()
        return out

    return asyncio.run(read())


def consumer_state(url: str, stream: str) -> tuple[int, int]:
    """(messages not yet delivered, messages awaiting acknowledgement) of the workers' consumer."""
    from billing.ingest_log.log import CONSUMER

    async def read() -> tuple[int, int]:
        nc, js = await _jetstream(url)
        try:
            info = await js.consumer_info(stream, CONSUMER)
            return info.num_pending, info.num_ack_pending
        finally:
            await nc.close()

    return asyncio.run(read())
