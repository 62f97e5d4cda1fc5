"""`billing events import`: streaming JSONL reading, poisoned lines, kill -9 and re-run, and
the import benchmark at a small size."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.ledger import jsonl
from billing.ledger.jsonl import JsonlEvents, parse_line
from tests.support.db import PLANS_DIR
from tests.support.ledger import _cli_env, _event, _setup, assert_derived_equal_recount

ROOT = Path(__file__).resolve().parents[2]

LINES = st.one_of(
    st.builds(lambda i: json.dumps({"id": f"e{i}", "n": i}), st.integers(0, 10**6)),
    st.sampled_from(["", "   ", "\r", "{not json", "[1,", "NaN", '{"a": 1} {"b": 2}', "1, 2", "]", "[", ",",
                     '"text"', "[1, 2]", "null"]),
    st.builds(lambda n: "[" * n + "]" * n, st.integers(1, 3000)),  # nesting, deep or not
    st.builds(lambda n: '{"big": ' + "9" * n + "}", st.sampled_from([5, 30, 5000])),
    st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"\n", b" ").decode("latin-1")),
)


def _naive(raw: bytes) -> tuple[list[tuple[int, object]], list[int]]:
    """(line, value) of each event and the lines of the bad ones, one line at a time."""
    values, bad = [], []
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark starting the file is no part of line 1
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if len(line) > jsonl.MAX_LINE_BYTES:
            bad.append(number)
            continue
        if not line.strip():
            continue
        value, problem = parse_line(line)
        if problem is None:
            values.append((number, value))
        else:
            bad.append(number)
    return values, bad


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, max_size=40), block=st.integers(3, 200), newline_at_end=st.booleans())
def test_streamed_reading_equals_reading_line_by_line(tmp_path, monkeypatch, lines, block, newline_at_end):
    """Blocks of any size (lines cut anywhere), over-long lines, blank and bad lines: the
    same events with the same line numbers, and the same bad lines, as a naive reader."""
    monkeypatch.setattr(jsonl, "BLOCK_BYTES", block)
    monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 400)
    raw = "\n".join(lines).encode("latin-1", "replace") + (b"\n" if newline_at_end and lines else b"")
    path = tmp_path / "x.jsonl"
    path.write_bytes(raw)
    reader = JsonlEvents(path)
    got = list(reader.__iter__())
    expected, bad = _naive(raw)
    assert [v for _, v in expected] == got
    assert [reader.line_of(i) for i in range(len(got))] == [n for n, _ in expected]
    assert [p["line"] for p in reader.problems] == bad and reader.bad_lines == len(bad)


def _write(path: Path, events: list, poison: dict[int, bytes]) -> None:
    with open(path, "wb") as out:
        for i, e in enumerate(events):
            if i in poison:
                out.write(poison[i] + b"\n")
            out.write(orjson.dumps(e) + b"\n")


def _import(db: str, path: Path, *args: str) -> tuple[int, dict, str]:
    proc = subprocess.run([sys.executable, "-m", "billing", "events", "import", str(path), "--json", *args],
                          env=_cli_env(db), capture_output=True, text=True, timeout=300)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--parallel", "--no-parallel"])  # prepared in a second process, or in this one
def test_poisoned_lines_are_their_own_rejections(db_url, engine, tmp_path, mode):  # noqa: F811
    """A 5,000-digit number, invalid UTF-8, deep nesting, an over-long line and bad JSON among
    good events: each is rejected with its line number, every good event is imported (the
    issue's file stopped at the first one, after 20,000 of 50,000)."""
    _setup(engine)
    events = [_event("acme", f"p{i}", i) for i in range(3000)]
    poison = {100: b'{"id": "x", "customer": "acme", "properties": {"input_tokens": ' + b"9" * 5000 + b"}}",
              700: b'{"id": "\xff\xfe", "customer": "acme"}',
              1500: b"[" * 200_000 + b"]" * 200_000,
              2000: b'{"id": "long", "pad": "' + b"x" * (2 << 20) + b'"}',
              2999: b"{not json"}
    path = tmp_path / "poisoned.jsonl"
    _write(path, events, poison)
    code, summary, err = _import(db_url, path, "--batch", "500", mode)
    assert code == 1 and "Traceback" not in err, err
    assert summary["accepted"] == len(events) and summary["rejected"] == len(poison)
    # each poisoned line sits before event i: line i + 1 + (poisoned lines before it)
    lines = sorted(i + 1 + sum(1 for j in poison if j < i) for i in poison)
    assert [e["line"] for e in summary["errors"]] == lines
    assert {e["code"] for e in summary["errors"]} == {"event_invalid"}
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one() == len(events)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--parallel", "--no-parallel"])  # prepared in a second process, or in this one
def test_a_rejected_event_names_its_file_line(db_url, engine, tmp_path, mode):  # noqa: F811
    _setup(engine)
    path = tmp_path / "e.jsonl"
    bad = {**_event("acme", "neg", 1), "properties": {"input_tokens": -1}}
    path.write_text("\n\n" + json.dumps(_event("acme", "a", 1)) + "\n\n" + json.dumps(bad) + "\n"
                    + json.dumps({**_event("ghost", "g", 2)}) + "\n")
    code, summary, _ = _import(db_url, path, mode)
    assert code == 1
    assert [(e["line"], e["code"], e.get("id")) for e in summary["errors"]] == [
        (5, "negative_quantity", "neg"), (6, "customer_not_found", "g")]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--parallel", "--no-parallel"])  # prepared in a second process, or in this one
def test_kill_9_mid_import_then_rerun_counts_every_event_once(db_url, engine, tmp_path, mode):  # noqa: F811
    """kill -9 of the import once some chunks committed: a re-run counts every event once.
    With ``--parallel`` the preparing process dies with it (it does not run on, orphaned)."""
    _setup(engine)
    n = 150_000  # ~150 commits: enough time between the first and the last for the poll below, also on a loaded machine
    path = tmp_path / "big.jsonl"
    _write(path, [_event("acme" if i % 3 else "beta", f"k{i}", i, task=f"t{i % 7}") for i in range(n)], {})
    proc = subprocess.Popen([sys.executable, "-m", "billing", "events", "import", str(path), "--json",
                             "--batch", "1000", mode], env=_cli_env(db_url), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    children: list[int] = []
    while time.monotonic() < deadline:  # kill once some chunks committed, before the end
        children = children or _children(proc.pid)
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one()
        if stored >= 4000 or proc.poll() is not None:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if mode == "--parallel":
        assert children, "the import prepared its events in no second process"
        deadline = time.monotonic() + 30
        while any(map(_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, children)), "the preparing process outlived the import"
    with engine.connect() as conn:
        partial = conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one()
    assert 0 < partial < n  # killed in the middle: some chunks committed, not all
    code, summary, err = _import(db_url, path, mode)
    assert code == 0, err
    assert summary["accepted"] + summary["duplicates"] == n and summary["duplicates"] == partial
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one() == n
    assert_derived_equal_recount(engine)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
def test_import_benchmark_runs_at_a_small_size(backend):
    """bench/import.py end to end (its targets are measured at full size; see the README)."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "import.py"), "--backend", backend, "--sizes", "3000",
                          "--customers", "50"], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, BILLING_PLANS_DIR=str(PLANS_DIR)))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    (size,) = result["sizes"]
    assert size["events"] == 3000 and size["cli"]["events_per_s"] > 0 and size["library"]["events_per_s"] > 0
    assert 0 < size["cli"]["peak_rss_mb"] <= size["cli"]["peak_rss_with_children_mb"] <= 300


@pytest.mark.parametrize("lines", [
    # a line cut inside a string (two bad lines) and two events on one line (a bad line)
    [b'{"id": "e1", "customer": "acme", "note": "a', b'b"}', b'{"id": "x", "customer": "acme"},{"id": "y"}'],
    [b"[1", b"2]", b"1, 2"],  # a line cut inside an array, two values on one line
], ids=["string", "array"])
def test_bad_lines_are_never_read_together_as_events(tmp_path, lines):
    """Lines each of which is not one JSON value are each rejected: never joined with their
    neighbours into values that come from no line of the file (the same count of values as
    lines, from the block read as one array, made them events)."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reader = JsonlEvents(path)
    assert list(reader) == []
    assert [p["line"] for p in reader.problems] == list(range(1, len(lines) + 1))


def test_a_byte_order_mark_is_not_part_of_the_first_event(tmp_path):
    """A UTF-8 file written with a byte order mark (PowerShell, Notepad): its first line is
    an event like the others, and bytes_read counts the mark."""
    path = tmp_path / "bom.jsonl"
    body = b'{"id": "a"}\r\n{"id": "b"}'  # CRLF endings, no newline at the end
    path.write_bytes(b"\xef\xbb\xbf" + body)
    reader = JsonlEvents(path)
    assert list(reader) == [{"id": "a"}, {"id": "b"}] and reader.problems == []
    assert [reader.line_of(i) for i in range(2)] == [1, 2]


def test_the_line_map_stays_bounded_on_a_file_with_a_blank_line_between_events(db_url, engine, tmp_path,  # noqa: F811
                                                                                 monkeypatch):
    """A double-spaced file (or a bad line between every two events) put one entry per event
    into the reader's line map: 74 MB more peak memory per million events. The import now
    takes the lines of its problems as each chunk commits and lets the reader forget the
    rest; the problems still name their lines, also at the end of the file."""
    from typer.testing import CliRunner

    from billing.cli import app as cli_app
    from billing.cli import context as cli_context
    from billing.config import get_settings
    from billing.store.db import engine_for

    _setup(engine)
    n = 6000
    events = [_event("acme", f"s{i}", i) for i in range(n)]
    events[n - 2] = {**events[n - 2], "properties": {"input_tokens": -1}}  # a rejection near the end
    path = tmp_path / "spaced.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n\n" for e in events) + b"{bad\n")
    sizes: list[int] = []

    class Watched(JsonlEvents):
        def _value_blocks(self):
            for values in super()._value_blocks():
                sizes.append(len(self.lines.starts))
                yield values

    monkeypatch.setattr(jsonl, "JsonlEvents", Watched)
    monkeypatch.setattr(jsonl, "BLOCK_BYTES", 4096)  # many blocks (a block's lines are mapped at once)
    for cache in (get_settings, engine_for, cli_context.catalog):
        cache.cache_clear()
    try:
        out = CliRunner().invoke(cli_app, ["events", "import", str(path), "--json", "--batch", "200"],
                                 env={"BILLING_DATABASE_URL": db_url, "BILLING_PLANS_DIR": str(PLANS_DIR)})
    finally:
        for cache in (get_settings, engine_for, cli_context.catalog):
            cache.cache_clear()
    assert out.exit_code == 1, out.output
    summary = json.loads(out.output)
    assert summary["accepted"] == n - 1
    assert [(e["line"], e["code"]) for e in summary["errors"]] == [(2 * (n - 2) + 1, "negative_quantity"),
                                                                   (2 * n + 1, "event_invalid")]
    # about two chunks' worth plus a block's lines (4 KiB: under 30 events), not n
    assert len(sizes) > n // 30 and max(sizes) <= 3 * 200 + 60, max(sizes)


@pytest.mark.parametrize("cores", [1, 2])
def test_a_large_file_gets_a_second_process_only_given_two_cpus(db_url, engine, tmp_path, monkeypatch,  # noqa: F811
                                                               cores):
    """By default a file over ``_PARALLEL_BYTES`` is prepared by a second process, started
    before the ledger is built; on one CPU (a container pinned to one core) it is not: the
    second process would only add its own work. The same events either way."""
    from typer.testing import CliRunner

    from billing.cli import app as cli_app
    from billing.cli import context as cli_context
    from billing.cli import ledger_cmds
    from billing.config import get_settings
    from billing.ledger import prepare_process
    from billing.store.db import engine_for

    _setup(engine)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(_event("acme", f"c{i}", i)) + b"\n" for i in range(40)))
    started: list[bool] = []
    real_start = prepare_process.PreparingReader.start

    def start(reader):  # (a second call, from prepared_chunks, starts nothing)
        if reader._child is None:
            started.append(True)
        real_start(reader)

    monkeypatch.setattr(prepare_process.PreparingReader, "start", start)
    monkeypatch.setattr(ledger_cmds, "_PARALLEL_BYTES", 100)  # "large": this file's size is over it
    monkeypatch.setattr(ledger_cmds, "_cores", lambda: cores)
    for cache in (get_settings, engine_for, cli_context.catalog):
        cache.cache_clear()
    try:
        out = CliRunner().invoke(cli_app, ["events", "import", str(path), "--json"],
                                 env={"BILLING_DATABASE_URL": db_url, "BILLING_PLANS_DIR": str(PLANS_DIR)})
    finally:
        for cache in (get_settings, engine_for, cli_context.catalog):
            cache.cache_clear()
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["accepted"] == 40
    assert started == ([True] if cores > 1 else [])
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one() == 40
