"""``billing events archive --before YYYY-MM``: the events of closed and paid periods moved
out of the ledger into compressed files with a manifest, and ``verify`` of such an archive.

1. The range is [the first event's month, the start of ``before``). Every
   customer's events there must lie in period invoices that are **paid**; else nothing
   happens and the error names the customers and why (no invoice: not closed; finalized:
   not paid...).
2. The horizon moves to ``before`` (committed first): ingestion now rejects events of the
   range with ``event_archived`` (a late event of a paid period can no longer slip in).
3. The events are written, a file per month (``events-YYYY-MM.jsonl.gz``, or ``.parquet``
   with pyarrow), with ``manifest.json``: per file its events and SHA-256, per customer and
   period invoice the events, their provider cost and the sums of every numeric property
   (exact decimals), and the invoice's status, total and provider cost then.
4. One transaction counts the range again (it must hold what was written) and drops it
   (PostgreSQL: the months' partitions; SQLite: the rows).

Invoices still verify afterwards (``verify``): the files hash and add up to the manifest,
and each invoice is still paid with the same total and provider cost. Closing and
re-rating read the running counters, which archiving leaves alone; ``billing db recount``
rebuilds only the periods after the horizon. The idempotency keys stay
(``usage_event_key``), so an archived event sent again is never billed twice.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from bisect import bisect_right
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from billing.errors import BillingError, ErrorCode
from billing.store import archive_sql, partitions
from billing.store.types import from_us, to_us
from billing.worker.locks import job_lock

FORMATS = ("jsonl", "parquet")
MANIFEST = "manifest.json"


def _iso(ts: int) -> str:
    return from_us(ts).isoformat().replace("+00:00", "Z")


def _refusal(engine: Engine, low: int, high: int) -> tuple[list[str], dict[str, list[tuple]], int]:
    """(problems, customer -> its paid invoices, events in range)."""
    problems: list[str] = []
    paid: dict[str, list[tuple]] = {}
    total = 0
    with engine.connect() as conn:
        for customer, first, last, count in archive_sql.customer_spans(conn, low, high):
            total += count
            invoices = archive_sql.period_invoices(conn, customer, first, last + 1)
            covered, why = first, None
            for inv in invoices:
                _id, number, status, start, end = inv[:5]
                if start > covered:
                    break
                if status != "paid":
                    why = f"invoice {number or _id} ({_iso(start)} to {_iso(end)}) is {status}, not paid"
                    break
                covered = max(covered, end)
                if covered > last:
                    break
            if why is None and covered <= last:
                why = f"its events from {_iso(covered)} are in no closed period invoice (not closed yet?)"
            if why is not None:
                problems.append(f"customer {customer!r}: {why}")
            else:
                paid[customer] = [inv for inv in invoices if inv[2] == "paid"]
    return problems, paid, total


def archive(engine: Engine, before: str, out: Path, fmt: str = "jsonl",
            now: datetime | None = None) -> dict[str, Any]:
    """Archive the events before the month ``before`` (``YYYY-MM``) into ``out``; returns
    the manifest. Raises BillingError (nothing changed) when a period is not closed and paid."""
    if fmt not in FORMATS:
        raise BillingError(f"--format must be one of {', '.join(FORMATS)}", code=ErrorCode.VALIDATION)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise BillingError("--format parquet needs pyarrow (pip install 'billing[parquet]'); "
                               "--format jsonl needs nothing", code=ErrorCode.VALIDATION) from None
    try:
        month = partitions.parse_month(before)
    except ValueError as exc:
        raise BillingError(f"--before: {exc}", code=ErrorCode.VALIDATION) from None
    now = now or datetime.now(UTC)
    if month > now.year * 12 + now.month - 1:
        raise BillingError(f"--before {before} is after the current month: its periods are not closed",
                           code=ErrorCode.CONFLICT)
    with job_lock(engine, "archive") as held:  # one at a time: a second run would find the range
        if not held:  # emptied by the first and overwrite its files with an empty archive
            raise BillingError("another `billing events archive` is running: run it again once that one ended",
                               code=ErrorCode.CONFLICT)
        return _archive(engine, before, month, out, fmt, now)


def _archive(engine: Engine, before: str, month: int, out: Path, fmt: str, now: datetime) -> dict[str, Any]:
    high = partitions.month_start_us(month)
    # archived events are gone, so what is left starts after them (and the events of an archive
    # that failed midway, after moving the horizon, are taken again)
    with engine.connect() as conn:
        first = conn.exec_driver_sql("SELECT MIN(ts) FROM usage_event").scalar()
    if first is None or int(first) >= high:
        return {"before": before, "events": 0, "files": [], "periods": [], "note": "nothing to archive"}
    low = partitions.month_start_us(partitions.month_of(int(first)))
    problems, paid, total = _refusal(engine, low, high)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BillingError(f"cannot archive before {before}: only fully closed and paid periods are archived; "
                           f"{shown}", code=ErrorCode.CONFLICT, details=problems)
    with engine.begin() as conn:
        archive_sql.set_horizon(conn, high)
    out.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        manifest = _write(conn, low, high, out, fmt, paid)
    manifest.update({"before": before, "from": _iso(low), "until": _iso(high), "format": fmt,
                     "created_at": now.isoformat()})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    with engine.begin() as conn:
        try:
            archive_sql.drop_range(conn, low, high, manifest["events"])
        except ValueError as exc:
            raise BillingError(str(exc), code=ErrorCode.CONFLICT) from None
    if manifest["events"] != total:  # (written from a later read: late events counted too)
        manifest["note"] = f"{manifest['events'] - total} events arrived between the check and the archive"
    return manifest


class _Totals:
    """Events, provider cost and exact sums of numeric properties."""

    def __init__(self) -> None:
        self.events = 0
        self.cost_pico = 0
        self.sums: dict[str, Decimal] = defaultdict(Decimal)
        self.types: dict[str, int] = defaultdict(int)

    def add(self, etype: str, props: dict, cost: int) -> None:
        self.events += 1
        self.cost_pico += cost
        self.types[etype] += 1
        for key, value in props.items():
            if type(value) in (int, float) or isinstance(value, Decimal):
                self.sums[key] += Decimal(str(value))

    def to_json(self) -> dict:
        return {"events": self.events, "cost_pico": self.cost_pico, "types": dict(sorted(self.types.items())),
                "sums": {k: str(v) for k, v in sorted(self.sums.items())}}


def _props(value: str) -> dict:
    return json.loads(value, parse_float=Decimal)


def _write(conn, low: int, high: int, out: Path, fmt: str, paid: dict[str, list[tuple]]) -> dict[str, Any]:
    periods: dict[tuple[str, int], _Totals] = {}
    starts = {c: [inv[3] for inv in invs] for c, invs in paid.items()}
    files = []
    month = partitions.month_of(low)
    while partitions.month_start_us(month) < high:
        a, b = partitions.month_start_us(month), partitions.month_start_us(month + 1)
        name = f"events-{partitions.month_name(month)}.{'jsonl.gz' if fmt == 'jsonl' else 'parquet'}"
        sink = _JsonlSink(out / name) if fmt == "jsonl" else _ParquetSink(out / name)
        count = 0
        for row in archive_sql.events(conn, a, min(b, high)):
            record = dict(zip(archive_sql.EVENT_COLUMNS, row))
            props = _props(record["properties"])
            customer, ts = record["customer_id"], int(record["ts"])
            invs = paid.get(customer, [])
            at = bisect_right(starts.get(customer, []), ts) - 1
            inv = invs[at] if at >= 0 and ts < invs[at][4] else None
            key = (customer, inv[0] if inv else -1)
            periods.setdefault(key, _Totals()).add(record["type"], props, int(record["cost_pico"]))
            sink.write(record)
            count += 1
        sink.close()
        if count:
            files.append({"name": name, "month": partitions.month_name(month), "events": count,
                          "sha256": _sha256(out / name)})
        else:
            (out / name).unlink()
        month += 1
    invoices = {inv[0]: inv for invs in paid.values() for inv in invs}
    listed = []
    for (customer, invoice_id), totals in sorted(periods.items()):
        inv = invoices.get(invoice_id)
        entry = {"customer": customer, **totals.to_json()}
        if inv is not None:
            entry.update({"invoice_id": inv[0], "invoice_number": inv[1], "period_start": _iso(inv[3]),
                          "period_end": _iso(inv[4]), "invoice_total_minor": inv[5],
                          "invoice_provider_cost_pico": inv[6]})
        listed.append(entry)
    return {"events": sum(f["events"] for f in files), "files": files, "periods": listed}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _line(record: dict) -> dict:
    """The event's fields (``properties``: the stored JSON text, spliced in exactly)."""
    return {"id": record["event_id"], "customer": record["customer_id"], "type": record["type"],
            "timestamp": _iso(int(record["ts"])), "ts": int(record["ts"]), "cost_pico": int(record["cost_pico"]),
            "model": record["model"], "unpriced": record["unpriced"], "unmetered": record["unmetered"],
            "ledger_id": int(record["id"])}


class _JsonlSink:
    def __init__(self, path: Path) -> None:
        self.file = gzip.open(path, "wt", encoding="utf-8", compresslevel=6)

    def write(self, record: dict) -> None:
        head = json.dumps(_line(record), separators=(",", ":"), ensure_ascii=False)
        self.file.write(head[:-1] + ',"properties":' + record["properties"] + "}\n")

    def close(self) -> None:
        self.file.close()


class _ParquetSink:
    """Columns of the event; ``properties`` as JSON text (exact). Written in row groups."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema([("id", pa.string()), ("customer", pa.string()), ("type", pa.string()),
                                 ("ts", pa.int64()), ("properties", pa.string()), ("cost_pico", pa.int64()),
                                 ("model", pa.string()), ("unpriced", pa.string()), ("unmetered", pa.string()),
                                 ("ledger_id", pa.int64())])
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        self.rows: list[dict] = []

    def write(self, record: dict) -> None:
        line = _line(record)
        line["properties"] = record["properties"]
        del line["timestamp"]
        self.rows.append(line)
        if len(self.rows) >= 50_000:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


def _read(path: Path) -> Any:
    """(customer, type, ts, properties, cost_pico) of an archive file's events."""
    if path.name.endswith(".jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                e = json.loads(line, parse_float=Decimal)
                yield e["customer"], e["type"], e["ts"], e["properties"], e["cost_pico"]
        return
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=50_000):
        for e in batch.to_pylist():
            yield e["customer"], e["type"], e["ts"], _props(e["properties"]), e["cost_pico"]


def verify(engine: Engine, directory: Path) -> dict[str, Any]:
    """Check an archive: every file's hash and events add up to the manifest, and each
    invoice it names is still paid with the total and provider cost it had. Returns
    {"ok", "events", "periods", "problems"}."""
    manifest = json.loads((directory / MANIFEST).read_text())
    problems: list[str] = []
    totals: dict[tuple[str, int], _Totals] = {}
    ranges = {}
    for entry in manifest["periods"]:
        if "invoice_id" in entry:
            start, end = (to_us(datetime.fromisoformat(entry[k])) for k in ("period_start", "period_end"))
            ranges.setdefault(entry["customer"], []).append((start, end, entry["invoice_id"]))
    events = 0
    for f in manifest["files"]:
        path = directory / f["name"]
        if not path.exists():
            problems.append(f"{f['name']}: missing")
            continue
        if _sha256(path) != f["sha256"]:
            problems.append(f"{f['name']}: its SHA-256 is not the manifest's (changed since the archive)")
        n = 0
        try:
            for customer, etype, ts, props, cost in _read(path):
                n += 1
                found = next((i for a, b, i in ranges.get(customer, ()) if a <= ts < b), -1)
                totals.setdefault((customer, found), _Totals()).add(etype, props, int(cost))
        except Exception as exc:  # noqa: BLE001 - a damaged file is a finding, not a crash
            problems.append(f"{f['name']}: unreadable after {n} events ({type(exc).__name__}: {exc})")
        events += n
        if n != f["events"]:
            problems.append(f"{f['name']}: {n} events, the manifest says {f['events']}")
    with engine.connect() as conn:
        for entry in manifest["periods"]:
            key = (entry["customer"], entry.get("invoice_id", -1))
            got = totals.get(key, _Totals()).to_json()
            want = {k: entry[k] for k in ("events", "cost_pico", "types", "sums")}
            if got != want:
                problems.append(f"customer {key[0]!r} invoice {key[1]}: the files hold {got}, the manifest {want}")
            if "invoice_id" not in entry:
                continue
            row = archive_sql.invoice_row(conn, entry["invoice_id"])
            if row is None:
                problems.append(f"invoice {entry['invoice_id']}: gone from the ledger")
                continue
            status, total_minor, cost, customer = row
            if (status, total_minor, cost, customer) != ("paid", entry["invoice_total_minor"],
                                                          entry["invoice_provider_cost_pico"], entry["customer"]):
                problems.append(f"invoice {entry['invoice_id']}: now {status}, total {total_minor}, provider cost "
                                f"{cost} pico; archived as paid, {entry['invoice_total_minor']}, "
                                f"{entry['invoice_provider_cost_pico']}")
    return {"ok": not problems, "events": events, "periods": len(manifest["periods"]), "problems": problems}
