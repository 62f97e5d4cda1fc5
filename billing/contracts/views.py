"""A contract's rows as JSON: the CLI's ``--json`` and the API's answers (decimal strings,
ISO instants with ``Z``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from billing.money import from_minor
from billing.store.models import AddOnSubscription, ContractOverride, Coupon, CouponRedemption, TermCommitmentRow


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def override_json(row: ContractOverride) -> dict[str, Any]:
    return {"id": row.id, "subscription": row.subscription_id, "path": row.path, "value": json.loads(row.value),
            "starts_at": _iso(row.starts_at), "ends_at": _iso(row.ends_at)}


def coupon_json(row: Coupon) -> dict[str, Any]:
    amount = None if row.amount_minor is None else format(from_minor(row.amount_minor, row.currency), "f")
    return {"code": row.code, "name": row.name, "percent": row.percent, "amount": amount, "currency": row.currency,
            "duration": row.duration, "periods": row.periods, "applies_to": row.applies_to}


def redemption_json(row: CouponRedemption) -> dict[str, Any]:
    return {"id": row.id, "coupon": row.coupon_code, "subscription": row.subscription_id,
            "redeemed_at": _iso(row.redeemed_at), "ends_at": _iso(row.ends_at)}


def commitment_json(row: TermCommitmentRow, currency: str) -> dict[str, Any]:
    return {"id": row.id, "subscription": row.subscription_id, "name": row.name,
            "amount": format(from_minor(row.amount_minor, currency), "f"), "currency": currency,
            "starts_at": _iso(row.starts_at), "ends_at": _iso(row.ends_at), "applies_to": row.applies_to}


def addon_json(row: AddOnSubscription) -> dict[str, Any]:
    return {"id": row.id, "subscription": row.subscription_id, "plan": {"id": row.plan_id, "version": row.plan_version},
            "started_at": _iso(row.started_at), "ended_at": _iso(row.ended_at)}


def contract_json(contract: dict[str, Any]) -> dict[str, Any]:
    """``Contracts.contract`` as JSON (the CLI's ``--json`` and the API's answer)."""
    return {"subscription": contract["subscription"],
            "overrides": [override_json(o) for o in contract["overrides"]],
            "coupons": [{**redemption_json(r), "coupon": coupon_json(c)} for r, c in contract["coupons"]],
            "commitments": [commitment_json(t, contract["currency"]) for t in contract["commitments"]],
            "addons": [addon_json(a) for a in contract["addons"]]}
