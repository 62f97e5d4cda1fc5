"""Budget alerts after ingestion, when something around them fails: usage that committed is
always evaluated (also when a later chunk or the source of the events fails), and a failed
evaluation never fails the write that committed (every door, quota commits included)."""

from __future__ import annotations

import json

import pytest

from billing.alerts.budget import BudgetAlerts
from billing.reservations.holds import Outbox
from tests.support.alerts import _events, _quota
from tests.support.quota import Clock


def _fired(engine) -> list[str]:
    return [json.loads(r["payload"])["data"]["threshold_percent"] for r in Outbox(engine).rows(type_="alert.triggered")]


class SourceFailed(Exception):
    pass


@pytest.mark.parametrize("failure", ["source", "chunk"])
def test_usage_committed_before_a_failure_is_evaluated(any_engine, monkeypatch, failure):
    """A long import (pipelined chunks) whose first chunk commits 60 of the 100 included
    messages and then fails (the file cannot be read further, or the next chunk's write
    fails): the committed 60% still fires the 50% alert (it waited for the next write)."""
    engine = any_engine
    q = _quota(engine, Clock())
    ledger = q.ledger
    try:
        def source():
            yield from _events(60)
            if failure == "source":
                raise SourceFailed("the file cannot be read further")
            yield from _events(10, 60)

        if failure == "chunk":
            real, calls = ledger._store_once, []

            def second_fails(staged):
                calls.append(1)
                if len(calls) == 2:
                    raise SourceFailed("the second chunk's write failed")
                return real(staged)

            monkeypatch.setattr(ledger, "_store_once", second_fails)
        with pytest.raises(SourceFailed):
            ledger.record(source(), chunk_size=60)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one() == 60
        assert _fired(engine) == ["50"]
    finally:
        q.close()


@pytest.mark.parametrize("read_again", [False, True], ids=["usage-read-in-batch", "usage-read-again"])
def test_a_failed_evaluation_never_fails_a_committed_quota_commit(any_engine, monkeypatch, read_again):
    """The commit's event is stored and its hold settled; budget alerts evaluated after it
    fail (the database went away for a moment): the caller gets the commit's result, not
    the alert's error (which it would take for a failed commit), and the next write fires
    the alert."""
    engine = any_engine
    q = _quota(engine, Clock())
    try:
        q.ledger.record(_events(49))

        def broken(*_args, **_kwargs):
            raise RuntimeError("alert store unavailable")

        monkeypatch.setattr(BudgetAlerts, "record", broken)
        evaluated: list[list[str]] = []
        if read_again:  # the usage read after the COMMIT fails too: the commit reads it again
            monkeypatch.setattr("billing.reservations.writer.batch_counters_query",
                                lambda *_args: ("SELECT no_such_column FROM usage_counter", []))
            real_evaluate = BudgetAlerts.evaluate
            monkeypatch.setattr(BudgetAlerts, "evaluate",
                                lambda self, customers: evaluated.append(list(customers)) or real_evaluate(self, customers))
        r = q.reserve("acme", "messages")
        out = q.commit(r.id, {"id": "m50", "properties": {"feature": "support-chat"}})
        assert out["event"] == "accepted" and q.get(r.id).status == "committed"
        assert evaluated == ([["acme"]] if read_again else [])
        assert _fired(engine) == []
        monkeypatch.undo()
        q.ledger.record(_events(1, 200))
        assert _fired(engine) == ["50"]
    finally:
        q.close()
