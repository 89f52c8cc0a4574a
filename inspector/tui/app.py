"""The Textual app: tunnels appear live, broken ones stand out, enter says why.

Records reach the screen in batches: `_on_record` (any thread) turns a record into a
compact row and appends it to a deque; a timer applies everything waiting in one
model update and one redraw every `flush_interval` seconds. Nothing is drawn per
record, and no widget is rebuilt when the filter changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import gc
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from inspector.records.escape import safe
from inspector.records.export import export_flagged
from inspector.records.text import plural
from inspector.tui.detail import DetailPane
from inspector.tui.eventlog import EventLog, LogRouter, default_log_path
from inspector.tui.feeds import Feed
from inspector.tui.header import Status, StatusHeader, status_text
from inspector.tui.hosts import HostsTable
from inspector.tui.messages import (
    HostChosen,
    SearchChanged,
    TunnelChosen,
    TunnelHighlighted,
)
from inspector.tui.model import RecordError, RowBuilder, TunnelModel, TunnelRow
from inspector.tui.search import SearchBar
from inspector.tui.table import TunnelTable

log = logging.getLogger(__name__)

# One flush applies at most this many rows, so opening a big file never freezes the
# screen for long; the rest waits for the next tick.
MAX_ROWS_PER_FLUSH = 25_000
# Rows live as long as the session, and so does what the UI made at start (modules,
# widgets, styles). Python's full garbage collection walks every tracked object: under
# a flood of tunnels it took 35-60 ms of CPU at 6k rows (120-270 ms at 100k), and a key
# pressed meanwhile waited for it. After the first frame, and each time this many rows
# were added, garbage is collected and what is left is moved out of the collector's
# sight (gc.freeze), so a collection walks only what came since: ~5 ms at this many
# rows. Collected first, because frozen garbage is never freed: under a flood, 3-7
# thousand unreachable objects were waiting at each freeze. Rows hold no reference
# cycles, so frozen ones are still freed on clear.
GC_FREEZE_ROWS = 2_000
# What is alive at a freeze and dies later in a reference cycle is never freed either:
# ~70 KB each time (Textual's cached lines). Every this many freezes, everything is
# unfrozen and collected once, so at most ~2 MB is held that way, for one full pass
# (0.1-0.3 s at 50-100k rows) every 50k rows.
GC_FULL_EVERY = 25
# Rows counted into the hosts view per idle tick (about 10 ms at 5k).
HOSTS_PER_IDLE_FLUSH = 5_000
# While rows keep coming, they are applied at most this often (s): every other tick of
# the 0.15 s timer. While following, each apply repaints the whole table (it scrolls),
# ~6 ms of CPU at 160x45, and a key pressed meanwhile waits for it; a lone row after a
# quiet spell still shows at the next tick.
APPLY_GAP = 0.25
# After a key, rows wait this long (s), so the key's redraw is drawn alone.
KEY_FIRST = 0.1
# Warnings logged while the event log is hidden show as a toast, at most this often (s).
TOAST_EVERY = 3.0
class _Default(enum.Enum):
    LOG_PATH = enum.auto()


_DEFAULT: Final = _Default.LOG_PATH


class InspectorApp(App[int]):
    """`InspectorApp(feed, export_dir=Path)`; see feeds.py for what a feed is.

    On a feed that fails to start the app exits with return code 2, and
    `start_error` holds the reason for the caller to print (run/ui.py does). A feed
    with `async ended() -> str | None` ends the app when it returns: in order (None,
    the proxy asked), or lost (return code 1, the reason in `feed_lost`).
    """

    CSS_PATH = "app.tcss"
    TITLE = "tunnel-inspector"
    AUTO_FOCUS = "#tunnels"
    BINDINGS = [
        Binding("f", "toggle_flagged", "Flagged"),
        Binding("slash", "search", "Search"),
        Binding("h", "toggle_hosts", "Hosts"),
        Binding("p", "toggle_pause", "Pause"),
        Binding("c", "clear", "Clear"),
        Binding("e", "export", "Export"),
        Binding("l", "toggle_log", "Log"),
        Binding("escape", "back", "Back", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, feed: Feed, export_dir: Path | None = None, *,
                 log_path: Path | None | _Default = _DEFAULT, flush_interval: float = 0.15) -> None:
        """log_path: where log records go while the UI runs (default: the user's state
        directory; None: the event-log panel only)."""
        super().__init__()
        self.feed = feed
        self.export_dir = Path(export_dir) if export_dir is not None else Path.cwd()
        self.flush_interval = flush_interval
        self.model = TunnelModel()
        self.status = Status()
        self.paused = False
        self.start_error: str | None = None
        self.feed_lost: str | None = None
        self.last_export: tuple[Path, int] | None = None
        self._builder = RowBuilder()
        self._pending: deque[TunnelRow] = deque()
        self._lock = threading.Lock()  # pending, against a feed thread
        self._router = LogRouter(default_log_path() if log_path is _DEFAULT else log_path)
        self._feed_started = False
        self._stopped = False
        self._widgets: dict = {}
        self._frozen_at = 0
        self._freezes = 0
        self._next_apply = 0.0  # monotonic time before which rows wait (APPLY_GAP, KEY_FIRST)
        self._last_toast = -TOAST_EVERY
        self._status_shown: Text | None = None
        self._unseen_warnings = 0

    # --- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield SearchBar(id="search")
        table = TunnelTable(self.model, id="tunnels")
        if len(getattr(self.feed, "paths", ())) > 1:
            table.show_source()
        yield table
        yield HostsTable(self.model, id="hosts")
        yield DetailPane(id="detail")
        yield EventLog(id="eventlog")
        yield Footer()

    @property
    def waiting(self) -> int:
        """Rows received but not applied yet (paused, or until the next tick)."""
        return len(self._pending)

    @property
    def table(self) -> TunnelTable:
        return self._widgets["tunnels"]

    @property
    def hosts(self) -> HostsTable:
        return self._widgets["hosts"]

    @property
    def detail(self) -> DetailPane:
        return self._widgets["detail"]

    @property
    def search_bar(self) -> SearchBar:
        return self._widgets["search"]

    def on_mount(self) -> None:
        # Kept, not queried: timers and messages may still arrive while the screen is
        # being torn down, when a query would find nothing.
        self._widgets = {w.id: w for w in self.query(
            "#tunnels, #hosts, #detail, #search, #eventlog, #status")}
        self.watch(self.table, "follow", self._render_status, init=False)
        self._router.install()
        if self._router.file_error:
            log.warning("%s", self._router.file_error)
        elif self._router.log_path is not None:
            log.info("log file: %s", self._router.log_path)
        self.set_interval(self.flush_interval, self.flush)
        self._catch_sigterm(True)
        self._render_status()
        self.call_after_refresh(self._settle_garbage)
        self.run_worker(self._start_feed(), name="feed start", exit_on_error=False)

    async def _start_feed(self) -> None:
        try:
            self.status.source = await self.feed.start(self._on_record)
        except Exception as e:  # any feed: its failure is the user's answer, not a crash
            self.start_error = " ".join(str(e).split()) or type(e).__name__  # one line
            log.error("cannot start: %s", self.start_error)
            self.status.source, self.status.failed = f"failed: {self.start_error}", True
            self._render_status()
            self.exit(return_code=2)  # the caller says why, on the restored terminal (run.py)
            return
        self._feed_started = True
        log.info("%s", self.status.source)
        self._render_status()
        ended = getattr(self.feed, "ended", None)
        if callable(ended):
            self.run_worker(self._until_feed_ends(ended()), name="feed end", exit_on_error=False)

    async def _until_feed_ends(self, ended: Awaitable[str | None]) -> None:
        lost = await ended
        if lost is None:
            await self.action_quit()
            return
        self.feed_lost = " ".join(lost.split())
        log.error("%s", self.feed_lost)
        await self._stop_feed()
        self.exit(return_code=1)  # the caller says why, on the restored terminal

    async def _stop_feed(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._feed_started:
            try:
                await self.feed.stop()
            except Exception:  # stopping must go on: the terminal has to be restored
                log.exception("stopping the feed failed")
        self._catch_sigterm(False)
        self._router.uninstall()

    def _catch_sigterm(self, on: bool) -> None:
        """SIGTERM ends the UI like q does: feed stopped, terminal restored."""
        loop = asyncio.get_running_loop()
        try:
            if on:
                loop.add_signal_handler(signal.SIGTERM, lambda: self.call_later(self.action_quit))
            else:
                loop.remove_signal_handler(signal.SIGTERM)
        except (ValueError, RuntimeError, NotImplementedError):
            pass  # not the main thread, or no signals on this platform: the default applies

    async def on_unmount(self) -> None:
        await self._stop_feed()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded:
            # Keys before rows: a repaint for rows would delay the key's own redraw.
            self._next_apply = max(self._next_apply, time.monotonic() + KEY_FIRST)
        await super().on_event(event)

    async def action_quit(self) -> None:
        await self._stop_feed()
        self.exit(return_code=0)

    # --- records in -------------------------------------------------------------------

    def _on_record(self, record: Mapping[str, Any], ref: int) -> None:
        """The feed's callback. Any thread; cheap: build a row, queue it."""
        try:
            row = self._builder.build(record, ref)
        except RecordError as e:
            rid = record.get("id") if isinstance(record, dict) else "?"
            log.warning("tunnel %s skipped: %s", safe(rid), e)
            return
        with self._lock:
            self._pending.append(row)

    def flush(self) -> None:
        """Apply what arrived since the last tick, in one update."""
        self._drain_log()
        now = time.monotonic()
        if not self.paused and self._pending and now >= self._next_apply:
            pending = self._pending
            batch = [pending.popleft() for _ in range(min(len(pending), MAX_ROWS_PER_FLUSH))]
            self._apply(batch)
            self._next_apply = now + APPLY_GAP
        elif self.model.hosts_behind:
            # Idle: count rows into the hosts view a slice at a time, so `h` is instant.
            self.model.catch_up_hosts(HOSTS_PER_IDLE_FLUSH)
        self.status.waiting = self.waiting
        self.status.stats = self._feed_stats()
        self._render_status()

    def _apply(self, batch: list[TunnelRow]) -> None:
        if self.model.add(batch):
            self.table.rows_added()
        if self.hosts.display:
            self.hosts.reload()
        if len(self.model.rows) - self._frozen_at >= GC_FREEZE_ROWS:
            self._frozen_at = len(self.model.rows)
            self.call_after_refresh(self._settle_garbage)  # the rows on screen first

    def _settle_garbage(self) -> None:
        """See GC_FREEZE_ROWS and GC_FULL_EVERY."""
        self._freezes += 1
        if self._freezes % GC_FULL_EVERY == 0:
            gc.unfreeze()
        gc.collect()
        gc.freeze()

    def _feed_stats(self) -> dict:
        stats = getattr(self.feed, "stats", None)
        return dict(stats()) if callable(stats) else {}

    def _drain_log(self) -> None:
        entries, dropped = self._router.drain()
        if not entries and not dropped:
            return
        panel = self._widgets["eventlog"]
        for level, text in entries:
            panel.add(level, text)
        if dropped:
            panel.add(logging.WARNING, f"({dropped} log entries dropped here; the log file has them)")
        warnings = [text for level, text in entries if level >= logging.WARNING]
        self._unseen_warnings += len(warnings)
        now = time.monotonic()
        # One toast at a time, at most every few seconds: a log storm stays in the panel.
        if warnings and not panel.display and now - self._last_toast >= TOAST_EVERY:
            more = self._unseen_warnings - 1
            tail = f" (+{more} more: l shows the event log)" if more else ""
            self.notify(warnings[-1].split(": ", 1)[-1] + tail, severity="warning", markup=False)
            self._last_toast, self._unseen_warnings = now, 0

    def _render_status(self) -> None:
        self.status.view = "hosts" if self.hosts.display else "tunnels"
        self.status.paused = self.paused
        self.status.follow = self.table.follow
        text = status_text(self.model, self.status)
        if text != self._status_shown:  # most ticks change nothing; the size never changes
            self._widgets["status"].update(text, layout=False)
            self._status_shown = text
        self._say_why_empty()

    def _say_why_empty(self) -> None:
        """What a table with no row to show says: that the filter hides every row, that
        rows wait (paused, or until the next tick), or the feed's own word (no tunnel
        yet, an empty file, a file still being read)."""
        waiting = len(self._pending)
        if self.model.rows:
            tunnels = hosts = "nothing matches the filter (see the header)"
        elif waiting and self.paused:
            tunnels = hosts = f"{plural(waiting, 'tunnel')} waiting: p shows them"
        elif waiting:
            tunnels = hosts = "reading…"
        else:
            tunnels = getattr(self.feed, "empty_text", TunnelTable.EMPTY_TEXT)
            hosts = HostsTable.EMPTY_TEXT
        self.table.set_empty_text(tunnels)
        self.hosts.set_empty_text(hosts)

    # --- full records -----------------------------------------------------------------

    def record_for(self, row: TunnelRow) -> dict:
        """The full record behind a row, read again from the feed (a file, the proxy's spool)."""
        record = self.feed.read_record(row.ref)
        if safe(record.get("id")) != row.id:
            raise ValueError("the record is no longer where it was read (the file changed)")
        return record

    def _show_detail(self, index: int) -> None:
        row = self.model.rows[index]
        try:
            self.detail.show(self.record_for(row))
        except (OSError, ValueError) as e:
            self.detail.show_error(f"cannot show tunnel {row.id}: {e}")

    # --- messages from the areas ------------------------------------------------------

    @on(TunnelChosen)
    def _tunnel_chosen(self, message: TunnelChosen) -> None:
        # Reading about one tunnel: new ones must not move the cursor (and the pane)
        # away from it. End resumes following.
        self.table.set_follow(False)
        self.detail.display = True
        self._show_detail(message.index)

    @on(TunnelHighlighted)
    def _tunnel_highlighted(self, message: TunnelHighlighted) -> None:
        if self.detail.display and message.index is not None:
            self._show_detail(message.index)

    @on(HostChosen)
    def _host_chosen(self, message: HostChosen) -> None:
        self._set_view("tunnels")
        self._refilter(host=message.target)
        self.notify(f"tunnels of {message.target} (escape shows all)", markup=False, timeout=3)

    @on(SearchChanged)
    def _search_changed(self, message: SearchChanged) -> None:
        self._refilter(search=message.text)
        if message.done:
            self._current_view().focus()
            if not message.text:
                self.search_bar.remove_class("-active")

    # --- actions ----------------------------------------------------------------------

    def _current_view(self) -> TunnelTable | HostsTable:
        return self.hosts if self.hosts.display else self.table

    def _refilter(self, **changes) -> None:
        index = self.table.current_index
        if self.model.set_filter(**changes):
            self.table.keep_index(index)
            if self.hosts.display:
                self.hosts.reload()
        self._render_status()

    def _set_view(self, view: str) -> None:
        hosts = view == "hosts"
        self.hosts.display = hosts
        self.table.display = not hosts
        if hosts:
            self.detail.display = False
            self.hosts.reload()
        self._current_view().focus()
        self._render_status()

    def action_toggle_flagged(self) -> None:
        self._refilter(flagged_only=not self.model.flagged_only)

    def action_search(self) -> None:
        bar = self.search_bar
        bar.add_class("-active")
        bar.focus()

    def action_toggle_hosts(self) -> None:
        self._set_view("tunnels" if self.hosts.display else "hosts")

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._next_apply = 0.0  # what waited is this key's effect: now
            self.flush()
        self._render_status()

    def action_clear(self) -> None:
        with self._lock:
            self._pending.clear()
        self.model.clear()
        self._frozen_at = 0
        self.detail.display = False
        self.table.rows_changed(reset_cache=True)
        self.table.set_follow(True)
        self.hosts.reload()
        self._render_status()
        self.notify("cleared", timeout=2)

    def action_toggle_log(self) -> None:
        panel = self._widgets["eventlog"]
        panel.display = not panel.display
        if panel.display:
            self._unseen_warnings = 0

    async def action_back(self) -> None:
        bar = self.search_bar
        if bar.has_focus or (bar.has_class("-active") and not self.detail.display):
            bar.value = ""
            bar.remove_class("-active")
            self._refilter(search="")
            self._current_view().focus()
        elif self.detail.display:
            self.detail.display = False
            self._current_view().focus()
        elif self.model.host is not None:
            self._refilter(host=None)

    def action_export(self) -> None:
        rows = self.model.rows
        chosen = [rows[i] for i in self.model.visible if rows[i].flagged]
        if not chosen:
            self.notify("nothing to export: no flagged tunnel matches the current filter",
                        severity="warning", markup=False)
            return
        self._export(chosen)

    @work(thread=True, exclusive=True, group="export")
    def _export(self, rows: list[TunnelRow]) -> None:
        now = dt.datetime.now().astimezone()
        try:
            path, count = export_flagged((self.record_for(r) for r in rows), self.export_dir, now)
        except (OSError, ValueError) as e:
            log.error("export failed: %s", e)
            self.call_from_thread(self.notify, f"export failed: {safe(e)}", severity="error", markup=False)
            return
        self.last_export = (path, count)
        log.info("exported %d flagged tunnels to %s", count, path)
        self.call_from_thread(self.notify, f"exported {count} flagged tunnels to {path.name}",
                              title="export", markup=False)

    # --- command palette --------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Flagged only", "Show only tunnels with warnings or errors (f)",
                            self.action_toggle_flagged)
        yield SystemCommand("Search", "Filter by host, SNI, code or certificate subject (/)",
                            self.action_search)
        yield SystemCommand("Hosts view", "One row per CONNECT host:port (h)", self.action_toggle_hosts)
        yield SystemCommand("Pause / resume", "Stop applying new tunnels; they wait (p)",
                            self.action_toggle_pause)
        yield SystemCommand("Clear", "Forget every tunnel shown so far (c)", self.action_clear)
        yield SystemCommand("Export flagged", "Write the flagged tunnels matching the filter to JSON (e)",
                            self.action_export)
        yield SystemCommand("Event log", "Show or hide the event log (l)", self.action_toggle_log)
