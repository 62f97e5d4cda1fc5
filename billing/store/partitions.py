"""Monthly partitions of ``usage_event`` on PostgreSQL (SQLite keeps one table).

Layout (migration ``0013_partition``): ``usage_event`` is ``PARTITION BY RANGE (ts)``, one
partition a calendar month (UTC) named ``usage_event_yYYYYmMM``. Its keys include the
partition column: primary key ``(id, ts, customer_id)``, unique ``(customer_id, event_id,
ts)``. The idempotency key ``(customer_id, event_id)`` across months is held by the
unpartitioned ``usage_event_key`` table (primary key ``(customer_id, event_id)``, and the
event's ``ts``): every insert path claims the keys first (``INSERT ... ON CONFLICT DO
NOTHING RETURNING``, or a COPY that stops on a taken key) and writes the events of the keys
it claimed, in the same transaction (``billing.store.event_store``, the quota commit's
statement); a concurrent claimer of the same key waits for the other's commit or rollback,
as with a unique index. (A row trigger did this first: it halved the ingestion rate.) The
key table outlives archiving: an archived id sent again is never billed twice.

Partitions are created ahead of time (``billing worker``'s ``partitions`` job) and on demand
by the ingestion transaction for a late or backdated event (``Months.ensure``): under a
transaction advisory lock per month, so two writers creating the same month wait for each
other instead of failing. Events before the archive horizon (``ledger_state``
``archived_before``: months ``billing events archive`` dropped) are rejected with
``event_archived`` by every write door (``Ledger.record``: HTTP events, import, the stream;
the quota commit), read in the writing transaction (``archived_message``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from billing.store.types import from_us, to_us

PARENT = "usage_event"
KEY_TABLE = "usage_event_key"
HORIZON = "archived_before"  # ledger_state name: events before this instant (us) were archived
_LOCK_CLASS = 0x7E11  # pg_advisory_xact_lock(class, month number): creating one month's partition
AHEAD_MONTHS = 3  # the worker keeps this many months after the current one ready


def month_of(ts_us: int) -> int:
    """The month holding ``ts_us`` as a month number: year * 12 + (month - 1)."""
    moment = from_us(ts_us)
    return moment.year * 12 + moment.month - 1


def month_start_us(month: int) -> int:
    return to_us(datetime(month // 12, month % 12 + 1, 1, tzinfo=UTC))


def month_name(month: int) -> str:
    """``YYYY-MM``."""
    return f"{month // 12:04d}-{month % 12 + 1:02d}"


def parse_month(text: str) -> int:
    """``YYYY-MM`` -> month number; ValueError with a readable message otherwise."""
    try:
        moment = datetime.strptime(text.strip(), "%Y-%m")
    except ValueError:
        raise ValueError(f"{text!r} is not a month written YYYY-MM") from None
    return moment.year * 12 + moment.month - 1


def partition_name(month: int) -> str:
    return f"{PARENT}_y{month // 12:04d}m{month % 12 + 1:02d}"


Run = Callable[[str, tuple, bool], list]  # (sql with %s, params, returns rows) -> rows


def sql_runner(conn: Connection) -> Run:
    """``Run`` over a SQLAlchemy connection."""
    def run(sql: str, params: tuple, rows: bool) -> list:
        result = conn.exec_driver_sql(sql, params)
        return result.all() if rows else []
    return run


def is_partitioned(run: Run) -> bool:
    return bool(run("SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
                    "WHERE c.relname = %s AND pg_table_is_visible(c.oid)", (PARENT,), True))


def existing_months(run: Run) -> set[int]:
    """The months that have a partition (PostgreSQL)."""
    rows = run("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
               "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s AND pg_table_is_visible(p.oid)",
               (PARENT,), True)
    out = set()
    for (name,) in rows:
        tail = name[len(PARENT) + 1:]  # yYYYYmMM
        if len(tail) == 8 and tail[0] == "y" and tail[5] == "m":
            out.add(int(tail[1:5]) * 12 + int(tail[6:8]) - 1)
    return out


def create_month(run: Run, month: int) -> bool:
    """Create the month's partition unless it exists (in the caller's transaction, under the
    month's advisory lock: a concurrent creator of the same month waits, then finds it).
    True when this call created it."""
    run("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, month), True)
    name = partition_name(month)
    if run("SELECT to_regclass(%s)", (name,), True)[0][0] is not None:
        return False
    low, high = month_start_us(month), month_start_us(month + 1)
    # CREATE TABLE ... PARTITION OF would lock usage_event against every writer until this
    # transaction ends; ATTACH takes SHARE UPDATE EXCLUSIVE (inserts go on). The CHECK
    # spares ATTACH its scan; the parent's indexes come with the attach.
    run(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS, "
        f"CONSTRAINT {name}_range CHECK (ts >= {low} AND ts < {high}))", (), False)
    run(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})", (), False)
    run(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range", (), False)
    return True


class Months:
    """The partitions one process knows exist (a cache: a month once seen stays; archived
    months are below the horizon, which ingestion checks first)."""

    def __init__(self) -> None:
        self.known: set[int] = set()
        self.partitioned: bool | None = None

    def ensure(self, run: Run, low_us: int, high_us: int, stamps: Iterable[int]) -> list[int]:
        """Make sure every month of ``stamps`` (whose least and greatest are ``low_us`` and
        ``high_us``) has its partition; returns the months created. No statement when the
        range's months are known (the common case: one or two months)."""
        low, high = month_of(low_us), month_of(high_us)
        known = self.known
        if high - low < 3 and all(m in known for m in range(low, high + 1)):
            return []
        if self.partitioned is None:
            self.partitioned = is_partitioned(run)
        if not self.partitioned:
            known.update(range(low, high + 1) if high - low < 3 else map(month_of, stamps))
            return []
        wanted = {month_of(ts) for ts in stamps} if high - low >= 3 else set(range(low, high + 1))
        missing = sorted(wanted - known)
        if not missing:
            return []
        there = existing_months(run)
        known |= there  # (committed ones only: a month created here is known once seen committed)
        return [m for m in missing if m not in there and create_month(run, m)]

    def forget(self) -> None:
        """After a failed transaction or a missing partition: read the partitions again."""
        self.known = set()


def missing_partition(exc: BaseException) -> bool:
    """The error of a row whose month has no partition (dropped by an archive meanwhile)."""
    for _ in range(5):
        if exc is None:
            return False
        if getattr(exc, "sqlstate", None) == "23514" and "no partition" in str(exc):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
    return False


HORIZON_SQL = "SELECT value FROM ledger_state WHERE name = %s"  # (HORIZON,): the horizon or no row


def archived_message(horizon: int) -> str:
    """Why an event before the archive ``horizon`` is refused (code ``event_archived``)."""
    return (f"timestamp is before {from_us(horizon).isoformat()}: the ledger's events before then were "
            "archived (billing events archive); their periods are paid")


def horizon_us(conn: Connection) -> int | None:
    """Events before this instant were archived (None: nothing was)."""
    sql = HORIZON_SQL if conn.dialect.name == "postgresql" else HORIZON_SQL.replace("%s", "?")
    return conn.exec_driver_sql(sql, (HORIZON,)).scalar()


def ensure_ahead(engine: Engine, now: datetime, ahead: int = AHEAD_MONTHS) -> dict:
    """The worker's job: partitions for the previous, current and ``ahead`` next months."""
    if engine.dialect.name != "postgresql":
        return {"partitioned": False, "created": []}
    with engine.begin() as conn:
        run = sql_runner(conn)
        if not is_partitioned(run):
            return {"partitioned": False, "created": []}
        current = now.year * 12 + now.month - 1
        there = existing_months(run)
        created = [month_name(m) for m in range(current - 1, current + ahead + 1)
                   if m not in there and create_month(run, m)]
    return {"partitioned": True, "created": created}


def ensure_range(conn: Connection, low_us: int, high_us: int) -> list[int]:
    """Partitions for every month of [low_us, high_us], for rows written behind the ledger's
    back (a bulk load, a benchmark, a test); nothing on SQLite. Returns the months created."""
    if conn.dialect.name != "postgresql":
        return []
    run = sql_runner(conn)
    if not is_partitioned(run):
        return []
    there = existing_months(run)
    return [m for m in range(month_of(low_us), month_of(high_us) + 1) if m not in there and create_month(run, m)]
