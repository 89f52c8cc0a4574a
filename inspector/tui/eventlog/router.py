"""While the UI owns the terminal, log records go to a file and the event-log panel.

mitmproxy logs through the standard `logging` module (the "mitmproxy" logger and the
root logger). A handler that writes to stderr would draw over Textual's screen, so
for the lifetime of the app the router takes every stream handler off the root
logger (and `logging.lastResort`), and puts back exactly what it took afterwards.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from collections import deque
from pathlib import Path

from inspector.records.escape import safe

# The panel keeps this many entries waiting between two UI flushes; a log storm
# drops the oldest rather than growing without bound (the file has them all).
PANEL_BACKLOG = 2000


def default_log_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "tunnel-inspector" / "ui.log"


class _PanelHandler(logging.Handler):
    """Keeps formatted entries for the panel: our own INFO and up, anyone's WARNING and
    up (mitmproxy's INFO is a few lines per connection: that is for the file)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.entries: deque[tuple[int, str]] = deque(maxlen=PANEL_BACKLOG)
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and not record.name.startswith("inspector"):
            return False
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError) as e:  # a bad format string in someone's log call
            message = f"unformattable log message ({e})"
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback is for the log file; the panel says what failed.
            exc = record.exc_info[1]
            message += f" ({type(exc).__name__}: {exc}; traceback in the log file)"
        when = self.formatter.formatTime(record, "%H:%M:%S") if self.formatter else ""
        text = f"{when} {record.levelname} {record.name}: {message}"
        if len(self.entries) == self.entries.maxlen:
            self.dropped += 1
        # One line per entry, every character visible: log text may quote hostnames.
        self.entries.append((record.levelno, " | ".join(safe(line) for line in text.splitlines())))


LOG_MAX_BYTES = 1024 * 1024  # ui.log, then ui.log.1: at most twice this on disk


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """The UI's log file, capped in size; a rotated-in file is created 0600 like the first:
    the log names hosts and clients."""

    def _open(self):
        os.close(os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        return super()._open()


class LogRouter:
    """Install with `install()`, drain panel entries with `drain()`, undo with `uninstall()`."""

    def __init__(self, log_path: Path | None) -> None:
        self.log_path = log_path
        self.panel = _PanelHandler()
        self.panel.setFormatter(logging.Formatter())
        self._file: logging.Handler | None = None
        self._saved: tuple | None = None
        self.file_error: str | None = None

    def install(self) -> None:
        root = logging.getLogger()
        removed = [
            h for h in root.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        ]
        self._saved = (removed, root.level, logging.lastResort)
        for h in removed:
            root.removeHandler(h)
        if self.log_path is not None:
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                # 0600: the log names hosts and clients.
                fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.close(fd)
                self._file = _PrivateRotatingFile(self.log_path, maxBytes=LOG_MAX_BYTES,
                                                  backupCount=1, encoding="utf-8")
            except OSError as e:
                self.file_error = f"cannot write the log file {self.log_path}: {e.strerror or e}"
            else:
                self._file.setLevel(logging.INFO)
                self._file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
                root.addHandler(self._file)
        root.addHandler(self.panel)
        logging.lastResort = self.panel
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)

    def uninstall(self) -> None:
        if self._saved is None:
            return
        removed, level, last_resort = self._saved
        self._saved = None
        root = logging.getLogger()
        root.removeHandler(self.panel)
        if self._file is not None:
            root.removeHandler(self._file)
            self._file.close()
            self._file = None
        for h in removed:
            root.addHandler(h)
        root.setLevel(level)
        logging.lastResort = last_resort

    def drain(self) -> tuple[list[tuple[int, str]], int]:
        """Entries logged since the last drain, and how many were dropped."""
        entries = self.panel.entries
        out = []
        while entries:
            try:
                out.append(entries.popleft())
            except IndexError:
                break
        dropped, self.panel.dropped = self.panel.dropped, 0
        return out, dropped
