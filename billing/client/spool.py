"""The durable spool: commits of calls that already happened, kept on local disk until the
service acknowledges them.

``guarded_call`` writes each commit here BEFORE sending it (write-ahead) and deletes it once
acknowledged, so a process killed (``kill -9``) between the LLM call and the answer, or a
service unreachable past the retries, loses nothing: the next call, ``client.flush_spool()``
or ``billing client flush-spool DIR`` sends it again. Sending again is safe: the commit
carries the same event (its id is the reservation id, its timestamp the call's) and the same
``Idempotency-Key``, so the service records it once.

One file per commit, ``<created ns>-<idempotency key>.json``: ``{"v": 1, "op": "commit",
"reservation_id", "event", "idempotency_key", "created_at"}``, written to a temporary name,
fsynced, renamed into place and the directory fsynced. The writer keeps an exclusive
``flock`` on its file while it delivers it; a flush skips files locked by another process
(POSIX; without ``fcntl`` there is no locking, and a file may be sent twice, harmlessly).
A commit the service refuses (a 4xx: the usage cannot be recorded as it is) is moved to
``rejected/`` with the error, never dropped. A commit whose hold was released meanwhile (it
expired and was purged) is recorded through ``POST /v1/events`` instead (the key needs the
``ingest`` scope for that).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from billing.client.ops import Flow, client_op, spool_op
from billing.errors import BillingError, ErrorCode

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("billing.client")
VERSION = 1
_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass
class Held:
    """A spool file this process wrote or claimed, locked until ``done`` / ``keep`` / ``reject``."""

    path: Path
    data: dict[str, Any]
    fd: int | None
    journal: Any = None  # a commit in a journal (``billing.client.journal``), not a file of its own


@dataclass
class FlushReport:
    delivered: int = 0
    rejected: int = 0
    pending: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "rejected": self.rejected, "pending": self.pending,
                "errors": self.errors}


def json_default(value: Any) -> Any:
    """How the client writes values JSON has no type for (the same in a request body and in a
    spool file): decimals and other objects as text, instants in ISO 8601."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=json_default)


_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps_bytes(data: Any) -> bytes:
    """``dumps`` as UTF-8 bytes, by orjson (a tenth of the CPU; on ``guarded_call``'s path for
    every request body and journal line): the same JSON values as ``dumps`` (non-ASCII text
    unescaped, a float maybe spelled otherwise). ``dumps`` itself where orjson would differ:
    what it refuses (integers past 64 bits, keys that are not strings, lone surrogates) and a
    float NaN or infinity (orjson writes null). ``tests/client/test_json.py`` holds them equal."""
    try:
        out = orjson.dumps(data, default=json_default, option=_ORJSON)
    except (TypeError, orjson.JSONEncodeError):
        return dumps(data).encode()
    if b"null" in out and _non_finite(data):
        return dumps(data).encode()
    return out


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def commit_entry(reservation_id: str, event: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    return {"v": VERSION, "op": "commit", "reservation_id": reservation_id, "event": event,
            "idempotency_key": idempotency_key,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}


class Spool:
    """A directory of commits waiting for the service's acknowledgement."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.rejected_dir = self.directory / "rejected"
        self._last_flush = float("-inf")

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r})"

    # ----------------------------------------------------------------- writing
    def add(self, entries: list[dict[str, Any]]) -> list[Held]:
        """Write each entry durably (one file each) and keep it locked by this process."""
        self.directory.mkdir(parents=True, exist_ok=True)
        held = []
        try:
            for entry in entries:
                held.append(self._write(self.directory, file_name(entry["idempotency_key"]), entry, keep_open=True))
            _fsync_dir(self.directory)
        except BaseException:
            for h in held:
                self.done(h)
            raise
        return held

    def _write(self, directory: Path, name: str, data: dict[str, Any], *, keep_open: bool) -> Held:
        tmp = directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if fcntl is not None and keep_open:
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, dumps_bytes(data))
            os.fsync(fd)
            os.replace(tmp, directory / name)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        if not keep_open:
            os.close(fd)
            fd = None
        return Held(directory / name, data, fd)

    def done(self, held: Held) -> None:
        """Acknowledged: delete the file (a delete lost in a crash only sends it once more)."""
        if held.journal is not None:
            self._journal_ack(held)
            return
        held.path.unlink(missing_ok=True)
        self.keep(held)

    def keep(self, held: Held) -> None:
        """Not acknowledged yet: leave the file for a later flush and drop the lock (a
        journal's commit becomes a file of its own, durably, then is acked there)."""
        if held.journal is not None:
            for copy in self.add([held.data]):
                self.keep(copy)
            self._journal_ack(held)
            return
        if held.fd is not None:
            os.close(held.fd)
            held.fd = None

    def reject(self, held: Held, error: dict[str, Any]) -> None:
        """Refused by the service: move to ``rejected/`` with the error (never dropped)."""
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        self._write(self.rejected_dir, held.path.name, {**held.data, "error": error}, keep_open=False)
        _fsync_dir(self.rejected_dir)
        self.done(held)
        log.error("billing commit refused, kept in %s: %s", self.rejected_dir / held.path.name, error)

    def _journal_ack(self, held: Held) -> None:
        journal = getattr(self, "background", None)
        if journal is not None:
            journal.journal.ack(held.journal, held.data["idempotency_key"])

    # ---------------------------------------------------------------- reading
    def pending(self) -> list[Path]:
        """Files waiting for delivery, oldest first (journals left by a dead process or a
        closed client become files first: ``billing.client.journal.recover``)."""
        if not self.directory.is_dir():
            return []
        from billing.client.journal import recover

        recover(self)
        return sorted(p for p in self.directory.iterdir() if p.suffix == ".json" and not p.name.startswith("."))

    def rejected(self) -> list[Path]:
        if not self.rejected_dir.is_dir():
            return []
        return sorted(p for p in self.rejected_dir.iterdir() if p.suffix == ".json" and not p.name.startswith("."))

    def claim(self, path: Path) -> Held | None:
        """Lock a pending file for delivery; None if it is gone or another process has it."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return None
            if os.fstat(fd).st_nlink == 0:  # delivered and deleted meanwhile
                os.close(fd)
                return None
            raw = b""
            while chunk := os.read(fd, 1 << 16):
                raw += chunk
        except BaseException:
            os.close(fd)
            raise
        held = Held(path, {}, fd)
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("op") != "commit" or not isinstance(data.get("event"), dict):
                raise ValueError("not a spooled commit")
        except ValueError as exc:
            held.data = {"raw": raw.decode("utf-8", "replace")}
            self.reject(held, {"code": "unreadable", "message": f"{path.name}: {exc}"})
            return None
        held.data = data
        return held

    def flush_due(self, interval: float) -> bool:
        """True at most once per ``interval`` seconds, and only while files are pending."""
        now = time.monotonic()
        if now - self._last_flush < interval:
            return False
        self._last_flush = now
        return bool(self.pending())

    def flush(self, client: Any, *, limit: int | None = None) -> FlushReport:
        """Deliver pending commits, oldest first, through ``client`` (blocking)."""
        from billing.client.ops import run

        return run(flush_flow(limit), client)


def flush_flow(limit: int | None) -> Flow[FlushReport]:
    """Deliver pending commits oldest first; stop at the first one the service cannot be
    reached for (the rest stay pending)."""
    report = FlushReport()
    paths: list[Path] = yield spool_op("pending")
    for index, path in enumerate(paths):
        if limit is not None and report.delivered + report.rejected >= limit:
            report.pending = len(paths) - index
            break
        held: Held | None = yield spool_op("claim", path)
        if held is None:
            continue
        outcome, answer = yield from deliver_flow(held)
        if outcome == "delivered":
            report.delivered += 1
        elif outcome == "rejected":
            report.rejected += 1
            report.errors.append(answer["error"])
        else:
            report.pending = len(paths) - index
            break
    return report


def deliver_flow(held: Held, *, spooled: bool = True) -> Flow[tuple[str, dict[str, Any]]]:
    """Send one commit: ``("delivered", answer)``; ``("rejected", {"status": "refused", "error"})``
    (moved to ``rejected/``); ``("pending", {"status": "spooled", "error"})`` (the service
    unreachable: kept for later). ``spooled``: ``held`` is a spool file, settled either way
    (else a commit that fails is logged with its event, the only copy left)."""
    data = held.data
    try:
        answer = yield client_op("commit", data["reservation_id"], data["event"],
                                 idempotency_key=data["idempotency_key"])
    except Exception as exc:  # noqa: BLE001 - sorted out below
        if (yield client_op("is_transient", exc, inline=True)):
            if spooled:
                yield spool_op("keep", held)
                return "pending", {"status": "spooled", "error": error_json(exc)}
            log.error("billing commit undelivered and no spool to keep it: %s; event: %s", exc,
                      dumps(data["event"]))
            return "pending", {"status": "undelivered", "error": error_json(exc)}
        answer, error = yield from _record_released(data, exc)
        if error is not None and error.pop("transient", False):
            if spooled:
                yield spool_op("keep", held)
            return "pending", {"status": "spooled" if spooled else "undelivered", "error": error}
        if error is not None:
            if spooled:
                yield spool_op("reject", held, error)
            else:
                log.error("billing commit refused: %s; event: %s", error, dumps(data["event"]))
            return "rejected", {"status": "refused", "error": error}
    if spooled:
        yield spool_op("done", held)
    return "delivered", answer


def _record_released(data: dict[str, Any], exc: Exception) -> Flow[tuple[dict[str, Any] | None, dict | None]]:
    """A refused commit. If its hold was released (expired and purged, or by hand), the usage
    still happened: record the event through ``POST /v1/events``. (answer, None) when
    recorded, else (None, the error)."""
    if not (isinstance(exc, BillingError) and exc.code == ErrorCode.INVALID_TRANSITION):
        return None, error_json(exc)
    try:
        answer = yield client_op("record", [data["event"]], idempotency_key=data["idempotency_key"] + "-record")
    except Exception as again:  # noqa: BLE001
        transient = yield client_op("is_transient", again, inline=True)
        return None, {**error_json(again), "commit_error": error_json(exc), "transient": bool(transient)}
    result = (answer.get("results") or [{}])[0]
    if result.get("status") not in ("accepted", "duplicate"):
        return None, {"code": result.get("code") or result.get("status"), "message": result.get("message"),
                      "commit_error": error_json(exc)}
    return {"reservation_id": data["reservation_id"], "event_id": data["event"].get("id"),
            "status": "recorded", "event": result["status"]}, None


def error_json(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, BillingError):
        return {"code": getattr(exc, "raw_code", None) or str(exc.code), "message": exc.message}
    return {"code": type(exc).__name__, "message": str(exc)}


def file_name(key: str) -> str:
    """``<created ns>-<idempotency key>.json`` (a key unsafe in a file name: its hash)."""
    safe = key if _SAFE.match(key) else hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{time.time_ns():020d}-{safe}.json"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - a platform that cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

