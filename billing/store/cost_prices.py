"""The cost book of a process, and the prices added to the ledger (table ``cost_price``).

Every command, the API, reports and simulations price with ``cost_book`` (or a
``CostSource``, which keeps that book up to date in a long-running process). It layers,
each layer winning over the ones before it for the same model and effective date:

1. the shipped book (``billing/costs/data/*.yaml``);
2. the files of ``BILLING_COSTS`` (a directory of ``*.yaml`` files, or files separated by
   ``os.pathsep`` or commas), in the order given;
3. the prices added to the ledger (``billing costs add FILE``, ``billing costs
   import-litellm --add``), stored in the database so that every process (several API
   servers) sees them;
4. files given to one command (``--costs FILE``).

Adding prices and pricing events that the book could not price are serialised by a lock
on ``cost_price`` (PostgreSQL; SQLite's write lock does it there): ``lock_to_add`` in the
transaction that adds prices and re-costs, ``lock_to_price`` in an ingestion transaction
that stores an unpriced event. So an event ingested while prices are added is either priced
at ingestion (its transaction waited for the prices and read them) or re-costed (the
re-cost waited for its commit and sees it), never both and never neither.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine

from billing.costs import CostBook, CostBookError, ModelPrice, extra_fields
from billing.money import dec_str

VERSION_KEY = "cost_version"  # ledger_state row counting changes of the stored prices
_COLUMNS = ("model", "effective_from", "provider", "input", "output", "cache_read", "cache_write", "reasoning",
            "batch_discount", "source", "retrieved", "aliases", "extra")

# (SQL with ? placeholders, params, whether it returns rows) -> its rows
Fetch = Callable[[str, Sequence, bool], list]


def connection_fetch(conn: Connection) -> Fetch:
    """``Fetch`` over a SQLAlchemy connection (its driver's placeholders)."""
    pg = conn.dialect.name == "postgresql"

    def fetch(sql: str, params: Sequence = (), rows: bool = True) -> list:
        result = conn.exec_driver_sql(sql.replace("?", "%s") if pg else sql, tuple(params))
        return result.fetchall() if rows else []
    return fetch


def cursor_fetch(execute: Callable) -> Fetch:
    """``Fetch`` over an ``execute(sql, params) -> cursor`` of a raw driver connection that
    takes ``?`` placeholders (the quota writer's)."""
    def fetch(sql: str, params: Sequence = (), rows: bool = True) -> list:
        cursor = execute(sql, tuple(params))
        return cursor.fetchall() if rows else []
    return fetch


# ------------------------------------------------------------------------- the layers

def configured_files(setting: str | None) -> list[Path]:
    """The files ``BILLING_COSTS`` names: each entry a file, or a directory (its ``*.yaml``
    and ``*.yml`` files by name). A missing path is an error, not a silent skip."""
    if not setting or not setting.strip():
        return []
    out: list[Path] = []
    for part in setting.replace(",", os.pathsep).split(os.pathsep):
        if not part.strip():
            continue
        path = Path(part.strip()).expanduser()
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise CostBookError(f"BILLING_COSTS: {path}: no such file or directory")
    return out


def _read_files(paths: Sequence[Path]) -> CostBook:
    try:
        book = CostBook()
        for path in paths:  # each file wins over the ones before it
            book = book.merged(CostBook.from_files([path]))
        return book
    except OSError as exc:
        raise CostBookError(f"cost data: cannot read {exc.filename}: {exc.strerror}") from None


@functools.lru_cache(maxsize=16)
def _files_book(stamps: tuple[tuple[str, int, int], ...]) -> CostBook:
    return CostBook.load_default().merged(_read_files([Path(p) for p, _, _ in stamps]))


def base_book(files: Sequence[Path] = ()) -> CostBook:
    """The shipped book with ``files`` layered over it (cached while the files are unchanged)."""
    if not files:
        return CostBook.load_default()
    try:
        stamps = tuple((str(p), (st := p.stat()).st_mtime_ns, st.st_size) for p in files)
    except OSError as exc:
        raise CostBookError(f"cost data: cannot read {exc.filename}: {exc.strerror}") from None
    return _files_book(stamps)


def settings_files(settings=None) -> list[Path]:
    if settings is None:
        from billing.config import get_settings

        settings = get_settings()
    return configured_files(settings.costs)


def cost_book(engine: Engine | None = None, *, settings=None, extra: Sequence[Path] = ()) -> CostBook:
    """THE cost book of a process: shipped < ``BILLING_COSTS`` < prices stored in the ledger
    (``engine`` given, and migrated) < ``extra`` files."""
    book = base_book(settings_files(settings))
    if engine is not None:
        with engine.connect() as conn:
            if has_price_table(conn):
                book = layered(book, stored_entries(connection_fetch(conn)))
    if extra:
        book = book.merged(_read_files(list(extra)))
    return book


def layered(base: CostBook, stored: Sequence[ModelPrice]) -> CostBook:
    return base.merged(CostBook(stored)) if stored else base


def has_price_table(conn: Connection) -> bool:
    from sqlalchemy import inspect

    return inspect(conn).has_table("cost_price")


# ---------------------------------------------------------------------- stored prices

def _day(value) -> date:
    return value if isinstance(value, date) and not isinstance(value, datetime) else date.fromisoformat(str(value)[:10])


def stored_entries(fetch: Fetch) -> list[ModelPrice]:
    """The prices added to the ledger."""
    rows = fetch(f"SELECT {', '.join(_COLUMNS)} FROM cost_price ORDER BY model, effective_from", ())
    return [ModelPrice.model_validate({
        "model": m, "effective_from": _day(f), "provider": p, "input": i, "output": o, "cache_read": cr,
        "cache_write": cw, "reasoning": r, "batch_discount": b, "source": s, "retrieved": _day(rd),
        "aliases": tuple(json.loads(a)), **json.loads(x or "{}")})
        for m, f, p, i, o, cr, cw, r, b, s, rd, a, x in rows]


def cost_version(fetch: Fetch) -> int:
    rows = fetch("SELECT value FROM ledger_state WHERE name = ?", (VERSION_KEY,))
    return int(rows[0][0]) if rows else 0


def lock_to_price(fetch: Fetch, pg: bool) -> None:
    """In a transaction about to store an event the book could not price: wait for prices
    being added (and hold their next addition back until this commits)."""
    if pg:
        fetch("LOCK TABLE cost_price IN ROW EXCLUSIVE MODE", (), False)


def lock_to_add(conn: Connection) -> None:
    """In the transaction that adds prices and re-costs: one at a time, and no unpriced
    event stored meanwhile (``lock_to_price``). Priced events and reads go on."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL lock_timeout = '60s'")
        conn.exec_driver_sql("LOCK TABLE cost_price IN EXCLUSIVE MODE")


@dataclass(frozen=True)
class StoreResult:
    added: list[str]  # "model@effective_from" of new prices
    replaced: list[str]  # ... of prices that changed
    unchanged: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced)


def _key(e: ModelPrice) -> str:
    return f"{e.model}@{e.effective_from.isoformat()}"


def store_entries(conn: Connection, entries: Iterable[ModelPrice], origin: str, now: datetime,
                  base: CostBook) -> StoreResult:
    """Add (or replace, same model and effective date) prices; bump ``cost_version`` when
    anything changed. Call after ``lock_to_add``. The book they make with ``base`` and the
    other stored prices must be valid (``CostBookError`` otherwise, nothing stored)."""
    fetch = connection_fetch(conn)
    current = {(e.model, e.effective_from): e for e in stored_entries(fetch)}
    incoming = sorted(entries, key=lambda e: (e.model, e.effective_from))
    added, replaced, same = [], [], 0
    for entry in incoming:
        old = current.get((entry.model, entry.effective_from))
        if old == entry:
            same += 1
        else:
            (added if old is None else replaced).append(entry)
        current[(entry.model, entry.effective_from)] = entry
    if not (added or replaced):
        return StoreResult([], [], same)
    layered(base, list(current.values()))  # raises CostBookError on a clash (alias claimed twice...)
    pg = conn.dialect.name == "postgresql"
    marks = ",".join(["?"] * (len(_COLUMNS) + 2))
    upsert = (f"INSERT INTO cost_price ({', '.join(_COLUMNS)}, origin, added_at) VALUES ({marks}) "
              "ON CONFLICT (model, effective_from) DO UPDATE SET "
              + ", ".join(f"{c} = excluded.{c}" for c in (*_COLUMNS[2:], "origin", "added_at")))
    stamp = now if pg else now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    for e in [*added, *replaced]:  # deterministic order: by model, then date
        fetch(upsert, (e.model, e.effective_from if pg else e.effective_from.isoformat(), e.provider,
                       *(dec_str(v) for v in e.prices().values()), dec_str(e.batch_discount), e.source,
                       e.retrieved if pg else e.retrieved.isoformat(), json.dumps(list(e.aliases)),
                       json.dumps(extra_fields(e), sort_keys=True), origin[:500],
                       stamp), False)
    fetch("INSERT INTO ledger_state (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET "
          "value = ledger_state.value + 1", (VERSION_KEY,), False)
    return StoreResult([_key(e) for e in added], [_key(e) for e in replaced], same)


# ----------------------------------------------------------------- a process's book

class CostSource:
    """The book a long-running process (the ledger of an API server, a worker) prices with:
    ``cost_book`` of its engine, rebuilt when the stored prices change. A change is noticed
    within ``ttl`` seconds (``refresh``), and at once by a transaction about to store an
    event the book could not price (``settle``). A ``fixed`` book never changes (tests,
    benchmarks, one-off commands that were given one)."""

    def __init__(self, engine: Engine | None, *, book: CostBook | None = None, settings=None, ttl: float = 1.0):
        self.engine = engine
        self.fixed = book is not None or engine is None
        self.ttl = ttl
        self._settings = settings
        self._base = book if book is not None else base_book(settings_files(settings))
        self._lock = threading.Lock()
        self.version = -1
        self.book = self._base
        self._checked = time.monotonic()
        self._table = False  # cost_price exists (not migrated yet: looked for again at each refresh)
        if not self.fixed:
            with engine.connect() as conn:
                self._table = has_price_table(conn)
                if self._table:
                    self._rebuild(connection_fetch(conn))

    def _rebuild(self, fetch: Fetch) -> bool:
        """Read the version, then the prices (in this order: a change in between only makes
        the next check rebuild again). True if the book changed."""
        version = cost_version(fetch)
        if version == self.version:
            return False
        book = layered(self._base, stored_entries(fetch))
        with self._lock:
            self.book, self.version = book, version
        return True

    def refresh(self) -> bool:
        """Rebuild if the stored prices changed (looked at most once per ``ttl`` seconds)."""
        if self.fixed or time.monotonic() - self._checked < self.ttl:
            return False
        self._checked = time.monotonic()
        with self.engine.connect() as conn:
            if not self._table:
                self._table = has_price_table(conn)
                if not self._table:
                    return False
            fetch = connection_fetch(conn)
            if cost_version(fetch) == self.version:
                return False
            return self._rebuild(fetch)

    def settle(self, fetch: Fetch, pg: bool) -> bool:
        """In a transaction that stores unpriced events, before it writes them: take
        ``lock_to_price`` and bring ``book`` up to the stored prices (True if it changed
        now). The caller prices those events again unless they were priced with ``book``."""
        if self.fixed:
            return False
        lock_to_price(fetch, pg)
        self._checked = time.monotonic()
        return self._rebuild(fetch)
