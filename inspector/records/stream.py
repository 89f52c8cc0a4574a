"""The record stream: finished records fan out to sinks (JSON Lines, stdout, UI).

A sink is any callable taking a record dict. A sink that fails is logged and kept
out of the way of the others: losing the screen must not lose the file.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import stat
import sys
import threading
from collections import Counter
from collections.abc import Callable

from inspector.findings.codes import SEVERITY_RANK
from inspector.records import text
from inspector.records.escape import safe
from inspector.records.record import dumps, host_port
from inspector.records.schema import Record

log = logging.getLogger(__name__)

Sink = Callable[[Record], None]


class RecordStream:
    def __init__(self) -> None:
        self._sinks: list[Sink] = []

    def subscribe(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def unsubscribe(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def publish(self, record: Record) -> None:
        for sink in list(self._sinks):
            try:
                sink(record)
            except Exception:
                log.exception("record sink %r failed for tunnel %s", sink, record.get("id"))


class LineFile:
    """Appends whole lines to a file: each line lands whole, or not at all.

    A full disk can take the first part of a write and refuse the rest; left there,
    that fragment would glue the next line onto itself (two records, one invalid line).
    So a failed append cuts the file back to where it ended before (ftruncate); where
    that cannot be done (a pipe, another writer appended meanwhile) the next line starts
    with a newline instead. A file that already ends in a torn line (a writer killed
    mid-line) is likewise continued on a new line: the torn line stays as it was.
    """

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        st = os.fstat(fd)
        self._regular = stat.S_ISREG(st.st_mode)  # only a regular file can be cut back
        self._torn = self._regular and st.st_size > 0 and _last_byte(path, st.st_size) != b"\n"

    def append(self, line: bytes) -> None:
        """Append `line` (newline-terminated) whole, or raise OSError having taken back
        what went in (if that cannot be done, the next line starts on a new line)."""
        data = memoryview(b"\n" + line if self._torn else line)
        start = os.fstat(self.fd).st_size if self._regular else None
        done = 0
        try:
            while done < len(data):
                n = os.write(self.fd, data[done:])
                if n <= 0:  # never seen for a file, but a zero write must not loop forever
                    raise OSError(errno.EIO, "the file accepted no bytes")
                done += n
        except OSError:
            if done:
                self._take_back(start, data[:done])
            raise
        self._torn = False

    def _take_back(self, start: int | None, fragment: memoryview) -> None:
        if start is not None:
            try:
                if os.fstat(self.fd).st_size == start + len(fragment):  # nobody wrote after us
                    os.ftruncate(self.fd, start)
                    os.lseek(self.fd, start, os.SEEK_SET)  # without O_APPEND: no hole next time
                    return
            except OSError as e:
                log.debug("could not cut back a partial line: %s", e)
        self._torn = fragment[-1:] != b"\n"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _last_byte(path: str, size: int) -> bytes | None:
    """The file's last byte, or None if it cannot be read (a write-only file: the
    caller then starts on a new line, as an empty line loses nothing and a glued one does)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.pread(fd, 1, size - 1)
    finally:
        os.close(fd)


class JsonlSink:
    """Appends one line per record, whole or not at all, on an O_APPEND file.

    One write per line keeps lines whole for concurrent readers (`open --follow`,
    `tail -f`); the file is unbuffered, so a record is on disk-cache when published.
    Created 0600: records name hosts and clients. A record that cannot be written (a
    full disk) is counted in `not_written`, with the first reason in `error`; the
    first one is logged, once: a warning per record would bury everything else.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = LineFile(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), path)
        self.not_written = 0
        self.error: str | None = None

    def __call__(self, record: Record) -> None:
        try:
            self._file.append(dumps(record).encode("ascii"))
        except OSError as e:
            self.not_written += 1
            if self.error is None:
                self.error = e.strerror or str(e)
                log.warning("cannot write records to %s: %s; records are being lost (the "
                            "summary at exit counts them)", safe(self.path), self.error)

    def close(self) -> None:
        self._file.close()


class Summary:
    """Counts for the closing line, and what CI gating (--fail-on) needs per host."""

    def __init__(self) -> None:
        self.tunnels = 0
        self.flagged = 0
        self.codes: Counter[str] = Counter()
        self.by_host: dict[str, dict[str, str]] = {}  # host:port -> {code: severity}

    def __call__(self, record: Record) -> None:
        self.tunnels += 1
        self.flagged += bool(record.get("flagged"))
        findings = record.get("findings") or []
        self.codes.update(f["code"] for f in findings)
        if findings:
            key = host_port(record["connect"]["host"], record["connect"]["port"])
            self.by_host.setdefault(key, {}).update((f["code"], f["severity"]) for f in findings)

    def line(self) -> str:
        codes = ", ".join(f"{c} {n}" for c, n in self.codes.most_common())
        return (f"{text.plural(self.tunnels, 'tunnel')}, {self.flagged} flagged"
                + (f" ({codes})" if codes else ""))

    def failing(self, threshold: str) -> dict[str, list[str]]:
        """Hosts with a finding at `threshold` severity or worse, and those codes."""
        rank = SEVERITY_RANK[threshold]
        out = {}
        for host, codes in self.by_host.items():
            bad = sorted(c for c, sev in codes.items() if SEVERITY_RANK[sev] >= rank)
            if bad:
                out[host] = bad
        return out


class LinePrinter:
    """Headless lines on stdout without letting a slow reader stall the proxy.

    print() on a full pipe blocks, and with it the proxy's one event loop: every tunnel
    would freeze because nobody reads stdout (seen: a benchmark that read only the first
    line hung the proxy after ~500 tunnels). Lines go through a bounded queue to a
    writer thread; a reader that falls that far behind loses lines, counted and
    reported at exit. The records themselves still reach --jsonl in full.
    """

    def __init__(self, colour: bool = False, capacity: int = 10000, out=None) -> None:
        self._out = out or sys.stdout
        self._colour = colour
        self._queue: queue.Queue[str | None] = queue.Queue(capacity)
        self.dropped = 0
        self._thread = threading.Thread(target=self._write, name="headless-lines", daemon=True)
        self._thread.start()

    def __call__(self, record: Record) -> None:
        try:
            self._queue.put_nowait(text.line(record, self._colour))
        except queue.Full:
            self.dropped += 1

    def _write(self) -> None:
        while (line := self._queue.get()) is not None:
            self._out.write(line + "\n")
            if self._queue.empty():
                self._out.flush()
        self._out.flush()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (waiting at most `timeout` for a slow reader)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        if self.dropped:
            print(f"tunnel-inspector: {self.dropped} lines not printed: stdout was not being "
                  "read fast enough (the --jsonl records are complete)", file=sys.stderr)
