"""The contract rows of subscriptions, read per chunk (``terms.ContractTerms`` per
subscription). The quota's context statement reads the overrides with the same columns
(``OVERRIDES_OF_CUSTOMER``) and turns them into the same ``Override`` (``override_of``)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from billing.catalog.overrides import Override
from billing.contracts.terms import AddOnRef, ContractTerms, Redemption, TermsBuilder, coupon_discount
from billing.money import from_minor
from billing.rating.types import TermCommitment
from billing.store.driver_rows import datetime_reader, driver_rows

_CHUNK = 500

_OVERRIDES = "SELECT o.subscription_id, o.path, o.value, o.starts_at, o.ends_at, o.id FROM contract_override o "
OVERRIDES_OF_CUSTOMER = (_OVERRIDES + "JOIN subscription s ON s.id = o.subscription_id WHERE s.customer_id = ?")
_REDEMPTIONS = ("SELECT r.subscription_id, r.id, r.redeemed_at, r.ends_at, c.code, c.name, c.percent, c.amount_minor, "
                "c.currency, c.applies_to FROM coupon_redemption r JOIN coupon c ON c.code = r.coupon_code ")
_COMMITMENTS = ("SELECT t.subscription_id, t.id, t.name, t.amount_minor, t.starts_at, t.ends_at, t.applies_to, "
                "cu.currency FROM term_commitment t JOIN subscription s ON s.id = t.subscription_id "
                "JOIN customer cu ON cu.id = s.customer_id ")

_ADDONS = ("SELECT a.subscription_id, a.id, a.plan_id, a.plan_version, a.started_at, a.ended_at "
           "FROM addon_subscription a ")


def override_of(row: Sequence, dt: Callable) -> Override:
    """An ``_OVERRIDES`` row as an ``Override`` (its value parsed from JSON text)."""
    _, path, value, starts_at, ends_at, _ = row
    return Override(path, json.loads(value), dt(starts_at), dt(ends_at))


def contract_terms(conn: Connection, subscription_ids: Sequence[int]) -> dict[int, ContractTerms]:
    """subscription -> its contract terms (absent: none)."""
    builders: dict[int, TermsBuilder] = defaultdict(TermsBuilder)
    dt = datetime_reader(conn)
    ids = sorted(set(subscription_ids))
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        marks = ",".join(["?"] * len(part))
        for row in driver_rows(conn, f"{_OVERRIDES}WHERE o.subscription_id IN ({marks}) ORDER BY o.id", part):
            builders[row[0]].overrides.append(override_of(row, dt))
        for sid, rid, redeemed_at, ends_at, code, name, percent, amount_minor, currency, applies_to in driver_rows(
                conn, f"{_REDEMPTIONS}WHERE r.subscription_id IN ({marks})", part):
            amount = from_minor(int(amount_minor), currency) if amount_minor is not None else None
            discount = coupon_discount(code, name, applies_to, Decimal(percent) if percent is not None else None,
                                       amount, currency or "")
            redeemed = dt(redeemed_at)
            builders[sid].redemptions.append(((redeemed, rid), Redemption(discount, redeemed, dt(ends_at))))
        for sid, tid, name, amount_minor, starts_at, ends_at, applies_to, currency in driver_rows(
                conn, f"{_COMMITMENTS}WHERE t.subscription_id IN ({marks})", part):
            builders[sid].commitments.append(TermCommitment(
                f"commitment:{tid}", name, from_minor(int(amount_minor), currency), dt(starts_at), dt(ends_at),
                applies_to))
        for sid, aid, plan_id, version, started_at, ended_at in driver_rows(
                conn, f"{_ADDONS}WHERE a.subscription_id IN ({marks})", part):
            builders[sid].addons.append(AddOnRef(aid, plan_id, int(version), dt(started_at), dt(ended_at)))
    return {sid: b.build() for sid, b in builders.items()}


def overrides_by_subscription(rows: Sequence[Sequence], dt: Callable[[object], datetime | None]
                              ) -> dict[int, tuple[Override, ...]]:
    """``OVERRIDES_OF_CUSTOMER`` rows, per subscription in id order."""
    out: dict[int, list[Override]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r[5]):
        out[row[0]].append(override_of(row, dt))
    return {sid: tuple(o) for sid, o in out.items()}
