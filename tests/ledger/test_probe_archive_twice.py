"""Two ``billing events archive`` runs at once (an operator's retry while the first still
runs, two cron hosts). Both passed the paid-periods check; the first wrote the files and
dropped the events; the second then found no event in the range, deleted the (same-named)
file of the month and wrote a manifest of 0 events: both reported success, the events were
gone from the ledger AND from the archive. Archives now run one at a time (the worker's
lock mechanism, name ``archive``): the second is refused with ``conflict``, and run again
after the first it finds nothing to archive."""

from __future__ import annotations

import threading

import pytest

import billing.ledger.archive as archive_module
from billing.errors import BillingError
from billing.ledger.archive import archive, verify
from tests.support.archive import NOW, _count, _world


def test_a_second_archive_while_one_runs_is_refused_and_loses_nothing(engine, tmp_path, monkeypatch):
    _, invoicing, invoices = _world(engine)
    for invoice_id in invoices:
        invoicing.mark_paid(invoice_id, NOW)
    out = tmp_path / "archive"
    real_refusal = archive_module._refusal
    first_checked, go_on = threading.Event(), threading.Event()

    def refusal_then_pause(*args, **kwargs):  # the first run pauses after its check
        found = real_refusal(*args, **kwargs)
        if threading.current_thread().name == "first":
            first_checked.set()
            go_on.wait(60)
        return found

    monkeypatch.setattr(archive_module, "_refusal", refusal_then_pause)
    outcome: dict[str, object] = {}

    def first() -> None:
        try:
            outcome["first"] = archive(engine, "2026-11", out, "jsonl", now=NOW)["events"]
        except BillingError as exc:
            outcome["first"] = exc.code

    thread = threading.Thread(target=first, name="first")
    thread.start()
    assert first_checked.wait(60)
    try:
        second = archive(engine, "2026-11", out, "jsonl", now=NOW)["events"]
    except BillingError as exc:
        second = exc.code
    go_on.set()
    thread.join(60)
    assert {outcome["first"], second} == {80, "conflict"}
    assert _count(engine) == 5
    assert verify(engine, out) == {"ok": True, "events": 80, "periods": 2, "problems": []}
    assert archive(engine, "2026-11", out, "jsonl", now=NOW)["events"] == 0  # retried after: nothing to do
    assert verify(engine, out)["events"] == 80  # and the archive is left as it was


def test_archive_before_a_future_month_is_refused(engine, tmp_path):
    _world(engine)
    with pytest.raises(BillingError) as refused:
        archive(engine, "2027-01", tmp_path / "a", "jsonl", now=NOW)
    assert refused.value.code == "conflict" and not (tmp_path / "a").exists() and _count(engine) == 85
