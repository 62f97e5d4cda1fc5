"""The one invoice lifecycle, pair by pair: every (document kind, status, action) on a real
database (SQLite and PostgreSQL). Allowed transitions move the document and record their
instant; a repeat is an idempotent success; everything else is ``invalid_transition`` and
changes nothing, amounts and lines included."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, select

from billing.api.errors import status_for
from billing.errors import BillingError, ErrorCode
from billing.invoicing import lifecycle
from billing.invoicing.lifecycle import STALE, TRANSITIONS, Action, DocumentKind, InvoiceStatus
from billing.store.models import Invoice, InvoiceLineRow
from tests.support.db import engine_for_url
from tests.support.stripe_server import add_customer, add_invoice

AT = datetime(2026, 11, 2, 12, tzinfo=UTC)
LATER = datetime(2026, 11, 9, 12, tzinfo=UTC)
# the instant column each action records (None: only the status moves)
STAMP = {Action.FINALIZE: "finalized_at", Action.PAY: "paid_at", Action.VOID: "voided_at",
         Action.MARK_UNCOLLECTIBLE: None, Action.PAYMENT_FAILED: "payment_failed_at"}
CASES = list(itertools.product(DocumentKind, InvoiceStatus, Action))


def leads_to(kind: DocumentKind, action: Action) -> set[InvoiceStatus]:
    """The statuses ``action`` moves a ``kind`` document to (a status it keeps not counted)."""
    return {to for (k, frm, a), to in TRANSITIONS.items() if k == kind and a == action and frm != to}


@pytest.fixture
def engine(db_url):
    with engine_for_url(db_url) as eng:
        add_customer(eng, "acme")
        yield eng


def snapshot(engine, invoice_id: int) -> tuple:
    """Everything but the status and its instants: what must never move."""
    with Session(engine) as s:
        inv = s.get(Invoice, invoice_id)
        lines = s.exec(select(InvoiceLineRow.amount_minor, InvoiceLineRow.kind, InvoiceLineRow.description)
                       .where(InvoiceLineRow.invoice_id == invoice_id).order_by(InvoiceLineRow.position)).all()
        return inv.number, inv.total_minor, inv.currency, inv.kind, tuple(lines)


def stamps(engine, invoice_id: int) -> tuple:
    with Session(engine) as s:
        inv = s.get(Invoice, invoice_id)
        return tuple(getattr(inv, column) for column in STAMP.values() if column)


def test_the_table_is_what_the_issue_says():
    """draft -> finalized -> paid / void / uncollectible for invoices; credit notes end at void."""
    def reachable(kind: DocumentKind) -> set[tuple[InvoiceStatus, InvoiceStatus]]:
        return {(frm, to) for (k, frm, _), to in TRANSITIONS.items() if k == kind and frm != to}

    assert reachable(DocumentKind.INVOICE) == {
        (InvoiceStatus.DRAFT, InvoiceStatus.FINALIZED), (InvoiceStatus.DRAFT, InvoiceStatus.VOID),
        (InvoiceStatus.FINALIZED, InvoiceStatus.PAID), (InvoiceStatus.FINALIZED, InvoiceStatus.VOID),
        (InvoiceStatus.FINALIZED, InvoiceStatus.UNCOLLECTIBLE),
        (InvoiceStatus.UNCOLLECTIBLE, InvoiceStatus.PAID), (InvoiceStatus.UNCOLLECTIBLE, InvoiceStatus.VOID)}
    assert reachable(DocumentKind.CREDIT_NOTE) == {
        (InvoiceStatus.DRAFT, InvoiceStatus.FINALIZED), (InvoiceStatus.DRAFT, InvoiceStatus.VOID),
        (InvoiceStatus.FINALIZED, InvoiceStatus.VOID)}
    # paid and void are final: nothing leaves them
    assert not [key for key in TRANSITIONS if key[1] in (InvoiceStatus.PAID, InvoiceStatus.VOID)]
    assert status_for(ErrorCode.INVALID_TRANSITION) == 409
    assert [s.value for s in InvoiceStatus] == ["draft", "finalized", "paid", "void", "uncollectible"]


@pytest.mark.parametrize("kind,status,action", CASES, ids=lambda v: str(v))
def test_every_kind_status_action(engine, kind, status, action):
    invoice_id = add_invoice(engine, "acme", [1250, -250], kind=kind.value, status=status.value)
    before = snapshot(engine, invoice_id)
    target = TRANSITIONS.get((kind, status, action))
    stamp = STAMP[action]
    if (kind, status, action) in STALE or status in leads_to(kind, action):
        stamped_before = stamps(engine, invoice_id)
        t = lifecycle.apply(engine, invoice_id, action, AT)  # already there (or stale news): success
        assert not t.changed and t.invoice.status == status
        assert stamps(engine, invoice_id) == stamped_before
    elif target is None:
        stamped_before = stamps(engine, invoice_id)
        with pytest.raises(BillingError) as err:
            lifecycle.apply(engine, invoice_id, action, AT)
        assert err.value.code == ErrorCode.INVALID_TRANSITION
        assert err.value.details == {"kind": kind.value, "status": status.value, "action": action.value}
        assert status.value in err.value.message
        with Session(engine) as s:
            assert s.get(Invoice, invoice_id).status == status
        assert stamps(engine, invoice_id) == stamped_before
    else:
        first = lifecycle.apply(engine, invoice_id, action, AT)
        assert first.changed and first.invoice.status == target
        if stamp is not None:
            assert getattr(first.invoice, stamp) == AT
        again = lifecycle.apply(engine, invoice_id, action, LATER)  # exists = success
        assert not again.changed and again.invoice.status == target
        if stamp is not None:
            assert getattr(again.invoice, stamp) == AT  # the first instant stays
    assert snapshot(engine, invoice_id) == before  # amounts and lines never change


def test_unknown_document(engine):
    for action in Action:
        with pytest.raises(BillingError) as err:
            lifecycle.apply(engine, 999_999, action, AT)
        assert err.value.code == ErrorCode.INVOICE_NOT_FOUND


@given(st.sampled_from(DocumentKind), st.sampled_from(InvoiceStatus), st.sampled_from(Action), st.booleans())
def test_exactly_one_answer_per_pair(kind, status, action, stamped):
    """Each pair either moves (the table), has nothing left to do, or is refused: never two."""
    moves = lifecycle.next_status(kind, status, action) is not None
    done = lifecycle.already_done(kind, status, action, stamped)
    if (kind, status, action) in STALE:
        assert done and not moves
    elif moves and lifecycle.next_status(kind, status, action) == status:  # a payment failure: once
        assert done == stamped
    elif moves:
        assert not done
    else:  # refused, unless the document is where this action leads
        assert done == (status in leads_to(kind, action))
