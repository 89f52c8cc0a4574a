"""Exporting tunnels as one JSON document, for a ticket, a colleague or CI.

    {"schema": 1, "exported": "2025-01-02T03:04:05Z", "tunnels": [record, ...]}

Each element is a record exactly as in the JSON Lines stream (design.md). Files are
written atomically (a temporary file in the same directory, then os.replace) and
created 0600: records name internal hosts and clients. A run's export (--export-flagged)
is checked before the run starts, and its records wait on disk (`ExportSpool`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from inspector.records.escape import safe
from inspector.records.record import dumps
from inspector.records.schema import SCHEMA, Record, rfc3339
from inspector.records.stream import LineFile

log = logging.getLogger(__name__)

FILENAME = "tunnel-inspector-flagged-{:%Y%m%d-%H%M%S}.json"


def write_export(path: str | Path, records: Iterable[Mapping[str, Any]],
                 now: dt.datetime | None = None) -> int:
    """Write `records` (all of them, in order: the caller selects) to `path` atomically.
    Live records or ones read back (the UI re-reads its file or spool): written as they are.

    Returns the number of records written. Records are streamed, so an export of many
    tunnels never holds a second copy of them as one big string. Raises OSError.
    """
    path = Path(path)
    now = now or dt.datetime.now(dt.timezone.utc)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f'{{"schema": {SCHEMA}, "exported": {json.dumps(rfc3339(now, "seconds"))}, "tunnels": [')
            for record in records:
                f.write(",\n  " if count else "\n  ")
                f.write(json.dumps(record, ensure_ascii=True, separators=(",", ":")))
                count += 1
            f.write("\n]}\n" if count else "]}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return count


def export_path(directory: str | Path, now: dt.datetime) -> Path:
    """`tunnel-inspector-flagged-YYYYMMDD-HHMMSS.json` in `directory`, in `now`'s own
    time zone; a second export within the same second gets a `-2`, `-3`... suffix."""
    base = Path(directory) / FILENAME.format(now)
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.stem}-{n}{base.suffix}")
    return path


def export_flagged(records: Iterable[Mapping[str, Any]], directory: str | Path,
                   now: dt.datetime) -> tuple[Path, int]:
    """Write the flagged ones among `records` to a new timestamped file in `directory`.

    The caller passes the records the user is looking at (for the UI: those matching
    the current search); this keeps the flagged ones. Returns (path, count).
    """
    path = export_path(directory, now)
    count = write_export(path, (r for r in records if r.get("flagged") is True), now)
    return path, count


class ExportTargetError(Exception):
    """The export cannot be written where asked: one sentence for stderr."""


def check_export_target(path: Path) -> None:
    """Refuse a target the export could not be written to, or would replace wrongly."""
    if not path.parent.is_dir():
        why = "is not a directory" if path.parent.exists() else "does not exist"
        raise ExportTargetError(f"cannot export to {safe(path)}: {safe(path.parent)} {why}")
    if path.is_symlink():
        # The export replaces PATH atomically, which would replace the link itself; writing
        # through it instead lets whoever can plant a link (a shared directory) choose
        # which file a CI job, often root, overwrites. So neither: the user names the file.
        raise ExportTargetError(f"cannot export to {safe(path)}: it is a symbolic link "
                                "(give the path of the file itself)")
    if path.is_dir():
        raise ExportTargetError(f"cannot export to {safe(path)}: it is a directory")


class ExportSpool:
    """A run's flagged records, kept on disk until the export is written at its end.

    A long run can flag many tunnels: held in memory until exit they would grow with
    the traffic. Each is one line in a hidden temporary file beside the export (0600,
    removed by close()), and write() turns those lines into the export, atomically.
    Creating the spool at start is also the check that the export can be written.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        check_export_target(self.path)
        try:
            fd, self._spool = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                               suffix=".spool")
        except OSError as e:
            raise ExportTargetError(f"cannot export to {safe(self.path)}: "
                                    f"{e.strerror or e}") from None
        self._lines = LineFile(fd, self._spool)
        self.lost = 0  # flagged records the spool could not take (a full disk)
        self.error: str | None = None

    def add(self, record: Record) -> None:
        try:
            self._lines.append(dumps(record).encode("ascii"))
        except OSError as e:
            self.lost += 1
            if self.error is None:
                self.error = e.strerror or str(e)
                log.warning("cannot keep flagged tunnels for %s: %s; the export will miss "
                            "them", safe(self.path), self.error)

    def _records(self) -> Iterator[Record]:
        with os.fdopen(os.dup(self._lines.fd), "rb") as f:
            f.seek(0)
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:  # the rest of an append that failed, already in `lost`
                    continue

    def write(self, now: dt.datetime | None = None) -> int:
        """Write the export from the spool (atomically); the count. Raises OSError,
        ExportTargetError if a link or directory appeared at the path meanwhile."""
        check_export_target(self.path)
        return write_export(self.path, self._records(), now)

    def close(self) -> None:
        """Remove the spool (whether or not the export was written)."""
        self._lines.close()
        try:
            os.unlink(self._spool)
        except FileNotFoundError:
            pass
