"""Where the UI's records come from: the live proxy's process, or recorded JSON Lines files.

A feed is any object with

    async start(on_record) -> str   # begin delivering; returns a status text such as
                                    # "listening on 127.0.0.1:8080"; raises with a
                                    # clear message if it cannot start
    async stop() -> None
    read_record(ref) -> dict        # the full record again: the UI keeps only the ref
    stats() -> dict                 # optional: shown in the header
    async ended() -> str | None     # optional: see InspectorApp

`on_record(record, ref)` may be called from any thread, once per finished record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from inspector.records.escape import safe
from inspector.records.jsonl import Entry, JsonlReader

log = logging.getLogger(__name__)

OnRecord = Callable[[dict, int], None]

# Problems in a file are reported one by one up to this many, then only counted.
PROBLEMS_REPORTED = 20
# A message from the proxy's process is a line of figures or one log entry.
MAX_MESSAGE = 1 << 20


class FeedError(Exception):
    """A feed cannot start; the message is one sentence for the user."""


@runtime_checkable
class Feed(Protocol):
    async def start(self, on_record: OnRecord) -> str: ...

    async def stop(self) -> None: ...

    def read_record(self, ref: int) -> dict: ...


class ProxyFeed:
    """The live proxy, running in its own process (inspector/run/uihost.py).

    Over `sock` (one JSON object per line) the proxy sends where it listens and the
    path of its record spool first, then its header figures, its log entries, and
    `quit`. The records themselves are read from the spool as `open --follow` reads a
    file (a FileFeed), so the UI keeps only offsets and a new UI sees every record
    from the first. `ended()` returns None when the proxy asks the UI to quit, or one
    sentence when the proxy went away without asking.
    """

    empty_text = "no tunnels yet: point a client's HTTPS proxy at the address above"

    def __init__(self, sock: socket.socket, poll_interval: float = 0.05) -> None:
        self._sock = sock
        self._poll_interval = poll_interval
        self._records: FileFeed | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task | None = None
        self._end: asyncio.Future[str | None] | None = None
        self._stats: dict = {}

    async def start(self, on_record: OnRecord) -> str:
        self._end = asyncio.get_running_loop().create_future()
        reader, self._writer = await asyncio.open_unix_connection(sock=self._sock, limit=MAX_MESSAGE)
        hello = await self._message(reader)
        if hello is None or not isinstance(hello.get("spool"), str):
            raise FeedError("the proxy process ended before the UI could start")
        self._records = FileFeed(hello["spool"], follow=True, poll_interval=self._poll_interval)
        await self._records.start(on_record)
        self._listener = asyncio.create_task(self._listen(reader))
        return safe(str(hello.get("source")))  # as every feed's status: never raw text

    async def _message(self, reader: asyncio.StreamReader) -> dict | None:
        """The next message; None at the end of the stream (the proxy is gone)."""
        while True:
            try:
                line = await reader.readline()
            except (OSError, ValueError) as e:  # ValueError: a line over MAX_MESSAGE
                log.warning("the proxy's message could not be read: %s", e)
                return None
            if not line:
                return None
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("a message from the proxy is not JSON: %s", safe(line[:80]))
                continue
            if isinstance(message, dict):
                return message

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        assert self._end is not None
        while (message := await self._message(reader)) is not None:
            if isinstance(message.get("stats"), dict):
                self._stats = message["stats"]
            if isinstance(entry := message.get("log"), list) and len(entry) == 3:
                level, name, text = entry
                logging.getLogger(str(name)).log(int(level), "%s", text)
            if message.get("quit"):
                break
        else:
            self._remove_spool()
            if not self._end.done():
                self._end.set_result("the proxy process ended unexpectedly: no new tunnels "
                                     "can be shown (those so far are in --jsonl, if it was given)")
            return
        if not self._end.done():
            self._end.set_result(None)

    def _remove_spool(self) -> None:
        """A proxy that died left its spool behind: this UI is the last to use it (the
        open file stays readable), so remove it and its private directory."""
        assert self._records is not None
        try:
            self._records.path.unlink()
            self._records.path.parent.rmdir()
        except OSError as e:
            log.warning("could not remove %s: %s", safe(self._records.path), e.strerror or e)

    async def ended(self) -> str | None:
        assert self._end is not None
        return await self._end

    def read_record(self, ref: int) -> dict:
        assert self._records is not None
        return self._records.read_record(ref)

    def stats(self) -> dict:
        loading = self._records.stats().get("loading") if self._records else None
        return {**self._stats, "loading": loading} if loading else dict(self._stats)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self._records is not None:
            await self._records.stop()
        if self._writer is not None:
            self._writer.close()


class FileFeed:
    """Recorded streams (`tunnel-inspector open FILE... [--follow]`).

    Several files (one per CI runner or per proxy) make one view: what they hold at
    start is shown sorted by the records' start times, what is appended later (with
    `follow`) as it comes, each poll's batch sorted too. A record from one of several files carries its
    file's name as `source`. A reader thread parses the files and hands records over
    as it goes, so the first screen does not wait for the whole set. A bad line
    (garbled, truncated, not a record) is logged as a warning with its file and line
    number and skipped. With `follow`, the files are polled like `tail -f` every
    `poll_interval` seconds (0.05-2).
    """

    @property
    def empty_text(self) -> str:
        if not self.loaded.is_set():
            return "reading…"
        return ("no tunnel records yet: waiting for the file to grow" if self.follow
                else "no tunnel records in this file")

    def __init__(self, *paths: str | Path, follow: bool = False, poll_interval: float = 0.25) -> None:
        if not paths:
            raise ValueError("FileFeed needs at least one file")
        self.paths = [Path(p) for p in paths]
        self.path = self.paths[0]
        self.follow = follow
        self.poll_interval = min(max(poll_interval, 0.05), 2.0)
        self._readers: list[JsonlReader] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.records = 0
        self.problems = 0
        self.loaded = threading.Event()  # the files as they were at start have been read

    async def start(self, on_record: OnRecord) -> str:
        for path in self.paths:
            try:
                self._readers.append(JsonlReader(path))
            except OSError as e:
                self._close()
                raise FeedError(f"cannot open {safe(path)}: {e.strerror or e}") from None
        self._thread = threading.Thread(
            target=self._run, args=(on_record,), name="tunnel-inspector-file", daemon=True
        )
        self._thread.start()
        for path in self.paths:
            log.info("reading %s", safe(path.resolve()))
        if len(self.paths) == 1:
            return f"{'following' if self.follow else 'file'} {safe(self.path.name)}"
        return f"{'following' if self.follow else 'reading'} {len(self.paths)} files"

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        self._close()

    def _close(self) -> None:
        for reader in self._readers:
            reader.close()

    def read_record(self, ref: int) -> dict:
        index, offset = ref % len(self.paths), ref // len(self.paths)
        return self._sourced(index, self._readers[index].record_at(offset))

    def _sourced(self, index: int, record: dict) -> dict:
        if len(self.paths) > 1:
            record["source"] = self.paths[index].name
        return record

    def stats(self) -> dict:
        if len(self._readers) != len(self.paths):
            return {}
        if not self.loaded.is_set():
            size = sum(r.size for r in self._readers)
            done = sum(r.offset for r in self._readers) / size if size else 1.0
            return {"loading": f"{done:.0%}"}
        out: dict[str, object] = {"problem lines": self.problems} if self.problems else {}
        pending = sum(r.pending_bytes for r in self._readers)
        if self.follow and pending:
            out["partial line"] = f"{pending} bytes"
        return out

    def _run(self, on_record: OnRecord) -> None:
        started = time.monotonic()
        followed = list(range(len(self._readers)))
        try:
            self._deliver(on_record, final=not self.follow)
            self.loaded.set()
            log.info("%s: %d records read in %.1f s%s", self._names(), self.records,
                     time.monotonic() - started,
                     f", {self.problems} lines skipped" if self.problems else "")
            if self.problems > PROBLEMS_REPORTED:
                log.warning("%s: %d lines skipped in all (the first %d are listed)",
                            self._names(), self.problems, PROBLEMS_REPORTED)
            while self.follow and followed and not self._stop.wait(self.poll_interval):
                for index in list(followed):
                    why = self._readers[index].changed_under_us()
                    if why is not None:
                        log.warning("stopped following: %s", safe(why))
                        followed.remove(index)
                self._deliver(on_record, final=False, only=followed)
        except OSError as e:
            log.error("reading %s failed: %s", self._names(), e.strerror or e)
        except Exception:  # a bug must reach the event log, not die with the thread
            log.exception("reading %s stopped", self._names())
        finally:
            self.loaded.set()

    def _names(self) -> str:
        return ", ".join(safe(p.name) for p in self.paths)

    def _deliver(self, on_record: OnRecord, final: bool, only: list[int] | None = None) -> None:
        """What the files hold now. One file: in file order, as it is read (the first
        screen does not wait for the rest). Several: sorted by start time first (a
        file is in the order tunnels ended, so a merge of the files would not be)."""
        indexes = range(len(self._readers)) if only is None else only
        n = len(self.paths)
        items: Iterator = (item for i in indexes for item in self._entries(i, final))
        if n > 1:
            items = iter(sorted(items, key=lambda item: item[0]))
        for _, index, entry in items:
            if self._stop.is_set():
                return
            self.records += 1
            on_record(self._sourced(index, entry.record), entry.offset * n + index)

    def _entries(self, index: int, final: bool):
        for item in self._readers[index].read(final=final):
            if self._stop.is_set():
                return
            if isinstance(item, Entry):
                yield item.record["started"], index, item
            else:
                self.problems += 1
                if self.problems <= PROBLEMS_REPORTED:
                    log.warning("%s %s", safe(self.paths[index].name), item)
