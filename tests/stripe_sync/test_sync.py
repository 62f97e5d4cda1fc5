"""Invoice push, voids and reconcile against a real localstripe server process, driven by the
official ``stripe`` library, with a fault-injecting proxy in between (see stripe_server.py)."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime

import pytest

try:
    import localstripe  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        pytest.fail("localstripe is required when CI is set (install the `test` extra)", pytrace=False)
    pytest.skip("localstripe is not installed", allow_module_level=True)

from sqlalchemy import update
from sqlmodel import Session, select

from billing.store.models import Customer, Invoice, InvoiceLineRow
from billing.stripe_sync.client import Retrier, client_for, list_all, plain
from billing.stripe_sync.sync import META_INVOICE, META_LINE, StripeSync, line_item_id
from tests.support.stripe_server import FaultProxy, LocalStripe, add_customer, add_invoice, make_db

KEY = "sk_test_localstripe_secret_123"
NOW = datetime(2026, 10, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ls = LocalStripe(tmp_path_factory.mktemp("localstripe")).start()
    yield ls
    ls.stop()


@pytest.fixture(scope="module")
def proxy(server):
    p = FaultProxy(server.port)
    yield p
    p.close()


@pytest.fixture
def stripe_env(server, proxy):
    if not server.running():
        server.start()
    server.reset()
    proxy.clear()
    return server, proxy


@pytest.fixture
def db(tmp_path):
    url, engine = make_db(tmp_path)
    yield url, engine
    engine.dispose()


@pytest.fixture
def engine(db):
    return db[1]


@pytest.fixture
def sync(stripe_env, engine):
    _, proxy = stripe_env
    client = client_for(KEY, proxy.url, timeout=1.0)
    return StripeSync(engine, client, clock=lambda: NOW, retrier=Retrier(attempts=3, base_delay=0.01))


@pytest.fixture
def direct(stripe_env):
    """A client straight to localstripe (no faults), for assertions."""
    server, _ = stripe_env
    return client_for(KEY, server.url, timeout=5.0)


def seed(engine) -> dict[str, int]:
    add_customer(engine, "acme")
    add_customer(engine, "globex", name="Globex Corp")
    ids = {
        "acme_1": add_invoice(engine, "acme", [12_000, 2_550, -1_000]),  # a credit line
        "globex_1": add_invoice(engine, "globex", [4_999]),
        "acme_zero": add_invoice(engine, "acme", [300, -300]),  # zero total
        "globex_empty": add_invoice(engine, "globex", []),  # zero total, no lines at all
        "acme_paid": add_invoice(engine, "acme", [700], status="paid", paid_at=NOW),
        "acme_draft": add_invoice(engine, "acme", [100], status="draft"),
    }
    ids["acme_note"] = add_invoice(engine, "acme", [-500, -250], kind="credit_note", corrects_invoice_id=ids["acme_1"])
    return ids


def stripe_invoices(direct) -> list[dict]:
    return list(list_all(direct.v1.invoices.list))


def stripe_lines(direct, sid: str) -> list[dict]:
    return list(list_all(lambda p: direct.v1.invoices.line_items.list(sid, params=p)))


def assert_consistent(engine, direct, sync: StripeSync) -> None:
    """Stripe holds exactly one invoice per pushed invoice, equal totals and lines, one credit
    note per credit note (on the original's Stripe invoice, equal lines), one customer per
    billing customer, nothing else carrying our metadata; reconcile agrees."""
    with Session(engine) as s:
        invoices = list(s.exec(select(Invoice)).all())
        lines = list(s.exec(select(InvoiceLineRow)).all())
        customers = list(s.exec(select(Customer)).all())
    theirs = stripe_invoices(direct)
    by_meta = Counter(_meta(si).get(META_INVOICE) for si in theirs)
    expected = [i for i in invoices if i.kind == "invoice" and i.status in ("finalized", "paid")]
    assert set(by_meta) == {str(i.id) for i in expected}
    for inv in expected:
        assert by_meta[str(inv.id)] == 1, f"invoice {inv.id} pushed {by_meta[str(inv.id)]} times"
        si = next(s for s in theirs if _meta(s).get(META_INVOICE) == str(inv.id))
        assert inv.stripe_invoice_id == si["id"]
        assert si["total"] == inv.total_minor
        assert si["currency"] == inv.currency.lower()
        assert si["status"] == ("paid" if inv.status == "paid" or inv.total_minor == 0 else "open")
        ours = sorted((str(ln.id), ln.amount_minor, ln.stripe_line_id) for ln in lines if ln.invoice_id == inv.id)
        got = sorted((_meta(sl)[META_LINE], sl["amount"], line_item_id(sl)) for sl in stripe_lines(direct, si["id"]))
        assert got == ours
    notes = [i for i in invoices if i.kind == "credit_note" and i.status == "finalized"]
    stripe_notes = [cn for cn in list_all(lambda p: direct.v1.credit_notes.list(params=p)) if cn["status"] != "void"]
    by_note = Counter(_meta(cn).get(META_INVOICE) for cn in stripe_notes)
    assert set(by_note) == {str(n.id) for n in notes}
    for note in notes:
        assert by_note[str(note.id)] == 1, f"credit note {note.id} issued {by_note[str(note.id)]} times"
        cn = next(c for c in stripe_notes if _meta(c).get(META_INVOICE) == str(note.id))
        original = next(i for i in invoices if i.id == note.corrects_invoice_id)
        assert note.stripe_invoice_id == cn["id"] and cn["invoice"] == original.stripe_invoice_id
        assert cn["total"] == -note.total_minor
        ours = sorted((str(ln.id), -ln.amount_minor, ln.stripe_line_id) for ln in lines if ln.invoice_id == note.id)
        got = sorted((_meta(sl)[META_LINE], sl["amount"], sl["id"]) for sl in cn["lines"]["data"])
        assert got == ours
    stripe_customers = list(list_all(direct.v1.customers.list))
    mapped = Counter(_meta(c).get("billing_customer_id") for c in stripe_customers)
    assert all(n == 1 for n in mapped.values()), mapped
    for c in customers:
        if mapped.get(c.id):
            assert c.stripe_customer_id == next(x["id"] for x in stripe_customers
                                                if _meta(x).get("billing_customer_id") == c.id)
    assert sync.reconcile() == []


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


# ------------------------------------------------------------------------------ happy path


def test_push_creates_one_stripe_invoice_per_finalized_invoice(sync, engine, direct, stripe_env):
    _, proxy = stripe_env
    ids = seed(engine)
    result = sync.push()
    assert result.ok, result.to_json()
    actions = {o.invoice_id: o.action for o in result.outcomes}
    assert actions == {ids["acme_1"]: "pushed", ids["globex_1"]: "pushed", ids["acme_zero"]: "pushed",
                       ids["globex_empty"]: "pushed", ids["acme_paid"]: "pushed", ids["acme_note"]: "pushed"}
    assert_consistent(engine, direct, sync)
    # the credit note reduced what is due on its invoice in Stripe (pre-payment), not the total
    acme_1 = plain(direct.v1.invoices.retrieve(sync_id(engine, ids["acme_1"])))
    assert (acme_1["total"], acme_1["amount_due"], acme_1["status"]) == (13_550, 12_800, "open")

    with Session(engine) as s:
        zero = s.get(Invoice, ids["acme_zero"])
        assert zero.status == "paid"  # Stripe marks a finalized zero-total invoice paid; so do we
        assert s.get(Invoice, ids["acme_1"]).status == "finalized"
        assert s.get(Invoice, ids["acme_draft"]).stripe_invoice_id is None
        assert s.get(Invoice, ids["acme_note"]).stripe_invoice_id.startswith("cn_")
    si = plain(direct.v1.invoices.retrieve(sync_id(engine, ids["acme_1"])))
    assert si["metadata"] == {"billing_invoice_id": str(ids["acme_1"]), "billing_invoice_number": si["metadata"][
        "billing_invoice_number"]}
    assert si["metadata"]["billing_invoice_number"].startswith("INV-")
    assert sorted(sl["amount"] for sl in stripe_lines(direct, si["id"])) == [-1_000, 2_550, 12_000]

    # every create carries an idempotency key derived from our ids
    posts = [r for r in proxy.log if r.method == "POST"]
    assert posts and all(r.idempotency_key for r in posts)
    keys = {r.idempotency_key for r in posts}
    assert f"billing-invoice-{ids['acme_1']}" in keys and "billing-customer-acme" in keys
    assert any(k.startswith("billing-line-") for k in keys)
    assert f"billing-finalize-{ids['acme_1']}" in keys
    assert f"billing-credit-note-{ids['acme_note']}" in keys

    # a second run has nothing to do and changes nothing in Stripe
    proxy.clear()
    again = sync.push()
    assert again.outcomes == []
    assert not [r for r in proxy.log if r.method == "POST"]
    assert_consistent(engine, direct, sync)


def sync_id(engine, invoice_id: int) -> str:
    with Session(engine) as s:
        return s.get(Invoice, invoice_id).stripe_invoice_id


def test_existing_stripe_customer_is_linked_not_duplicated(sync, engine, direct):
    add_customer(engine, "initech")
    existing = direct.v1.customers.create(params={"name": "Initech", "metadata": {"billing_customer_id": "initech"}})
    direct.v1.customers.create(params={"name": "Other", "metadata": {"billing_customer_id": "someone-else"}})
    assert sync.ensure_customer("initech") == existing.id
    assert sync.ensure_customer("initech") == existing.id
    with Session(engine) as s:
        assert s.get(Customer, "initech").stripe_customer_id == existing.id
    assert len(list(list_all(direct.v1.customers.list))) == 2


def test_dry_run_calls_nothing(sync, engine, stripe_env):
    _, proxy = stripe_env
    ids = seed(engine)
    result = sync.push(dry_run=True)
    assert {o.invoice_id: o.action for o in result.outcomes if o.action == "would_push"}.keys() == {
        ids["acme_1"], ids["globex_1"], ids["acme_zero"], ids["globex_empty"], ids["acme_paid"], ids["acme_note"]}
    assert proxy.log == []


# ---------------------------------------------------------------------------- fault injection

FAULTS = [
    pytest.param(dict(method="POST", path=r"^/v1/customers$", action="500"), id="customer-500"),
    pytest.param(dict(method="POST", path=r"^/v1/customers$", action="drop_after"), id="customer-lost-answer"),
    pytest.param(dict(method="POST", path=r"^/v1/invoices$", action="drop_after"), id="invoice-lost-answer"),
    pytest.param(dict(method="POST", path=r"^/v1/invoices$", nth=2, action="delay_after", delay=1.5),
                 id="invoice-timeout"),
    pytest.param(dict(method="POST", path=r"^/v1/invoices$", nth=2, action="drop_before", times=3),
                 id="invoice-unreachable"),
    pytest.param(dict(method="POST", path=r"^/v1/invoiceitems$", nth=2, action="drop_after"), id="line-lost-answer"),
    pytest.param(dict(method="POST", path=r"^/v1/invoiceitems$", nth=3, action="500", times=5), id="line-500s"),
    pytest.param(dict(method="POST", path=r"/finalize$", action="delay_after", delay=1.5), id="finalize-timeout"),
    pytest.param(dict(method="POST", path=r"/finalize$", action="drop_before", times=10), id="finalize-down"),
    pytest.param(dict(method="GET", path=r"^/v1/invoices/[^/]+/lines$", nth=2, action="500", times=3),
                 id="lines-read-500"),
    pytest.param(dict(method="POST", path=r"^/v1/credit_notes$", action="drop_after"), id="credit-note-lost-answer"),
    pytest.param(dict(method="POST", path=r"^/v1/credit_notes$", action="500", times=3), id="credit-note-500s"),
    pytest.param(dict(method="POST", path=r"/pay$", action="delay_after", delay=1.5), id="paid-out-of-band-timeout"),
]


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_faults_then_rerun_converges(fault, sync, engine, direct, stripe_env):
    _, proxy = stripe_env
    seed(engine)
    proxy.add(**fault)
    first = sync.push()
    assert proxy.faults[0].fired, "the fault never fired"
    proxy.clear()
    second = sync.push()
    assert second.ok, second.to_json()
    assert_consistent(engine, direct, sync)
    if first.ok:  # the fault was absorbed by our retries within the first run
        assert not [o for o in second.outcomes if o.action in ("pushed", "completed")]
    else:  # or the re-run finished exactly what the first one could not
        assert {o.invoice_id for o in first.by_action("failed")} == {
            o.invoice_id for o in second.outcomes if o.action in ("pushed", "completed")}


@pytest.mark.slow
@pytest.mark.parametrize("path", [r"^/v1/invoices$", r"^/v1/invoiceitems$", r"^/v1/credit_notes$"])
def test_request_delivered_after_its_retry_is_deduplicated_by_its_idempotency_key(path, sync, engine, direct,
                                                                                 stripe_env):
    """The case a lookup cannot cover: the create is stuck in the network past the client's
    timeout, the retry looks, finds nothing, creates; then the first request arrives. Only the
    idempotency key (the same on both, derived from our id) stops a second object. Stripe's
    idempotency layer is emulated by the proxy (localstripe ignores the header)."""
    _, proxy = stripe_env
    seed(engine)
    proxy.idempotency = True
    proxy.add(method="POST", path=path, action="hold_until_retried")
    result = sync.push()
    proxy.wait_idle()
    assert result.ok, result.to_json()
    held = proxy.calls("POST", path)
    replayed = [r for r in held if r.status == "replayed"]
    assert len(replayed) == 1, held  # the late original got the retry's saved answer
    assert [r.idempotency_key for r in held].count(replayed[0].idempotency_key) == 2
    proxy.clear()
    assert_consistent(engine, direct, sync)


def test_partial_push_is_reported_then_completed(sync, engine, direct, stripe_env):
    _, proxy = stripe_env
    ids = seed(engine)
    proxy.add(method="POST", path=r"^/v1/invoiceitems$", nth=2, action="500", times=100)
    first = sync.push()
    assert not first.ok
    failed = {o.invoice_id for o in first.by_action("failed")}
    assert ids["acme_1"] in failed
    diffs = sync.reconcile()
    partial = [d for d in diffs if d.invoice_id == ids["acme_1"]]
    assert [d.kind for d in partial] == ["missing_in_stripe"] and "partial push" in partial[0].message
    assert not [d for d in diffs if d.kind == "extra_in_stripe"]  # the draft is explained, not extra
    drafts = {_meta(si)[META_INVOICE]: si["id"] for si in stripe_invoices(direct) if si["status"] == "draft"}
    kept = {line_item_id(sl) for sl in stripe_lines(direct, drafts[str(ids["acme_1"])])}
    assert len(kept) == 1  # the first line made it, the second never did
    with Session(engine) as s:
        pushable = {i.id for i in s.exec(select(Invoice).where(Invoice.kind == "invoice",
                                                               Invoice.status.in_(("finalized", "paid")))).all()}
        ours = [ln for ln in s.exec(select(InvoiceLineRow)).all() if ln.invoice_id in pushable]
        # the line that made it is recorded at once (a local trace of the partial push)
        assert {ln.stripe_line_id for ln in ours if ln.stripe_line_id} == kept
    proxy.clear()
    second = sync.push()
    assert second.ok
    assert {o.invoice_id: o.action for o in second.outcomes}[ids["acme_1"]] == "completed"
    # completed, not restarted: same drafts, the line created before kept, only the rest created
    assert sync_id(engine, ids["acme_1"]) == drafts[str(ids["acme_1"])]
    for our_id, draft_id in drafts.items():
        assert sync_id(engine, int(our_id)) == draft_id
    assert kept <= {line_item_id(sl) for sl in stripe_lines(direct, drafts[str(ids["acme_1"])])}
    assert len(proxy.calls("POST", r"^/v1/invoiceitems$")) == len(ours) - len(kept)
    assert not proxy.calls("POST", r"^/v1/invoices$")  # no invoice created again
    assert_consistent(engine, direct, sync)


def test_crash_of_the_sync_process_mid_invoice_then_rerun(sync, db, direct, stripe_env):
    """A real ``billing stripe sync`` process is killed (SIGKILL) right after Stripe executed
    its second line item, before the answer reached it: nothing of ours says the invoice is
    pushed. The re-run completes that draft (same Stripe invoice, lines kept) and converges."""
    import signal
    import subprocess
    import sys

    url, engine = db
    _, proxy = stripe_env
    ids = seed(engine)
    victim: dict[str, int] = {}
    proxy.add(method="POST", path=r"^/v1/invoiceitems$", nth=2, action="call_after",
              callback=lambda: os.kill(victim["pid"], signal.SIGKILL))
    env = {**os.environ, "BILLING_DATABASE_URL": url, "BILLING_STRIPE_API_KEY": KEY,
           "BILLING_STRIPE_API_BASE": proxy.url}
    proc = subprocess.Popen([sys.executable, "-c", "from billing.cli import app; app(prog_name='billing')",
                             "stripe", "sync", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim["pid"] = proc.pid
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, (out, err)
    assert proxy.faults[0].fired and out == b""  # killed before it could print anything
    (draft,) = [si for si in stripe_invoices(direct) if si["status"] != "void"]
    assert draft["status"] == "draft" and _meta(draft)[META_INVOICE] == str(ids["acme_1"])
    kept = {line_item_id(sl) for sl in stripe_lines(direct, draft["id"])}
    assert len(kept) == 2
    with Session(engine) as s:
        assert s.get(Invoice, ids["acme_1"]).stripe_invoice_id is None
    proxy.clear()
    second = sync.push()
    assert second.ok, second.to_json()
    assert {o.invoice_id: o.action for o in second.outcomes}[ids["acme_1"]] == "completed"
    assert sync_id(engine, ids["acme_1"]) == draft["id"]
    assert kept <= {line_item_id(sl) for sl in stripe_lines(direct, draft["id"])}
    # the mapping the dead process stored is used: acme is not looked for or created again
    assert "billing-customer-acme" not in {c.idempotency_key for c in proxy.calls("POST", r"^/v1/customers$")}
    assert_consistent(engine, direct, sync)


def test_server_stopped_mid_sync_then_rerun(sync, engine, direct, stripe_env):
    server, proxy = stripe_env
    seed(engine)
    proxy.add(method="POST", path=r"^/v1/invoiceitems$", nth=2, action="call_after", callback=server.stop)
    first = sync.push()
    assert not server.running()
    assert not first.ok
    failed = first.by_action("failed")
    assert any("network error" in o.reason for o in failed)
    # the credit note waits for its invoice
    assert all("network error" in o.reason or "not in Stripe yet" in o.reason for o in failed)
    server.start()  # same port, same data
    proxy.clear()
    second = sync.push()
    assert second.ok, second.to_json()
    assert_consistent(engine, direct, sync)


# ------------------------------------------------------------------------------------ voids


def test_void_voids_the_stripe_invoice(sync, engine, direct):
    ids = seed(engine)
    assert sync.push().ok
    outcome = sync.void(ids["globex_1"], NOW)
    assert outcome.action == "voided"
    sid = sync_id(engine, ids["globex_1"])
    assert plain(direct.v1.invoices.retrieve(sid))["status"] == "void"
    with Session(engine) as s:
        assert s.get(Invoice, ids["globex_1"]).status == "void"
    assert sync.void(ids["globex_1"], NOW).action == "unchanged"  # idempotent
    assert sync.push().outcomes == []
    assert sync.reconcile() == []


def test_a_void_stripe_agrees_with_is_not_checked_again(sync, engine, direct, monkeypatch):
    """Each sync looks at a void document only until Stripe is seen to agree (voided by us,
    or found void); then it is marked and later syncs leave it (and Stripe) alone."""
    ids = seed(engine)
    assert sync.push().ok
    with Session(engine) as s:  # voided by the invoicing side, not through the sync
        s.exec(update(Invoice).where(Invoice.id == ids["globex_1"]).values(status="void", voided_at=NOW))
        s.commit()
    looked: list[int] = []
    real = sync.push_void
    monkeypatch.setattr(sync, "push_void", lambda invoice_id: (looked.append(invoice_id), real(invoice_id))[1])
    assert sync.push().ok
    assert looked == [ids["globex_1"]]
    assert plain(direct.v1.invoices.retrieve(sync_id(engine, ids["globex_1"])))["status"] == "void"
    with Session(engine) as s:
        assert s.get(Invoice, ids["globex_1"]).stripe_void_confirmed_at is not None
    looked.clear()
    assert sync.push().ok and sync.push().ok
    assert looked == []  # confirmed: not asked about again
    assert sync.void(ids["globex_1"], NOW).action == "unchanged"  # an explicit void still checks
    assert sync.reconcile() == []


def test_void_of_credit_note_voids_the_stripe_credit_note(sync, engine, direct):
    ids = seed(engine)
    assert sync.push().ok
    cn = sync_id(engine, ids["acme_note"])
    assert sync.void(ids["acme_note"], NOW).action == "voided"
    assert plain(direct.v1.credit_notes.retrieve(cn))["status"] == "void"
    acme_1 = plain(direct.v1.invoices.retrieve(sync_id(engine, ids["acme_1"])))
    assert acme_1["amount_due"] == 13_550  # the credit is undone in Stripe too
    assert sync.void(ids["acme_note"], NOW).action == "unchanged"
    assert sync.push().outcomes == []
    assert sync.reconcile() == []


def test_void_is_refused_while_stripe_shows_the_invoice_paid(sync, engine, direct):
    from billing.errors import BillingError

    ids = seed(engine)
    assert sync.push().ok
    with Session(engine) as s:  # ours still finalized (a webhook not delivered yet), Stripe's paid
        s.exec(update(Invoice).where(Invoice.id == ids["acme_zero"]).values(status="finalized", paid_at=None))
        s.commit()
    with pytest.raises(BillingError) as err:
        sync.void(ids["acme_zero"], NOW)
    assert err.value.code == "invalid_transition" and "paid in Stripe" in err.value.message
    with Session(engine) as s:
        assert s.get(Invoice, ids["acme_zero"]).status == "finalized"


def test_void_of_partially_pushed_invoice_deletes_the_draft(sync, engine, direct, stripe_env):
    _, proxy = stripe_env
    ids = seed(engine)
    proxy.add(method="POST", path=r"/finalize$", action="500", times=100)
    assert not sync.push().ok
    drafts = [si for si in stripe_invoices(direct) if si["status"] == "draft"]
    assert drafts
    proxy.clear()
    outcome = sync.void(ids["acme_1"], NOW)
    assert outcome.action == "voided" and "deleted Stripe draft" in outcome.reason
    assert not [si for si in stripe_invoices(direct) if _meta(si).get(META_INVOICE) == str(ids["acme_1"])]
    second = sync.push()
    assert second.ok
    note = next(o for o in second.outcomes if o.invoice_id == ids["acme_note"])
    assert note.action == "skipped" and "void" in note.reason  # nothing to credit on a void invoice
    assert sync.reconcile() == []


def test_sync_cleans_up_after_an_invoice_voided_elsewhere_mid_push(sync, engine, direct, stripe_env):
    """Our invoice is voided by the invoicing service (not through the sync) while Stripe
    holds a partial draft of it: the next sync finds it by its pushed lines and deletes the
    draft; an empty draft (no line pushed yet) is reported by reconcile and removed with
    ``--invoice``."""
    _, proxy = stripe_env
    ids = seed(engine)
    proxy.add(method="POST", path=r"^/v1/invoiceitems$", nth=2, action="500", times=100)
    assert not sync.push().ok
    proxy.clear()
    with Session(engine) as s:
        s.exec(update(Invoice).where(Invoice.id.in_([ids["acme_1"], ids["globex_1"]])).values(status="void"))
        s.commit()
    outcomes = {o.invoice_id: o for o in sync.push().outcomes}
    assert outcomes[ids["acme_1"]].action == "voided" and "deleted Stripe draft" in outcomes[ids["acme_1"]].reason
    assert ids["globex_1"] not in outcomes  # nothing of it was pushed that we know of
    leftover = [d for d in sync.reconcile() if d.kind == "extra_in_stripe"]
    assert [(d.invoice_id, "--invoice" in d.message) for d in leftover] == [(ids["globex_1"], True)]
    (outcome,) = sync.push(only=[ids["globex_1"]]).outcomes
    assert outcome.action == "voided"
    assert sync.reconcile() == []


def test_void_of_paid_stripe_invoice_is_reported(sync, engine, direct):
    add_customer(engine, "acme")
    invoice_id = add_invoice(engine, "acme", [300, -300])  # zero total: Stripe marks it paid
    assert sync.push().ok
    with Session(engine) as s:  # someone voids ours behind Stripe's back
        s.exec(update(Invoice).where(Invoice.id == invoice_id).values(status="void"))
        s.commit()
    outcome = sync.push_void(invoice_id)
    assert outcome.action == "failed" and "paid" in outcome.reason


# -------------------------------------------------------------------------------- reconcile


def test_reconcile_lists_every_kind_of_difference(sync, engine, direct):
    ids = seed(engine)
    assert sync.push().ok
    assert sync.reconcile() == []
    unpushed = add_invoice(engine, "globex", [1_234])
    acme_cus = plain(direct.v1.customers.list(params={"limit": 100}))["data"]
    acme_cus = next(c["id"] for c in acme_cus if c["metadata"].get("billing_customer_id") == "acme")
    # an extra Stripe invoice carrying our metadata
    extra = direct.v1.invoices.create(params={"customer": acme_cus, "currency": "usd",
                                              "metadata": {"billing_invoice_id": "999", "billing_invoice_number": "X"}})
    direct.v1.invoice_items.create(params={"customer": acme_cus, "invoice": extra.id, "amount": 5, "currency": "usd"})
    direct.v1.invoices.finalize_invoice(extra.id)
    # an invoice made in Stripe by hand for a mapped customer (no metadata of ours)
    manual = direct.v1.invoices.create(params={"customer": acme_cus, "currency": "usd"})
    direct.v1.invoice_items.create(params={"customer": acme_cus, "invoice": manual.id, "amount": 7, "currency": "usd"})
    direct.v1.invoices.finalize_invoice(manual.id)
    # a credit note issued in Stripe by hand on one of our invoices
    manual_cn = direct.v1.credit_notes.create(params={
        "invoice": sync_id(engine, ids["globex_1"]),
        "lines": [{"type": "custom_line_item", "description": "goodwill", "quantity": 1, "unit_amount": 99}]})
    with Session(engine) as s:
        s.exec(update(Invoice).where(Invoice.id == ids["globex_1"]).values(total_minor=5_000))  # amount
        s.exec(update(Invoice).where(Invoice.id == ids["acme_1"]).values(status="paid"))  # status
        line = s.exec(select(InvoiceLineRow).where(InvoiceLineRow.invoice_id == ids["acme_paid"])).first()
        s.add(InvoiceLineRow(**{**line.model_dump(), "id": None, "position": 1, "amount_minor": 0}))  # line count
        s.exec(update(Invoice).where(Invoice.id == ids["acme_zero"]).values(stripe_invoice_id="in_doesnotexist"))
        s.exec(update(Invoice).where(Invoice.id == ids["acme_note"]).values(total_minor=-700))  # credit note amount
        s.exec(update(InvoiceLineRow).where(InvoiceLineRow.invoice_id == ids["acme_1"], InvoiceLineRow.position == 0)
               .values(amount_minor=11_999))  # one line differs, the total does not
        s.commit()
    diffs = sync.reconcile()
    kinds = Counter((d.kind, d.invoice_id) for d in diffs)
    assert {d.stripe_invoice_id for d in diffs if d.kind == "extra_in_stripe"} >= {manual.id, manual_cn.id, extra.id}
    assert kinds == Counter([
        ("amount_mismatch", ids["globex_1"]),
        ("status_mismatch", ids["acme_1"]),
        ("line_mismatch", ids["acme_1"]),
        ("line_count_mismatch", ids["acme_paid"]),
        ("line_mismatch", ids["acme_paid"]),  # our extra line is missing in Stripe
        ("amount_mismatch", ids["acme_note"]),
        ("extra_in_stripe", None),  # the hand-made invoice
        ("extra_in_stripe", None),  # the hand-made credit note
        ("missing_in_stripe", ids["acme_zero"]),  # our id is unknown to Stripe ...
        ("extra_in_stripe", ids["acme_zero"]),  # ... and its real Stripe invoice is unaccounted for
        ("missing_in_stripe", unpushed),
        ("extra_in_stripe", 999),
    ])


# --------------------------------------------------------------------------------------- CLI


def test_cli_sync_and_reconcile(db, stripe_env, monkeypatch):
    from typer.testing import CliRunner

    from billing.cli.stripe import app
    from billing.config import get_settings

    url, engine = db
    server, _ = stripe_env
    ids = seed(engine)
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    monkeypatch.setenv("BILLING_STRIPE_API_KEY", KEY)
    monkeypatch.setenv("BILLING_STRIPE_API_BASE", server.url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        dry = runner.invoke(app, ["sync", "--dry-run", "--json"])
        assert dry.exit_code == 0, dry.output
        assert json.loads(dry.output)["counts"] == {"would_push": 6}
        before = runner.invoke(app, ["reconcile", "--json"])
        assert before.exit_code == 1
        assert {d["kind"] for d in json.loads(before.output)["differences"]} == {"missing_in_stripe"}
        run = runner.invoke(app, ["sync", "--json"])
        assert run.exit_code == 0, run.output
        assert json.loads(run.output)["counts"] == {"pushed": 6}
        table = runner.invoke(app, ["sync"])
        assert table.exit_code == 0 and "Nothing to push" in table.output
        after = runner.invoke(app, ["reconcile"])
        assert after.exit_code == 0 and "No differences" in after.output
        for out in (dry.output, before.output, run.output, table.output, after.output):
            assert KEY not in out
        assert ids
    finally:
        get_settings.cache_clear()


def test_key_is_never_logged_nor_in_errors_or_reprs(sync, engine, stripe_env, caplog, capsys, monkeypatch):
    """Every log record (all loggers at DEBUG, stripe's own console log at debug), every
    outcome and difference message, and the str/repr of the errors and objects involved,
    through faults and an authentication failure: the key appears in none of them."""
    import logging

    import stripe as stripe_lib

    from billing.config import get_settings

    server, proxy = stripe_env
    monkeypatch.setattr(stripe_lib, "log", "debug")
    caplog.set_level(logging.DEBUG)
    seed(engine)
    proxy.add(method="POST", path=r"^/v1/invoiceitems$", nth=2, action="500", times=2)
    proxy.add(method="POST", path=r"^/v1/invoices$", action="drop_after")
    texts = [o.reason for o in sync.push().outcomes] + [d.message for d in sync.reconcile()]
    bad_key = "xx_wrong_" + KEY  # localstripe refuses keys that do not start with sk_
    refused = StripeSync(engine, client_for(bad_key, server.url, timeout=2.0), retrier=Retrier(attempts=1))
    add_invoice(engine, "globex", [1])
    outcomes = refused.push().outcomes
    assert any("401" in o.reason for o in outcomes)
    texts += [o.reason for o in outcomes]
    with pytest.raises(stripe_lib.AuthenticationError) as err:
        client_for(bad_key, server.url).v1.invoices.list()
    texts += [str(err.value), repr(err.value), repr(sync), repr(sync.client), repr(refused.client)]
    monkeypatch.setenv("BILLING_STRIPE_API_KEY", KEY)
    get_settings.cache_clear()
    try:
        texts += [repr(get_settings()), str(get_settings().model_dump())]
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr()
    texts += [caplog.text, out.out, out.err]
    assert "Request to Stripe api" in out.err  # stripe's debug log really was on
    assert caplog.records
    for text in texts:
        assert KEY not in text and "localstripe_secret_123" not in text, text[:500]


def test_cli_rejects_a_malformed_api_base(db, monkeypatch):
    from typer.testing import CliRunner

    from billing.cli.stripe import app
    from billing.config import get_settings

    monkeypatch.setenv("BILLING_DATABASE_URL", db[0])
    monkeypatch.setenv("BILLING_STRIPE_API_KEY", KEY)
    for base in ("not a url", "ftp://127.0.0.1:1", "http://[::1", "http://127.0.0.1:port"):
        monkeypatch.setenv("BILLING_STRIPE_API_BASE", base)
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(app, ["sync"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 2, (base, result.output)
        assert "BILLING_STRIPE_API_BASE" in result.output and KEY not in result.output


def test_cli_without_key_fails_cleanly(db, monkeypatch):
    from typer.testing import CliRunner

    from billing.cli.stripe import app
    from billing.config import get_settings

    monkeypatch.setenv("BILLING_DATABASE_URL", db[0])
    monkeypatch.delenv("BILLING_STRIPE_API_KEY", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["reconcile"])
        assert result.exit_code == 2
        assert "BILLING_STRIPE_API_KEY" in result.output
    finally:
        get_settings.cache_clear()


def test_cli_reconcile_with_stripe_down_fails_cleanly(db, monkeypatch):
    from typer.testing import CliRunner

    from billing.cli.stripe import app
    from billing.config import get_settings
    from tests.support.stripe_server import free_port

    url, engine = db
    add_customer(engine, "acme")
    with Session(engine) as s:
        c = s.get(Customer, "acme")
        c.stripe_customer_id = "cus_x"
        s.add(c)
        s.commit()
    add_invoice(engine, "acme", [100])
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    monkeypatch.setenv("BILLING_STRIPE_API_KEY", KEY)
    monkeypatch.setenv("BILLING_STRIPE_API_BASE", f"http://127.0.0.1:{free_port()}")  # nothing listens
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["reconcile"])
        assert result.exit_code == 2, result.output
        assert "network error" in result.output and KEY not in result.output
        pushed = CliRunner().invoke(app, ["sync", "--json"])
        assert pushed.exit_code == 1
        assert json.loads(pushed.stdout)["counts"] == {"failed": 1}
    finally:
        get_settings.cache_clear()
