"""Our credit notes as Stripe credit notes against the original invoice's Stripe invoice.

A credit note of ours (``kind=credit_note``, negative total, ``corrects_invoice_id``) says the
customer owes less for an invoice that is already final (late events re-rated it lower, an
outcome was disputed). Left out of Stripe, Stripe would still collect the full original
amount; so the sync issues it there too:

- It is issued against the original's Stripe invoice. Documents are pushed in id order, so
  the original goes first; while the original is not in Stripe the note is reported as
  failed and the next run issues it. A note whose original is void is skipped (nothing is
  owed on a void invoice), and so is a note with nothing to credit (total >= 0). A note
  that corrects no invoice of ours is skipped and reported by reconcile as missing.
- Lines: one ``custom_line_item`` per non-zero line (quantity 1, ``unit_amount`` = the credit
  in minor units, our description, ``metadata.billing_line_id``). A Stripe credit note line
  can only credit, so a note that mixes signs (one charge down, another up, net down) is
  sent as one line of the net amount, described "Net of N lines: ...", with every line id in
  ``metadata.billing_line_ids``.
- Amounts: Stripe first reduces what remains to be paid on the invoice (the pre-payment
  part, up to ``amount_remaining``); any excess (all of it once the invoice is paid) is
  credited to the customer's Stripe balance (``credit_amount``), which Stripe applies to the
  customer's next invoice. Refunds are a business decision and are made in Stripe by hand.
- Identity: ``metadata.billing_invoice_id`` is our credit note's id (plus
  ``billing_invoice_number`` and ``billing_corrects_invoice_id``), the idempotency key is
  ``billing-credit-note-{id}``, and the invoice's credit notes are looked up by that metadata
  before every create (and every retry of it). One request creates the whole note, so there
  is no partial state to complete.
- Stored: the Stripe id (``cn_...``) in the credit note's ``invoice.stripe_invoice_id``; the
  Stripe credit note line ids in ``invoice_line.stripe_line_id`` (one-to-one notes only).
- Voiding our credit note voids Stripe's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from billing.invoicing.lifecycle import DocumentKind, InvoiceStatus
from billing.store.models import Invoice, InvoiceLineRow
from billing.stripe_sync import state
from billing.stripe_sync.amounts import NotRepresentable, to_stripe, try_to_stripe
from billing.stripe_sync.client import list_all, plain
from billing.stripe_sync.results import (META_CORRECTS, META_INVOICE, META_LINE, META_NUMBER, Difference, Outcome,
                                         PushFailed, attempt, meta)

if TYPE_CHECKING:
    from billing.stripe_sync.sync import StripeSync

META_LINES = "billing_line_ids"
DESCRIPTION_MAX = 500
# our status -> the Stripe credit note status that agrees with it
EXPECTED_STATUS = {InvoiceStatus.FINALIZED: "issued", InvoiceStatus.VOID: "void"}


def credit_note_key(note_id: int) -> str:
    return f"billing-credit-note-{note_id}"


def _description(line: InvoiceLineRow) -> str:
    return (line.description or line.key or "Credit")[:DESCRIPTION_MAX]


def stripe_lines(lines: list[InvoiceLineRow], currency: str) -> tuple[list[dict], bool]:
    """The ``lines`` parameter of the Stripe credit note (amounts in Stripe's units; raises
    NotRepresentable), and whether they map one to one."""
    nonzero = [ln for ln in lines if ln.amount_minor]
    if all(ln.amount_minor < 0 for ln in nonzero):
        return [{"type": "custom_line_item", "description": _description(ln), "quantity": 1,
                 "unit_amount": to_stripe(-ln.amount_minor, currency), "metadata": {META_LINE: str(ln.id)}}
                for ln in nonzero], True
    net = to_stripe(-sum(ln.amount_minor for ln in nonzero), currency)
    text = f"Net of {len(nonzero)} lines: " + "; ".join(f"{_description(ln)} {ln.amount_minor:+d}" for ln in nonzero)
    ids = ",".join(str(ln.id) for ln in nonzero)
    return [{"type": "custom_line_item", "description": text[:DESCRIPTION_MAX], "quantity": 1, "unit_amount": net,
             "metadata": {META_LINES: ids[:500]}}], False


class CreditNoteSync:
    """The credit note half of ``StripeSync`` (same client, engine and retry policy)."""

    def __init__(self, sync: StripeSync):
        self.sync = sync

    # ------------------------------------------------------------------ lookups
    def _list(self, params: dict) -> list[dict]:
        return list(list_all(lambda p: self.sync.client.v1.credit_notes.list(params=p), params))

    def find(self, stripe_invoice_id: str, note_id: int) -> dict | None:
        """The Stripe credit note carrying our note's id on that invoice (a live one first)."""
        matches = [n for n in self._list({"invoice": stripe_invoice_id}) if meta(n).get(META_INVOICE) == str(note_id)]
        live = [n for n in matches if n.get("status") != "void"]
        if len(live) > 1:
            raise PushFailed(f"{len(live)} Stripe credit notes carry {META_INVOICE}={note_id}: "
                             + ", ".join(sorted(n["id"] for n in live)) + "; void the extra ones in Stripe")
        if live:
            return live[0]
        return min(matches, key=lambda n: (n.get("created") or 0, n["id"])) if matches else None

    def _original(self, note: Invoice) -> Invoice | None:
        return state.get_invoice(self.sync.engine, note.corrects_invoice_id) if note.corrects_invoice_id else None

    # --------------------------------------------------------------------- push
    def plan(self, note: Invoice) -> Outcome | None:
        """A skip decided from our data alone, or None (push it)."""
        if note.total_minor >= 0:
            return Outcome(note.id, note.number, "skipped", reason="credit note with nothing to credit (total >= 0)")
        original = self._original(note)
        if original is None or original.kind != DocumentKind.INVOICE:
            return Outcome(note.id, note.number, "skipped",
                           reason="corrects no invoice of ours: not issued in Stripe (reconcile reports it)")
        if original.status == InvoiceStatus.VOID:
            return Outcome(note.id, note.number, "skipped",
                           reason=f"its invoice {original.number or original.id} is void: nothing to credit")
        return None

    def push(self, note: Invoice) -> Outcome:
        return attempt(note, lambda: self._push(note))

    def _push(self, note: Invoice) -> Outcome:
        s = self.sync
        assert note.id is not None
        original = self._original(note)
        if original is None:
            raise PushFailed("corrects no invoice of ours")
        if not original.stripe_invoice_id:
            raise PushFailed(f"its invoice {original.number or original.id} is not in Stripe yet; "
                             "the next sync issues the credit note once the invoice is pushed")
        sid = original.stripe_invoice_id
        _, lines = state.invoice_with_lines(s.engine, note.id)
        found = s.retry(lambda: self.find(sid, note.id))
        created = found is None
        if found is None:
            sinv = plain(s.retry(lambda: s.client.v1.invoices.retrieve(sid)))
            params = self._params(note, original, lines, sinv)
            found = s._ensure(lambda: self.find(sid, note.id),
                              lambda: s.client.v1.credit_notes.create(
                                  params=params, options={"idempotency_key": credit_note_key(note.id)}),
                              known_absent=True)
        if found.get("status") == "void":
            raise PushFailed(f"Stripe credit note {found['id']} for this credit note is void in Stripe; "
                             f"ours is {note.status}")
        if not state.set_stripe_invoice_id(s.engine, note.id, found["id"]):
            raise PushFailed(f"credit note already points at another Stripe object; Stripe has {found['id']}")
        self._store_line_ids(found, lines)
        if found.get("total") != try_to_stripe(-note.total_minor, note.currency):
            return Outcome(note.id, note.number, "failed", found["id"],
                           reason=f"Stripe credit note total {found.get('total')}, "
                                  f"ours {try_to_stripe(-note.total_minor, note.currency)}")
        return Outcome(note.id, note.number, "pushed" if created else "completed", found["id"])

    @staticmethod
    def _params(note: Invoice, original: Invoice, lines: list[InvoiceLineRow], sinv: dict) -> dict[str, Any]:
        try:
            amount = to_stripe(-note.total_minor, note.currency)
            lines_param = stripe_lines(lines, note.currency)[0]
        except NotRepresentable as exc:
            raise PushFailed(f"not pushable: {exc}") from None
        status = sinv.get("status")
        if status == "open":
            remaining = sinv.get("amount_remaining")
            remaining = sinv.get("amount_due", 0) if remaining is None else remaining
            post = max(0, amount - int(remaining))
        elif status == "paid":
            post = amount
        else:
            raise PushFailed(f"Stripe invoice {sinv['id']} is {status}; a credit note needs an open or paid invoice")
        params: dict[str, Any] = {
            "invoice": sinv["id"], "lines": lines_param,
            "memo": f"Credit note {note.number or note.id} for invoice {original.number or original.id}",
            "metadata": {META_INVOICE: str(note.id), META_NUMBER: note.number or "", META_CORRECTS: str(original.id)}}
        if post:
            params["credit_amount"] = post  # the part beyond what is still due: to the customer's balance
        return params

    def _store_line_ids(self, found: dict, lines: list[InvoiceLineRow]) -> None:
        if not all(ln.amount_minor <= 0 for ln in lines):
            return  # one net line: nothing maps one to one
        page = found.get("lines") or {}
        data = page.get("data")
        if data is None or page.get("has_more"):
            data = list(list_all(lambda p: self.sync.client.v1.credit_notes.line_items.list(found["id"], params=p)))
        by_line = {meta(sl).get(META_LINE): sl["id"] for sl in data if meta(sl).get(META_LINE)}
        for ln in lines:
            item = by_line.get(str(ln.id))
            if item and ln.stripe_line_id != item:
                state.set_stripe_line_id(self.sync.engine, ln.id, item)

    # -------------------------------------------------------------------- voids
    def push_void(self, note: Invoice) -> Outcome:
        s = self.sync
        cn: dict | None = None
        if note.stripe_invoice_id:
            cn = plain(s.retry(lambda: s.client.v1.credit_notes.retrieve(note.stripe_invoice_id)))
        else:
            original = self._original(note)
            if original is not None and original.stripe_invoice_id:
                cn = s.retry(lambda: self.find(original.stripe_invoice_id, note.id))
        if cn is None:
            return Outcome(note.id, note.number, "unchanged", reason="not in Stripe")
        if cn.get("status") == "void":
            return Outcome(note.id, note.number, "unchanged", cn["id"])
        cid = cn["id"]
        s.retry(lambda: s.client.v1.credit_notes.void_credit_note(cid))
        return Outcome(note.id, note.number, "voided", cid)

    # ---------------------------------------------------------------- reconcile
    def reconcile(self, notes: list[Invoice], invoices: dict[int, Invoice],
                  stripe_customers: list[str]) -> list[Difference]:
        """Our credit notes against the credit notes of our Stripe customers (read-only)."""
        s = self.sync
        theirs: dict[str, dict] = {}
        for cus in stripe_customers:
            for cn in s.retry(lambda: self._list({"customer": cus})):
                theirs[cn["id"]] = cn
        known = {n.stripe_invoice_id for n in notes if n.stripe_invoice_id}
        explained: set[str] = set()
        diffs: list[Difference] = []
        for note in notes:
            if not note.stripe_invoice_id:
                original = invoices.get(note.corrects_invoice_id or -1)
                if (note.status == InvoiceStatus.VOID or note.total_minor >= 0
                        or (original is not None and original.status == InvoiceStatus.VOID)):
                    continue  # nothing is expected in Stripe
                issued = [c for c in theirs.values() if meta(c).get(META_INVOICE) == str(note.id)
                          and c["id"] not in known and c.get("status") != "void"]
                explained.update(c["id"] for c in issued)
                hint = f"; issued in Stripe as {', '.join(c['id'] for c in issued)} (run sync)" if issued else ""
                diffs.append(Difference("missing_in_stripe", note.id, note.number, issued[0]["id"] if issued else None,
                                        -note.total_minor, None, f"credit note not issued in Stripe{hint}"))
                continue
            cn = theirs.get(note.stripe_invoice_id)
            if cn is None:
                cn = s.fetch(s.client.v1.credit_notes.retrieve, note.stripe_invoice_id)
                if cn is None:
                    diffs.append(Difference("missing_in_stripe", note.id, note.number, note.stripe_invoice_id,
                                            -note.total_minor, None, "Stripe does not know this credit note id"))
                    continue
            diffs.extend(self._compare(note, invoices.get(note.corrects_invoice_id or -1), cn))
        for cid, cn in sorted(theirs.items()):
            if cid in known or cid in explained or cn.get("status") == "void":
                continue
            m = meta(cn)
            ours = m.get(META_INVOICE)
            diffs.append(Difference("extra_in_stripe", int(ours) if (ours or "").isdigit() else None,
                                    m.get(META_NUMBER), cid, None, cn.get("total"),
                                    f"Stripe credit note ({cn.get('status')}) on {cn.get('invoice')} that no credit "
                                    "note of ours accounts for"))
        return diffs

    @staticmethod
    def _compare(note: Invoice, original: Invoice | None, cn: dict) -> list[Difference]:
        out = []
        credit = try_to_stripe(-note.total_minor, note.currency)
        if cn.get("total") != credit or (cn.get("currency") or "").lower() != note.currency.lower():
            out.append(Difference("amount_mismatch", note.id, note.number, cn["id"],
                                  f"{credit} {note.currency.lower()}", f"{cn.get('total')} {cn.get('currency')}",
                                  "credit note totals differ (credited amount, in Stripe's units)"))
        expected = EXPECTED_STATUS.get(note.status)
        if cn.get("status") != expected:
            out.append(Difference("status_mismatch", note.id, note.number, cn["id"], note.status, cn.get("status"),
                                  f"ours is {note.status}, Stripe's credit note is {cn.get('status')}"))
        if original is not None and original.stripe_invoice_id and cn.get("invoice") != original.stripe_invoice_id:
            out.append(Difference("status_mismatch", note.id, note.number, cn["id"], original.stripe_invoice_id,
                                  cn.get("invoice"), "the Stripe credit note is on another invoice"))
        return out
