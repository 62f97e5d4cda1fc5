"""``LocalClient``: the client interface in-process, over the same services the HTTP API uses."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from billing.client.base import BillingClient
from billing.client.spool import Spool


class LocalClient(BillingClient):
    """In-process: ``billing.reservations.holds.Quota`` and its ledger, no network. Events are
    stamped with the quota's clock. ``spool_dir``: a spool for ``guarded_call``'s commits
    (default none: a commit is one local transaction; give one to keep commits through a
    database outage)."""

    def __init__(self, quota: Any, *, spool_dir: str | os.PathLike[str] | None = None):
        self.quota = quota
        self.spool = Spool(spool_dir) if spool_dir else None

    @classmethod
    def open(cls, database_url: str, plans: str = "plans", *, spool_dir: str | None = None,
             **quota_kwargs: Any) -> "LocalClient":
        from billing.catalog import Catalog
        from billing.store.db import engine_for
        from billing.reservations.holds import Quota

        catalog = Catalog.from_paths(plans)
        return cls(Quota(engine_for(database_url), catalog, **quota_kwargs), spool_dir=spool_dir)

    def now(self) -> datetime:
        return self.quota.clock()

    def is_transient(self, exc: BaseException) -> bool:
        from sqlalchemy.exc import DBAPIError, OperationalError

        return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)

    def check(self, customer, meter=None, *, charge=None, quantity=1, model=None, task=None, tokens=None, cost=0,
              steps=None, retry=None, depth=None):
        return self.quota.check(customer, charge or meter, quantity, model=model, task=task, tokens=tokens,
                                cost=cost, steps=steps, retry=retry, depth=depth).to_json()

    def reserve(self, customer, meter=None, *, charge=None, quantity=1, model=None, task=None, tokens=None, cost=0,
                steps=None, retry=None, depth=None, ttl=60.0, request_id=None, idempotency_key=None):
        return self.quota.reserve(customer, charge or meter, quantity, ttl=ttl, request_id=request_id, model=model,
                                  task=task, tokens=tokens, cost=cost, steps=steps, retry=retry,
                                  depth=depth).to_json()

    def commit(self, reservation_id, event=None, *, idempotency_key=None):
        return self.quota.commit(reservation_id, event)

    def release(self, reservation_id, *, idempotency_key=None):
        return self.quota.release(reservation_id)

    def record(self, events, *, idempotency_key=None):
        events = list(events)
        result = self.quota.ledger.record(events)  # counts task usage, evaluates alerts (one way in)
        out = result.to_json()
        out.pop("errors", None)
        out["results"] = [r.to_json() for r in result.results]
        return out

    def usage(self, customer):
        return self.quota.usage(customer)

    def metering(self, customer):
        from billing.api.metering import metering_json

        return metering_json(self.quota, customer)

    def entitlement(self, customer, feature):
        from billing.api.entitlements import entitlement_json

        return entitlement_json(self.quota, customer, feature)
