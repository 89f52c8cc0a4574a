"""Where the UI's records come from: the live proxy, or a recorded JSON Lines file.

A feed is any object with

    async start(on_record) -> str   # begin delivering; returns a status text such as
                                    # "listening on 127.0.0.1:8080"; raises with a
                                    # clear message if it cannot start
    async stop() -> None
    stats() -> dict                 # optional: shown in the header

`on_record(record)` may be called from any thread, once per finished record. A feed
that can read a record again (a file) passes a second argument, `ref`, and implements
`read_record(ref) -> dict`; the UI then keeps only the ref. Otherwise the UI spools it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from inspector.records.escape import safe
from inspector.records.jsonl import Entry, JsonlReader
from inspector.records.record import host_port
from inspector.records.stream import RecordStream

log = logging.getLogger(__name__)

OnRecord = Callable[..., None]

# Problems in a file are reported one by one up to this many, then only counted.
PROBLEMS_REPORTED = 20


class FeedError(Exception):
    """A feed cannot start; the message is one sentence for the user."""


@runtime_checkable
class Feed(Protocol):
    async def start(self, on_record: OnRecord) -> str: ...

    async def stop(self) -> None: ...


class ProxyFeed:
    """The proxy, running inside the UI's own event loop (one process, one loop).

    Records come from the addon's RecordStream; the UI subscribes before the proxy
    listens, so no tunnel is missed. `stats()` merges the `stats()` of every addon
    that has one (the chain prober reports probes in flight and cache hits there).
    """

    def __init__(self, addons: list, options: dict, stream: RecordStream, *,
                 intercept: bool = False) -> None:
        from inspector.mitm.embed import Proxy  # mitmproxy: not imported by `open`

        self._addons = addons
        self._stream = stream
        self._proxy = Proxy(addons, options, intercept=intercept)
        self._sink: OnRecord | None = None
        self.address: tuple[str, int] | None = None  # where it listens, once started

    async def start(self, on_record: OnRecord) -> str:
        self._sink = on_record
        self._stream.subscribe(on_record)
        try:
            host, port = await self._proxy.start()
        except BaseException:
            self._stream.unsubscribe(on_record)
            raise
        self.address = (host, port)
        return f"listening on {host_port(host, port)}"

    async def stop(self) -> None:
        await self._proxy.stop()
        if self._sink is not None:
            self._stream.unsubscribe(self._sink)

    def stats(self) -> dict:
        merged: dict = {}
        for addon in self._addons:
            stats = getattr(addon, "stats", None)
            if callable(stats):
                merged.update(stats())
        return merged


class FileFeed:
    """A recorded stream (`tunnel-inspector open FILE.jsonl [--follow]`).

    A reader thread parses the file and hands records over as it goes, so the first
    screen does not wait for the whole file. A bad line (garbled, truncated, not a
    record) is logged as a warning with its line number and skipped. With `follow`,
    the file is polled like `tail -f` every `poll_interval` seconds (0.05-2).
    """

    def __init__(self, path: str | Path, follow: bool = False, poll_interval: float = 0.25) -> None:
        self.path = Path(path)
        self.follow = follow
        self.poll_interval = min(max(poll_interval, 0.05), 2.0)
        self._reader: JsonlReader | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.records = 0
        self.problems = 0
        self.loaded = threading.Event()  # the file as it was at start has been read

    async def start(self, on_record: OnRecord) -> str:
        try:
            self._reader = JsonlReader(self.path)
        except OSError as e:
            raise FeedError(f"cannot open {safe(self.path)}: {e.strerror or e}") from None
        self._thread = threading.Thread(
            target=self._run, args=(on_record,), name="tunnel-inspector-file", daemon=True
        )
        self._thread.start()
        log.info("reading %s", safe(self.path.resolve()))
        return f"{'following' if self.follow else 'file'} {safe(self.path.name)}"

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self._reader is not None:
            self._reader.close()

    def read_record(self, ref: int) -> dict:
        assert self._reader is not None
        return self._reader.record_at(ref)

    def stats(self) -> dict:
        if self._reader is None:
            return {}
        if not self.loaded.is_set():
            size = self._reader.size
            done = self._reader.offset / size if size else 1.0
            return {"loading": f"{done:.0%}"}
        out = {"problem lines": self.problems} if self.problems else {}
        if self.follow and self._reader.pending_bytes:
            out["partial line"] = f"{self._reader.pending_bytes} bytes"
        return out

    def _run(self, on_record: OnRecord) -> None:
        reader = self._reader
        assert reader is not None
        started = time.monotonic()
        try:
            self._read(on_record, final=not self.follow)
            self.loaded.set()
            log.info("%s: %d records read in %.1f s%s", safe(self.path.name), self.records,
                     time.monotonic() - started,
                     f", {self.problems} lines skipped" if self.problems else "")
            if self.problems > PROBLEMS_REPORTED:
                log.warning("%s: %d lines skipped in all (the first %d are listed)",
                            safe(self.path.name), self.problems, PROBLEMS_REPORTED)
            while self.follow and not self._stop.wait(self.poll_interval):
                why = reader.changed_under_us()
                if why is not None:
                    log.warning("stopped following: %s", safe(why))
                    return
                self._read(on_record, final=False)
        except OSError as e:
            log.error("reading %s failed: %s", safe(self.path), e.strerror or e)
        except Exception:  # a bug must reach the event log, not die with the thread
            log.exception("reading %s stopped", safe(self.path))
        finally:
            self.loaded.set()

    def _read(self, on_record: OnRecord, final: bool) -> None:
        assert self._reader is not None
        for item in self._reader.read(final=final):
            if self._stop.is_set():
                return
            if isinstance(item, Entry):
                self.records += 1
                on_record(item.record, item.offset)
            else:
                self.problems += 1
                if self.problems <= PROBLEMS_REPORTED:
                    log.warning("%s %s", safe(self.path.name), item)
