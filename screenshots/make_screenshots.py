"""Render the UI to SVG from a recorded stream: main table, one tunnel's detail, hosts view.

    python screenshots/make_screenshots.py --demo [--png]      # what README shows
    python screenshots/make_screenshots.py RECORDS.jsonl [--id RECORD_ID] [--out DIR]
        [--size 160x45] [--png]

--demo records a run of `tunnel-inspector demo --headless` and details its incident-1
tunnel (the expired cross-signed root). Without --id, the detail shows the first
tunnel with an error finding (else the last one). --png also converts each SVG with
rsvg-convert (Debian: librsvg2-bin), which keeps the monospace columns aligned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from inspector.tui import FileFeed, InspectorApp
from inspector.tui.model import ERROR

LOAD_TIMEOUT = 60.0


async def _settle(pilot, app: InspectorApp) -> None:
    """Wait until the whole file is on screen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOAD_TIMEOUT
    while not app.feed.loaded.is_set() or app.waiting:
        if loop.time() > deadline:
            raise SystemExit(f"the file did not load within {LOAD_TIMEOUT:.0f} s")
        await pilot.pause(0.05)
    await pilot.pause(0.3)  # one more flush, then a repaint


def _position_of(app: InspectorApp, record_id: str | None) -> int | None:
    rows = app.model.rows
    if record_id is not None:
        return next((i for i, r in enumerate(rows) if r.id == record_id), None)
    worst = next((i for i, r in enumerate(rows) if r.severity == ERROR), None)
    return worst if worst is not None else (len(rows) - 1 if rows else None)


async def render(jsonl: Path, out: Path, record_id: str | None, size: tuple[int, int]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        app = InspectorApp(FileFeed(jsonl), export_dir=Path(scratch), log_path=None)
        written: list[Path] = []
        async with app.run_test(size=size) as pilot:
            await _settle(pilot, app)
            if app.start_error:
                raise SystemExit(f"cannot open {jsonl}: {app.start_error}")
            written.append(Path(app.save_screenshot("main-table.svg", str(out))))

            index = _position_of(app, record_id)
            if index is None:
                print(f"no tunnel {'with id ' + record_id if record_id else ''} to detail; skipped",
                      file=sys.stderr)
            else:
                pos = app.model.position_of(index)
                app.table.move_cursor(pos)
                await pilot.press("enter")
                await pilot.pause(0.3)
                written.append(Path(app.save_screenshot("detail.svg", str(out))))
                await pilot.press("escape")

            await pilot.press("h")
            await pilot.pause(0.3)
            written.append(Path(app.save_screenshot("hosts.svg", str(out))))
        return written


def to_png(svg: Path) -> Path | None:
    tool = shutil.which("rsvg-convert")
    if tool is None:
        print("rsvg-convert not found (apt-get install librsvg2-bin): PNGs skipped", file=sys.stderr)
        return None
    png = svg.with_suffix(".png")
    subprocess.run([tool, "-o", str(png), str(svg)], check=True)
    return png


def record_demo(jsonl: Path) -> str:
    """Run the headless demo into `jsonl`; the id of its incident-1 tunnel."""
    subprocess.run([sys.executable, "-m", "inspector.cli", "demo", "--headless", "--jsonl", str(jsonl)],
                   check=True, stdout=subprocess.DEVNULL, timeout=300)
    for line in jsonl.read_text().splitlines():
        rec = json.loads(line)
        if rec["connect"]["host"].startswith("expired-cross-root.") and \
                rec["handshake"]["outcome"] == "established":
            return rec["id"]
    raise SystemExit("the demo recorded no incident-1 tunnel")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", type=Path, nargs="?")
    parser.add_argument("--demo", action="store_true", help="record the demo and render it")
    parser.add_argument("--id", dest="record_id", help="the record whose detail is shown")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--size", default="160x45", help="columns x rows (default 160x45)")
    parser.add_argument("--png", action="store_true", help="also write PNGs (rsvg-convert)")
    args = parser.parse_args(argv)
    try:
        cols, rows = (int(n) for n in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r} is not COLSxROWS")
    if args.demo == (args.jsonl is not None):
        parser.error("give either RECORDS.jsonl or --demo")
    with tempfile.TemporaryDirectory() as scratch:
        if args.demo:
            args.jsonl = Path(scratch) / "demo.jsonl"
            args.record_id = record_demo(args.jsonl)
        written = asyncio.run(render(args.jsonl, args.out, args.record_id, (cols, rows)))
    for svg in written:
        print(svg)
        if args.png and (png := to_png(svg)):
            print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
