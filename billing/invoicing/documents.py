"""Invoice and line rows as the close writes them (plain dicts for bulk inserts)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from billing.catalog import Plan
from billing.ledger.counters import MICRO
from billing.store.types import to_us
from billing.store.wide import split
from billing.money import dec_str, minor_units, round_line
from billing.rating.periods import Period
from billing.rating.types import CreditGrant, RatedInvoice

PICO = Decimal(10) ** 12


def minor(amount: Decimal, currency: str) -> int:
    return int(round_line(amount, currency).scaleb(minor_units(currency)))


def invoice_key(subscription_id: int, period: Period) -> str:
    return f"inv:{subscription_id}:{to_us(period.start)}"


def correction_key(kind: str, original_id: int, generation: int) -> str:
    """A correction document's dedupe key: what it corrects (the original invoice) and the
    correction's generation (``cn:12:g2``: the second correction of invoice 12, as a
    credit note). Never a snapshot's watermark: two closes that see different ledgers
    still name the same correction the same way."""
    return f"{'cn' if kind == 'credit_note' else 'adj'}:{original_id}:g{generation}"


def grant_inputs(grants, currency: str) -> list[CreditGrant]:
    out = []
    for g, balance in grants:
        if balance <= 0:
            continue
        out.append(CreditGrant(g.id, Decimal(balance) / MICRO, g.name, g.expires_at, g.effective_at,
                               tuple(g.applies_to.split(",")) if g.applies_to else None))
    return out


@lru_cache(maxsize=65536)
def _text(value: Decimal) -> str:
    return dec_str(value)


def _rounded_minor(amount: Decimal, places: int) -> int:
    """A line amount the engine rounded (``round_line``) as minor units; refuses any other."""
    scaled = amount.scaleb(places)
    value = int(scaled)
    if value != scaled:
        raise ValueError(f"line amount {amount} is not rounded to the currency's minor unit")
    return value


def line_rows(inv: RatedInvoice, start: datetime, end: datetime, in_advance: bool = False) -> list[dict]:
    """The rated lines as rows (positions are set when the invoice's lines are final);
    ``in_advance``: they bill advance fees for the window ahead (``invoicing.advance``)."""
    places = minor_units(inv.currency)
    return [{"position": 0, "kind": str(ln.kind), "key": ln.key, "description": ln.description[:500],
             "quantity": _text(ln.quantity), "unit_price": None if ln.unit_price is None else _text(ln.unit_price),
             "amount_minor": _rounded_minor(ln.amount, places), "service_start": start, "service_end": end,
             "billed_in_advance": in_advance}
            for ln in inv.lines]


def opening_key(subscription_id: int, period: Period) -> str:
    """The key of a subscription's opening invoice: the advance fees of its first window."""
    return f"adv:{subscription_id}:{to_us(period.start)}"


def threshold_prefix(subscription_id: int, period: Period) -> str:
    """What the keys of a subscription's period's threshold invoices start with."""
    return f"thr:{subscription_id}:{to_us(period.start)}:"


def threshold_key(subscription_id: int, period: Period, sequence: int) -> str:
    """The key of the ``sequence``-th threshold invoice (1, 2, ...) of a subscription's period."""
    return f"{threshold_prefix(subscription_id, period)}{sequence}"


def doc_base(sub, plan: Plan, start: datetime, end: datetime, now: datetime, watermark: int) -> dict:
    return {"kind": "invoice", "status": "draft", "customer_id": sub.customer_id, "subscription_id": sub.id,
            "plan_id": plan.plan, "plan_version": plan.version, "currency": plan.currency, "period_start": start,
            "period_end": end, "provider_cost_pico": 0, "provider_cost_carry": 0, "ledger_watermark": watermark,
            "created_at": now, "corrects_invoice_id": None}


def invoice_row(sub, plan: Plan, period: Period, start: datetime, end: datetime, inv: RatedInvoice,
                total_minor: int, watermark: int, now: datetime) -> dict:
    return {**doc_base(sub, plan, start, end, now, watermark),
            "dedupe_key": invoice_key(sub.id, period), "total_minor": total_minor,
            **provider_cost_columns(int((inv.provider_cost * PICO).to_integral_value()))}


def provider_cost_columns(cost_pico: int) -> dict:
    """An invoice's provider cost (picodollars, exact at any size) as its stored parts."""
    carry, low = split(cost_pico)
    return {"provider_cost_pico": low, "provider_cost_carry": carry}
