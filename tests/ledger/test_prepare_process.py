"""Events prepared in a second process (``billing.ledger.prepare_process``, the import's
``--parallel``) are recorded exactly as events the ledger prepares itself: the same results,
problems with the same file lines, the same stored events, counters and task usage; a
preparing process that dies ends the import cleanly after what committed."""

from __future__ import annotations

import json
import os
import signal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.ledger import prepare_process
from billing.ledger.ingest import BatchResult, Ledger
from billing.ledger.jsonl import JsonlEvents
from billing.ledger.prepare_process import PrepareProcessError, PreparingReader
from tests.support.db import (counter_rows, engine_for_url, reset_database, sqlite_database, stored_events,
                              task_usage_rows)
from tests.support.ledger import CATALOG, _event, _setup


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory):
    with sqlite_database(tmp_path_factory.mktemp("prepared")) as url:
        yield url


def _line(kind: str, i: int) -> bytes:
    good = _event("acme" if i % 2 else "beta", f"e{i % 23}", i, task=f"t{i % 3}" if i % 4 == 0 else None)
    return {
        "good": lambda: orjson.dumps(good),
        "conflict": lambda: orjson.dumps({**good, "timestamp": "2026-10-25T00:00:00Z"}),
        "negative": lambda: orjson.dumps({**good, "properties": {"input_tokens": -1}}),
        "ghost": lambda: orjson.dumps({**good, "customer": "ghost"}),
        "new_model": lambda: orjson.dumps({**good, "properties": {**good["properties"], "model": "brand-new-9"}}),
        "not_object": lambda: b"[1, 2]",
        "bad_json": lambda: b'{"id": "x", ',
        "blank": lambda: b"",
        "bad_utf8": lambda: b'{"id": "\xff"}',
    }[kind]()


KINDS = st.sampled_from(["good"] * 6 + ["conflict", "negative", "ghost", "new_model", "not_object", "bad_json",
                                        "blank", "bad_utf8"])


def _import(engine, reader, chunk_size: int) -> dict:
    """Record the reader's events; everything the import reports and the ledger holds."""
    ledger = Ledger(engine, CATALOG)
    result = BatchResult(keep_events=False)
    lines: dict[int, int] = {}

    def take(_n: int) -> None:  # the lines of new problems, as `billing events import` takes them
        for e in result.problems[len(lines):]:
            lines[e.index] = reader.line_of(e.index)
        reader.forget_before(result.size)

    ledger.record(reader, chunk_size=chunk_size, result=result, progress=take)
    ledger.close()
    return {"summary": result.to_json(), "lines": lines, "bad": (reader.problems, reader.bad_lines),
            "bytes": reader.bytes_read, "events": [e[:7] for e in stored_events(engine)], "counters": counter_rows(engine),
            "tasks": task_usage_rows(engine)}


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(KINDS, max_size=60), chunk_size=st.integers(1, 25), part=st.integers(1, 9),
       newline_at_end=st.booleans())
def test_a_file_prepared_in_a_second_process_is_recorded_as_one_prepared_here(sqlite_url, tmp_path, monkeypatch,
                                                                              kinds, chunk_size, part, newline_at_end):
    """Any mix of good, repeated, conflicting, rejected, unpriced and unparsable lines, any
    chunk size and any part size (parts cut across chunks): the same outcome. (The process
    boundary is the same whatever the database: SQLite keeps the examples quick.)"""
    monkeypatch.setattr(prepare_process, "PART", part)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(_line(k, i) for i, k in enumerate(kinds)) + (b"\n" if newline_at_end else b""))
    outcomes = []
    with engine_for_url(sqlite_url) as engine:
        for reader in (JsonlEvents(path), PreparingReader(path)):
            reset_database(sqlite_url)
            _setup(engine)
            outcomes.append(_import(engine, reader, chunk_size))
    assert outcomes[1] == outcomes[0]
    assert outcomes[0]["summary"]["accepted"] + outcomes[0]["summary"]["duplicates"] <= len(kinds)


def test_a_killed_preparing_process_ends_the_import_after_what_committed(db_url, engine, tmp_path):  # noqa: F811
    """kill -9 of the preparing process: ``PrepareProcessError`` saying so; the chunks
    committed before stand, and a re-run records the rest once."""
    _setup(engine)
    n, chunk = 3000, 500
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(_event("acme", f"k{i}", i)) + b"\n" for i in range(n)))
    reader = PreparingReader(path)
    ledger = Ledger(engine, CATALOG)
    result = BatchResult(keep_events=False)
    original = reader._chunks

    def chunks_then_kill(child, size):
        for i, prepared in enumerate(original(child, size)):
            if i == 2:
                os.kill(child.pid, signal.SIGKILL)
            yield prepared

    reader._chunks = chunks_then_kill
    with pytest.raises(PrepareProcessError, match="killed by signal 9"):
        ledger.record(reader, chunk_size=chunk, result=result)
    committed = result.size
    assert committed % chunk == 0 and 0 < committed < n
    assert len(stored_events(engine)) == committed
    again = ledger.record(PreparingReader(path), chunk_size=chunk, result=BatchResult(keep_events=False))
    assert (again.accepted, again.count("duplicate")) == (n - committed, committed)
    assert len(stored_events(engine)) == n
    ledger.close()


def test_the_preparing_process_reports_its_own_failure(db_url, engine, tmp_path):  # noqa: F811
    """A failure inside the preparing process (here: the file vanished before it opened it)
    is the import's error, with the reason, not a hang or a traceback of the pipe."""
    _setup(engine)
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(_event("acme", "a", 1)) + b"\n")
    reader = PreparingReader(path)
    path.unlink()
    with pytest.raises(PrepareProcessError, match="FileNotFoundError"):
        Ledger(engine, CATALOG).record(reader, result=BatchResult(keep_events=False))
    assert stored_events(engine) == []


def test_events_prepared_elsewhere_need_a_compact_result(engine, tmp_path):  # noqa: F811
    """Their raw form never reaches this process, so a result that keeps it is refused."""
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(_event("acme", "a", 1)) + "\n")
    with pytest.raises(ValueError, match="keep_events=False"):
        Ledger(engine, CATALOG).record(PreparingReader(path), chunk_size=10, result=BatchResult())


def test_a_preparing_process_started_early_prepares_as_one_started_late(engine, tmp_path):  # noqa: F811
    """``start()`` before the ledger is built (what the import does, so the child's
    interpreter starts meanwhile): the same events are recorded, and the child is gone after."""
    _setup(engine)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(_event("acme", f"s{i}", i)) + b"\n" for i in range(50)))
    reader = PreparingReader(path)
    reader.start()
    child = reader._child
    result = Ledger(engine, CATALOG).record(reader, chunk_size=20, result=BatchResult(keep_events=False))
    assert result.accepted == 50 and len(stored_events(engine)) == 50
    assert child.poll() == 0 and reader._child is None


def test_a_preparing_process_started_and_never_asked_ends_with_close(tmp_path):
    """The import failing before it asks (bad plans, an unreachable database): ``close()``
    ends the child; a child whose parent closed its input without a request exits by itself."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(_event("acme", "a", 1)) + b"\n")
    reader = PreparingReader(path)
    reader.start()
    child = reader._child
    reader.close()
    assert child.poll() is not None and reader._child is None
    reader.close()  # (twice: nothing more)
    reader.start()
    child = reader._child
    child.stdin.close()  # the parent gone before asking: end of input
    assert child.wait(timeout=60) == 0
    reader.close()
