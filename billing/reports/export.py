"""Margin reports as JSON and CSV. Money is text: revenue in exact cents, cost exact (the
provider cost is sub-cent), margins exact; percentages to one decimal."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from billing.money import dec_str, round_line
from billing.reports.stats import round_pct

PICO = Decimal(10) ** 12


def _pct(value: Decimal | None) -> str | None:
    r = round_pct(value)
    return None if r is None else str(r)


def _revenue(value: Decimal, currency: str) -> str:
    rounded = round_line(value, currency)
    return str(rounded) if rounded == value else dec_str(value)


def customer_json(report, c) -> dict:
    return {"customer": c.customer, "plan": c.plan, "revenue": _revenue(c.revenue, c.currency), "source": c.source,
            "cost": dec_str(c.cost), "margin": dec_str(c.margin), "margin_pct": _pct(c.margin_pct),
            "events": c.events, "interactions": c.interactions, "currency": c.currency,
            "whale": report.is_whale(c), "tokens": c.tokens.to_json()}


def breakdown_json(r, currency: str) -> dict:
    return {"key": r.key, "customers": r.customers, "events": r.events, "cost": dec_str(r.cost),
            "revenue": _revenue(r.revenue, currency), "margin": dec_str(r.margin), "margin_pct": _pct(r.margin_pct),
            "tokens": r.tokens.to_json()}


def report_json(report) -> dict:
    cur = report.currency
    return {
        "period": report.label, "as_of": report.as_of.isoformat().replace("+00:00", "Z"),
        "currencies": report.currencies,
        "totals": {"customers": len(report.customers), "revenue": _revenue(report.revenue, cur),
                   "cost": dec_str(report.cost), "margin": dec_str(report.margin),
                   "margin_pct": _pct(report.margin_pct), "tokens": report.tokens.to_json()},
        "customers": [{**customer_json(report, c), **_split_json(report, c)} for c in report.customers],
        "costs": _costs_json(report),
        "whales": [c.customer for c in report.whales()],
        "whale_margin_pct": None if report.whale_margin_pct is None else dec_str(report.whale_margin_pct),
        "segments": [{"segment": s.name, "percentile": s.percentile, "customer": s.customer.customer,
                      "interactions": s.customer.interactions, "cost": dec_str(s.customer.cost),
                      "revenue": _revenue(s.customer.revenue, s.customer.currency),
                      "margin": dec_str(s.customer.margin), "margin_pct": _pct(s.customer.margin_pct),
                      "text": s.sentence()} for s in report.usage_segments()],
        "percentiles": {metric: {k: None if v is None else dec_str(v) for k, v in ps.items()}
                        for metric, ps in report.percentiles().items()},
        "plans": [{"plan": plan, "customers": len(cs), "revenue": _revenue(sum((c.revenue for c in cs), Decimal(0)), cur),
                   "cost": dec_str(sum((c.cost for c in cs), Decimal(0)))} for plan, cs in report.plans()],
        "by": report.by, "allocate": report.allocate,
        "breakdown": [breakdown_json(r, cur) for r in report.breakdown],
        "per_customer_breakdown": [{"customer": c, **breakdown_json(r, cur)} for c, r in report.per_customer_breakdown],
        "daily": [{"day": d.day.isoformat(), "events": d.events, "cost": dec_str(d.cost),
                   "revenue": _revenue(d.revenue, cur), "margin": dec_str(d.margin), "tokens": d.tokens.to_json()}
                  for d in report.daily],
        "unpriced_usage": {"events": sum(g.events for g in report.unpriced_usage),
                           "tokens": dec_str(sum((g.tokens for g in report.unpriced_usage), Decimal(0))),
                           "by_model": [_kept_json(g) for g in report.unpriced_usage]},
        "unmetered_usage": {"events": sum(g.events for g in report.unmetered_usage),
                            "cost": dec_str(sum((Decimal(g.cost_pico) for g in report.unmetered_usage), Decimal(0))
                                            / PICO),
                            "by_type": [_kept_json(g) for g in report.unmetered_usage]},
    }


def _split_json(report, c) -> dict:
    """A customer's AI cost, other cost, overhead and cost per outcome (``reports.costs_beyond``)."""
    split = report.split.get(c.customer)
    return split.to_json(c.revenue, c.cost) if split is not None else {}


def _costs_json(report) -> dict:
    """The totals of the cost split: provider cost as AI and other cost, and the overhead."""
    splits = [report.split[c.customer] for c in report.customers if c.customer in report.split]
    overhead = sum((s.overhead for s in splits), Decimal(0))
    return {"ai_cost": dec_str(sum((s.ai_cost for s in splits), Decimal(0))),
            "other_cost": dec_str(sum((s.other_cost for s in splits), Decimal(0))),
            "overhead": dec_str(overhead), "margin_after_overhead": dec_str(report.margin - overhead)}


def _kept_json(g) -> dict:
    out = g.to_json()
    out.pop("status")
    return out


def _tokens(t) -> list[str]:
    return [dec_str(t.input), dec_str(t.output), dec_str(t.cached), dec_str(t.reasoning)]


def report_csv(report) -> str:
    """Per customer rows; with ``by``, then the breakdown rows (a ``section`` column tells them
    apart): ``by:<prop>`` totals per value, ``customer-by:<prop>`` per customer and value;
    then ``unpriced:model`` (events the cost book could not price yet, by model, with their
    ``tokens``) and ``unmetered:type`` rows. Customer and breakdown rows end with their token
    counts (input, output, cached, reasoning)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "customer", "key", "plan", "source", "events", "interactions", "revenue", "cost",
                "margin", "margin_pct", "currency", "tokens", "input_tokens", "output_tokens", "cached_tokens",
                "reasoning_tokens"])
    cur = report.currency
    for c in report.customers:
        w.writerow(["customer", c.customer, "", c.plan or "", c.source, c.events, c.interactions,
                    _revenue(c.revenue, c.currency), dec_str(c.cost), dec_str(c.margin), _pct(c.margin_pct) or "",
                    c.currency, "", *_tokens(c.tokens)])
    for r in report.breakdown:
        w.writerow([f"by:{report.by}", "", r.key, "", report.allocate, r.events, "", _revenue(r.revenue, cur),
                    dec_str(r.cost), dec_str(r.margin), _pct(r.margin_pct) or "", cur, "", *_tokens(r.tokens)])
    for customer, r in report.per_customer_breakdown:
        w.writerow([f"customer-by:{report.by}", customer, r.key, "", report.allocate, r.events, "",
                    _revenue(r.revenue, cur), dec_str(r.cost), dec_str(r.margin), _pct(r.margin_pct) or "", cur, "",
                    *_tokens(r.tokens)])
    for g in report.kept:
        w.writerow([f"{g.status}:{'model' if g.status == 'unpriced' else 'type'}", "", g.key or "", "", "", g.events,
                    "", "", dec_str(Decimal(g.cost_pico) / PICO), "", "", cur, dec_str(g.tokens)])
    return buf.getvalue()
