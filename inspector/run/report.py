"""The end of a proxy run, headless or with the UI: the summary line, the flagged
export (--export-flagged) and the CI verdict (--fail-on); and the same verdict on
recorded files (`tunnel-inspector report FILE|DIR... --fail-on error`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from inspector.mitm.limits import Unrecorded
from inspector.records.escape import safe
from inspector.records.export import ExportSpool, ExportTargetError
from inspector.records.jsonl import Entry, JsonlReader
from inspector.records.schema import Record
from inspector.records.stream import JsonlSink, Summary
from inspector.records.text import plural

# EXIT_NOT_WRITTEN: records are missing from --jsonl, or the --export-flagged file is
# missing or incomplete (a full disk). It wins over EXIT_FLAGGED: the verdict stands
# (every tunnel is counted), but the run's evidence is incomplete.
EXIT_OK, EXIT_FLAGGED, EXIT_USAGE, EXIT_NOT_WRITTEN = 0, 1, 2, 3


class RunError(Exception):
    """A run could not start: one sentence for stderr, and exit 2."""


class RunReport:
    """A record sink that keeps what the end of the run needs, and prints it.

    Flagged records for --export-flagged go to an `ExportSpool` on disk as they arrive,
    not to memory. Use as a context manager: the spool is removed however the run ends.
    Raises ExportTargetError (a sentence: exit 2) if the export could not be written.
    """

    def __init__(self, export_to: str | None, fail_on: str) -> None:
        self.summary = Summary()
        self.fail_on = fail_on
        self._spool = ExportSpool(export_to) if export_to else None

    def __enter__(self) -> RunReport:
        return self

    def __exit__(self, *exc) -> None:
        if self._spool is not None:
            self._spool.close()

    def __call__(self, record: Record) -> None:
        self.summary(record)
        if self._spool is not None and record.get("flagged"):
            self._spool.add(record)

    def finish(self, jsonl: JsonlSink | None = None, unrecorded: Unrecorded | None = None) -> int:
        """Print the summary (and the connections closed without a record), write the
        export, judge --fail-on (on records only); the exit code.

        jsonl: the --jsonl sink, whose records not written the summary names."""
        line = self.summary.line()
        complete = True
        if jsonl is not None and jsonl.not_written:
            line += (f", {jsonl.not_written} records NOT written to {safe(jsonl.path)}: "
                     f"{jsonl.error}")
            complete = False
        print(line, flush=True)
        if unrecorded is not None and (extra := unrecorded.line()):
            print(extra, flush=True)
        if self._spool is not None:
            complete = self._export(self._spool) and complete
        failing = self.summary.failing(self.fail_on) if self.fail_on != "never" else {}
        if failing:
            print(f"failing (--fail-on {self.fail_on}): {plural(len(failing), 'host')}", flush=True)
            for host_port, codes in sorted(failing.items()):
                print(f"  {safe(host_port)}  {', '.join(codes)}", flush=True)
        if not complete:
            return EXIT_NOT_WRITTEN
        return EXIT_FLAGGED if failing else EXIT_OK

    def _export(self, spool: ExportSpool) -> bool:
        """Write the export from the spool; False if it is missing or incomplete."""
        where = safe(spool.path)
        try:
            n = spool.write()
        except ExportTargetError as e:
            print(f"tunnel-inspector: {e}", file=sys.stderr)
            return False
        except OSError as e:
            print(f"tunnel-inspector: cannot write {where}: {e.strerror or e}", file=sys.stderr)
            return False
        print(f"exported {plural(n, 'flagged tunnel')} to {where}", flush=True)
        if spool.lost:
            print(f"tunnel-inspector: {spool.lost} flagged tunnels NOT exported to {where}: "
                  f"{spool.error}", file=sys.stderr)
            return False
        return True


def record_files(specs: list[str]) -> list[Path]:
    """The files named, a directory standing for its *.jsonl (sorted); RunError if one
    is neither, or a directory holds none."""
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.jsonl") if p.is_file())
            if not found:
                raise RunError(f"{safe(path)} holds no *.jsonl file")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise RunError(f"{safe(path)} is not a file or a directory")
    return list(dict.fromkeys(paths))  # a file named twice is read once


def run_report(args: argparse.Namespace) -> int:
    """`tunnel-inspector report FILE|DIR... [--fail-on S]`: the summary a run prints at
    exit, for recorded files (many runners' records merged); exit as a run would."""
    report = RunReport(None, args.fail_on)
    for path in record_files(args.files):
        skipped = 0
        try:
            with JsonlReader(path) as reader:
                for item in reader.read(final=True):
                    if isinstance(item, Entry):
                        # a parsed line of our own JSON Lines: the summary reads it as one
                        report(cast(Record, item.record))
                    else:
                        skipped += 1
        except OSError as e:
            raise RunError(f"cannot read {safe(path)}: {e.strerror or e}") from None
        if skipped:
            print(f"tunnel-inspector: {safe(path)}: {plural(skipped, 'line')} skipped "
                  "(not a record)", file=sys.stderr)
    return report.finish()
