"""Reading events from a JSON Lines file in bounded memory, for ``billing events import``.

``JsonlEvents(path)`` is an iterator of the file's events for ``Ledger.record``: one line at
a time (the file is never held whole), blank lines skipped. A line that is not an event's
JSON (invalid UTF-8, bad JSON, a number too long to read, nesting too deep) is not handed to
the ledger: it becomes that line's own rejection (``event_invalid`` with the reason), and
the lines around it are imported as usual.

The ledger numbers the events it is given (0, 1, 2...); ``line_of(index)`` maps that number
back to the file's line. It keeps one entry per place where the two stop moving together (a
blank or bad line), and ``forget_before`` drops the entries of events the caller is done
with, so its memory stays bounded whatever the file holds.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

_BOM = b"\xef\xbb\xbf"
MAX_LINE_BYTES = 1 << 20  # a line longer than this is rejected unread (events are far smaller)
BLOCK_BYTES = 1 << 20  # read this much at a time


def _parse_block(lines: list[bytes | None]) -> list[Any] | None:
    """Every line of the block parsed on its own, in a C loop (``map``); None when a line is
    blank, bad or over-long (the block is then read line by line, each problem with its
    line). Never the lines joined into one JSON array: two bad lines can make one value there
    (a line cut inside a string and its rest) and one bad line two (``{...},{...}``), so the
    count would match while the events came from no line of the file."""
    if None in lines:
        return None
    try:
        return list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None


def parse_line(raw: bytes) -> tuple[Any, str | None]:
    """(the decoded value, None), or (None, why the line is not JSON)."""
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        pass  # read it again with the standard parser: its reason is clearer, and it reads
        # integers past 64 bits (the ledger then rejects such a quantity as too large)
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte {exc.start + 1} of the line)"
    try:  # NaN and Infinity are read (as the HTTP batch's parser reads them): the ledger
        # rejects an event holding one by the rule every door follows
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, "not valid JSON: nested too deeply"
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        return None, f"not valid JSON: {str(exc).split(';')[0]}"


def _blocks(handle, size: int | None = None) -> Iterator[list[bytes | None]]:
    """The file's lines (without their newline), a block of them at a time; None for a line
    longer than ``MAX_LINE_BYTES`` (dropped as it is read: memory stays bounded whatever
    the file holds)."""
    size = size or BLOCK_BYTES  # (read at call time: tests set small blocks)
    carry = b""
    skipping = False  # inside an over-long line: drop bytes up to its newline
    while True:
        block = handle.read(size)
        if not block:
            if carry or skipping:
                yield [None if skipping else carry]
            return
        lines = block.split(b"\n")
        if skipping:
            if len(lines) == 1:
                continue  # still no newline
            lines[0] = None  # the over-long line ends here
            skipping = False
        elif carry:
            lines[0] = carry + lines[0]
        carry = lines.pop()  # the unfinished last line
        if len(carry) > MAX_LINE_BYTES:
            carry, skipping = b"", True
        for i, line in enumerate(lines):
            if line is not None and len(line) > MAX_LINE_BYTES:
                lines[i] = None
        if lines:
            yield lines


class JsonlEvents:
    """Iterate the events of a JSONL file (see the module docstring)."""

    def __init__(self, path: Path | str, max_problems: int = 1000):
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self.bytes_read = 0
        self.problems: list[dict[str, Any]] = []  # the first max_problems bad lines
        self.bad_lines = 0
        self.max_problems = max_problems
        self._index = 0  # events handed out
        self.lines = LineMap()

    def __iter__(self) -> Iterator[Any]:
        for values in self._value_blocks():
            yield from values

    def chunks(self, size: int) -> Iterator[list[Any]]:
        """The events in lists of ``size`` (the last one shorter): what ``Ledger.record``
        takes a chunk at a time, built from whole parsed blocks (no Python step per event)."""
        buffer: list[Any] = []
        for values in self._value_blocks():
            buffer += values
            while len(buffer) >= size:
                yield buffer[:size]
                del buffer[:size]
        if buffer:
            yield buffer

    def _value_blocks(self) -> Iterator[list[Any]]:
        """The events of each block of lines, a list per block."""
        number = 0  # the last line read
        with open(self.path, "rb") as handle:
            if handle.read(len(_BOM)) == _BOM:  # a UTF-8 byte order mark (Windows tools) starts
                self.bytes_read += len(_BOM)  # the text; it is no part of the first line
            else:
                handle.seek(0)
            for lines in _blocks(handle):
                parsed = _parse_block(lines)
                if parsed is not None:  # the common case: every line of the block one value
                    self.lines.note(self._index, number + 1)
                    number += len(lines)
                    self._index += len(lines)
                    self.bytes_read += sum(map(len, lines)) + len(lines)
                    yield parsed
                    continue
                values = []
                for raw in lines:  # a blank or bad line in the block: line by line
                    number += 1
                    if raw is None:
                        self._bad(number, f"line longer than {MAX_LINE_BYTES:,} bytes")
                        continue
                    self.bytes_read += len(raw) + 1
                    if not raw.strip():
                        continue
                    value, problem = parse_line(raw)
                    if problem is not None:
                        self._bad(number, problem)
                        continue
                    self.lines.note(self._index, number)
                    self._index += 1
                    values.append(value)
                yield values

    def _bad(self, number: int, message: str) -> None:
        self.bad_lines += 1
        if len(self.problems) < self.max_problems:
            self.problems.append({"line": number, "status": "rejected", "code": "event_invalid", "message": message})

    def line_of(self, index: int) -> int:
        """The file line of the ``index``-th event handed out (one not forgotten)."""
        return self.lines.line_of(index)

    def forget_before(self, index: int) -> None:
        """Drop what ``line_of`` knows about events before ``index`` (a caller done with
        them), so a file with a blank or bad line between every two events does not grow
        the map with its length."""
        self.lines.forget_before(index)


class LineMap:
    """Event index -> file line: one entry per place where the two stop moving together (a
    blank or bad line), so its size is the number of such places not yet forgotten."""

    def __init__(self) -> None:
        self.starts: list[int] = [0]  # event index where a stretch of lines begins...
        self.offsets: list[int] = [1]  # ...and line number minus event index in it

    def note(self, index: int, line: int) -> None:
        """Event ``index`` is on file line ``line``."""
        if line - index != self.offsets[-1]:
            self.starts.append(index)
            self.offsets.append(line - index)

    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.offsets))

    def extend(self, entries: list[tuple[int, int]]) -> None:
        """Take another map's ``entries`` (those of events from here on)."""
        for start, offset in entries:
            if start <= self.starts[-1]:
                if start == self.starts[-1]:
                    self.offsets[-1] = offset
                continue
            if offset != self.offsets[-1]:
                self.starts.append(start)
                self.offsets.append(offset)

    def line_of(self, index: int) -> int:
        at = bisect.bisect_right(self.starts, index) - 1
        if at < 0:
            raise ValueError(f"the line of event {index} was forgotten")
        return index + self.offsets[at]

    def forget_before(self, index: int) -> None:
        at = bisect.bisect_right(self.starts, index) - 1
        if at > 0:
            del self.starts[:at]
            del self.offsets[:at]
