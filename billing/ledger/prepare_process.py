"""A JSONL file's events read, parsed, validated and costed in a process of their own.

``billing events import`` hands ``Ledger.record`` a ``PreparingReader``: a child process
(``python -m billing.ledger.prepare_process``) reads the file, parses each line and runs
``prepare_batch`` (the same stage 1 the ledger runs in its own thread for every other
door), and sends the prepared events back through a pipe, a part at a time. The ledger
then stores them exactly as it stores events it prepared itself (``Ledger._stage``): the
rules are the same, only the process doing the first stage differs. Parsing and
validating no longer compete with the database writes for one interpreter lock, so an
import of a large file runs on two cores.

The parent sends the child what stage 1 needs (``PrepareOptions``: the cost book the
ledger prices with, the known types, the future tolerance...). The child sends, per part:
the number of events, their prepared rows or rejections, the positions of the unpriced or
unmetered ones, the id and customer of each rejection, and what the reader learned of the
file (line map entries, bad lines, bytes read). Memory stays bounded: the pipe holds at
most a part, the child never more than a part of parsed events.

Frames on both pipes: an 8-byte big-endian length, then a pickle. The parent starts the
child and is the only reader of its output; a child that dies (kill -9) ends the import
with ``PrepareProcessError`` after the chunks committed so far (a re-run is idempotent); a
parent that dies takes the child with it (its next write finds the pipe closed).
"""

from __future__ import annotations

import gc
import os
import pickle
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import billing
from billing.costs import CostBook
from billing.ledger.jsonl import JsonlEvents, LineMap
from billing.ledger.prepare import Prepared, Pricer, Rejection, prepare_batch
from billing.ledger.prepare import raw_key as _raw_key
from billing.instants import to_us

PART = 5_000  # events per message from the child: its memory, and the pipe's, stay this small
_REPEATED = (0, 2, 5)  # the columns of Prepared with few distinct values: customer, type, model
_PROPERTIES = 7  # the column of Prepared holding the properties
_HEADER = struct.Struct(">Q")


class PrepareOptions(NamedTuple):
    """Everything ``prepare_batch`` takes besides the events and the clock."""

    book: CostBook
    tolerance_us: int
    known_types: frozenset[str]
    measured: frozenset[str]
    task_properties: frozenset[str]


@dataclass
class PreparedChunk:
    """A chunk of events prepared elsewhere: what ``Ledger._stage`` takes."""

    size: int
    results: list[Prepared | Rejection]
    flagged: dict[int, Prepared]  # position -> unpriced or unmetered event
    rejected: dict[int, tuple[str | None, str | None]]  # position -> (id, customer) of a rejection


class PrepareProcessError(RuntimeError):
    """The preparing process failed or died; what committed before stays committed."""


def _write(out: BinaryIO, value: Any) -> None:
    data = pickle.dumps(value, protocol=5)
    out.write(_HEADER.pack(len(data)))
    out.write(data)
    out.flush()


def _read(source: BinaryIO) -> Any:
    header = source.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = source.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class PreparingReader:
    """A JSONL file for ``Ledger.record``, prepared in a child process (see the module
    docstring). Answers what ``billing events import`` asks of a ``JsonlEvents`` reader
    (``size``, ``bytes_read``, ``problems``, ``bad_lines``, ``line_of``, ``forget_before``)."""

    def __init__(self, path: Path | str, max_problems: int = 1000):
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self.bytes_read = 0
        self.problems: list[dict[str, Any]] = []
        self.bad_lines = 0
        self.max_problems = max_problems
        self.lines = LineMap()
        self._child: subprocess.Popen | None = None
        self._err: BinaryIO | None = None  # the child's stderr (the reason it failed)

    def start(self) -> None:
        """Start the preparing process now, if not yet (``prepared_chunks`` does otherwise):
        its interpreter starts and loads its modules while the caller builds the ledger. It
        waits for the request; ``close`` ends it if none comes."""
        if self._child is None:
            self._err = tempfile.TemporaryFile()
            self._child = subprocess.Popen([sys.executable, "-m", "billing.ledger.prepare_process"],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                           env=_child_env())

    def close(self) -> None:
        """End the preparing process (killed if still running) and free its pipes."""
        child, self._child = self._child, None
        if child is None:
            return
        if child.poll() is None:  # the caller stopped early or failed: so does the child
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if not pipe.closed:
                try:
                    pipe.close()
                except BrokenPipeError:  # (unsent bytes in the request's buffer)
                    pass
        self._err.close()

    def line_of(self, index: int) -> int:
        return self.lines.line_of(index)

    def forget_before(self, index: int) -> None:
        self.lines.forget_before(index)

    def prepared_chunks(self, options: PrepareOptions, chunk_size: int) -> Iterator[PreparedChunk]:
        """The file's events in prepared chunks of ``chunk_size`` (the last one shorter)."""
        self.start()
        child = self._child
        try:
            _write(child.stdin, (str(self.path), min(PART, chunk_size), self.max_problems, options))
            child.stdin.close()
            yield from self._chunks(child, chunk_size)
            if child.wait() != 0:
                raise PrepareProcessError(_why(child, self._err))
        except (EOFError, BrokenPipeError):  # the child died (a pipe found closed)
            child.wait()
            raise PrepareProcessError(_why(child, self._err)) from None
        finally:
            self.close()

    def _chunks(self, child: subprocess.Popen, chunk_size: int) -> Iterator[PreparedChunk]:
        chunk = PreparedChunk(0, [], {}, {})
        while True:
            message = _read(child.stdout)
            if message is None:  # the end of the file
                break
            if isinstance(message, str):  # the child's own failure, reported before it exits
                raise PrepareProcessError(message)
            size, columns, rejections, flagged_at, rejected, lines, problems, bad_lines, bytes_read = message
            results = _results(size, columns, rejections)
            flagged = {i: results[i] for i in flagged_at}
            self.lines.extend(lines)  # (indexes of the file's events, as the ledger numbers them)
            self.problems += problems[:max(self.max_problems - len(self.problems), 0)]
            self.bad_lines, self.bytes_read = bad_lines, bytes_read
            taken = 0
            while taken < size:  # the part fills the chunk, perhaps the next ones
                n = min(size - taken, chunk_size - chunk.size)
                _append(chunk, results, flagged, rejected, taken, n)
                taken += n
                if chunk.size == chunk_size:
                    yield chunk
                    chunk = PreparedChunk(0, [], {}, {})
        if chunk.size:
            yield chunk


def _results(size: int, columns: list[tuple], rejections: dict[int, tuple]) -> list[Prepared | Rejection]:
    """A part's results from the child's form: the prepared rows as columns (pickled as
    such, they cost a third of rows of named tuples), the rejections by position."""
    rows: list[Prepared | Rejection] = list(map(Prepared._make, zip(*columns)))
    if not rejections:
        return rows
    prepared = iter(rows)
    return [Rejection(*rejections[i]) if i in rejections else next(prepared) for i in range(size)]


def _append(chunk: PreparedChunk, results: list, flagged: dict[int, Prepared],
            rejected: dict[int, tuple[str | None, str | None]], start: int, n: int) -> None:
    """Positions ``start .. start + n`` of a part, at the end of ``chunk``."""
    shift = chunk.size - start
    chunk.results += results if start == 0 and n == len(results) else results[start:start + n]
    chunk.flagged.update((i + shift, p) for i, p in flagged.items() if start <= i < start + n)
    chunk.rejected.update((i + shift, key) for i, key in rejected.items() if start <= i < start + n)
    chunk.size += n


def _child_env() -> dict[str, str]:
    """The environment, with this ``billing`` package first on the child's path."""
    env = dict(os.environ)
    root = str(Path(billing.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _why(child: subprocess.Popen, err) -> str:
    err.seek(0)
    tail = err.read()[-2000:].decode("utf-8", "replace").strip()
    status = child.returncode
    how = f"was killed by signal {-status}" if status is not None and status < 0 else f"exited with {status}"
    return f"the process preparing the file's events {how}" + (f": {tail}" if tail else "")


# ---------------------------------------------------------------------- the child

def serve(source: BinaryIO, out: BinaryIO) -> None:
    """The child: read the request, then prepare and send the file's events part by part."""
    try:
        path, part, max_problems, options = _read(source)
    except EOFError:  # started early, and the parent stopped before asking (``PreparingReader.close``)
        return
    pricer = Pricer(options.book)
    events = JsonlEvents(path, max_problems=max_problems)
    sent_problems = 0
    seen: dict[str | None, str | None] = {}
    gc.disable()  # parsed events are acyclic: reference counting frees each part
    try:
        for raws in events.chunks(part):
            flagged: dict[int, Prepared] = {}
            results = prepare_batch(raws, now_us=to_us(datetime.now(UTC)), tolerance_us=options.tolerance_us,
                                    known_types=options.known_types, pricer=pricer, measured=options.measured,
                                    task_properties=options.task_properties, flagged=flagged)
            rejections = {i: tuple(p) for i, p in enumerate(results) if type(p) is Rejection}
            rejected = {i: _raw_key(raws[i]) for i in rejections}
            columns = list(zip(*(p for p in results if type(p) is not Rejection) if rejections else results))
            if columns:
                _share_repeated(columns, seen)
            lines = events.lines.entries()
            events.lines.forget_before(events.lines.starts[-1])  # sent: keep only the current stretch
            _write(out, (len(raws), columns, rejections, sorted(flagged), rejected, lines,
                         events.problems[sent_problems:], events.bad_lines, events.bytes_read))
            sent_problems = len(events.problems)
        # what the reader learned after the last event (bad lines at the end), then the end
        _write(out, (0, [], {}, [], {}, events.lines.entries(), events.problems[sent_problems:], events.bad_lines,
                     events.bytes_read))
        _write(out, None)
    except BrokenPipeError:  # the parent is gone
        return


def _share_repeated(columns: list[tuple], seen: dict) -> None:
    """One object for each distinct customer, type, model and text property value (``seen``
    maps a text to the first object holding it): the pickle then sends each once, and the
    parent holds each once -- a third less memory in both processes on typical events."""
    if len(seen) > 100_000:  # many distinct values (an id in every event): start again
        seen.clear()
    share = seen.setdefault
    for at in _REPEATED:
        columns[at] = tuple(map(share, columns[at], columns[at]))
    for props in columns[_PROPERTIES]:
        for key, value in props.items():
            if type(value) is str:
                props[key] = share(value, value)


def _main() -> None:
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:
        pass
    except Exception as exc:  # reported to the parent, which ends the import with it
        try:
            _write(sys.stdout.buffer, f"{type(exc).__name__}: {exc}")
        except BrokenPipeError:
            pass
        raise SystemExit(1) from None


if __name__ == "__main__":
    _main()
