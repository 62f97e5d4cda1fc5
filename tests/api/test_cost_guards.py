"""Issue 15's whale through the real quota API and ledger: a customer on a $200 flat plan
keeps calling an expensive model. The call that would take provider cost past the margin
floor is downgraded to the cheaper model, the one that would pass the cost cap is denied
(and every one after it), the committed provider cost never passes the cap, and the margin
floor's alert is recorded once by the budget alert path (row + webhook)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from billing.api.app import create_app
from billing.api.auth import create_key
from tests.support.guards import CHEAP, EXPENSIVE, guarded_catalog
from tests.support.quota import T0, Clock

TOKENS = 200_000  # per call: half input, half output
ESTIMATE = D(TOKENS) * D(75) / 1_000_000  # opus's dearer (output) rate: what a reservation holds
ACTUAL = {EXPENSIVE: D("0.1") * 15 + D("0.1") * 75, CHEAP: D("0.1") * 1 + D("0.1") * 5}  # per the cost book
MARGIN_LIMIT = D(200) * D("9.5") / D(31) / 2  # 50% of the flat fee's part earned by Oct 10 12:00
COST_CAP = D(60)


def _provider_cost(engine) -> D:
    with engine.connect() as conn:
        pico = conn.execute(text("SELECT cost_pico FROM usage_counter WHERE customer_id = 'whale' AND meter = '*'")
                            ).scalar()
    return D(pico or 0) / D(10) ** 12


@pytest.mark.slow
def test_the_whale_is_downgraded_then_denied_within_one_call_with_one_alert(any_engine):
    app = create_app(any_engine, guarded_catalog(), clock=Clock(), context_ttl=0, key_cache_ttl=0)
    headers = {"Authorization": f"Bearer {create_key(any_engine, 'admin')[1]}"}
    with TestClient(app, headers=headers) as client:
        assert client.post("/v1/customers", json={"id": "whale"}).status_code == 201
        r = client.post("/v1/customers/whale/subscriptions", json={"plan": "flat-guarded", "at": T0.isoformat()})
        assert r.status_code == 201, r.text

        outcomes: list[tuple[str, str | None]] = []
        cost = D(0)  # committed provider cost, as the ledger counts it
        for i in range(200):
            r = client.post("/v1/quota/reserve", json={"customer": "whale", "meter": "calls", "model": EXPENSIVE,
                                                       "tokens": TOKENS, "ttl_seconds": 600})
            assert r.status_code == 200, r.text
            body = r.json()
            decision = body["decision"]
            outcomes.append((decision["outcome"], decision["guard"]))
            # within one call of crossing: a guard acts exactly on the call its estimate would take past it
            if cost + ESTIMATE > COST_CAP:
                assert (decision["outcome"], decision["reason"], decision["guard"]) == ("deny", "cost_guard", "cost_cap")
                assert not body["granted"]
                if outcomes.count(("deny", "cost_cap")) == 3:
                    break
                continue
            if cost + ESTIMATE > MARGIN_LIMIT:
                assert (decision["outcome"], decision["guard"], decision["lane"]["model"]) == (
                    "downgrade", "margin_floor", CHEAP)
            else:
                assert (decision["outcome"], decision["guard"], decision["lane"]["model"]) == (
                    "allow", None, EXPENSIVE)
            model = decision["lane"]["model"]  # the wrapper calls the lane's model
            event = {"id": f"call-{i}", "properties": {"model": model, "input_tokens": TOKENS // 2,
                                                       "output_tokens": TOKENS // 2}}
            r = client.post("/v1/quota/commit", json={"reservation_id": body["reservation_id"], "event": event})
            assert r.status_code == 200 and r.json()["event"] == "accepted", r.text
            cost += ACTUAL[model]
            assert _provider_cost(any_engine) == cost <= COST_CAP

        kinds = [o for o, _ in outcomes]
        first_down, first_deny = kinds.index("downgrade"), kinds.index("deny")
        assert kinds[:first_down] == ["allow"] * 2 and set(kinds[first_down:first_deny]) == {"downgrade"}
        assert kinds[first_deny:] == ["deny"] * 3  # the whale ends in the cap's policy
        assert first_deny - first_down > 10 and _provider_cost(any_engine) <= COST_CAP

        with any_engine.connect() as conn:
            alerts = conn.execute(text("SELECT subject, threshold FROM budget_alert WHERE customer_id = 'whale'")
                                  ).all()
            hooks = conn.execute(text("SELECT COUNT(*) FROM webhook_outbox WHERE type = "
                                      "'alert.triggered'")).scalar()
        assert [tuple(a) for a in alerts] == [("cost_guard:margin_floor", "100")] and hooks == 1
        usage = client.get("/v1/customers/whale/usage").json()
        assert D(usage["spend"]) == 0  # what the customer is billed for usage: nothing, the whole time
