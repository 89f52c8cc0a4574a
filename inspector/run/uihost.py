"""The proxy's side of the live UI, which runs in a process of its own.

The process the user started is the proxy (the headless path, `run_proxy`). It keeps
every record in a spool file (JSON Lines, 0600, in a private directory) and starts the
UI on the same terminal as a child process (`python -m inspector.run.ui`). The UI reads
the records from the spool as `open --follow` reads a file, and gets the rest over a
socket, one JSON object per line: where the proxy listens and the spool's path (first),
the header figures (open tunnels, probes in flight, auth refused), the proxy's log, and
`quit`. Rendering never runs on the proxy's event loop, and a frozen UI never blocks it.

A UI that ends abnormally (a crash, a kill) costs no tunnel: the proxy goes on relaying
and starts a new UI, which reads the spool from its start (every record, once each).
After MAX_RESTARTS within RESTART_WINDOW seconds the proxy goes on without a UI. A UI
that exits 0 (q, or SIGTERM sent to the UI) ends the run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import termios
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from inspector.records.stream import JsonlSink, RecordStream
from inspector.run.report import RunError

log = logging.getLogger(__name__)

STATS_EVERY = 0.25  # seconds between header figures (sent only when they changed)
LOG_BACKLOG = 1000  # log entries kept while no UI is connected (between restarts)
LINK_BUFFER = 1 << 20  # bytes queued for a UI that does not read; then figures and logs are dropped
MAX_RESTARTS, RESTART_WINDOW = 3, 60.0
UI_STOP_TIMEOUT = 5.0  # seconds a UI may take to quit, then to obey SIGTERM
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding `inspector`
# What Textual switches on (alternate screen, mouse, keyboard modes): switched off after a
# UI that could not do it itself, so the shell, or the next UI, gets a sane terminal.
_TERMINAL_RESET = ("\x1b[<u\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l\x1b[?1016l"
                   "\x1b[?2004l\x1b[?2048l\x1b[?1004l\x1b[?7h\x1b[?1049l\x1b[?25h")


class _Link:
    """One UI's socket. Writes never block the proxy: past LINK_BUFFER queued bytes (a
    UI that stopped reading) figures and log lines are dropped, counted."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.dropped = 0

    def send(self, message: dict) -> None:
        """Figures and log lines: dropped past LINK_BUFFER."""
        if self._writer.transport.get_write_buffer_size() > LINK_BUFFER and not self._writer.is_closing():
            self.dropped += 1
            return
        self._write(message)

    def quit(self) -> None:
        """Never dropped: a UI that catches up must still learn the run is over."""
        self._write({"quit": True})

    def _write(self, message: dict) -> None:
        if not self._writer.is_closing():
            self._writer.write(json.dumps(message).encode("ascii") + b"\n")

    def close(self) -> None:
        self._writer.close()


class _ForwardLogs(logging.Handler):
    """The proxy's log goes to the UI's event log and log file, never to the terminal."""

    def __init__(self, host: UiHost) -> None:
        super().__init__(logging.INFO)
        self._host = host
        self.setFormatter(logging.Formatter("%(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        # our INFO and up, anyone's WARNING and up: mitmproxy's INFO is lines per connection
        return record.levelno >= logging.WARNING or record.name.startswith("inspector")

    def emit(self, record: logging.LogRecord) -> None:
        self._host.log(record.levelno, record.name, self.format(record))


class UiHost:
    """What every UI of one run is told: the spool, where the proxy listens, its
    figures and its log. `attach` before the proxy listens; `close` at the end."""

    def __init__(self) -> None:
        try:
            self._dir = tempfile.mkdtemp(prefix="tunnel-inspector-")  # 0700
            self.spool_path = Path(self._dir) / "records.jsonl"
            self.spool = JsonlSink(str(self.spool_path))
        except OSError as e:
            raise RunError(f"cannot keep records for the UI in {tempfile.gettempdir()}: "
                           f"{e.strerror or e} (set TMPDIR, or use --headless)") from None
        self.source = "starting…"
        self._stats: Callable[[], dict] = dict
        self._sent_stats: dict = {}
        self._links: list[_Link] = []
        self._backlog: deque[list] = deque(maxlen=LOG_BACKLOG)
        self.log_handler = _ForwardLogs(self)

    def attach(self, stream: RecordStream, stats: Callable[[], dict]) -> None:
        stream.subscribe(self.spool)
        self._stats = stats

    async def connect(self, sock: socket.socket) -> _Link:
        """A UI on the other end of `sock`: tell it everything so far."""
        _, writer = await asyncio.open_unix_connection(sock=sock)
        link = _Link(writer)
        link.send({"source": self.source, "spool": str(self.spool_path)})
        link.send({"stats": self._sent_stats})
        while self._backlog:
            link.send({"log": self._backlog.popleft()})
        self._links.append(link)
        return link

    def disconnect(self, link: _Link) -> None:
        if link in self._links:
            self._links.remove(link)
        link.close()

    def log(self, level: int, name: str, text: str) -> None:
        entry = [level, name, text]
        if not self._links:
            self._backlog.append(entry)
        for link in self._links:
            link.send({"log": entry})

    def send(self, message: dict) -> None:
        for link in self._links:
            link.send(message)

    async def publish_stats(self) -> None:
        """Forever: the header figures, whenever they change (cancel to stop)."""
        while True:
            stats = self._stats()
            if stats != self._sent_stats:
                self._sent_stats = stats
                self.send({"stats": stats})
            await asyncio.sleep(STATS_EVERY)

    def close(self) -> None:
        for link in list(self._links):
            self.disconnect(link)
        self.spool.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class UiSupervisor:
    """Starts the UI process on this terminal, and again when it ends abnormally."""

    def __init__(self, host: UiHost, export_dir: str) -> None:
        self._host = host
        self._export_dir = export_dir
        self._proc: asyncio.subprocess.Process | None = None
        self._link: _Link | None = None
        self._stopping = False
        self.restarts = 0
        try:
            self._tty: list | None = termios.tcgetattr(sys.stdin.fileno())
        except (termios.error, OSError, ValueError):
            self._tty = None  # not a terminal: nothing to restore

    async def run(self) -> bool:
        """UIs until one quits (True) or they keep failing (False: the caller goes on
        without a UI)."""
        failures: deque[float] = deque()
        notice = None
        while True:
            code = await self._one(notice)
            if code == 0 or self._stopping:
                return True
            self.restore_terminal()
            now = time.monotonic()
            failures.append(now)
            while now - failures[0] > RESTART_WINDOW:
                failures.popleft()
            why = _exit_reason(code)
            if len(failures) > MAX_RESTARTS:
                print(f"tunnel-inspector: the UI ended unexpectedly {len(failures)} times within "
                      f"{RESTART_WINDOW:.0f} s (last: {why}); the proxy goes on without it, one "
                      "line per tunnel on stdout; Ctrl-C stops it", file=sys.stderr, flush=True)
                return False
            self.restarts += 1
            notice = (f"the UI ended unexpectedly ({why}) and was restarted; the proxy kept "
                      "relaying, and every tunnel so far is shown again")
            print(f"tunnel-inspector: {notice}", file=sys.stderr, flush=True)

    async def _one(self, notice: str | None) -> int:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "inspector.run.ui", "--channel-fd", str(child.fileno()),
                "--export-dir", self._export_dir, pass_fds=(child.fileno(),), env=env)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()  # the UI's end lives in the UI only: its exit is our EOF
        self._link = await self._host.connect(parent)
        if notice:
            self._link.send({"log": [logging.WARNING, __name__, notice]})
        try:
            return await self._proc.wait()
        finally:
            self._host.disconnect(self._link)

    async def stop(self) -> None:
        """Ask the UI to quit (then SIGTERM, then SIGKILL), and wait for it."""
        self._stopping = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        if self._link is not None:
            self._link.quit()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                log.warning("the UI did not quit within %.0f s: sending it %s", UI_STOP_TIMEOUT,
                            sig.name)
                proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), UI_STOP_TIMEOUT)
                break
            except asyncio.TimeoutError:
                continue
        if proc.returncode != 0:
            self.restore_terminal()

    def restore_terminal(self) -> None:
        if self._tty is None:
            return
        try:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._tty)
            os.write(sys.__stderr__.fileno() if sys.__stderr__ else 2,  # where Textual draws
                     _TERMINAL_RESET.encode())
        except (termios.error, OSError) as e:
            log.warning("could not restore the terminal: %s", e)
