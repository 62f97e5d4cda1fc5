"""Push finalized invoices to Stripe, propagate voids, reconcile.

How one invoice is pushed (every step can crash or time out; re-running completes it):

1. The billing customer is mapped to a Stripe customer (``metadata.billing_customer_id``;
   found by search, else by listing; created with idempotency key
   ``billing-customer-{id}``), stored in ``customer.stripe_customer_id``.
2. The Stripe invoice is looked up among the customer's invoices by
   ``metadata.billing_invoice_id``; if absent it is created as a *draft* with
   ``pending_invoice_items_behavior=exclude`` and ``auto_advance=false`` (so Stripe never
   finalizes a half-built draft on its own), idempotency key ``billing-invoice-{id}``.
3. Each of our lines becomes one invoice item attached to that draft (``invoice=in_...``;
   amount = ``amount_minor`` in Stripe's units (``amounts.py``: equal for most currencies,
   x100 for ISK), negative for credits, lowercase currency, description,
   ``metadata.billing_invoice_id`` / ``billing_line_id``; key ``billing-line-{line.id}``).
   Lines already on the draft (by metadata) are not created again;
   ``invoice_line.stripe_line_id`` records the invoice item id (``ii_...``).
4. When the draft holds exactly our lines and total, it is finalized with
   ``auto_advance=true`` (Stripe then collects payment), key ``billing-finalize-{id}``.
   An invoice already *paid* here is finalized with ``auto_advance=false`` and then marked
   ``paid_out_of_band`` in Stripe, so Stripe never charges it a second time.
5. Only then ``invoice.stripe_invoice_id`` is stored: a set id means "pushed completely";
   a missing id means "not pushed or partially pushed", and the next run completes it.

A retry never blindly repeats a create: the object is looked up again first, so a
request that Stripe executed but whose answer was lost is not executed twice even when
the idempotency key has expired (Stripe keeps keys 24 h) or is not honoured.

Decisions:
- Credit notes (``kind=credit_note``) are issued as Stripe credit notes against the
  original's Stripe invoice; see ``credit_notes.py`` for how lines and amounts map.
- Negative lines (credits drawn, downward adjustments) are negative invoice items on the
  Stripe invoice, like any other line, so the Stripe total is our total.
- Zero-total invoices are pushed like any other: Stripe marks a finalized zero-total
  invoice paid at once, and we mark ours paid too. This keeps the rule "one Stripe invoice
  per finalized invoice, equal totals" without exceptions, and reconcile stays simple.
- Negative-total invoices (our invoicing issues decreases as credit notes, so these come only
  from hand-made documents) are not pushed: Stripe would move the excess to the customer
  balance, which our ledger does not model. Sync reports them as skipped and reconcile as
  ``missing_in_stripe``: void them and issue a credit note instead.
- Voiding: a void invoice of ours voids its open Stripe invoice, deletes a Stripe draft
  left by a partial push, and is reported as failed if Stripe already collected payment.
  Void invoices are checked on every sync when they carry a Stripe id or a pushed line;
  ``--invoice ID`` checks any void document (e.g. an empty draft reconcile reports).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import Engine

from billing.errors import BillingError, ErrorCode
from billing.invoicing import lifecycle
from billing.invoicing.lifecycle import Action, DocumentKind, InvoiceStatus
from billing.store.models import Invoice, InvoiceLineRow
from billing.stripe_sync import state
from billing.stripe_sync.amounts import NotRepresentable, to_stripe, total_to_stripe, try_to_stripe
from billing.stripe_sync.client import Retrier, is_retryable, list_all, plain
from billing.stripe_sync.credit_notes import CreditNoteSync
from billing.stripe_sync.results import (META_CUSTOMER, META_INVOICE, META_LINE, META_NUMBER, Difference, Outcome,
                                         PushFailed, SyncResult, attempt)
from billing.stripe_sync.results import meta as _meta

__all__ = ["META_CUSTOMER", "META_INVOICE", "META_LINE", "META_NUMBER", "Difference", "Outcome", "StripeSync",
           "SyncResult", "line_item_id"]

# our status -> the Stripe statuses that agree with it
EXPECTED_STRIPE_STATUS = {InvoiceStatus.FINALIZED: {"open", "uncollectible"}, InvoiceStatus.PAID: {"paid"},
                          InvoiceStatus.VOID: {"void"}, InvoiceStatus.UNCOLLECTIBLE: {"uncollectible"}}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def customer_key(customer_id: str) -> str:
    return f"billing-customer-{customer_id}"


def invoice_key(invoice_id: int) -> str:
    return f"billing-invoice-{invoice_id}"


def line_key(line_id: int) -> str:
    return f"billing-line-{line_id}"


def finalize_key(invoice_id: int) -> str:
    return f"billing-finalize-{invoice_id}"


def pay_key(invoice_id: int) -> str:
    return f"billing-paid-out-of-band-{invoice_id}"


def line_item_id(line: dict) -> str | None:
    """The invoice item behind a Stripe invoice line, in old (``invoice_item``) and new
    (``parent.invoice_item_details.invoice_item``, API 2025-03-31 and later) shapes."""
    if line.get("invoice_item"):
        return line["invoice_item"]
    parent = line.get("parent") or {}
    details = parent.get("invoice_item_details") or {}
    return details.get("invoice_item")


class StripeSync:
    """Invoice push, void propagation and reconciliation against one Stripe account."""

    def __init__(self, engine: Engine, client: stripe.StripeClient, *, clock: Callable[[], datetime] = _utcnow,
                 retrier: Retrier | None = None):
        self.engine = engine
        self.client = client
        self.clock = clock
        self.retry = retrier or Retrier()
        self._search_supported: bool | None = None
        self.credit_notes = CreditNoteSync(self)

    # ------------------------------------------------------------------ helpers
    def fetch(self, retrieve: Callable[[str], Any], object_id: str) -> dict | None:
        """A Stripe object by id (retried like every call); None when Stripe answers 404."""
        try:
            return plain(self.retry(lambda: retrieve(object_id)))
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
            return None

    def _ensure(self, lookup: Callable[[], dict | None], create: Callable[[], Any], *, known_absent: bool = False) -> dict:
        """Find-or-create where every retry of the create first looks again."""
        attempts = self.retry.attempts
        for tried in range(attempts):
            if tried > 0 or not known_absent:
                found = self.retry(lookup)
                if found is not None:
                    return found
            try:
                return plain(create())
            except Exception as exc:  # noqa: BLE001
                if not is_retryable(exc) or tried == attempts - 1:
                    raise
                self.retry.sleep(self.retry.base_delay * (2 ** tried))
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- customers
    def ensure_customer(self, customer_id: str) -> str:
        """The Stripe customer id of a billing customer, linking or creating it once."""
        row = state.customer(self.engine, customer_id)
        if row is None:
            raise BillingError(f"unknown customer {customer_id!r}", code=ErrorCode.CUSTOMER_NOT_FOUND)
        if row.stripe_customer_id:
            return row.stripe_customer_id
        params = {"name": row.name or row.id, "metadata": {META_CUSTOMER: row.id}}
        found = self._ensure(lambda: self._find_customer(customer_id),
                             lambda: self.client.v1.customers.create(
                                 params=params, options={"idempotency_key": customer_key(customer_id)}))
        return state.set_stripe_customer_id(self.engine, customer_id, found["id"])

    def _find_customer(self, customer_id: str) -> dict | None:
        matches: list[dict] = []
        if self._search_supported is not False:
            escaped = customer_id.replace("\\", "\\\\").replace("'", "\\'")
            try:
                page = plain(self.client.v1.customers.search(
                    params={"query": f"metadata['{META_CUSTOMER}']:'{escaped}'", "limit": 100}))
                self._search_supported = True
                matches = [c for c in page.get("data") or [] if _meta(c).get(META_CUSTOMER) == customer_id]
            except stripe.InvalidRequestError:
                # no search here (a Stripe-compatible server, or a region without search):
                # listing is slower but always right
                self._search_supported = False
        if self._search_supported is False:
            matches = [c for c in list_all(self.client.v1.customers.list)
                       if _meta(c).get(META_CUSTOMER) == customer_id]
        if not matches:
            return None  # search lags ~1 min; a recent create is covered by its idempotency key
        return min(matches, key=lambda c: (c.get("created") or 0, c["id"]))

    # ------------------------------------------------------------------ invoices
    def _stripe_invoices_of(self, stripe_customer: str) -> list[dict]:
        return list(list_all(self.client.v1.invoices.list, {"customer": stripe_customer}))

    def _find_invoice(self, stripe_customer: str, invoice_id: int) -> dict | None:
        matches = [i for i in self._stripe_invoices_of(stripe_customer) if _meta(i).get(META_INVOICE) == str(invoice_id)]
        live = [i for i in matches if i.get("status") != "void"]
        if len(live) > 1:
            raise PushFailed(f"{len(live)} Stripe invoices carry {META_INVOICE}={invoice_id}: "
                              + ", ".join(sorted(i["id"] for i in live)) + "; void the extra ones in Stripe")
        if live:
            return live[0]
        return min(matches, key=lambda i: (i.get("created") or 0, i["id"])) if matches else None

    def _lines(self, stripe_invoice_id: str) -> list[dict]:
        return list(list_all(lambda p: self.client.v1.invoices.line_items.list(stripe_invoice_id, params=p)))

    def pending(self, only: list[int] | None = None) -> int:
        """How many documents ``push`` will look at (for a progress bar)."""
        return len(state.invoices_to_push(self.engine, only)) + len(state.void_documents_to_check(self.engine, only))

    def push(self, *, dry_run: bool = False, only: list[int] | None = None,
             progress: Callable[[Outcome], None] | None = None) -> SyncResult:
        """Push every finalized/paid invoice not yet in Stripe (and complete partial pushes),
        then propagate voids. Idempotent: re-running after any failure completes the work."""
        result = SyncResult(dry_run=dry_run)
        for inv in state.invoices_to_push(self.engine, only):
            outcome = self._plan(inv)
            if outcome is None:
                outcome = Outcome(inv.id, inv.number, "would_push") if dry_run else self._push_one(inv)
            result.outcomes.append(outcome)
            if progress:
                progress(outcome)
        for inv in state.void_documents_to_check(self.engine, only):
            outcome = Outcome(inv.id, inv.number, "would_void", inv.stripe_invoice_id,
                              reason="voided in Stripe unless it already is") if dry_run \
                else self.push_void(inv.id)
            if outcome.action != "unchanged":
                result.outcomes.append(outcome)
            if progress:
                progress(outcome)
        return result

    def _plan(self, inv: Invoice) -> Outcome | None:
        """A skip decided from our data alone, or None (push it)."""
        if inv.kind == DocumentKind.CREDIT_NOTE:
            return self.credit_notes.plan(inv)
        if inv.kind != DocumentKind.INVOICE:
            return Outcome(inv.id, inv.number, "skipped", reason=f"unknown document kind {inv.kind!r}")
        if inv.total_minor < 0:
            return Outcome(inv.id, inv.number, "skipped",
                           reason="negative total: Stripe would move it to the customer balance; not pushed "
                                  "(void it and issue a credit note)")
        return None

    def _push_one(self, inv: Invoice) -> Outcome:
        if inv.kind == DocumentKind.CREDIT_NOTE:
            return self.credit_notes.push(inv)
        return attempt(inv, lambda: self._push(inv))

    def _push(self, inv: Invoice) -> Outcome:
        inv, lines = state.invoice_with_lines(self.engine, inv.id)
        assert inv is not None and inv.id is not None
        try:  # before any call: an amount Stripe cannot take exactly is never sent
            total_to_stripe(inv.total_minor, inv.currency)
            for ln in lines:
                to_stripe(ln.amount_minor, inv.currency)
        except NotRepresentable as exc:
            raise PushFailed(f"not pushable: {exc}") from None
        cus = self.ensure_customer(inv.customer_id)
        currency = inv.currency.lower()
        created = False

        def create_invoice():
            nonlocal created
            created = True
            params: dict[str, Any] = {
                "customer": cus, "currency": currency, "auto_advance": False,
                "collection_method": "charge_automatically", "pending_invoice_items_behavior": "exclude",
                "metadata": {META_INVOICE: str(inv.id), META_NUMBER: inv.number or ""}}
            if inv.number:
                params["description"] = f"Invoice {inv.number}"
            return self.client.v1.invoices.create(params=params, options={"idempotency_key": invoice_key(inv.id)})

        first = self.retry(lambda: self._find_invoice(cus, inv.id))
        sinv = first or self._ensure(lambda: self._find_invoice(cus, inv.id), create_invoice, known_absent=True)
        if sinv.get("status") == "void":
            raise PushFailed(f"Stripe invoice {sinv['id']} for this invoice is void in Stripe; ours is {inv.status}")
        if sinv.get("status") == "draft":
            sinv = self._finalize_draft(inv, lines, sinv)
        if inv.status == InvoiceStatus.PAID and sinv.get("status") in ("open", "uncollectible"):
            sid = sinv["id"]
            sinv = self._ensure(
                lambda: self._retrieve_unless(sid, ("open", "uncollectible")),
                lambda: self.client.v1.invoices.pay(
                    sid, params={"paid_out_of_band": True}, options={"idempotency_key": pay_key(inv.id)}))
        if not state.set_stripe_invoice_id(self.engine, inv.id, sinv["id"]):
            raise PushFailed(f"invoice already points at another Stripe invoice; Stripe has {sinv['id']}")
        problems = self._differences(inv, lines, sinv)
        if problems:  # finalized in Stripe: it is our counterpart; reconcile keeps reporting it
            return Outcome(inv.id, inv.number, "failed", sinv["id"],
                           reason=f"Stripe invoice ({sinv.get('status')}) differs: " + "; ".join(problems))
        if sinv.get("status") == "paid" and inv.status == InvoiceStatus.FINALIZED:
            self._mark_paid_as_in_stripe(inv, sinv)
        return Outcome(inv.id, inv.number, "pushed" if created and first is None else "completed", sinv["id"])

    def _finalize_draft(self, inv: Invoice, lines: list[InvoiceLineRow], sinv: dict) -> dict:
        """Fills the Stripe draft with our lines and finalizes it, unless it then differs from ours."""
        self._fill_draft(inv, lines, sinv)
        sid = sinv["id"]
        # never finalize a draft that differs from ours (e.g. a customer discount in Stripe)
        problems = self._differences(inv, lines, plain(self.retry(lambda: self.client.v1.invoices.retrieve(sid))))
        if problems:
            raise PushFailed(f"Stripe draft {sid} differs, not finalized: " + "; ".join(problems))
        # an invoice already paid here must not be collected again by Stripe
        collect = inv.status != InvoiceStatus.PAID
        return self._ensure(
            lambda: self._retrieve_unless(sid, ("draft",)),
            lambda: self.client.v1.invoices.finalize_invoice(
                sid, params={"auto_advance": collect}, options={"idempotency_key": finalize_key(inv.id)}))

    def _mark_paid_as_in_stripe(self, inv: Invoice, sinv: dict) -> None:
        """Our finalized invoice, paid in Stripe: paid here too, at Stripe's payment time."""
        paid_at = (sinv.get("status_transitions") or {}).get("paid_at")
        try:
            lifecycle.apply(self.engine, inv.id, Action.PAY,
                            datetime.fromtimestamp(paid_at, UTC) if paid_at else self.clock())
        except BillingError as exc:  # changed here meanwhile (voided): reconcile keeps reporting it
            raise PushFailed(f"paid in Stripe ({sinv['id']}), not marked paid here: {exc.message}") from exc

    def _retrieve_unless(self, stripe_invoice_id: str, statuses: tuple[str, ...]) -> dict | None:
        """The Stripe invoice, or None while it is still in one of ``statuses``."""
        si = plain(self.client.v1.invoices.retrieve(stripe_invoice_id))
        return None if si.get("status") in statuses else si

    def _fill_draft(self, inv: Invoice, lines: list[InvoiceLineRow], sinv: dict) -> None:
        sid = sinv["id"]
        ours = {str(ln.id): ln for ln in lines}
        by_item = {ln.stripe_line_id: str(ln.id) for ln in lines if ln.stripe_line_id}

        def index(stripe_lines: list[dict]) -> dict[str, dict]:
            found: dict[str, dict] = {}
            foreign: list[str] = []
            for sl in stripe_lines:
                key = _meta(sl).get(META_LINE) or by_item.get(line_item_id(sl) or "")
                if key not in ours:
                    foreign.append(sl.get("id") or "?")
                elif key in found:
                    raise PushFailed(f"Stripe draft {sid} holds line {key} twice "
                                      f"({line_item_id(found[key])}, {line_item_id(sl)}); delete one in Stripe")
                else:
                    found[key] = sl
            if foreign:
                raise PushFailed(f"Stripe draft {sid} has lines we did not create ({', '.join(foreign)}); "
                                  "remove them in Stripe and re-run")
            return found

        present = index(self.retry(lambda: self._lines(sid)))
        for key, ln in ours.items():
            if key in present:
                continue
            assert ln.id is not None
            params = {"customer": sinv["customer"], "invoice": sid, "amount": to_stripe(ln.amount_minor, inv.currency),
                      "currency": inv.currency.lower(), "description": ln.description or ln.key or "Line",
                      "metadata": {META_INVOICE: str(inv.id), META_LINE: key}}
            item = self._ensure(lambda key=key: index(self._lines(sid)).get(key),
                                lambda params=params, ln=ln: self.client.v1.invoice_items.create(
                                    params=params, options={"idempotency_key": line_key(ln.id)}),
                                known_absent=True)
            present[key] = item
            # recorded at once: a local trace of a partial push (void detection uses it)
            state.set_stripe_line_id(self.engine, ln.id, line_item_id(item) or item["id"])
        for key, sl in present.items():
            item_id = line_item_id(sl) or sl["id"]  # an invoice item itself carries its id as "id"
            if ours[key].stripe_line_id != item_id:
                state.set_stripe_line_id(self.engine, ours[key].id, item_id)

    def _differences(self, inv: Invoice, lines: list[InvoiceLineRow], sinv: dict) -> list[str]:
        stripe_lines = self.retry(lambda: self._lines(sinv["id"]))
        problems = []
        if len(stripe_lines) != len(lines):
            problems.append(f"{len(stripe_lines)} lines in Stripe, {len(lines)} ours")
        problems.extend(line_problems(lines, stripe_lines, inv.currency))
        if sinv.get("total") != try_to_stripe(inv.total_minor, inv.currency):
            problems.append(f"total {sinv.get('total')} in Stripe, {try_to_stripe(inv.total_minor, inv.currency)} ours")
        if (sinv.get("currency") or "").lower() != inv.currency.lower():
            problems.append(f"currency {sinv.get('currency')} in Stripe, {inv.currency} ours")
        return problems

    # --------------------------------------------------------------------- voids
    def void(self, invoice_id: int, at: datetime) -> Outcome:
        """Void our finalized invoice or credit note (idempotent) and its Stripe counterpart.
        Refused while Stripe shows the invoice paid: refund it in Stripe first."""
        inv = state.get_invoice(self.engine, invoice_id)
        if inv is None:
            raise BillingError(f"unknown invoice {invoice_id}", code=ErrorCode.INVOICE_NOT_FOUND)
        if inv.kind == DocumentKind.INVOICE and inv.status != InvoiceStatus.VOID and inv.stripe_invoice_id:
            sid = inv.stripe_invoice_id
            if plain(self.retry(lambda: self.client.v1.invoices.retrieve(sid))).get("status") == "paid":
                raise BillingError(f"invoice {inv.number or inv.id} is paid in Stripe ({sid}); refund it there "
                                   "and issue a credit note instead of voiding", code=ErrorCode.INVALID_TRANSITION)
        lifecycle.apply(self.engine, invoice_id, Action.VOID, at)
        return self.push_void(invoice_id)

    def push_void(self, invoice_id: int) -> Outcome:
        """Make Stripe agree with our void document: void its open invoice (or issued credit
        note), delete a draft left by a partial push. Idempotent. Once Stripe is seen to
        agree, the document is marked so that later syncs skip it."""
        inv = state.get_invoice(self.engine, invoice_id)
        if inv is None or inv.status != InvoiceStatus.VOID:
            raise BillingError(f"invoice {invoice_id} is not void", code=ErrorCode.INVALID_TRANSITION)
        push = self.credit_notes.push_void if inv.kind == DocumentKind.CREDIT_NOTE else self._push_invoice_void
        outcome = attempt(inv, lambda: push(inv), inv.stripe_invoice_id)
        # a Stripe object seen void, or voided now (a deleted draft or "not in Stripe" is
        # checked again: another partial push may have left one more)
        if outcome.action in ("voided", "unchanged") and outcome.stripe_invoice_id:
            state.confirm_void(self.engine, inv.id, self.clock())
        return outcome

    def _push_invoice_void(self, inv: Invoice) -> Outcome:
        sinv: dict | None = None
        if inv.stripe_invoice_id:
            sinv = plain(self.retry(lambda: self.client.v1.invoices.retrieve(inv.stripe_invoice_id)))
        else:
            row = state.customer(self.engine, inv.customer_id)
            if row is not None and row.stripe_customer_id:
                sinv = self.retry(lambda: self._find_invoice(row.stripe_customer_id, inv.id))
        if sinv is None:
            return Outcome(inv.id, inv.number, "unchanged", reason="not in Stripe")
        status = sinv.get("status")
        if status == "void":
            return Outcome(inv.id, inv.number, "unchanged", sinv["id"])
        if status == "draft":
            sid = sinv["id"]
            self.retry(lambda: self.client.v1.invoices.delete(sid))
            return Outcome(inv.id, inv.number, "voided", None, reason=f"deleted Stripe draft {sid}")
        if status in ("open", "uncollectible"):
            sid = sinv["id"]
            self.retry(lambda: self.client.v1.invoices.void_invoice(sid))
            return Outcome(inv.id, inv.number, "voided", sid)
        return Outcome(inv.id, inv.number, "failed", sinv["id"],
                       reason=f"Stripe invoice is {status}; refund it in Stripe (a paid invoice cannot be voided)")

    # ------------------------------------------------------------------ reconcile
    def reconcile(self) -> list[Difference]:
        """Every difference between our invoices and credit notes and Stripe's (read-only):
        documents missing in Stripe, Stripe invoices and credit notes of our customers that
        none of ours accounts for (with or without our metadata), totals, statuses, lines."""
        documents = state.all_invoices(self.engine)
        ours = [i for i in documents if i.kind == DocumentKind.INVOICE]
        notes = [i for i in documents if i.kind == DocumentKind.CREDIT_NOTE]
        lines_of = state.lines_by_invoice(self.engine)
        stripe_customers = state.mapped_stripe_customers(self.engine)
        stripe_invoices: dict[str, dict] = {}
        for cus in stripe_customers:
            for si in self.retry(lambda: self._stripe_invoices_of(cus)):
                stripe_invoices[si["id"]] = si
        by_meta: dict[str, list[dict]] = {}
        for si in stripe_invoices.values():
            if META_INVOICE in _meta(si):
                by_meta.setdefault(_meta(si)[META_INVOICE], []).append(si)
        known = {i.stripe_invoice_id for i in ours if i.stripe_invoice_id}
        explained: set[str] = set()
        diffs: list[Difference] = []
        for inv in ours:
            if not inv.stripe_invoice_id:
                if inv.status == InvoiceStatus.VOID:
                    continue
                partial = [s for s in by_meta.get(str(inv.id), []) if s["id"] not in known and s.get("status") != "void"]
                explained.update(s["id"] for s in partial)
                hint = f"; partial push in Stripe: {', '.join(s['id'] for s in partial)} (run sync)" if partial else ""
                if inv.total_minor < 0:
                    hint += "; negative total: not pushable, void it and issue a credit note"
                diffs.append(Difference("missing_in_stripe", inv.id, inv.number, partial[0]["id"] if partial else None,
                                        inv.total_minor, None, f"not pushed to Stripe{hint}"))
                continue
            si = stripe_invoices.get(inv.stripe_invoice_id)
            if si is None:
                si = self.fetch(self.client.v1.invoices.retrieve, inv.stripe_invoice_id)
                if si is None:
                    diffs.append(Difference("missing_in_stripe", inv.id, inv.number, inv.stripe_invoice_id,
                                            inv.total_minor, None, "Stripe does not know this invoice id"))
                    continue
            diffs.extend(self._compare(inv, lines_of.get(inv.id, []), si))
        for sid, si in sorted(stripe_invoices.items()):
            if sid in known or sid in explained or si.get("status") == "void":
                continue
            meta = _meta(si)
            if META_INVOICE in meta:
                fix = " (a draft of a void invoice: run sync --invoice N to delete it)" \
                    if si.get("status") == "draft" else ""
                message = (f"Stripe invoice ({si.get('status')}) carries our metadata but no invoice of ours "
                           f"points at it{fix}")
            else:
                message = f"Stripe invoice ({si.get('status')}) of a mapped customer, not created by this sync"
            diffs.append(Difference("extra_in_stripe", _int_or_none(meta.get(META_INVOICE)), meta.get(META_NUMBER),
                                    sid, None, si.get("total"), message))
        diffs.extend(self.credit_notes.reconcile(notes, {i.id: i for i in ours}, stripe_customers))
        return diffs

    def _compare(self, inv: Invoice, lines: list[InvoiceLineRow], si: dict) -> list[Difference]:
        out = []
        sid = si["id"]
        total = try_to_stripe(inv.total_minor, inv.currency)
        if si.get("total") != total or (si.get("currency") or "").lower() != inv.currency.lower():
            out.append(Difference("amount_mismatch", inv.id, inv.number, sid,
                                  f"{total} {inv.currency.lower()}", f"{si.get('total')} {si.get('currency')}",
                                  "totals differ (in Stripe's units of the currency)"))
        expected = EXPECTED_STRIPE_STATUS.get(inv.status, set())
        if si.get("status") not in expected:
            out.append(Difference("status_mismatch", inv.id, inv.number, sid, inv.status, si.get("status"),
                                  f"ours is {inv.status}, Stripe's is {si.get('status')}"))
        embedded = si.get("lines") or {}
        if embedded.get("has_more") or "data" not in embedded:
            stripe_lines = self.retry(lambda: self._lines(sid))
        else:
            stripe_lines = embedded["data"]
        if len(stripe_lines) != len(lines):
            out.append(Difference("line_count_mismatch", inv.id, inv.number, sid, len(lines), len(stripe_lines),
                                  f"{len(lines)} lines ours, {len(stripe_lines)} in Stripe"))
        problems = line_problems(lines, stripe_lines, inv.currency)
        if problems:
            out.append(Difference("line_mismatch", inv.id, inv.number, sid, None, None, "; ".join(problems)))
        return out


def line_problems(lines: list[InvoiceLineRow], stripe_lines: list[dict], currency: str) -> list[str]:
    """Our lines against a Stripe invoice's lines, matched by ``metadata.billing_line_id``
    (or the stored invoice item id): lines missing in Stripe, lines of ours twice, amounts
    (in Stripe's units)."""
    by_item = {ln.stripe_line_id: str(ln.id) for ln in lines if ln.stripe_line_id}
    theirs: dict[str, list[dict]] = {}
    for sl in stripe_lines:
        key = _meta(sl).get(META_LINE) or by_item.get(line_item_id(sl) or "") or ""
        theirs.setdefault(key, []).append(sl)
    problems = []
    for ln in lines:
        found = theirs.get(str(ln.id), [])
        if not found:
            problems.append(f"line {ln.id} ({ln.amount_minor}) missing in Stripe")
        elif len(found) > 1:
            problems.append(f"line {ln.id} {len(found)} times in Stripe")
        elif found[0].get("amount") != try_to_stripe(ln.amount_minor, currency):
            problems.append(f"line {ln.id}: {found[0].get('amount')} in Stripe, "
                            f"{try_to_stripe(ln.amount_minor, currency)} ours")
    return problems


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except (TypeError, ValueError):
        return None
