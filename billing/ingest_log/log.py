"""The stream and its subjects: ``<stream>.events`` carries batches of events,
``<stream>.dead`` the dead letters (in the same stream, so they are kept as long as it is
and read with any JetStream tool: ``nats stream view usage --subject usage.dead``). The
worker's durable consumer (``billing-ingest``) filters ``<stream>.events``, so it never
sees a dead letter."""

from __future__ import annotations

import re
from datetime import timedelta

from billing.errors import BillingError, ErrorCode

CONSUMER = "billing-ingest"
RETENTION = timedelta(days=7)  # a stream this code creates keeps messages a week (create it yourself to choose)
DEAD_REASON = "Billing-Dead-Reason"  # dead-letter headers: why, and where the message was
DEAD_SUBJECT = "Billing-Dead-Subject"
DEAD_SEQUENCE = "Billing-Dead-Sequence"
DEAD_TRUNCATED = "Billing-Dead-Truncated"  # the original's length, when the dead letter keeps only its start
# The server's max_payload bounds a message's headers AND body together: a body of
# max_payload bytes plus JetStream's ``Nats-Expected-Stream`` header (or the dead-letter
# headers) makes the server reset the connection. Bodies stay this much below it.
HEADERS_ROOM = 4096


def body_limit(max_payload: int) -> int:
    """The largest body a message may carry beside its headers on a server whose
    ``max_payload`` is given."""
    return max(max_payload - HEADERS_ROOM, 1024)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_stream_name(stream: str) -> str:
    """A stream name that is also a subject token (letters, digits, ``_``, ``-``)."""
    if not _NAME.fullmatch(stream or ""):
        raise BillingError(f"stream name {stream!r}: letters, digits, '_' and '-' only (1 to 64)",
                           code=ErrorCode.VALIDATION)
    return stream


def events_subject(stream: str) -> str:
    return f"{stream}.events"


def dead_subject(stream: str) -> str:
    return f"{stream}.dead"


async def ensure_stream(js, stream: str) -> None:
    """The stream, created when it does not exist (subjects ``<stream>.>``, file storage,
    a week of messages). An existing stream is used as it is, provided it takes both
    subjects (idempotent: any number of workers and servers call this at start)."""
    from nats.js.api import StreamConfig
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        try:
            await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"],
                                             max_age=RETENTION.total_seconds()))
            return
        except Exception:  # created by another process meanwhile: read it again
            info = await js.stream_info(stream)
    subjects = info.config.subjects or []
    for needed in (events_subject(stream), dead_subject(stream)):
        if not any(_matches(pattern, needed) for pattern in subjects):
            raise BillingError(f"stream {stream!r} exists but does not take subject {needed!r} "
                               f"(its subjects: {', '.join(subjects) or 'none'})", code=ErrorCode.VALIDATION)


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)
