"""Records from a fleet of runners: `open A B DIR/` merges their files into one view
ordered by time, `report FILE... --fail-on error` gates a pipeline on them offline.
The records are real: the demo's lab, scripted clients and proxy, run once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from inspector.tui import FileFeed, InspectorApp

from .support import env_without_proxy


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo's records (as JSON lines) and the summary line it printed at exit."""
    jsonl = tmp_path_factory.mktemp("demo") / "demo.jsonl"
    r = subprocess.run([sys.executable, "-m", "inspector.cli", "demo", "--headless", "--jsonl",
                        str(jsonl)], capture_output=True, text=True, timeout=120,
                       env=env_without_proxy())
    assert r.returncode == 0, r.stderr
    lines = jsonl.read_text().splitlines()
    assert len(lines) >= 10
    return lines, r.stdout.strip().splitlines()[-1]


def _report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector.cli", "report", *args],
                          capture_output=True, text=True, timeout=60)


def _split(lines: list[str], tmp_path):
    """Two runners' files: one named, one in a directory (with a broken last line)."""
    a = tmp_path / "runner-a.jsonl"
    a.write_text("".join(x + "\n" for x in lines[0::2]))
    (tmp_path / "fleet").mkdir()
    b = tmp_path / "fleet" / "runner-b.jsonl"
    b.write_text("".join(x + "\n" for x in lines[1::2]) + '{"torn": ')
    return a, b


def _counts(summary: str) -> tuple[str, set[str]]:
    """'N tunnels, M flagged (code n, ...)': equal counts list ties in any order."""
    head, _, codes = summary.partition(" (")
    return head, set(codes.rstrip(")").split(", "))


def test_report_merges_files_and_directories_and_gates_on_them(demo_run, tmp_path):
    lines, demo_summary = demo_run
    a, _ = _split(lines, tmp_path)
    r = _report(str(a), str(tmp_path / "fleet"), "--fail-on", "error")
    assert r.returncode == 1, r.stderr
    out = r.stdout.splitlines()
    assert _counts(out[0]) == _counts(demo_summary)  # the same run, read back from two files
    failing = [x for x in out if x.startswith("failing (--fail-on error): ")]
    assert failing and failing[0].endswith(" hosts")
    assert "closed-port.lab.test:1  upstream-unreachable" in r.stdout
    assert r.stderr == "tunnel-inspector: " + str(tmp_path / "fleet" / "runner-b.jsonl") + \
        ": 1 line skipped (not a record)\n"
    # one failing host is "1 host"
    one = tmp_path / "one-failing.jsonl"
    one.write_text(next(x for x in lines if "closed-port.lab.test" in x) + "\n")
    assert "failing (--fail-on error): 1 host\n" in _report(str(one), "--fail-on", "error").stdout
    # a runner whose tunnels were all clean passes the gate
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(x + "\n" for x in lines if not json.loads(x)["flagged"]))
    r = _report(str(clean), "--fail-on", "error")
    assert r.returncode == 0 and "failing" not in r.stdout and " 0 flagged" in r.stdout


def test_open_merges_the_runners_files_by_time_with_their_source(demo_run, tmp_path, running_app):
    lines, _ = demo_run
    a, b = _split(lines, tmp_path)
    every = [json.loads(x) for x in lines]

    async def run():
        app = InspectorApp(FileFeed(a, b), export_dir=tmp_path, log_path=None)
        async with running_app(app) as ui:
            await ui.wait_for(lambda: app.feed.loaded.is_set() and len(app.model.rows) == len(every),
                              15, "the files to load")
            return [app.feed.read_record(row.ref) for row in app.model.rows]

    shown = asyncio.run(run())
    assert sorted(r["id"] for r in shown) == sorted(r["id"] for r in every)
    assert [r["started"] for r in shown] == sorted(r["started"] for r in every)
    sources = {r["id"]: r["source"] for r in shown}
    assert {sources[json.loads(x)["id"]] for x in lines[0::2]} == {"runner-a.jsonl"}
    assert {sources[json.loads(x)["id"]] for x in lines[1::2]} == {"runner-b.jsonl"}


@pytest.mark.parametrize("follow", [False, True])
def test_the_header_says_following_only_for_a_followed_file(demo_run, tmp_path, follow, running_app):
    """The table's own place ("at newest") is not the feed's "following FILE": a file
    opened without --follow is never called followed, and a followed one says it once."""
    from inspector.tui.header import status_text

    lines, _ = demo_run
    path = tmp_path / "one.jsonl"
    path.write_text("".join(x + "\n" for x in lines))

    async def run():
        app = InspectorApp(FileFeed(path, follow=follow), export_dir=tmp_path, log_path=None)
        async with running_app(app) as ui:
            # loaded, and the header has drawn the count: the state it shows is final
            await ui.wait_for(lambda: app.feed.loaded.is_set() and len(app.model.rows) == len(lines)
                              and f" {len(lines):,} tunnels" in ui.text(), 15, "the file to load")
            return status_text(app.model, app.status).plain

    header = asyncio.run(run())
    assert header.count("following") == (1 if follow else 0), header
    assert "one.jsonl" in header


def test_several_files_show_a_source_column_that_search_finds(demo_run, tmp_path, running_app):
    lines, _ = demo_run
    a, b = _split(lines, tmp_path)

    async def run():
        app = InspectorApp(FileFeed(a, b), export_dir=tmp_path, log_path=None)
        async with running_app(app, size=(180, 45)) as ui:
            await ui.wait_for(lambda: app.feed.loaded.is_set() and len(app.model.rows) == len(lines),
                              15, "the files to load")
            assert "reading 2 files" in ui.lines()[0]
            header = next(line for line in ui.lines() if "CONNECT host" in line)
            assert header.split()[0] == "source"
            assert any(line.lstrip().startswith("runner-b") for line in ui.lines()), ui.text()
            await ui.press("slash", *"runner-b")
            await ui.wait_for(lambda: len(app.model.visible) == len(lines[1::2]), 10,
                              "the search for runner-b")
            assert {app.model.rows[i].source for i in app.model.visible} == {"runner-b.jsonl"}
        one = InspectorApp(FileFeed(a), export_dir=tmp_path, log_path=None)
        async with running_app(one, size=(180, 45)) as ui:
            await ui.wait_for(lambda: one.feed.loaded.is_set(), 15, "one file to load")
            header = next(line for line in ui.lines() if "CONNECT host" in line)
            assert "source" not in header  # one file: nothing to tell apart

    asyncio.run(run())
