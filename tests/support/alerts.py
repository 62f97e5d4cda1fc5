"""A customer on support-chatbot (alerts at 50/80/100% of its 100 included messages) and
its messages: the quota's alert tests and the ledger's alerting tests share them."""

from __future__ import annotations

from datetime import timedelta

from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from tests.support.quota import NOW, T0, catalog

CAT = catalog()


def _quota(engine, clock):
    acc = Accounts(engine, CAT)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "support-chatbot", at=T0)
    return Quota(engine, CAT, clock=clock)


def _events(n, start=0):
    return [{"id": f"m{i}", "customer": "acme", "type": "llm.call", "timestamp": (NOW - timedelta(hours=1)).isoformat(),
             "properties": {"feature": "support-chat"}} for i in range(start, start + n)]
