"""Ingestion through a durable log (NATS JetStream).

Producers publish batches of usage events to a stream (``publisher.py``: the API's
``POST /v1/events`` with ``Prefer: respond-async``, or any process); ``billing
ingest-worker`` processes (``worker.py``) share one durable pull consumer on it and hand the
events of each fetch to the one ingestion service, ``Ledger.record``, acknowledging the
messages only after it returned (committed). Delivery is at least once; the ledger is
idempotent per event id, so each event is counted once.

Subjects of a stream ``S`` (``log.py``): ``S.events`` (batches of events) and ``S.dead``
(messages that are not a batch of events, with the reason in a header). Message format
and dead-letter rules: ``messages.py``.
"""
