"""The worker's pure scheduling logic: job lists, intervals, which jobs are due."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import billing.worker.schedule as schedule_module
from billing.worker.schedule import (
    DEFAULT_INTERVALS, JOB_NAMES, Schedule, WorkerConfigError, parse_intervals, parse_jobs)


def test_jobs_parse_in_run_order_and_unknown_names_are_named():
    assert parse_jobs(None) is None
    assert parse_jobs("outbox, close,outbox") == ["close", "outbox"]
    with pytest.raises(WorkerConfigError, match="unknown job\\(s\\) 'closing', ''"):
        parse_jobs("closing,")


def test_intervals_default_all_or_per_job_later_wins():
    assert parse_intervals([]) == DEFAULT_INTERVALS
    assert parse_intervals(["2"]) == {n: 2.0 for n in JOB_NAMES}
    assert parse_intervals(["2", "close=0.5"]) == {**{n: 2.0 for n in JOB_NAMES}, "close": 0.5}
    assert parse_intervals(["close=0.5", "7"])["close"] == 7.0
    for bad, message in (("x", "not a number"), ("0", "over 0"), ("nan", "over 0"), ("inf", "over 0"),
                         ("closer=1", "unknown job 'closer'"), ("outbox=-1", "outbox: must be over 0")):
        with pytest.raises(WorkerConfigError, match=message):
            parse_intervals([bad])


def test_every_job_is_due_at_start_then_each_after_its_interval():
    s = Schedule(["close", "outbox"], {"close": 10.0, "outbox": 1.0, "purge_holds": 5.0}, start=100.0)
    assert s.due(100.0) == ["close", "outbox"] and s.wait(100.0) == 0.0
    s.ran("close", 103.0)  # the interval counts from the end of the run
    s.ran("outbox", 103.5)
    assert s.due(104.0) == [] and s.wait(104.0) == 0.5
    assert s.due(104.5) == ["outbox"]
    assert s.due(113.0) == ["close", "outbox"]
    assert Schedule([], {}, 0.0).wait(0.0) == float("inf")


@given(st.lists(st.floats(min_value=0.01, max_value=50), min_size=1, max_size=200))
def test_a_job_never_runs_sooner_than_its_interval_after_its_previous_run(durations):
    """Property: simulating the loop (each run takes a given time), consecutive runs of a job
    start at least its interval after the previous run ended, and the wait never overshoots
    the next due job."""
    intervals = {"close": 7.0, "outbox": 1.0}
    s = Schedule(["close", "outbox"], intervals, start=0.0)
    now = 0.0
    ended: dict[str, float] = {}
    for took in durations:
        due = s.due(now)
        if not due:
            wait = s.wait(now)
            assert wait > 0
            now += wait
            assert s.due(now)
            continue
        name = due[0]
        if name in ended:
            assert now >= ended[name] + intervals[name]
        now += took
        ended[name] = now
        s.ran(name, now)


def test_the_scheduling_module_imports_no_database_web_or_clock_code():
    import subprocess
    import sys

    code = ("import sys, billing.worker.schedule\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'sqlmodel', 'httpx', "
            "'stripe', 'fastapi') or m.startswith(('billing.store', 'billing.ledger', 'billing.api')))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stderr + done.stdout
    source = Path(schedule_module.__file__).read_text()
    assert "time.monotonic" not in source and "datetime.now" not in source  # times come from the caller
