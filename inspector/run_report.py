"""The end of a proxy run, headless or with the UI: the summary line, the flagged
export (--export-flagged) and the CI verdict (--fail-on)."""

from __future__ import annotations

import sys

from .escape import safe
from .export import write_export
from .limits import Unrecorded
from .stream import Summary

EXIT_OK, EXIT_FLAGGED, EXIT_USAGE = 0, 1, 2


class RunReport:
    """A record sink that keeps what the end of the run needs, and prints it."""

    def __init__(self, export_to: str | None, fail_on: str) -> None:
        self.summary = Summary()
        self.export_to = export_to
        self.fail_on = fail_on
        self._flagged: list[dict] = []

    def __call__(self, record: dict) -> None:
        self.summary(record)
        if self.export_to and record.get("flagged"):
            self._flagged.append(record)

    def finish(self, unrecorded: Unrecorded | None = None) -> int:
        """Print the summary (and the connections closed without a record), write the
        export, judge --fail-on (on records only); the exit code."""
        print(self.summary.line(), flush=True)
        if unrecorded is not None and (line := unrecorded.line()):
            print(line, flush=True)
        if self.export_to:
            try:
                n = write_export(self.export_to, self._flagged)
            except OSError as e:
                print(f"tunnel-inspector: cannot write {safe(self.export_to)}: {e.strerror or e}",
                      file=sys.stderr)
                return EXIT_USAGE
            print(f"exported {n} flagged tunnels to {safe(self.export_to)}", flush=True)
        if self.fail_on != "never" and (failing := self.summary.failing(self.fail_on)):
            print(f"failing (--fail-on {self.fail_on}): {len(failing)} hosts", flush=True)
            for host_port, codes in sorted(failing.items()):
                print(f"  {safe(host_port)}  {', '.join(codes)}", flush=True)
            return EXIT_FLAGGED
        return EXIT_OK
