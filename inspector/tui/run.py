"""Entry points the CLI calls for the UI: `open FILE.jsonl` and the live proxy.

Both return the process exit code. A feed that cannot start (a port in use, a file
that does not exist) ends the app with code 2 and its sentence on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from inspector.escape import safe
from inspector.export import write_export
from inspector.stream import Summary

from .app import InspectorApp
from .feeds import FileFeed, ProxyFeed

EXIT_OK, EXIT_FLAGGED, EXIT_USAGE = 0, 1, 2


def _run(app: InspectorApp) -> int:
    app.run()
    if app.start_error is not None:
        print(f"tunnel-inspector: {safe(app.start_error)}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def run_open(args: argparse.Namespace) -> int:
    """`tunnel-inspector open FILE.jsonl [--follow] [--export-dir DIR]`."""
    path = Path(args.file)
    if not path.is_file():
        print(f"tunnel-inspector: {safe(path)} is not a file", file=sys.stderr)
        return EXIT_USAGE
    feed = FileFeed(path, follow=getattr(args, "follow", False))
    return _run(InspectorApp(feed, export_dir=Path(getattr(args, "export_dir", ".") or ".")))


def run_live(args: argparse.Namespace, options: dict,
             wrap_feed: Callable[[ProxyFeed, Callable[[], int]], object] | None = None) -> int:
    """The proxy with the live UI; --export-flagged and --fail-on apply at exit as in
    headless mode, --duration ends the UI after that many seconds.

    wrap_feed(feed, port_of) may wrap the proxy's feed (the demo starts its clients
    once the proxy listens); port_of() is the port the proxy listens on.
    """
    from addons.tunnel_inspector import TunnelInspector

    addon = TunnelInspector()
    summary = Summary()
    addon.stream.subscribe(summary)
    flagged: list[dict] = []
    export_to = getattr(args, "export_flagged", None)
    if export_to:
        addon.stream.subscribe(lambda r: flagged.append(r) if r.get("flagged") else None)
    feed = ProxyFeed([addon], options, addon.stream, intercept=getattr(args, "intercept", False))

    def port_of() -> int:
        assert feed.address is not None, "the proxy is not listening yet"
        return feed.address[1]

    app = InspectorApp(wrap_feed(feed, port_of) if wrap_feed else feed,
                       export_dir=Path(getattr(args, "export_dir", ".") or "."),
                       quit_after=getattr(args, "duration", None))
    code = _run(app)
    if code != EXIT_OK:
        return code
    print(summary.line(), flush=True)
    if export_to:
        try:
            n = write_export(export_to, flagged)
        except OSError as e:
            print(f"tunnel-inspector: cannot write {safe(export_to)}: {e.strerror or e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"exported {n} flagged tunnels to {safe(export_to)}", flush=True)
    fail_on = getattr(args, "fail_on", "never")
    if fail_on != "never" and (failing := summary.failing(fail_on)):
        print(f"failing (--fail-on {fail_on}): {len(failing)} hosts", flush=True)
        for host_port, codes in sorted(failing.items()):
            print(f"  {safe(host_port)}  {', '.join(safe(c) for c in codes)}", flush=True)
        return EXIT_FLAGGED
    return EXIT_OK
