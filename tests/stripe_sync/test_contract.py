"""Contract tests for what localstripe lacks: our code against recorded shapes of real Stripe
responses (API 2025-03-31 "basil" and later: invoice lines name their invoice item under
``parent.invoice_item_details``; customer search; pagination; error bodies; credit notes
with their pre-/post-payment split), served by a
stripe ``HTTPClient`` stub so the official library does the encoding and parsing."""

from __future__ import annotations

import copy
import json
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.stripe_sync.client import Retrier, describe, is_retryable, list_all
from billing.stripe_sync.sync import StripeSync, line_item_id
from tests.support.stripe_server import add_customer, add_invoice, make_db

KEY = "sk_test_contract_key_0123456789"

# ------------------------------------------------------------------ recorded shapes (abridged)

CUSTOMER = {
    "id": "cus_RecordedA1", "object": "customer", "address": None, "balance": 0, "created": 1761000000,
    "currency": None, "default_source": None, "delinquent": False, "description": None, "email": None,
    "invoice_prefix": "9F1C2B3A", "invoice_settings": {"custom_fields": None, "default_payment_method": None,
                                                      "footer": None, "rendering_options": None},
    "livemode": False, "metadata": {"billing_customer_id": "acme"}, "name": "Acme", "phone": None,
    "preferred_locales": [], "shipping": None, "tax_exempt": "none", "test_clock": None,
}

INVOICE_DRAFT = {
    "id": "in_RecordedI1", "object": "invoice", "account_country": "US", "account_name": "Example",
    "amount_due": 0, "amount_overpaid": 0, "amount_paid": 0, "amount_remaining": 0, "amount_shipping": 0,
    "attempt_count": 0, "attempted": False, "auto_advance": False, "automatic_tax": {"enabled": False},
    "billing_reason": "manual", "collection_method": "charge_automatically", "created": 1761000100,
    "currency": "usd", "customer": "cus_RecordedA1", "default_payment_method": None, "description": None,
    "discounts": [], "due_date": None, "ending_balance": None, "hosted_invoice_url": None,
    "lines": {"object": "list", "data": [], "has_more": False, "total_count": 0,
              "url": "/v1/invoices/in_RecordedI1/lines"},
    "livemode": False, "metadata": {}, "number": None, "parent": None, "period_end": 1761000100,
    "period_start": 1761000100, "starting_balance": 0, "status": "draft",
    "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                           "voided_at": None},
    "subtotal": 0, "subtotal_excluding_tax": 0, "total": 0, "total_discount_amounts": [],
    "total_excluding_tax": 0, "total_taxes": [],
}

INVOICE_ITEM = {
    "id": "ii_RecordedL1", "object": "invoiceitem", "amount": 0, "currency": "usd", "customer": "cus_RecordedA1",
    "date": 1761000200, "description": "", "discountable": True, "discounts": [], "invoice": "in_RecordedI1",
    "livemode": False, "metadata": {}, "net_amount": 0, "parent": None,
    "period": {"end": 1761000200, "start": 1761000200},
    "pricing": {"price_details": {"price": "price_Auto", "product": "prod_Auto"}, "type": "price_details",
                "unit_amount_decimal": "0"},
    "proration": False, "quantity": 1, "tax_rates": [], "test_clock": None,
}

LINE = {  # an invoice line in the new shape: no top-level `invoice_item`, `type`, `price`
    "id": "il_RecordedL1", "object": "line_item", "amount": 0, "currency": "usd", "description": "",
    "discount_amounts": [], "discountable": True, "discounts": [], "invoice": "in_RecordedI1", "livemode": False,
    "metadata": {},
    "parent": {"invoice_item_details": {"invoice_item": "ii_RecordedL1", "proration": False,
                                        "proration_details": {"credited_items": None}, "subscription": None},
               "subscription_item_details": None, "type": "invoice_item_details"},
    "period": {"end": 1761000200, "start": 1761000200}, "pretax_credit_amounts": [],
    "pricing": {"price_details": {"price": "price_Auto", "product": "prod_Auto"}, "type": "price_details",
                "unit_amount_decimal": "0"},
    "quantity": 1, "taxes": [],
}

CREDIT_NOTE = {
    "id": "cn_RecordedC1", "object": "credit_note", "amount": 0, "amount_shipping": 0, "created": 1761000400,
    "currency": "usd", "customer": "cus_RecordedA1", "customer_balance_transaction": None, "discount_amount": 0,
    "discount_amounts": [], "effective_at": 1761000400, "invoice": "in_RecordedI1",
    "lines": {"object": "list", "data": [], "has_more": False, "url": "/v1/credit_notes/cn_RecordedC1/lines"},
    "livemode": False, "memo": None, "metadata": {}, "number": "9F1C2B3A-0001-CN-01", "out_of_band_amount": None,
    "pdf": "https://pay.stripe.com/credit_notes/acct_x/test_x/pdf", "post_payment_amount": 0,
    "pre_payment_amount": 0, "pretax_credit_amounts": [], "reason": None, "refunds": [], "shipping_cost": None,
    "status": "issued", "subtotal": 0, "subtotal_excluding_tax": 0, "total": 0, "total_excluding_tax": 0,
    "total_taxes": [], "type": "pre_payment", "voided_at": None,
}

CREDIT_NOTE_LINE = {
    "id": "cnli_RecordedL1", "object": "credit_note_line_item", "amount": 0, "description": "",
    "discount_amount": 0, "discount_amounts": [], "invoice_line_item": None, "livemode": False, "metadata": {},
    "pretax_credit_amounts": [], "quantity": 1, "tax_rates": [], "taxes": [], "type": "custom_line_item",
    "unit_amount": 0, "unit_amount_decimal": "0",
}

ERROR_CREDIT_SUM = {"error": {"message": "The sum of credit amount, refund amount and out of band amount must equal "
                                         "the credit note's post-payment amount.", "param": "credit_amount",
                              "type": "invalid_request_error"}}

LEGACY_LINE = {"id": "il_Old", "object": "line_item", "type": "invoiceitem", "invoice_item": "ii_Old",
               "amount": 100, "currency": "usd", "metadata": {}}

ERROR_500 = {"error": {"message": "An unknown error occurred", "type": "api_error"}}
ERROR_404 = {"error": {"code": "resource_missing", "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
                       "message": "No such invoice: 'in_x'", "param": "id", "type": "invalid_request_error"}}
ERROR_409 = {"error": {"message": "There is currently another in-progress request using this Stripe API key "
                                  "and idempotency key", "type": "idempotency_error"}}
ERROR_429 = {"error": {"code": "rate_limit", "message": "Too many requests", "type": "invalid_request_error"}}


def page(data, has_more=False, url="/v1/x"):
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


# ------------------------------------------------------------------ a recorded-response stub


class RecordedStripe(stripe.HTTPClient):
    """Serves responses from handlers keyed by (method, path regex); records every request."""

    name = "recorded"

    def __init__(self):
        super().__init__()
        self.routes: list[tuple[str, re.Pattern, object]] = []
        self.requests: list[dict] = []

    def on(self, method: str, path: str, handler):
        self.routes.append((method.upper(), re.compile(path + "$"), handler))

    def request(self, method, url, headers, post_data=None):
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query)) if method.upper() == "GET" else dict(parse_qsl(post_data or ""))
        req = {"method": method.upper(), "path": parts.path, "params": params, "headers": dict(headers)}
        self.requests.append(req)
        for m, pattern, handler in self.routes:
            match = pattern.match(parts.path)
            if m == method.upper() and match:
                result = handler(req, *match.groups())
                status, body = result if isinstance(result, tuple) else (200, result)
                return json.dumps(body).encode(), status, {"Request-Id": "req_test"}
        return json.dumps(ERROR_404).encode(), 404, {}

    def request_stream(self, method, url, headers, post_data=None):  # pragma: no cover - unused
        raise NotImplementedError

    def close(self):
        pass


def client_with(stub: RecordedStripe) -> stripe.StripeClient:
    return stripe.StripeClient(KEY, http_client=stub, max_network_retries=0)


def metadata_of(params: dict, prefix: str = "") -> dict:
    start = prefix + "metadata["
    return {k[len(start):-1]: v for k, v in params.items() if k.startswith(start)}


def lines_of(params: dict) -> list[dict]:
    """``lines[0][unit_amount]=...`` (as the library encodes them) back into a list of dicts."""
    out: dict[int, dict] = {}
    for k, v in params.items():
        m = re.match(r"lines\[(\d+)\]\[(\w+)\](?:\[(\w+)\])?$", k)
        if m:
            line = out.setdefault(int(m.group(1)), {})
            if m.group(3):
                line.setdefault(m.group(2), {})[m.group(3)] = v
            else:
                line[m.group(2)] = v
    return [out[i] for i in sorted(out)]


class FakeStripe:
    """Just enough state to answer a push with recorded shapes."""

    def __init__(self, stub: RecordedStripe, *, search_hits=()):
        self.invoices: dict[str, dict] = {}
        self.items: list[dict] = []
        self.credit_notes: dict[str, dict] = {}
        self.fail_next_credit_note_answer = False  # create it, then answer 500 (a lost answer)
        stub.on("GET", r"/v1/customers/search", lambda r: {"object": "search_result", "data": list(search_hits),
                                                           "has_more": False, "next_page": None,
                                                           "url": "/v1/customers/search"})
        stub.on("POST", r"/v1/customers", lambda r: {**CUSTOMER, "id": "cus_New", "metadata": metadata_of(r["params"]),
                                                     "name": r["params"].get("name")})
        stub.on("GET", r"/v1/invoices", lambda r: page([i for i in self.invoices.values()
                                                         if i["customer"] == r["params"].get("customer")]))
        stub.on("POST", r"/v1/invoices", self.create_invoice)
        stub.on("GET", r"/v1/invoices/([^/]+)", lambda r, sid: self.invoices[sid])
        stub.on("GET", r"/v1/invoices/([^/]+)/lines", lambda r, sid: page(self.lines(sid)))
        stub.on("POST", r"/v1/invoiceitems", self.create_item)
        stub.on("POST", r"/v1/invoices/([^/]+)/finalize", self.finalize)
        stub.on("GET", r"/v1/credit_notes", lambda r: page([c for c in self.credit_notes.values() if all(
            c[k] == r["params"][k] for k in ("customer", "invoice") if k in r["params"])]))
        stub.on("POST", r"/v1/credit_notes", self.create_credit_note)
        stub.on("GET", r"/v1/credit_notes/([^/]+)", lambda r, cid: self.credit_notes[cid])
        stub.on("POST", r"/v1/credit_notes/([^/]+)/void", self.void_credit_note)

    def create_credit_note(self, r):
        p = r["params"]
        inv = self.invoices[p["invoice"]]
        lines = lines_of(p)
        total = sum(int(ln.get("quantity", 1)) * int(ln["unit_amount"]) for ln in lines)
        pre = min(total, inv["amount_remaining"]) if inv["status"] == "open" else 0
        if int(p.get("credit_amount", 0)) + int(p.get("out_of_band_amount", 0)) != total - pre:
            return 400, ERROR_CREDIT_SUM
        cn = copy.deepcopy(CREDIT_NOTE)
        cid = f"cn_Rec{len(self.credit_notes)}"
        data = [{**copy.deepcopy(CREDIT_NOTE_LINE), "id": f"cnli_Rec{len(self.credit_notes)}_{n}",
                 "amount": int(ln.get("quantity", 1)) * int(ln["unit_amount"]), "unit_amount": int(ln["unit_amount"]),
                 "unit_amount_decimal": ln["unit_amount"], "description": ln.get("description"),
                 "metadata": ln.get("metadata", {})} for n, ln in enumerate(lines)]
        cn.update(id=cid, invoice=inv["id"], customer=inv["customer"], currency=inv["currency"], amount=total, total=total, subtotal=total,
                  metadata=metadata_of(p), memo=p.get("memo"), pre_payment_amount=pre, post_payment_amount=total - pre,
                  type="pre_payment" if pre == total else "post_payment",
                  lines={**CREDIT_NOTE["lines"], "data": data, "url": f"/v1/credit_notes/{cid}/lines"})
        self.credit_notes[cid] = cn
        inv["amount_remaining"] -= pre
        inv["amount_due"] -= pre
        inv["pre_payment_credit_notes_amount"] = inv.get("pre_payment_credit_notes_amount", 0) + pre
        if self.fail_next_credit_note_answer:
            self.fail_next_credit_note_answer = False
            return 500, ERROR_500
        return cn

    def void_credit_note(self, r, cid):
        self.credit_notes[cid].update(status="void", voided_at=1761000500)
        return self.credit_notes[cid]

    def create_invoice(self, r):
        p = r["params"]
        inv = copy.deepcopy(INVOICE_DRAFT)
        inv.update(id=f"in_Rec{len(self.invoices)}", customer=p["customer"], currency=p["currency"],
                   metadata=metadata_of(p), auto_advance=p["auto_advance"] == "true")
        self.invoices[inv["id"]] = inv
        return inv

    def create_item(self, r):
        p = r["params"]
        item = {**copy.deepcopy(INVOICE_ITEM), "id": f"ii_Rec{len(self.items)}", "amount": int(p["amount"]),
                "invoice": p["invoice"], "description": p["description"], "metadata": metadata_of(p)}
        self.items.append(item)
        inv = self.invoices[p["invoice"]]
        inv["subtotal"] = inv["total"] = inv["amount_due"] = inv["amount_remaining"] = sum(
            i["amount"] for i in self.items if i["invoice"] == inv["id"])
        inv["lines"]["data"] = self.lines(inv["id"])[:10]
        inv["lines"]["has_more"] = len(self.lines(inv["id"])) > 10
        return item

    def lines(self, sid):
        out = []
        for item in self.items:
            if item["invoice"] == sid:
                line = copy.deepcopy(LINE)
                line.update(id="il_" + item["id"][3:], amount=item["amount"], description=item["description"],
                            metadata=item["metadata"], invoice=sid)
                line["parent"]["invoice_item_details"]["invoice_item"] = item["id"]
                out.append(line)
        return out

    def finalize(self, r, sid):
        inv = self.invoices[sid]
        inv["status"] = "open" if inv["total"] > 0 else "paid"
        inv["number"] = "9F1C2B3A-0001"
        inv["auto_advance"] = r["params"].get("auto_advance") == "true"
        inv["status_transitions"]["finalized_at"] = 1761000300
        return inv


@pytest.fixture
def engine(tmp_path):
    _, engine = make_db(tmp_path)
    add_customer(engine, "acme", name="Acme")
    yield engine
    engine.dispose()


# ------------------------------------------------------------------------------------ tests


def test_line_item_id_reads_new_and_legacy_shapes():
    assert line_item_id(LINE) == "ii_RecordedL1"
    assert line_item_id(LEGACY_LINE) == "ii_Old"
    assert line_item_id({"id": "il_x", "parent": {"type": "subscription_item_details",
                                                  "subscription_item_details": {}}}) is None


def test_push_against_recorded_stripe_shapes(engine):
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    invoice_id = add_invoice(engine, "acme", [12_000, -1_000])
    sync = StripeSync(engine, client_with(stub), retrier=Retrier(attempts=2, base_delay=0))
    result = sync.push()
    assert result.ok, result.to_json()
    (sid,) = fake.invoices
    assert fake.invoices[sid]["status"] == "open" and fake.invoices[sid]["total"] == 11_000
    # what we sent, as the official library encoded it
    creates = [r for r in stub.requests if r["method"] == "POST"]
    assert [r["path"] for r in creates] == ["/v1/customers", "/v1/invoices", "/v1/invoiceitems", "/v1/invoiceitems",
                                            f"/v1/invoices/{sid}/finalize"]
    cus, inv, item1, item2, fin = creates
    assert cus["params"]["metadata[billing_customer_id]"] == "acme"
    assert cus["headers"]["Idempotency-Key"] == "billing-customer-acme"
    assert inv["params"]["pending_invoice_items_behavior"] == "exclude"
    assert inv["params"]["auto_advance"] == "false"  # never auto-finalize a half-built draft
    assert inv["params"]["currency"] == "usd"
    assert inv["headers"]["Idempotency-Key"] == f"billing-invoice-{invoice_id}"
    assert {item1["params"]["amount"], item2["params"]["amount"]} == {"12000", "-1000"}
    assert item1["params"]["invoice"] == sid and item1["headers"]["Idempotency-Key"].startswith("billing-line-")
    assert fin["params"] == {"auto_advance": "true"}
    # stored ids are the invoice items (read from parent.invoice_item_details on the lines)
    from sqlmodel import Session, select

    from billing.store.models import Invoice, InvoiceLineRow

    with Session(engine) as s:
        assert s.get(Invoice, invoice_id).stripe_invoice_id == sid
        ids = sorted(ln.stripe_line_id for ln in s.exec(select(InvoiceLineRow)).all())
    assert ids == ["ii_Rec0", "ii_Rec1"]
    # a re-run resumes from Stripe's state without creating anything
    stub.requests.clear()
    assert not [o for o in sync.push().outcomes if o.action != "skipped"]
    assert not [r for r in stub.requests if r["method"] == "POST"]
    assert sync.reconcile() == []


def test_partial_draft_in_new_shape_is_completed_not_restarted(engine):
    """A crash left the draft with one of two lines; the rerun adds only the missing one,
    recognising the existing line through its metadata on the new line shape."""
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    invoice_id = add_invoice(engine, "acme", [500, 700])
    sync = StripeSync(engine, client_with(stub), retrier=Retrier(attempts=2, base_delay=0))
    from sqlmodel import Session, select

    from billing.store.models import InvoiceLineRow

    with Session(engine) as s:
        first_line = s.exec(select(InvoiceLineRow).order_by(InvoiceLineRow.position)).first()
    sync.ensure_customer("acme")
    draft = fake.create_invoice({"params": {"customer": "cus_New", "currency": "usd", "auto_advance": "false",
                                            "metadata[billing_invoice_id]": str(invoice_id)}})
    fake.create_item({"params": {"invoice": draft["id"], "amount": "500", "description": "Line 0",
                                 "metadata[billing_invoice_id]": str(invoice_id),
                                 "metadata[billing_line_id]": str(first_line.id)}})
    result = sync.push()
    assert [o.action for o in result.outcomes] == ["completed"]
    assert len(fake.items) == 2 and len(fake.invoices) == 1
    assert fake.invoices[draft["id"]]["total"] == 1_200


def test_customer_is_linked_through_search(engine):
    stub = RecordedStripe()
    FakeStripe(stub, search_hits=[CUSTOMER])
    sync = StripeSync(engine, client_with(stub))
    assert sync.ensure_customer("acme") == "cus_RecordedA1"
    (search,) = [r for r in stub.requests if r["path"] == "/v1/customers/search"]
    assert search["params"]["query"] == "metadata['billing_customer_id']:'acme'"
    assert not [r for r in stub.requests if r["method"] == "POST"]


def test_search_query_escapes_quotes(engine):
    add_customer(engine, "o'brien")
    stub = RecordedStripe()
    FakeStripe(stub)
    StripeSync(engine, client_with(stub)).ensure_customer("o'brien")
    (search,) = [r for r in stub.requests if r["path"] == "/v1/customers/search"]
    assert search["params"]["query"] == "metadata['billing_customer_id']:'o\\'brien'"


def test_list_all_follows_has_more_with_starting_after():
    stub = RecordedStripe()
    pages = {None: page([{"id": "in_1"}, {"id": "in_2"}], has_more=True), "in_2": page([{"id": "in_3"}])}
    stub.on("GET", r"/v1/invoices", lambda r: pages[r["params"].get("starting_after")])
    got = [i["id"] for i in list_all(client_with(stub).v1.invoices.list, {"customer": "cus_1"})]
    assert got == ["in_1", "in_2", "in_3"]
    assert [r["params"].get("limit") for r in stub.requests] == ["100", "100"]


@pytest.mark.parametrize("status,body,retryable", [
    (500, ERROR_500, True), (409, ERROR_409, True), (429, ERROR_429, True), (404, ERROR_404, False),
    (400, {"error": {"type": "invalid_request_error", "message": "Invalid integer: abc", "param": "amount"}}, False),
])
def test_recorded_error_bodies_and_retry_policy(status, body, retryable):
    stub = RecordedStripe()
    calls = []

    def handler(r, sid):
        calls.append(1)
        return status, body

    stub.on("GET", r"/v1/invoices/([^/]+)", handler)
    client = client_with(stub)
    retry = Retrier(attempts=3, base_delay=0, sleep=lambda s: None)
    with pytest.raises(stripe.StripeError) as err:
        retry(lambda: client.v1.invoices.retrieve("in_x"))
    assert is_retryable(err.value) is retryable
    assert len(calls) == (3 if retryable else 1)
    text = describe(err.value)
    assert str(status) in text and KEY not in text


def test_describe_masks_keys_stripe_quotes_back():
    exc = stripe.AuthenticationError("Invalid API Key provided: sk_live_51AbCdEfGh0123", http_status=401)
    assert describe(exc) == "Stripe error 401: Invalid API Key provided: sk_***"
    other = ValueError("whsec_abc123 and rk_test_XYZ9 leaked")
    assert "abc123" not in describe(other) and "XYZ9" not in describe(other)


def test_connection_errors_are_retryable_and_keyless():
    exc = stripe.APIConnectionError("Network error: boom")
    assert is_retryable(exc)
    assert "network error" in describe(exc)


def test_reconcile_compares_lines_beyond_the_embedded_page(engine):
    """Lines are matched by metadata (first six) or by the stored invoice item id (the rest,
    new line shape); the twelfth line is past the 10 lines embedded in the invoice, so
    reconcile must page through the lines to see it differ."""
    stub = RecordedStripe()
    invoice_id = add_invoice(engine, "acme", [100] * 12, stripe_invoice_id="in_Big")
    from sqlmodel import Session, select

    from billing.store.models import Customer, InvoiceLineRow

    with Session(engine, expire_on_commit=False) as s:
        c = s.get(Customer, "acme")
        c.stripe_customer_id = "cus_RecordedA1"
        s.add(c)
        ours = list(s.exec(select(InvoiceLineRow).order_by(InvoiceLineRow.position)).all())
        for n, ln in enumerate(ours[6:], start=6):
            ln.stripe_line_id = f"ii_{n}"
            s.add(ln)
        s.commit()
    lines = []
    for n, ln in enumerate(ours):
        line = {**copy.deepcopy(LINE), "id": f"il_{n}", "amount": 100}
        if n < 6:
            line["metadata"] = {"billing_line_id": str(ln.id)}
        line["parent"]["invoice_item_details"]["invoice_item"] = f"ii_{n}"
        lines.append(line)
    big = {**copy.deepcopy(INVOICE_DRAFT), "id": "in_Big", "status": "open", "total": 1_200,
           "metadata": {"billing_invoice_id": str(invoice_id)},
           "lines": {"object": "list", "data": lines[:10], "has_more": True, "url": "/v1/invoices/in_Big/lines"}}
    stub.on("GET", r"/v1/invoices", lambda r: page([big]))
    stub.on("GET", r"/v1/invoices/in_Big/lines", lambda r: page(lines))
    stub.on("GET", r"/v1/credit_notes", lambda r: page([]))
    sync = StripeSync(engine, client_with(stub))
    assert sync.reconcile() == []
    lines[11]["amount"], lines[0]["amount"] = 150, 50  # same total, two lines differ
    (diff,) = sync.reconcile()
    assert diff.kind == "line_mismatch"
    assert f"line {ours[11].id}: 150 in Stripe, 100 ours" in diff.message
    assert f"line {ours[0].id}: 50 in Stripe, 100 ours" in diff.message


def test_draft_that_differs_is_not_finalized(engine):
    """A Stripe-side customer discount makes the draft's total differ: we stop before
    finalizing (nothing is billed wrongly) and report it; the id stays unset."""
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    original = fake.create_item

    def discounted(r):
        item = original(r)
        inv = fake.invoices[r["params"]["invoice"]]
        inv["total"] = inv["amount_due"] = inv["subtotal"] - 100
        inv["total_discount_amounts"] = [{"amount": 100, "discount": "di_Recorded"}]
        return item

    stub.routes = [(m, p, discounted if h == fake.create_item else h) for m, p, h in stub.routes]
    invoice_id = add_invoice(engine, "acme", [1_000])
    sync = StripeSync(engine, client_with(stub), retrier=Retrier(attempts=2, base_delay=0))
    (outcome,) = sync.push().outcomes
    assert outcome.action == "failed" and "not finalized" in outcome.reason and "total 900" in outcome.reason
    assert not [r for r in stub.requests if r["path"].endswith("/finalize")]
    from sqlmodel import Session

    from billing.store.models import Invoice

    with Session(engine) as s:
        assert s.get(Invoice, invoice_id).stripe_invoice_id is None


# ------------------------------------------------------------------------------- credit notes


def _pushed_invoice(engine, stub, fake, amounts=(1_000,)) -> tuple[StripeSync, int, str]:
    invoice_id = add_invoice(engine, "acme", list(amounts))
    sync = StripeSync(engine, client_with(stub), retrier=Retrier(attempts=2, base_delay=0))
    assert sync.push().ok
    (sid,) = fake.invoices
    return sync, invoice_id, sid


def _note_lines(engine, note_id):
    from sqlmodel import Session, select

    from billing.store.models import Invoice, InvoiceLineRow

    with Session(engine) as s:
        return (s.get(Invoice, note_id), list(s.exec(select(InvoiceLineRow).where(InvoiceLineRow.invoice_id == note_id)
                                                     .order_by(InvoiceLineRow.position)).all()))


def test_credit_note_on_an_open_invoice_reduces_what_is_due(engine):
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    sync, invoice_id, sid = _pushed_invoice(engine, stub, fake)
    note_id = add_invoice(engine, "acme", [-300, -200], kind="credit_note", corrects_invoice_id=invoice_id)
    stub.requests.clear()
    (outcome,) = sync.push().outcomes
    assert outcome.action == "pushed", outcome
    (create,) = [r for r in stub.requests if r["method"] == "POST"]
    p = create["params"]
    assert create["path"] == "/v1/credit_notes" and p["invoice"] == sid
    assert create["headers"]["Idempotency-Key"] == f"billing-credit-note-{note_id}"
    assert metadata_of(p) == {"billing_invoice_id": str(note_id), "billing_invoice_number": p[
        "metadata[billing_invoice_number]"], "billing_corrects_invoice_id": str(invoice_id)}
    note, lines = _note_lines(engine, note_id)
    assert lines_of(p) == [{"type": "custom_line_item", "description": ln.description, "quantity": "1",
                            "unit_amount": str(-ln.amount_minor), "metadata": {"billing_line_id": str(ln.id)}}
                           for ln in lines]
    assert "credit_amount" not in p  # all of it is pre-payment: it lowers amount_due
    (cid,) = fake.credit_notes
    assert note.stripe_invoice_id == cid and outcome.stripe_invoice_id == cid
    assert [ln.stripe_line_id for ln in lines] == [f"cnli_Rec0_{n}" for n in range(2)]
    assert fake.invoices[sid]["amount_due"] == 500 and fake.invoices[sid]["total"] == 1_000
    stub.requests.clear()
    assert sync.push().outcomes == []
    assert not [r for r in stub.requests if r["method"] == "POST"]
    assert sync.reconcile() == []


@pytest.mark.parametrize("status,remaining,credit", [("paid", 0, 400), ("open", 100, 300)])
def test_credit_note_beyond_what_is_due_goes_to_the_customer_balance(engine, status, remaining, credit):
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    sync, invoice_id, sid = _pushed_invoice(engine, stub, fake)
    fake.invoices[sid].update(status=status, amount_remaining=remaining)
    add_invoice(engine, "acme", [-400], kind="credit_note", corrects_invoice_id=invoice_id)
    stub.requests.clear()
    assert sync.push().ok
    (create,) = [r for r in stub.requests if r["method"] == "POST"]
    assert create["params"]["credit_amount"] == str(credit)


def test_credit_note_mixing_signs_is_one_net_line(engine):
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    sync, invoice_id, _ = _pushed_invoice(engine, stub, fake)
    note_id = add_invoice(engine, "acme", [-500, 120, 0], kind="credit_note", corrects_invoice_id=invoice_id)
    assert sync.push().ok
    (cn,) = fake.credit_notes.values()
    (line,) = cn["lines"]["data"]
    _, lines = _note_lines(engine, note_id)
    assert line["amount"] == 380 and line["description"].startswith("Net of 2 lines")
    assert line["metadata"] == {"billing_line_ids": f"{lines[0].id},{lines[1].id}"}
    assert sync.reconcile() == []


def test_credit_note_lost_answer_is_not_issued_twice(engine):
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    sync, invoice_id, _ = _pushed_invoice(engine, stub, fake)
    add_invoice(engine, "acme", [-250], kind="credit_note", corrects_invoice_id=invoice_id)
    fake.fail_next_credit_note_answer = True
    stub.requests.clear()
    (outcome,) = sync.push().outcomes
    assert outcome.action == "pushed", outcome  # issued by this run; found again by its metadata, not re-created
    assert len([r for r in stub.requests if r["method"] == "POST"]) == 1
    assert len(fake.credit_notes) == 1
    assert sync.reconcile() == []


def test_credit_note_waits_for_its_invoice_and_skips_a_void_one(engine):
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    invoice_id = add_invoice(engine, "acme", [1_000])
    note_id = add_invoice(engine, "acme", [-100], kind="credit_note", corrects_invoice_id=invoice_id)
    sync = StripeSync(engine, client_with(stub), retrier=Retrier(attempts=2, base_delay=0))
    first = sync.push(only=[note_id])  # the invoice is not pushed in this run
    assert [(o.action, "not in Stripe yet" in o.reason) for o in first.outcomes] == [("failed", True)]
    assert [d.kind for d in sync.reconcile()] == ["missing_in_stripe", "missing_in_stripe"]
    assert [o.action for o in sync.push().outcomes] == ["pushed", "pushed"]
    assert len(fake.credit_notes) == 1 and sync.reconcile() == []
    orphan = add_invoice(engine, "acme", [-100], kind="credit_note")  # corrects nothing known
    other = add_invoice(engine, "acme", [500], status="void")
    void_note = add_invoice(engine, "acme", [-100], kind="credit_note", corrects_invoice_id=other)
    outcomes = {o.invoice_id: o for o in sync.push().outcomes}
    assert outcomes[orphan].action == "skipped" and "corrects no invoice" in outcomes[orphan].reason
    assert outcomes[void_note].action == "skipped" and "void" in outcomes[void_note].reason
    assert [(d.kind, d.invoice_id) for d in sync.reconcile()] == [("missing_in_stripe", orphan)]


def test_credit_note_stripe_refuses_is_reported_with_stripes_message(engine):
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    sync, invoice_id, sid = _pushed_invoice(engine, stub, fake)
    fake.invoices[sid]["status"] = "uncollectible"
    add_invoice(engine, "acme", [-100], kind="credit_note", corrects_invoice_id=invoice_id)
    (outcome,) = sync.push().outcomes
    assert outcome.action == "failed" and "uncollectible" in outcome.reason
    assert not fake.credit_notes


# ------------------------------------------------------------------ currencies, Stripe's units


@pytest.mark.parametrize("currency,amounts,sent", [
    ("USD", [1_234, -34], ["1234", "-34"]),
    ("JPY", [500, -20], ["500", "-20"]),  # zero-decimal in both
    ("ISK", [500, -20], ["50000", "-2000"]),  # ISO 0 decimals, Stripe's API 2 (whole krónur)
    ("KWD", [1_235, -5], ["1235", "-5"]),  # three decimals; the total 1230 ends in 0
])
def test_amounts_are_sent_in_stripes_units_of_the_currency(engine, currency, amounts, sent):
    stub = RecordedStripe()
    fake = FakeStripe(stub)
    invoice_id = add_invoice(engine, "acme", amounts, currency=currency)
    sync = StripeSync(engine, client_with(stub), retrier=Retrier(attempts=2, base_delay=0))
    assert sync.push().ok
    items = [r for r in stub.requests if r["path"] == "/v1/invoiceitems"]
    assert sorted(r["params"]["amount"] for r in items) == sorted(sent)
    assert {r["params"]["currency"] for r in items} == {currency.lower()}
    assert sync.reconcile() == []
    note_id = add_invoice(engine, "acme", [-(amounts[0] // 5 * 2)], kind="credit_note", currency=currency,
                          corrects_invoice_id=invoice_id)
    assert sync.push().ok, note_id
    (cn,) = fake.credit_notes.values()
    from billing.stripe_sync.amounts import to_stripe

    assert cn["total"] == to_stripe(amounts[0] // 5 * 2, currency)
    assert sync.reconcile() == []


@pytest.mark.parametrize("currency,amounts,why", [
    ("KWD", [1_234], "multiples of 10"),  # Stripe settles three-decimal currencies to the nearest ten
    ("MGA", [150], "whole number"),  # 2 decimals in ISO 4217, none in Stripe's API: 1.50 MGA is not sendable
])
def test_amounts_stripe_cannot_take_exactly_are_refused_not_rounded(engine, currency, amounts, why):
    stub = RecordedStripe()
    FakeStripe(stub)
    add_invoice(engine, "acme", amounts, currency=currency)
    sync = StripeSync(engine, client_with(stub), retrier=Retrier(attempts=2, base_delay=0))
    (outcome,) = sync.push().outcomes
    assert outcome.action == "failed" and why in outcome.reason, outcome
    assert not [r for r in stub.requests if r["method"] == "POST"]  # nothing sent at all


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(-10**12, 10**12),
       currency=st.sampled_from(["USD", "EUR", "JPY", "KRW", "ISK", "KWD", "BHD", "UGX", "XOF", "CLP", "ZZZ"]))
def test_to_stripe_keeps_the_value_exactly_or_refuses(amount, currency):
    from fractions import Fraction

    from billing.money import minor_units
    from billing.stripe_sync.amounts import NotRepresentable, stripe_decimals, to_stripe

    try:
        sent = to_stripe(amount, currency)
    except NotRepresentable:
        assert amount % 10 ** max(0, minor_units(currency) - stripe_decimals(currency)) or currency == "ISK"
        return
    assert Fraction(sent, 10 ** stripe_decimals(currency)) == Fraction(amount, 10 ** minor_units(currency))
