"""Exporting tunnels as one JSON document, for a ticket, a colleague or CI.

    {"schema": 1, "exported": "2025-01-02T03:04:05Z", "tunnels": [record, ...]}

Each element is a record exactly as in the JSON Lines stream (design.md). Files are
written atomically (a temporary file in the same directory, then os.replace) and
created 0600: records name internal hosts and clients.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

SCHEMA = 1
FILENAME = "tunnel-inspector-flagged-{:%Y%m%d-%H%M%S}.json"


def rfc3339(when: dt.datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("export time must be timezone-aware")
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_export(path: str | Path, records: Iterable[dict], now: dt.datetime | None = None) -> int:
    """Write `records` (all of them, in order: the caller selects) to `path` atomically.

    Returns the number of records written. Records are streamed, so an export of many
    tunnels never holds a second copy of them as one big string. Raises OSError.
    """
    path = Path(path)
    now = now or dt.datetime.now(dt.timezone.utc)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f'{{"schema": {SCHEMA}, "exported": {json.dumps(rfc3339(now))}, "tunnels": [')
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


def export_flagged(records: Iterable[dict], directory: str | Path, now: dt.datetime) -> tuple[Path, int]:
    """Write the flagged ones among `records` to a new timestamped file in `directory`.

    The caller passes the records the user is looking at (for the UI: those matching
    the current search); this keeps the flagged ones. Returns (path, count).
    """
    path = export_path(directory, now)
    count = write_export(path, (r for r in records if r.get("flagged") is True), now)
    return path, count
