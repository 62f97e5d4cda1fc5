"""`billing ingest-worker`: consume usage events from a NATS JetStream stream into the ledger."""

from __future__ import annotations

from typing import Annotated

import typer


def ingest_worker(
        nats: Annotated[str | None, typer.Option(
            "--nats", envvar="BILLING_NATS_URL", help="NATS server URL, e.g. nats://127.0.0.1:4222.")] = None,
        stream: Annotated[str, typer.Option(
            envvar="BILLING_NATS_STREAM", help="JetStream stream (subjects <stream>.events, <stream>.dead).")] = "usage",
        batch: Annotated[int, typer.Option(min=1, max=1000, help="Messages per fetch (each up to 1,000 events), "
                                           "recorded in one Ledger.record call.")] = 20,
        ack_wait: Annotated[float, typer.Option(min=1, help="Seconds before an unacknowledged message is delivered "
                                                "again (when this worker creates the consumer).")] = 60.0,
        until_drained: Annotated[bool, typer.Option(
            "--until-drained", help="Stop once nothing is left to deliver or awaiting acknowledgement.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the totals as JSON when stopping.")] = False,
) -> None:
    """Consume events from the stream (durable consumer billing-ingest, shared by any number of
    workers) into BILLING_DATABASE_URL, acknowledging each message after its events committed.
    Messages that are not an event list go to <stream>.dead. SIGTERM: finish the batch, stop."""
    import logging

    from billing.cli.context import catalog, engine, fail, run
    from billing.cli.render import print_json
    from billing.config import get_settings
    from billing.ingest_log.worker import IngestWorker, run_worker
    from billing.ledger.ingest import Ledger

    if not nats:
        fail("--nats (or BILLING_NATS_URL) is required, e.g. --nats nats://127.0.0.1:4222")
    handler = logging.StreamHandler()  # the worker's own lines (batches, rejections, dead letters) on stderr
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    worker_log = logging.getLogger("billing.ingest_log")
    worker_log.addHandler(handler)
    worker_log.setLevel(logging.INFO)
    ledger = Ledger(engine(), catalog(), future_tolerance_seconds=get_settings().future_tolerance_seconds)
    worker = run(lambda: IngestWorker(ledger, nats, stream, batch=batch, ack_wait=ack_wait))
    try:
        totals = run(lambda: run_worker(worker, until_drained=until_drained))
    finally:
        ledger.close()
    if as_json:
        print_json(totals.to_json())
    else:
        typer.echo(f"stopped: {totals.messages} messages, {totals.events} events ({totals.accepted} accepted, "
                   f"{totals.duplicates} duplicates, {totals.conflicts} conflicts, {totals.rejected} rejected), "
                   f"{totals.dead_letters} dead letters")
