"""Entry points the CLI calls for the UI: `open FILE...` and the live proxy.

Both return the process exit code. A feed that cannot start (a port in use, a file
that does not exist) ends the app with code 2 and its sentence on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from inspector.records.escape import safe
from inspector.run.report import EXIT_OK, EXIT_USAGE, RunError, RunReport, record_files
from inspector.tui.app import InspectorApp
from inspector.tui.feeds import Feed, FileFeed, ProxyFeed


def _run(app: InspectorApp) -> int:
    app.run()
    if app.start_error is not None:
        print(f"tunnel-inspector: {safe(app.start_error)}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def run_open(args: argparse.Namespace) -> int:
    """`tunnel-inspector open FILE|DIR... [--follow] [--export-dir DIR]`."""
    try:
        paths = record_files(args.files)
    except RunError as e:
        print(f"tunnel-inspector: {e}", file=sys.stderr)
        return EXIT_USAGE
    feed = FileFeed(*paths, follow=args.follow)
    return _run(InspectorApp(feed, export_dir=Path(args.export_dir)))


def run_live(args: argparse.Namespace, options: dict,
             wrap_feed: Callable[[ProxyFeed, Callable[[], int]], Feed] | None = None) -> int:
    """The proxy with the live UI; --export-flagged and --fail-on apply at exit as in
    headless mode, --duration ends the UI after that many seconds.

    wrap_feed(feed, port_of) may wrap the proxy's feed (the demo starts its clients
    once the proxy listens); port_of() is the port the proxy listens on.
    """
    from inspector.mitm.addon import TunnelInspector

    addon = TunnelInspector()
    with RunReport(args.export_flagged, args.fail_on) as report:
        addon.stream.subscribe(report)
        feed = ProxyFeed([addon], options, addon.stream, intercept=args.intercept)

        def port_of() -> int:
            assert feed.address is not None, "the proxy is not listening yet"
            return feed.address[1]

        app = InspectorApp(wrap_feed(feed, port_of) if wrap_feed else feed,
                           export_dir=Path(args.export_dir),
                           quit_after=args.duration)
        code = _run(app)
        return code if code != EXIT_OK else report.finish(addon.jsonl, addon.unrecorded)
