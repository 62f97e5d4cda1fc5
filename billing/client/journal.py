"""Commits sent in the background: ``guarded_call`` with ``HttpClient(background_commits=True)``.

The caller's critical path appends the call's commits to a journal file with ONE ``write``
(no fsync) and returns; the bytes are then in the operating system's page cache, which
outlives the process: a ``kill -9`` of the app after ``guarded_call`` returned loses
nothing. A background thread makes them durable against a machine crash with one
``fdatasync`` for every commit appended since the last one (group commit), and sender
threads deliver them (``billing.client.spool.deliver_flow``); an acknowledged commit is
marked with an ``ack`` line (no fsync: an ack lost in a crash only sends the commit once
more, which the ``Idempotency-Key`` makes harmless).

The window: a commit is on disk once the next group fsync returns (``Journal.synced``), a
few milliseconds after ``guarded_call`` returned; a power loss or kernel crash inside that
window can lose it. ``wait_durable`` / ``drain`` wait for it.

Journal files, ``journal-<ns>-<pid>.jsonl`` in the spool directory, one JSON object a line:
``{"add": <spool entry>}`` or ``{"ack": <idempotency key>}``. The writing process holds an
exclusive ``flock`` on its journal while it lives. A journal nobody holds (its process
died, or closed with commits still unacknowledged) is turned into ordinary spool files by
``Spool.pending`` (``recover``): each ``add`` without an ``ack`` becomes one fsynced file;
a torn last line (a crash mid-write) is skipped. A commit the service cannot be reached
for, or refuses, goes to the ordinary spool (a file, or ``rejected/``) and is acked here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("billing.client")
PREFIX, SUFFIX = "journal-", ".jsonl"
ROTATE_BYTES = 4 << 20


def _line(obj: dict[str, Any]) -> bytes:
    from billing.client.spool import dumps_bytes

    return dumps_bytes(obj) + b"\n"


class _File:
    """One journal file: its descriptor (locked), how many of its commits are unacknowledged."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.size = 0
        self.open_commits = 0
        self.current = True


class Journal:
    """The append side, shared by the threads of one client."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._lock = threading.Lock()
        self._file: _File | None = None
        self._written = 0  # appends so far
        self._synced = 0  # appends known to be on disk
        self._synced_cond = threading.Condition(threading.Lock())
        self._dirty: set[_File] = set()

    def append(self, entries: list[dict[str, Any]]) -> tuple[_File, int]:
        """Write ``entries`` with one ``write`` (the caller's path: no fsync). Returns the
        file and this append's sequence number (for ``wait_durable``)."""
        data = b"".join(_line({"add": e}) for e in entries)
        with self._lock:
            f = self._file
            if f is None or f.size > ROTATE_BYTES:
                f = self._rotate()
            written = os.write(f.fd, data)
            if written != len(data):  # a short write (disk full): the rest would tear the line
                raise OSError(f"journal: wrote {written} of {len(data)} bytes")
            f.size += written
            f.open_commits += len(entries)
            self._written += 1
            self._dirty.add(f)
            return f, self._written

    def _rotate(self) -> _File:
        self.directory.mkdir(parents=True, exist_ok=True)
        old = self._file
        f = _File(self.directory / f"{PREFIX}{time.time_ns():020d}-{os.getpid()}{SUFFIX}")
        from billing.client.spool import _fsync_dir

        _fsync_dir(self.directory)  # the new name is durable before anything is written to it
        self._file = f
        if old is not None:
            old.current = False
            self._maybe_remove(old)
        return f

    def ack(self, f: _File, key: str) -> None:
        """An acknowledged commit (no fsync); a journal no longer written and fully acked goes."""
        with self._lock:
            if f.fd < 0:
                return
            os.write(f.fd, _line({"ack": key}))
            f.open_commits -= 1
            self._maybe_remove(f)

    def _maybe_remove(self, f: _File) -> None:
        if not f.current and f.open_commits <= 0 and f.fd >= 0:
            f.path.unlink(missing_ok=True)
            os.close(f.fd)
            f.fd = -1
            self._dirty.discard(f)

    def sync(self) -> None:
        """One fdatasync for every append so far (group commit)."""
        with self._lock:
            target, files = self._written, list(self._dirty)
            self._dirty.clear()
        for f in files:
            try:
                os.fdatasync(f.fd)
            except OSError:
                if f.fd >= 0:  # not closed meanwhile (removed: nothing left to keep)
                    raise
        with self._synced_cond:
            self._synced = max(self._synced, target)
            self._synced_cond.notify_all()

    @property
    def synced(self) -> int:
        return self._synced

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        with self._synced_cond:
            return self._synced_cond.wait_for(lambda: self._synced >= seq, timeout)

    def close(self) -> None:
        """Release the journal: fully acked, it is deleted; else a later ``recover`` (the
        next flush) turns what is left into spool files."""
        with self._lock:
            f, self._file = self._file, None
            if f is not None and f.fd >= 0:
                f.current = False
                os.fsync(f.fd)
                if f.open_commits <= 0:
                    f.path.unlink(missing_ok=True)
                os.close(f.fd)
                f.fd = -1


def recover(spool: Any) -> int:
    """Turn every journal no live process holds into ordinary spool files (returns how many
    commits); the journal is deleted once they are on disk."""
    directory: Path = spool.directory
    if not directory.is_dir():
        return 0
    total = 0
    for path in sorted(directory.glob(f"{PREFIX}*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # its writer is alive (this process's own, too)
                    continue
            if os.fstat(fd).st_nlink == 0:  # recovered by another process meanwhile
                continue
            raw = b""
            while chunk := os.read(fd, 1 << 20):
                raw += chunk
            entries = _unacked(raw, path)
            if entries:
                for held in spool.add(entries):
                    spool.keep(held)
            path.unlink()
            total += len(entries)
        finally:
            os.close(fd)
    return total


def _unacked(raw: bytes, path: Path) -> list[dict[str, Any]]:
    added: dict[str, dict[str, Any]] = {}
    acked: set[str] = set()
    lines = raw.split(b"\n")
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if "add" in obj:
                added[obj["add"]["idempotency_key"]] = obj["add"]
            else:
                acked.add(obj["ack"])
        except (ValueError, KeyError, TypeError):
            if number != len(lines) - 1:  # only the last line may be torn (a crash mid-write)
                log.error("billing journal %s: line %d unreadable, skipped", path.name, number + 1)
    return [e for k, e in added.items() if k not in acked]


class Background:
    """The background side of one ``HttpClient``: a syncer thread (group fsync) and
    ``senders`` threads delivering queued commits."""

    def __init__(self, client: Any, spool: Any, *, senders: int = 2):
        self.client = client
        self.spool = spool
        self.journal = Journal(spool.directory)
        self.delivered = self.kept = self.rejected = 0
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._sync_wanted = threading.Event()
        self._stop = False
        self._busy = 0
        self._threads = [threading.Thread(target=self._sync_loop, name="billing-journal-sync", daemon=True)]
        self._threads += [threading.Thread(target=self._send_loop, name=f"billing-commits-{i}", daemon=True)
                          for i in range(senders)]
        for t in self._threads:
            t.start()

    def enqueue(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The caller's part: append to the journal (one write), queue for delivery."""
        from billing.client.spool import Held, file_name

        f, _seq = self.journal.append(entries)
        self._sync_wanted.set()
        with self._cond:
            for e in entries:
                self._queue.append(Held(self.spool.directory / file_name(e["idempotency_key"]), e, None, journal=f))
            self._cond.notify(len(entries))
        return [{"status": "queued", "reservation_id": e["reservation_id"], "event_id": e["event"].get("id")}
                for e in entries]

    def _sync_loop(self) -> None:
        while True:
            self._sync_wanted.wait()
            self._sync_wanted.clear()
            try:
                self.journal.sync()
            except Exception as exc:  # noqa: BLE001 - the commits are still sent; logged
                log.error("billing journal fsync failed: %s", exc)
            if self._stop and not self._sync_wanted.is_set():
                return

    def _send_loop(self) -> None:
        from billing.client.ops import run
        from billing.client.spool import deliver_flow

        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:
                    return
                held = self._queue.popleft()
                self._busy += 1
            try:
                outcome, _answer = run(deliver_flow(held), self.client)
            except Exception as exc:  # noqa: BLE001 - left unacked in the journal: recovered later
                outcome = "failed"
                log.error("billing commit of %s not settled: %s", held.data.get("reservation_id"), exc)
            with self._cond:
                self._busy -= 1
                if outcome == "delivered":
                    self.delivered += 1
                elif outcome == "rejected":
                    self.rejected += 1
                else:
                    self.kept += 1
                self._cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued commit is settled and the journal synced (False: timed out)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            ok = self._cond.wait_for(lambda: not self._queue and not self._busy,
                                     None if deadline is None else max(0.0, deadline - time.monotonic()))
        seq = self.journal._written
        self._sync_wanted.set()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.journal.wait_durable(seq, left) and ok

    def close(self, timeout: float = 10.0) -> None:
        """Drain (up to ``timeout`` seconds), stop the threads, release the journal."""
        self.drain(timeout)
        with self._cond:
            self._stop = True
            self._queue.clear()  # what is left stays in the journal: recovered by the next flush
            self._cond.notify_all()
        self._sync_wanted.set()
        for t in self._threads:
            t.join(timeout)
        self.journal.close()
