"""Reading a recorded stream back: a JSON Lines file of tunnel records.

The file may be incomplete (a writer that died mid-line), followed while it grows
(`open --follow`), or not ours at all. `JsonlReader` never raises on content: each
line becomes either a record with its byte offset or a `Problem` saying which line
and why. Offsets let a reader keep only what it shows and re-read a full record on
demand (`record_at`), so a 100k-line file does not become 100k dicts in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from json.scanner import make_scanner
from pathlib import Path

# A record is a few KB; a longer "line" is not a record and is not buffered whole.
MAX_LINE = 4 * 1024 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Problem:
    """A line that is not a usable record."""

    line: int  # 1-based
    offset: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Entry:
    line: int
    offset: int
    record: dict


def record_problem(obj: object) -> str | None:
    """Why a parsed JSON value is not a tunnel record (design.md), or None."""
    if type(obj) is not dict:
        return f"not a tunnel record (a JSON {type(obj).__name__})"
    connect = obj.get("connect")
    if type(connect) is not dict or type(connect.get("host")) is not str:
        return "not a tunnel record (no connect.host)"
    if type(obj.get("handshake")) is not dict:
        return "not a tunnel record (no handshake)"
    if type(obj.get("findings", [])) is not list:
        return "not a tunnel record (findings is not a list)"
    if type(obj.get("started")) is not str:
        return "not a tunnel record (no started time)"
    return None


# json.loads() on bytes spends a third of its time finding the encoding and checking
# for trailing data; opening a 100k-line file calls it 100k times. The C scanner it
# uses underneath (json.scanner.make_scanner is c_make_scanner on CPython) does the same parse.
# typeshed types the context as a scanner; the C code reads only a decoder's attributes.
_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def parse_line(raw: bytes) -> dict | str:
    """A record, or the reason the line is not one."""
    try:
        text = raw.decode("utf-8").strip()
        obj, end = _scan(text, 0)
    except StopIteration as e:
        where = "the line is empty" if not text else f"expecting a value at column {e.value + 1}"
        return f"not JSON ({where})"
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        return f"not JSON ({_short(e)})"
    if end != len(text):
        return f"not JSON (extra data at column {end + 1})"
    return record_problem(obj) or obj


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 80 else text[:77] + "..."


class JsonlReader:
    """Incremental reader of one JSON Lines file; not thread-safe except `record_at`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        st = os.fstat(self._f.fileno())
        self._ino = (st.st_dev, st.st_ino)
        self.offset = 0  # where the next unread line starts
        self.lines = 0  # lines consumed (complete, or given up on)
        self._partial = b""

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def size(self) -> int:
        return os.fstat(self._f.fileno()).st_size

    def read(self, final: bool = True) -> Iterator[Entry | Problem]:
        """Entries and problems for every line written since the last call.

        A last line without its newline is kept back for the next call (a writer may
        be mid-line) unless `final`: then it is parsed, and a truncated one is a
        Problem rather than an error.
        """
        f = self._f
        while raw := f.readline(MAX_LINE + 1):
            line, start = self._partial + raw, self.offset
            if not raw.endswith(b"\n"):
                if len(line) <= MAX_LINE:
                    self._partial = line
                    break  # end of file in the middle of a line
                # Too long to be a record: skip to the end of the line.
                self._partial = b""
                self.offset += len(line) + self._skip_line()
                self.lines += 1
                yield Problem(self.lines, start, f"longer than {MAX_LINE} bytes, skipped")
                continue
            self._partial = b""
            self.offset += len(line)
            self.lines += 1
            if line.strip():
                yield self._entry(self.lines, start, line)
        if final and self._partial:
            line, start = self._partial, self.offset
            self._partial = b""
            self.offset += len(line)
            self.lines += 1
            entry = self._entry(self.lines, start, line)
            if isinstance(entry, Problem):
                entry = Problem(
                    entry.line, start,
                    f"truncated last line ({len(line)} bytes, no newline): ignored",
                )
            yield entry

    def _skip_line(self) -> int:
        skipped = 0
        while chunk := self._f.readline(_CHUNK):
            skipped += len(chunk)
            if chunk.endswith(b"\n"):
                break
        return skipped

    @staticmethod
    def _entry(line_no: int, start: int, line: bytes) -> Entry | Problem:
        parsed = parse_line(line)
        if isinstance(parsed, str):
            return Problem(line_no, start, parsed)
        return Entry(line_no, start, parsed)

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished last line held back."""
        return len(self._partial)

    def changed_under_us(self) -> str | None:
        """Why following must stop (the file shrank or was replaced), or None."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"{self.path} was removed"
        if (st.st_dev, st.st_ino) != self._ino:
            return f"{self.path} was replaced by another file"
        if st.st_size < self.offset + len(self._partial):
            return f"{self.path} shrank (truncated by another program)"
        return None

    def record_at(self, offset: int) -> dict:
        """The record on the line starting at `offset`. Thread-safe (pread).

        Raises ValueError if the line there is not a record (the file changed).
        """
        fd = self._f.fileno()
        buf = b""
        pos = offset
        while b"\n" not in buf and len(buf) <= MAX_LINE:
            chunk = os.pread(fd, _CHUNK, pos)
            if not chunk:
                break
            buf += chunk
            pos += len(chunk)
        parsed = parse_line(buf.split(b"\n", 1)[0])
        if isinstance(parsed, str):
            raise ValueError(f"{self.path} at byte {offset}: {parsed}")
        return parsed


def read_records(path: str | Path) -> tuple[list[dict], list[Problem]]:
    """Every record of a finished file, and the problems found. For small files."""
    records: list[dict] = []
    problems: list[Problem] = []
    with JsonlReader(path) as r:
        for item in r.read(final=True):
            if isinstance(item, Entry):
                records.append(item.record)
            else:
                problems.append(item)
    return records, problems
