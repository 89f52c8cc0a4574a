"""Where the UI keeps full records it does not hold in memory.

Live records are appended to an anonymous spool file (deleted on close, 0600) and
re-read when the detail pane or an export needs them; the rows in memory only keep
the offset. A record costs one dumps() and one write() when it arrives.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

from inspector.records.record import dumps


class RecordSpool:
    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="tunnel-inspector-spool-")
        self._fd = self._file.fileno()
        self._end = 0
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> int:
        """Store a record; returns its ref. Thread-safe."""
        data = dumps(record).encode("ascii")
        with self._lock:
            offset = self._end
            written = 0
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], offset + written)
            self._end += len(data)
        return offset

    def read(self, ref: int) -> dict[str, Any]:
        """The record stored at `ref`. Thread-safe. Raises ValueError for a bad ref."""
        buf = b""
        pos = ref
        while b"\n" not in buf:
            chunk = os.pread(self._fd, 65536, pos)
            if not chunk:
                break
            buf += chunk
            pos += len(chunk)
        line = buf.split(b"\n", 1)[0]
        if not line:
            raise ValueError(f"no record at spool offset {ref}")
        return json.loads(line)

    def reset(self) -> None:
        """Forget every record (after the UI dropped all rows that point here)."""
        with self._lock:
            os.ftruncate(self._fd, 0)
            self._end = 0

    @property
    def size(self) -> int:
        return self._end

    def close(self) -> None:
        self._file.close()
