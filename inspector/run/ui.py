"""The live UI's own process, started by the proxy's process (uihost.py), never by hand:

    python -m inspector.run.ui --channel-fd N --export-dir DIR

Exit 0 when the user quits (the proxy then stops too); any other ending makes the
proxy start a new UI. Also `run_app`, how every UI process ends (`open` too).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from inspector.records.escape import safe
from inspector.run.report import EXIT_OK, EXIT_USAGE
from inspector.tui.app import InspectorApp
from inspector.tui.feeds import ProxyFeed

EXIT_PROXY_LOST = 1
# The UI yields the CPU to the proxy (its parent, nice 0): on a busy machine the
# tunnels go first and the screen lags a little. Under 200 tunnels/s on 2 cores a
# tunnel's p50 was 43-79 ms at nice 0, 11-21 ms at 5, 16-32 ms at 10 (headless 13-25
# ms); at 10 a keypress that repaints the table waited longest (bench_ui.py).
UI_NICE = 5


def run_app(app: InspectorApp) -> int:
    """Run the app; a feed that could not start (a file that does not exist) or was lost
    says why in one sentence on the restored terminal."""
    app.run()
    if app.start_error is not None:
        print(f"tunnel-inspector: {safe(app.start_error)}", file=sys.stderr)
        return EXIT_USAGE
    if app.feed_lost is not None:
        print(f"tunnel-inspector: {safe(app.feed_lost)}", file=sys.stderr)
        return EXIT_PROXY_LOST
    return EXIT_OK if app.return_code is None else app.return_code


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C outside the UI's raw mode reaches the whole process group: the proxy (our
    # parent) handles it, and tells this UI to quit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(UI_NICE)  # before any thread starts: each thread has its own nice value
    p = argparse.ArgumentParser(prog="python -m inspector.run.ui")
    p.add_argument("--channel-fd", type=int, required=True)
    p.add_argument("--export-dir", default=".")
    args = p.parse_args(argv)
    feed = ProxyFeed(socket.socket(fileno=args.channel_fd))
    return run_app(InspectorApp(feed, export_dir=Path(args.export_dir)))


if __name__ == "__main__":
    sys.exit(main())
