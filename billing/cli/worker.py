"""`billing worker`: run the scheduled jobs (period closes, forecast alerts, the webhook
outbox, hold purging, Stripe sync) apart from `billing serve`; several workers may run at once."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    once: Annotated[bool, typer.Option("--once", help="Run each job once and exit (for cron and tests).")] = False,
    jobs: Annotated[str | None, typer.Option(
        "--jobs", help="Comma-separated: close, alerts, outbox, purge_holds, stripe_sync (default: every configured one).")]
    = None,
    interval: Annotated[list[str] | None, typer.Option(
        "--interval", help="Seconds between runs: N for every job, or JOB=N (repeatable).")] = None,
    webhook_url: Annotated[str | None, typer.Option(
        envvar="BILLING_WEBHOOK_URL",
        help="The outbox job also delivers every webhook to this URL (the implicit 'env' endpoint).")] = None,
    webhook_secret: Annotated[str | None, typer.Option(
        envvar="BILLING_WEBHOOK_SECRET", help="The secret signing the 'env' endpoint's webhooks.")] = None,
) -> None:
    """Run the background jobs on BILLING_DATABASE_URL and BILLING_PLANS_DIR, printing one JSON
    line per job run. Two workers never run the same job at once (the other skips it).
    SIGTERM / SIGINT: the running job finishes, then the worker exits 0."""
    import json
    import signal
    import threading

    from billing.cli.context import catalog, engine, fail
    from billing.config import get_settings
    from billing.worker.jobs import JobContext, unavailable
    from billing.worker.runner import Worker
    from billing.worker.schedule import JOB_NAMES, WorkerConfigError, parse_intervals, parse_jobs

    try:
        names = parse_jobs(jobs)
        intervals = parse_intervals(interval or ())
    except WorkerConfigError as exc:
        fail(str(exc))
        raise
    ctx = JobContext(engine(), catalog(), get_settings(), webhook_url=webhook_url, webhook_secret=webhook_secret)
    if names is None:
        names = [n for n in JOB_NAMES if unavailable(ctx, n) is None]
    else:
        problems = [f"{n}: {unavailable(ctx, n)}" for n in names if unavailable(ctx, n)]
        if problems:
            fail("cannot run job(s): " + "; ".join(problems))

    def emit(record: dict) -> None:
        print(json.dumps(record, default=str), flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runner = Worker(ctx, names, intervals, emit=emit)
    emit({"worker": "started", "jobs": names, "once": once,
          "intervals": {n: intervals[n] for n in names}})
    try:
        records = runner.run_once(stop) if once else (runner.run_forever(stop) or [])
    finally:
        ctx.close()
    emit({"worker": "stopped", "signal": stop.is_set()})
    if any(r["status"] == "error" for r in records):
        raise typer.Exit(1)
