"""UI benchmark: `open` on a 100k-tunnel recording, and live batches at 100k rows.

    python bench/bench_ui.py [--records 100000] [--runs 10] [--keep DIR]

Generates a realistic JSON Lines recording (many hosts, 60% with a chain verdict,
~16% flagged), then runs the app headless (`run_test`) in a child process, so the
figures include interpreter start and imports, and reads the child's peak RSS. It
measures:

- first screen: process start until the table shows rows (the file keeps loading);
- all loaded: process start until every record is in the table and painted;
- a 300-record batch arriving at 100k rows, as a live feed delivers it: the feed's
  side (`on_record`: row + spool) and the UI's side (one flush and the repaint), in
  CPU time (the test pilot's idle detection sleeps, which wall time would count);
- a search over 100k rows, and the hosts view opened the first time at 100k rows.

Prints a table and writes bench/results-ui.json. Targets: first screen <= 2 s,
RSS <= 200 MB, batch <= 60 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TARGETS = {"first_screen_s": 2.0, "rss_mb": 200.0, "batch_ms": 60.0}
BATCH = 300
RESULTS = Path(__file__).with_name("results-ui.json")

# --- realistic records ----------------------------------------------------------------------

_HINTS = {
    "sni-missing": ("the client sent no SNI for {h}",
                    "Configure the client (or the proxy in front of it) to send SNI; SNI-only "
                    "virtual hosts refuse a ClientHello without it."),
    "sni-mismatch": ("SNI {s} differs from the CONNECT host {h}",
                     "The client connects to one host and names another: check its resolve or "
                     "connect-to overrides and the Host it is configured with."),
    "server-alert": ("the server refused the handshake: unrecognized_name (112)",
                     "The server does not serve this name: check the SNI the client sends, or add "
                     "the name to the server's virtual hosts."),
    "expired": ("the certificate for {h} expired on 2024-01-01",
                "Renew the certificate on the server and reload it."),
    "untrusted": ("no trusted root: the chain for {h} ends at CN=Example Private Root",
                  "Serve a chain to a public root, or give clients the private root."),
    "incomplete-chain": ("the server sends only the leaf; the intermediate is missing",
                         "Serve the leaf followed by its intermediate (fullchain.pem)."),
    "client-rejected-certificate": (
        "the client rejected the server's certificate: unknown_ca (48)",
        "Compare the served chain with what the client trusts; see the chain verdict."),
    "connect-ip": ("CONNECT target is an IP address ({h}); the SNI names the host",
                   "Fine if the server needs no SNI; connect by name so the client can send SNI."),
    "upstream-unreachable": ("the proxy could not connect upstream: connection refused",
                             "Check the host resolves and the port is open from the proxy's network."),
}
_SEVERITY = {"connect-ip": "info"}


def _finding(code: str, host: str, sni: str | None) -> dict:
    message, hint = _HINTS[code]
    return {"code": code, "severity": _SEVERITY.get(code, "error"),
            "message": message.format(h=host, s=sni), "hint": hint}


def _cert(cn: str, issuer: str, not_after: str, in_path: bool = True) -> dict:
    return {"subject": f"CN={cn},O=Example Org,L=Springfield,C=US",
            "issuer": f"CN={issuer},O=Example CA,C=US",
            "not_before": "2025-01-01T00:00:00Z", "not_after": not_after,
            "sha256": hashlib.sha256(cn.encode()).hexdigest(), "key": "EC P-256",
            "signature": "ecdsa-with-SHA256", "in_path": in_path}


class RecordMaker:
    """Seeded; each call of `make()` gives the next tunnel."""

    def __init__(self, seed: int = 1) -> None:
        self.rnd = random.Random(seed)
        self.hosts = ([f"api{i}.service{i % 97}.example.com" for i in range(900)]
                      + [f"10.20.{i // 250}.{i % 250}" for i in range(100)])
        self.clients = [f"10.1.{i // 250}.{i % 250}" for i in range(400)]
        self.t0 = time.time() - 86400
        self.n = 0

    def make(self) -> dict:
        rnd, i = self.rnd, self.n
        self.n += 1
        host = rnd.choice(self.hosts)
        port = rnd.choice((443, 443, 443, 8443))
        is_ip = host[0].isdigit()
        sni: str | None = None if is_ip and rnd.random() < 0.5 else host
        codes: list[str] = []
        roll = rnd.random()
        outcome, version, alert, detail = "established", "TLSv1.3", None, None
        if is_ip:
            codes.append("connect-ip")
        if roll < 0.04 and not is_ip:
            sni = None
            codes.append("sni-missing")
        elif roll < 0.07 and not is_ip:
            sni = "www." + host
            codes.append("sni-mismatch")
        if 0.02 < roll < 0.07:
            outcome, version = "server-alert", None
            alert = {"from": "server", "code": 112, "description": "unrecognized_name"}
            detail = "server sent alert unrecognized_name"
            codes.append("server-alert")
        elif 0.07 < roll < 0.08:
            outcome, version, sni = "connect-failed", None, None
            codes = ["upstream-unreachable"]
        chain = None
        if outcome == "established" and rnd.random() < 0.6:
            expired = 0.08 < roll < 0.11
            untrusted = 0.11 < roll < 0.13
            leaf = _cert(host, "Example Issuing CA R3",
                         "2024-01-01T00:00:00Z" if expired else "2027-01-01T00:00:00Z")
            inter = _cert("Example Issuing CA R3", "Example Root X1", "2030-01-01T00:00:00Z")
            trusted = not (expired or untrusted)
            chain = {"source": rnd.choice(("observed", "probe")), "certificates": [leaf, inter],
                     "profiles": {"mozilla": {"trusted": trusted, "error": None if trusted else
                                              ("certificate expired" if expired else "unknown issuer"),
                                              "kind": "trust"}},
                     "path": [leaf["sha256"], inter["sha256"]] if trusted else []}
            if expired:
                codes.append("expired")
            if untrusted:
                codes.append("untrusted")
            if 0.13 < roll < 0.15:
                outcome, version = "client-alert", None
                alert = {"from": "client", "code": 48, "description": "unknown_ca"}
                codes.append("client-rejected-certificate")
        findings = [_finding(c, host, sni) for c in codes]
        started = self.t0 + i * 0.05
        return {
            "schema": 1, "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + f".{i % 1000:03d}Z",
            "client": f"{rnd.choice(self.clients)}:{rnd.randint(30000, 60999)}",
            "connect": {"host": host, "port": port},
            "upstream": (None if outcome == "connect-failed"
                         else {"address": f"93.184.{i % 250}.{i % 199}:{port}"}),
            "sni": sni,
            "client_hello": None if outcome == "connect-failed" else
            {"sni_present": sni is not None, "alpn": ["h2", "http/1.1"], "versions": ["TLSv1.3", "TLSv1.2"]},
            "handshake": {"outcome": outcome, "version": version, "alert": alert, "detail": detail,
                          "ms": round(rnd.random() * 120, 1)},
            "chain": chain,
            "findings": findings,
            "flagged": any(f["severity"] != "info" for f in findings),
        }


def write_recording(path: Path, count: int) -> None:
    from inspector.records.record import dumps

    maker = RecordMaker()
    with path.open("w") as f:
        for _ in range(count):
            f.write(dumps(maker.make()))


# --- the child: the app, headless -----------------------------------------------------------


async def _child(path: Path, t0: float, count: int, runs: int) -> dict:
    from inspector.tui import FileFeed, InspectorApp

    out: dict = {}
    app = InspectorApp(FileFeed(path), export_dir=path.parent, log_path=None)
    painted: list[tuple[float, int]] = []  # (when, rows in the table) at each drawn row line

    async with app.run_test(size=(160, 45)) as pilot:
        table = app.table
        draw = table.render_line

        def render_line(y: int):
            # The moment the compositor draws a table row is when the user sees it.
            if y == 1 and table.row_count():
                painted.append((time.time(), len(app.model.rows)))
            return draw(y)

        table.render_line = render_line
        while not painted:
            await pilot.pause(0.01)
        out["first_screen_s"] = painted[0][0] - t0
        out["rows_on_first_screen"] = painted[0][1]
        while not painted or painted[-1][1] < count:
            await pilot.pause(0.02)
        out["all_loaded_s"] = next(when for when, rows in painted if rows >= count) - t0
        out["rss_after_load_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        # live batches at 100k rows, the way a live feed delivers them
        maker = RecordMaker(seed=2)
        feed_ms, ui_ms, ui_wall_ms = [], [], []
        for _ in range(runs):
            batch = [maker.make() for _ in range(BATCH)]
            await pilot.pause(0.3)  # the regular flush timer and the hosts catch-up go idle
            start = time.process_time()
            for r in batch:
                app._on_record(r)
            mid, wall = time.process_time(), time.perf_counter()
            app.flush()
            await pilot.pause()  # the repaint
            # CPU time, not wall: pause() also sleeps while it checks the app is idle.
            feed_ms.append((mid - start) * 1000)
            ui_ms.append((time.process_time() - mid) * 1000)
            ui_wall_ms.append((time.perf_counter() - wall) * 1000)
        assert len(app.model.rows) == count + runs * BATCH
        assert app.table.follow and app.table.current_index == len(app.model.rows) - 1
        out["batch_feed_ms"] = feed_ms
        out["batch_ui_ms"] = ui_ms
        out["batch_ui_wall_ms"] = ui_wall_ms

        await pilot.pause(0.3)
        start = time.process_time()
        app.model.set_filter(search="service42")
        app.table.keep_index(app.table.current_index)
        await pilot.pause()
        out["search_100k_ms"] = (time.process_time() - start) * 1000
        out["search_matches"] = len(app.model.visible)
        app.model.set_filter(search="")

        await pilot.pause(0.3)
        start = time.process_time()
        await pilot.press("h")
        await pilot.pause()
        out["hosts_view_first_ms"] = (time.process_time() - start) * 1000
        out["hosts"] = len(app.hosts.hosts)
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- the parent -----------------------------------------------------------------------------


def _run_child(path: Path, count: int, runs: int) -> dict:
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--t0", repr(t0), "--records", str(count),
         "--runs", str(runs)],
        capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the benchmark child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _report(res: dict, count: int, file_mb: float) -> dict:
    batch_total = [f + u for f, u in zip(res["batch_feed_ms"], res["batch_ui_ms"])]
    summary = {
        "records": count,
        "file_mb": round(file_mb, 1),
        "first_screen_s": round(res["first_screen_s"], 2),
        "rows_on_first_screen": res["rows_on_first_screen"],
        "all_loaded_s": round(res["all_loaded_s"], 2),
        "rss_mb": round(res["rss_mb"], 1),
        "rss_after_load_mb": round(res["rss_after_load_mb"], 1),
        "batch_size": BATCH,
        "batch_ui_ms_median": round(statistics.median(res["batch_ui_ms"]), 1),
        "batch_ui_ms_max": round(max(res["batch_ui_ms"]), 1),
        "batch_ui_wall_ms_median": round(statistics.median(res["batch_ui_wall_ms"]), 1),
        "batch_feed_ms_median": round(statistics.median(res["batch_feed_ms"]), 1),
        "batch_total_ms_median": round(statistics.median(batch_total), 1),
        "batch_total_ms_max": round(max(batch_total), 1),
        "search_100k_ms": round(res["search_100k_ms"], 1),
        "hosts_view_first_ms": round(res["hosts_view_first_ms"], 1),
        "hosts": res["hosts"],
        "targets": TARGETS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }
    summary["pass"] = {
        "first_screen": summary["first_screen_s"] <= TARGETS["first_screen_s"],
        "rss": summary["rss_mb"] <= TARGETS["rss_mb"],
        "batch": summary["batch_total_ms_max"] <= TARGETS["batch_ms"],
    }
    rows = [
        ("open: first screen (process start)", f"{summary['first_screen_s']:.2f} s", "<= 2 s"),
        ("open: all 100k loaded and painted", f"{summary['all_loaded_s']:.2f} s", ""),
        ("peak RSS", f"{summary['rss_mb']:.0f} MB", "<= 200 MB"),
        (f"{BATCH}-record batch at 100k rows: UI flush + repaint, CPU",
         f"{summary['batch_ui_ms_median']:.1f} ms (max {summary['batch_ui_ms_max']:.1f})", ""),
        ("  the same, wall clock until painted (incl. idle polling)",
         f"{summary['batch_ui_wall_ms_median']:.1f} ms", ""),
        (f"{BATCH}-record batch: feed side (rows + spool)", f"{summary['batch_feed_ms_median']:.1f} ms", ""),
        (f"{BATCH}-record batch: total", f"{summary['batch_total_ms_median']:.1f} ms "
         f"(max {summary['batch_total_ms_max']:.1f})", "<= 60 ms"),
        ("search over 100k rows + repaint, CPU", f"{summary['search_100k_ms']:.0f} ms", ""),
        (f"hosts view opened at 100k rows ({summary['hosts']} hosts), CPU",
         f"{summary['hosts_view_first_ms']:.0f} ms", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{count:,} records, {file_mb:.0f} MB JSON Lines, {os.cpu_count()} CPUs")
    for name, value, target in rows:
        print(f"  {name:<{width}}  {value:>24}  {target}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10, help="live batches to time")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="write the recording here and keep it")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        res = asyncio.run(_child(args.child, args.t0, args.records, args.runs))
        print(json.dumps(res))
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"bench-{args.records}.jsonl"
        start = time.perf_counter()
        write_recording(path, args.records)
        file_mb = path.stat().st_size / 1e6
        print(f"wrote {path} ({file_mb:.0f} MB) in {time.perf_counter() - start:.1f} s")
        summary = _report(_run_child(path, args.records, args.runs), args.records, file_mb)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {RESULTS}")
    return 0 if all(summary["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
