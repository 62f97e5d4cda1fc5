"""Late events against finalized periods: find the periods whose ledger changed since they
were billed, re-rate them, and return the differences as adjustments or credit notes.

A period is re-checked up to the snapshot's watermark. Where the running counters can
tell (``usage.late_detectable``: one subscription over the whole period, no disputes, no
time-weighted sum),
the period's event count (the ``*`` counter) is compared with the count at its last
check: equal means no event arrived for it, and no event is read. Otherwise an indexed
query looks for an event newer than the last check in the period (or, with disputes, in
the dispute window after it).

A period whose events were re-costed after it was billed (a price arrived for an unpriced
event: ``billing.ledger.recost`` marks its invoice) is re-rated whatever the counts say.

A period is marked re-checked only when its difference is billed in this run: a net
increase for a subscription not in ``billable_now`` (no new invoice to carry it yet)
stays pending, and is found again by the next close. ``drawn_now`` (grant id ->
micro-units drawn in this run, not yet stored) is kept up to date so re-rated periods
never draw credit that is already spent.

Each billed difference is a ``Correction``: the next generation (1, 2, ...) of the
original invoice's corrections. The close records it in ``invoice_correction``, whose
primary key (original, generation) admits one document per correction: two closes that
both re-rated the period from the same billed lines cannot both bill it. The generations
are read before any billed lines, so a close that saw another close's correction in the
billed lines also counts it in the generation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from billing.invoicing import repository as repo
from billing.invoicing.documents import minor
from billing.invoicing.usage import period_events
from billing.store.grants_and_seats import grant_balances
from billing.rating.periods import local_dates
from billing.store.types import to_us
from billing.money import minor_units
from billing.rating.types import LineKind


@dataclass
class Correction:
    """The ``generation``-th correction of invoice ``original_id`` (a period of subscription
    ``sub_id``): its adjustment line rows."""

    sub_id: int
    original_id: int
    generation: int
    lines: list[dict]

    @property
    def total(self) -> int:
        return sum(row["amount_minor"] for row in self.lines)


def late_changes(invoicing, conn, subs, zones: dict[str, str], snap: repo.Snapshot, cover, finals,
                 billable_now: set[int], drawn_now: dict[str, int]) -> tuple[list[Correction], list[Correction]]:
    """(adjustments: net increases, credit notes: net decreases), in original invoice order."""
    from billing.invoicing.service import _period_of, cycle_for

    watermark = snap.watermark
    adjustments: list[Correction] = []
    credit_notes: list[Correction] = []
    generations = repo.last_corrections(conn, [f.id for f in finals])  # before any billed lines (see above)
    by_id = {s.id: s for s in subs}
    marks = repo.recheck_marks(conn, [f.id for f in finals])
    recosted = repo.recost_marks(conn, [f.id for f in finals])
    catalog = invoicing.catalog

    def settled(inv, count) -> None:
        repo.set_recheck(conn, inv.id, watermark, count)
        if inv.id in recosted:
            repo.clear_recost(conn, inv.id, recosted[inv.id])

    for inv in finals:
        mark, known = marks.get(inv.id, (0, None))
        seen = max(inv.ledger_watermark, mark)
        forced = inv.id in recosted
        if seen >= watermark and not forced:
            continue
        sub = by_id[inv.subscription_id]
        plan = catalog.get(sub.plan_id, sub.plan_version)
        tz = zones.get(sub.customer_id, "UTC")
        period = _period_of(cycle_for(sub, plan, tz), inv.period_start)
        count = None
        if invoicing.counts_for(sub, plan, period, inv.period_start, inv.period_end, snap, cover, zones):
            count = period_events(snap.counters.get((sub.customer_id, to_us(period.start))))
        if forced:
            pass  # re-costed: re-rate it
        elif count is not None and known is not None:
            if count == known:
                continue  # no event arrived for this period
        elif not _has_late_events(conn, sub, plan, seen, inv):
            settled(inv, count)
            continue
        diffs, names, grants = _rerated_differences(invoicing, conn, sub, plan, period, inv, watermark, drawn_now)
        if not diffs:
            settled(inv, count)
            continue
        rows = _adjustment_rows(inv, diffs, names, tz)
        if sum(diffs.values()) < 0:
            credit_notes.append(Correction(sub.id, inv.id, generations.get(inv.id, 0) + 1, rows))
        elif sub.id in billable_now:
            adjustments.append(Correction(sub.id, inv.id, generations.get(inv.id, 0) + 1, rows))
        else:
            continue  # pending: re-rated again (with any newer events) by the next close
        settled(inv, count)
        scale = 10 ** (6 - minor_units(plan.currency))
        for grant, _ in grants:  # credit drawn (or given back) by these lines
            drawn_now[grant.id] -= diffs.get(grant.id, 0) * scale
    return adjustments, credit_notes


def _has_late_events(conn, sub, plan, seen: int, inv) -> bool:
    """Whether an event newer than ``seen`` landed in the invoice's period (or, with
    disputes, in the dispute window after it; with a time-weighted sum, at any time before
    its end: a level reported late carries into the periods after it)."""
    reach = max((m.disputes.window_days for m in plan.meters if m.disputes), default=0) * 86_400_000_000
    carries = any(m.aggregation == "time_weighted_sum" for m in plan.meters)
    return repo.has_late_events(conn, sub.customer_id, seen, 0 if carries else to_us(inv.period_start),
                                to_us(inv.period_end) + reach)


def _rerated_differences(invoicing, conn, sub, plan, period, inv, watermark: int, drawn_now: dict[str, int]
                         ) -> tuple[dict[str, int], dict[str, str], list]:
    """Re-rates the invoice's period up to ``watermark`` with the credit still available to
    it: (line key -> nonzero minor-unit difference from what was billed, in key order;
    line key -> name; the customer's grants with their balances)."""
    window_start, window_end = inv.period_start, inv.period_end
    billed: dict[str, int] = defaultdict(int)
    names: dict[str, str] = {f.key: f.name or f.key for f in plan.fees}
    names.update({c.key: c.name or c.key for c in plan.charges})
    for key, amount, description, _kind in repo.billed_lines_for_period(conn, sub.id, window_start, window_end):
        billed[key] += amount
        names.setdefault(key, description)
    grants = grant_balances(conn, [sub.customer_id]).get(sub.customer_id, [])
    scale = 10 ** (6 - minor_units(plan.currency))
    # the credit this period drew so far (its credit lines, adjustments included)
    earlier = {g.id: -billed[g.id] * scale for g, _ in grants if billed.get(g.id)}
    available = [(g, bal - drawn_now.get(g.id, 0) + earlier.get(g.id, 0)) for g, bal in grants]
    rerated = invoicing.rerate(conn, sub, plan, period, window_start, window_end, watermark, available)
    fresh: dict[str, int] = defaultdict(int)
    for ln in rerated.lines:
        fresh[ln.key] += minor(ln.amount, plan.currency)
        names.setdefault(ln.key, ln.description)
    diffs = {k: fresh.get(k, 0) - billed.get(k, 0) for k in set(fresh) | set(billed)}
    return {k: v for k, v in sorted(diffs.items()) if v}, names, grants


def _adjustment_rows(inv, diffs: dict[str, int], names: dict[str, str], timezone: str) -> list[dict]:
    """One adjustment line row per changed key, over the invoice's period (its dates in the
    customer's time zone)."""
    label = local_dates(inv.period_start, inv.period_end, timezone).replace(" .. ", "..")
    return [{"kind": LineKind.ADJUSTMENT.value, "key": k, "description": f"Adjustment {label}: {names.get(k, k)}",
             "quantity": "1", "unit_price": None, "amount_minor": v, "service_start": inv.period_start,
             "service_end": inv.period_end} for k, v in diffs.items()]
