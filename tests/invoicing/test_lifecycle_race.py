"""Two transitions race on one finalized invoice, on SQLite and on PostgreSQL: ``pay`` and
``void`` from two threads, each on its own engine (its own connection), released together
by a barrier, 20 times. Each time exactly one wins; the other is told ``invalid_transition``
with the status the winner left (never a 500, a deadlock or another exception), the stored
status is the winner's, and the invoice's amounts never change."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlmodel import Session

from billing.errors import BillingError, ErrorCode
from billing.invoicing import lifecycle
from billing.invoicing.lifecycle import Action, InvoiceStatus
from billing.store.models import Invoice
from tests.support.db import engine_for_url
from tests.support.stripe_server import add_customer, add_invoice

ROUNDS = 20
AT = datetime(2026, 11, 2, 12, tzinfo=UTC)
TARGET = {Action.PAY: InvoiceStatus.PAID, Action.VOID: InvoiceStatus.VOID}


@pytest.fixture
def engines(db_url):
    with engine_for_url(db_url) as first, engine_for_url(db_url) as second:
        add_customer(first, "acme")
        yield first, second


def race(engines, invoice_id: int) -> dict[Action, object]:
    """Run pay and void at once; each action's answer: a Transition or the exception raised."""
    barrier = threading.Barrier(2)
    answers: dict[Action, object] = {}

    def run(engine, action: Action) -> None:
        barrier.wait()
        try:
            answers[action] = lifecycle.apply(engine, invoice_id, action, AT)
        except Exception as exc:  # noqa: BLE001 - recorded: the test says which ones are allowed
            answers[action] = exc

    threads = [threading.Thread(target=run, args=(engine, action))
               for engine, action in zip(engines, (Action.PAY, Action.VOID))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return answers


def test_pay_and_void_race_exactly_one_wins(engines):
    winners: Counter[Action] = Counter()
    for round_ in range(ROUNDS):
        invoice_id = add_invoice(engines[0], "acme", [4200, 1337])
        answers = race(engines, invoice_id)
        won = [a for a, answer in answers.items() if isinstance(answer, lifecycle.Transition)]
        lost = [a for a, answer in answers.items() if not isinstance(answer, lifecycle.Transition)]
        assert len(won) == 1 and len(lost) == 1, (round_, answers)
        winner, loser = won[0], lost[0]
        assert answers[winner].changed and answers[winner].invoice.status == TARGET[winner]
        refusal = answers[loser]
        assert isinstance(refusal, BillingError) and refusal.code == ErrorCode.INVALID_TRANSITION, refusal
        assert refusal.details["status"] == TARGET[winner]
        with Session(engines[1]) as s:
            inv = s.get(Invoice, invoice_id)
            assert inv.status == TARGET[winner] and inv.total_minor == 5537
            assert (inv.paid_at, inv.voided_at) == ((AT, None) if winner is Action.PAY else (None, AT))
        winners[winner] += 1
    assert sum(winners.values()) == ROUNDS
