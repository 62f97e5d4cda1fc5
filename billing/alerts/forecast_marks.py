"""Which customers the forecast alerts must look at again: the ``alerts`` job's watermarks.

A forecast crossing (``billing.alerts.forecast``) can only appear for a customer whose usage
or account changed since the last run, or whose ``min_elapsed`` gate opened since then:
without new usage the run rate only falls as the period goes on, and a new period starts
from nothing. So each run reads, besides the forecast, where the last run stopped
(``ledger_state`` rows, written with the run's alerts in one transaction):

- ``forecast_event_id``: the greatest ``usage_event.id`` then; the customers of the events
  after it are looked at (a late or backdated event and a quota commit included);
- ``forecast_outbox_id``: the greatest ``webhook_outbox.id`` then; the customers of the
  changes queued after it (subscriptions created, changed or canceled, invoices...; not the
  alerts themselves);
- ``forecast_run_at``: when it ran; a customer whose window passes ``min_elapsed`` after it;
- ``forecast_cost_version``: the stored prices' version (``billing.store.cost_prices``):
  prices added since (re-costed events keep their ids) mean everyone.

Ids are handed out before their transaction commits, so an id below the mark may commit
after the run read it: the next run starts from the marks of the run before the last
(``*_before``), not the last's, and so sees a transaction that was in flight for less than
one job interval. No marks yet, a clock behind the last run, or a new cost version: everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from billing.store.cost_prices import VERSION_KEY

EVENT, OUTBOX, RUN_AT, COSTS = "forecast_event_id", "forecast_outbox_id", "forecast_run_at", "forecast_cost_version"
NAMES = (EVENT, EVENT + "_before", OUTBOX, OUTBOX + "_before", RUN_AT, COSTS)


@dataclass(frozen=True)
class Marks:
    event_id: int  # the greatest usage_event id now
    outbox_id: int  # the greatest webhook_outbox id now
    cost_version: int
    stored: dict[str, int]  # the last run's ledger_state rows (NAMES)

    def since_event(self) -> int:
        """Events after this id are new to the forecast (one run's overlap)."""
        return self.stored[EVENT + "_before"]

    def since_outbox(self) -> int:
        return self.stored[OUTBOX + "_before"]

    def everyone(self, now_us: int) -> bool:
        s = self.stored
        return (any(n not in s for n in NAMES) or now_us <= s[RUN_AT] or s[COSTS] != self.cost_version)


def _ph(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def read(conn: Connection) -> Marks:
    ph = _ph(conn)
    rows = conn.exec_driver_sql(f"SELECT name, value FROM ledger_state WHERE name IN ({', '.join([ph] * 7)})",
                                (*NAMES, VERSION_KEY)).all()
    found = {name: int(value) for name, value in rows}
    event_id = conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM usage_event").scalar_one()
    outbox_id = conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM webhook_outbox").scalar_one()
    return Marks(int(event_id), int(outbox_id), found.pop(VERSION_KEY, 0), found)


def changed_customers(conn: Connection, marks: Marks) -> set[str]:
    """The customers with events or queued changes after the marks (up to those read now)."""
    ph = _ph(conn)
    out = {c for (c,) in conn.exec_driver_sql(
        f"SELECT DISTINCT customer_id FROM usage_event WHERE id > {ph} AND id <= {ph}",
        (marks.since_event(), marks.event_id))}
    out |= {c for (c,) in conn.exec_driver_sql(
        f"SELECT DISTINCT customer_id FROM webhook_outbox WHERE id > {ph} AND id <= {ph} AND type <> 'alert.triggered'",
        (marks.since_outbox(), marks.outbox_id))}
    return out


def write(conn: Connection, marks: Marks, now_us: int) -> None:
    """This run's marks (the last run's become the ``_before`` ones), in name order."""
    s = marks.stored
    values = {EVENT: marks.event_id, EVENT + "_before": s.get(EVENT, 0), OUTBOX: marks.outbox_id,
              OUTBOX + "_before": s.get(OUTBOX, 0), RUN_AT: now_us, COSTS: marks.cost_version}
    ph = _ph(conn)
    for name in sorted(values):
        conn.exec_driver_sql(f"INSERT INTO ledger_state (name, value) VALUES ({ph}, {ph}) ON CONFLICT (name) "
                             "DO UPDATE SET value = excluded.value", (name, values[name]))
