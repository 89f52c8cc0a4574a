"""The Textual UI driven like a user would, on records made by the real proxy.

The records come from one run of the real headless proxy against the lab's TLS
server (a good tunnel, no SNI, a mismatched SNI, a client that rejects the chain,
an unreachable upstream); one of them gets a broken chain attached for the detail
pane: the real verifier's verdict on a lab chain (an expired leaf under an
intermediate whose root no store holds), since probing is not what these tests are about.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import gc
import io
import json
import logging
import os
import socket
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from rich.console import Console
from textual import events
from textual.geometry import Region

from inspector.chain.trust import load_profile
from inspector.chain.verify import verify_chain
from inspector.findings.codes import is_flagged
from inspector.lab.http1 import connect_tunnel
from inspector.lab.pki import make_cert, make_key
from inspector.tui import FileFeed, InspectorApp
from inspector.tui.detail import render_detail
from inspector.tui.model import SNI_MISMATCH, SNI_NONE

from .support import HOST, TRACEBACK, ProxyProcess, RunningUI, tls_through_proxy

SIZE = (160, 45)
DEAD = "dead.lab.test"
EVIL_SUBJECT = "CN=[bold red]evil[/]\x1b]0;pwned\x07"
EVIL_SNI = "[link=https://evil.test]x.lab.test[/link]"


# --- helpers ------------------------------------------------------------------------


async def loaded(ui: RunningUI, count: int) -> None:
    """The file is read and its `count` records are applied and on screen."""
    app = ui.app
    await ui.wait_for(lambda: app.feed.loaded.is_set() and not app.waiting
                      and len(app.model.rows) >= count, what="the file to load")
    await ui.shows(f" {count:,} tunnel{'' if count == 1 else 's'}")


def rows_shown(app: InspectorApp) -> list[str]:
    return [app.model.rows[i].id for i in app.model.visible]


def codes(record: dict) -> set[str]:
    return {f["code"] for f in record["findings"]}


class ListFeed:
    """A feed the test pushes records into, as the proxy would; it keeps them to be
    read again, as the proxy's spool does."""

    def __init__(self, stats: dict | None = None) -> None:
        self.on_record = None
        self.stopped = False
        self._stats = stats or {}
        self._kept: list[dict] = []

    async def start(self, on_record) -> str:
        self.on_record = on_record
        return "listening on 127.0.0.1:18080"

    async def stop(self) -> None:
        self.stopped = True

    def stats(self) -> dict:
        return self._stats

    def read_record(self, ref: int) -> dict:
        return copy.deepcopy(self._kept[ref])

    def push(self, *records: dict) -> None:
        for r in records:
            self._kept.append(copy.deepcopy(r))
            self.on_record(copy.deepcopy(r), len(self._kept) - 1)


@contextlib.asynccontextmanager
async def fed_app(running_app, tmp_path: Path):
    """An app on a ListFeed, running, its feed started: yields (ui, feed)."""
    feed = ListFeed()
    app = InspectorApp(feed, export_dir=tmp_path, log_path=None)
    async with running_app(app, SIZE) as ui:
        await ui.wait_for(lambda: feed.on_record is not None, what="the feed to start")
        yield ui, feed


def app_for(path: Path, tmp_path: Path, **kw) -> InspectorApp:
    return InspectorApp(FileFeed(path, **kw), export_dir=tmp_path, log_path=tmp_path / "ui.log")


def write_jsonl(path: Path, records: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


# --- real records, made once ----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def real(tmp_path_factory, pki, strict_server) -> dict[str, dict]:
    """One record per case, from the real headless proxy and real TLS clients."""
    d = tmp_path_factory.mktemp("real")
    port = strict_server.port
    proxy = ProxyProcess(
        ["--connect-to", f"{HOST}:{port}:127.0.0.1:{port}",
         "--connect-to", f"{DEAD}:443:127.0.0.1:{_closed_port()}",
         "--handshake-timeout", "3", "--no-probe"],  # the chain is attached below (bad_chain)
        d / "records.jsonl",
    )
    try:
        cases = [
            ("ok", pki["root_pem"], HOST),
            ("no-sni", pki["root_pem"], None),
            ("mismatch", pki["root_pem"], "other.lab.test"),
            ("rejected", None, HOST),  # the system store does not trust the lab root
        ]
        for done, (_name, cafile, sni) in enumerate(cases, 1):
            try:
                with tls_through_proxy(proxy.port, HOST, port, cafile=cafile, sni=sni):
                    pass
            except OSError:
                pass  # the failures are the point
            proxy.records(done)  # one at a time: records keep the order of the cases
        with pytest.raises(ConnectionError):
            connect_tunnel(proxy.port, DEAD, 443)
        records = proxy.records(5)
    finally:
        _, _, err = proxy.stop()
    assert TRACEBACK not in err, err
    assert len(records) == 5, records
    by_name = dict(zip(["ok", "no-sni", "mismatch", "rejected", "unreachable"], records))
    # The records are the proxy's, in the order the clients ran: check they are what
    # the names say, so a test failing later is not a fixture surprise.
    assert by_name["ok"]["handshake"]["outcome"] == "established"
    assert by_name["no-sni"]["sni"] is None and "sni-missing" in codes(by_name["no-sni"])
    assert "sni-mismatch" in codes(by_name["mismatch"])
    assert by_name["rejected"]["handshake"]["outcome"] == "client-alert"
    assert by_name["unreachable"]["handshake"]["outcome"] == "connect-failed"
    return by_name


def _utc(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


@pytest.fixture(scope="session")
def bad_chain(tmp_path_factory) -> dict:
    """The real verifier's chain object and findings for a lab chain: an expired EC leaf
    for HOST under an RSA intermediate, CN=Lab Old CA, issued by CN=Unknown Root, which
    no store holds; judged by the mozilla store and an old-android client store."""
    root = make_cert("Unknown Root", ca=True, subject_name=_cn("Unknown Root"),
                     not_before=_utc("2020-01-01"), not_after=_utc("2099-01-01"))
    ca = make_cert("Lab Old CA", root, ca=True, subject_name=_cn("Lab Old CA"), key=make_key("rsa2048"),
                   not_before=_utc("2020-01-01"), not_after=_utc("2099-01-01"))
    leaf = make_cert(HOST, ca, sans=(HOST,), subject_name=_cn(HOST),
                     not_before=_utc("2020-01-01"), not_after=_utc("2021-01-01"))
    android = tmp_path_factory.mktemp("old-android") / "roots.pem"
    android.write_bytes(make_cert("Old Android Root", ca=True).pem)
    verdict = verify_chain([leaf.der, ca.der], sni=HOST, connect_host=HOST,
                           trust=[load_profile("mozilla")],
                           clients=[load_profile(str(android), name="old-android")],
                           now=dt.datetime.now(dt.timezone.utc))
    chain = verdict.to_dict("probe")
    findings = [f.to_dict() for f in verdict.findings]
    # what the tests below rely on, so a change in the verifier shows here first
    assert [c["subject"] for c in chain["certificates"]] == [f"CN={HOST}", "CN=Lab Old CA"]
    assert set(chain["profiles"]) == {"mozilla", "old-android"}
    assert not any(p["trusted"] for p in chain["profiles"].values())
    assert {"expired", "untrusted"} <= {f["code"] for f in findings}
    return {"chain": chain, "findings": findings}


def broken_chain(record: dict, bad_chain: dict) -> dict:
    """`record` with the bad chain attached, as the chain judge attaches a verdict."""
    r = copy.deepcopy(record)
    r["id"] = "broken-chain-" + r["id"]
    r["chain"] = copy.deepcopy(bad_chain["chain"])
    r["findings"] = r["findings"] + copy.deepcopy(bad_chain["findings"])
    r["flagged"] = is_flagged(r["findings"])
    return r


@pytest.fixture
def records(real, bad_chain) -> list[dict]:
    return [real["ok"], real["no-sni"], real["mismatch"], real["rejected"], real["unreachable"],
            broken_chain(real["ok"], bad_chain)]


@pytest.fixture
def jsonl(tmp_path, records) -> Path:
    return write_jsonl(tmp_path / "records.jsonl", records)


# --- the table ------------------------------------------------------------------------


def test_table_shows_every_tunnel_with_sni_and_outcome(jsonl, records, real, tmp_path, running_app):
    async def run():
        app = app_for(jsonl, tmp_path)
        async with running_app(app, SIZE) as ui:
            await loaded(ui, len(records))
            text = ui.text()
            assert f"{len(records)} tunnels" in text
            flagged = sum(r["flagged"] for r in records)
            assert f"{flagged} flagged" in text
            assert "sni-missing 1" in text and "sni-mismatch 1" in text
            lines = text.splitlines()
            port = real["ok"]["connect"]["port"]
            mismatch = next(line for line in lines if "other.lab.test" in line)
            assert f"{HOST}:{port}" in mismatch and "sni-mismatch" in mismatch
            none = next(line for line in lines if "(none)" in line)
            assert "sni-missing" in none and "server alert: unrecognized_name" in none
            assert any(f"{DEAD}:443" in line and "(not seen)" in line and "connect-failed" in line
                       for line in lines)
            assert any("client alert: unknown_ca" in line and "client-rejected-" in line for line in lines)
            assert any("untrusted" in line and "expired" in line for line in lines)
            # follow mode: the cursor sits on the newest tunnel
            assert app.table.follow and app.table.current_index == len(records) - 1

    asyncio.run(run())


def test_an_80_column_terminal_keeps_the_verdict_and_findings(jsonl, records, tmp_path, running_app):
    """Too narrow for every column: client, then time, are left out, never the why."""
    async def run():
        app = app_for(jsonl, tmp_path)
        async with running_app(app, (80, 30)) as ui:
            await loaded(ui, len(records))
            lines = ui.lines()
            header = next(line for line in lines if "CONNECT host" in line)
            assert "verdict" in header and "findings" in header
            assert "client" not in header and "time" not in header
            none = next(line for line in lines if "(none)" in line)
            assert "sni-missing" in none
            assert any("untrusted" in line and "expired" in line for line in lines)
            # the view's state leads the header line, so the cut end never hides it
            await ui.press("f", "p")
            await ui.shows("PAUSED", "filter: flagged only")
            top = ui.lines()[0]
            assert "PAUSED" in top and "filter: flagged only" in top
            await ui.press("p", "f", "h")
            await ui.shows("view: hosts")
            header = next(line for line in ui.lines() if "CONNECT host" in line)
            assert "verdict" in header and "findings" in header and "last" not in header

    asyncio.run(run())


def _segments(app: InspectorApp, model_index: int):
    pos = app.model.position_of(model_index)
    y = pos - round(app.table.scroll_y) + 1
    return list(app.table.render_line(y))


def test_missing_and_mismatched_sni_are_highlighted_in_the_sni_cell(jsonl, records, tmp_path, running_app):
    async def run():
        app = app_for(jsonl, tmp_path)
        async with running_app(app, SIZE) as ui:
            await loaded(ui, len(records))
            ok_segments = _segments(app, 0)
            base_bg = {s.style.bgcolor for s in ok_segments if s.style}
            for index, text, state in ((1, "(none)", SNI_NONE), (2, "other.lab.test", SNI_MISMATCH)):
                assert app.model.rows[index].sni_state == state
                cell = next(s for s in _segments(app, index) if s.text.strip() == text)
                assert cell.style.bgcolor is not None and cell.style.bgcolor not in base_bg, cell
                others = [s for s in _segments(app, index) if s.text.strip() and s.text.strip() != text]
                assert all(s.style.bgcolor in base_bg for s in others)
            # rows are coloured by their worst severity: errors share one colour, clean rows another
            error_fg = {s.style.color for s in _segments(app, 1) if "server alert" in s.text}
            clean_fg = {s.style.color for s in ok_segments if "established" in s.text}
            assert error_fg and error_fg.isdisjoint(clean_fg)

    asyncio.run(run())


def test_f_shows_flagged_only_and_back(jsonl, records, tmp_path, running_app):
    async def run():
        app = app_for(jsonl, tmp_path)
        async with running_app(app, SIZE) as ui:
            await loaded(ui, len(records))
            assert not records[0]["flagged"]  # the good tunnel
            await ui.press("f")
            flagged = [r["id"] for r in records if r["flagged"]]
            assert rows_shown(app) == flagged
            text = await ui.shows("filter: flagged only")
            assert "filter: flagged only" in text and f"({len(flagged)} shown)" in text
            ok_target = f"{HOST}:{records[0]['connect']['port']}"
            assert not [ln for ln in text.splitlines()
                        if ok_target in ln and "established" in ln and "untrusted" not in ln]
            await ui.press("f")
            assert len(rows_shown(app)) == len(records)

    asyncio.run(run())


def test_slash_searches_host_sni_code_and_subject_case_insensitively(jsonl, records, tmp_path, running_app):
    async def run():
        app = app_for(jsonl, tmp_path)
        async with running_app(app, SIZE) as ui:
            await loaded(ui, len(records))
            for query, expected in (
                ("OTHER.LAB", [records[2]["id"]]),  # SNI
                (DEAD.upper(), [records[4]["id"]]),  # CONNECT host
                ("sni-missing", [records[1]["id"]]),  # finding code
                ("LAB OLD CA", [records[5]["id"]]),  # certificate subject
            ):
                await ui.press("slash")
                assert app.focused is app.search_bar
                app.search_bar.value = ""
                await ui.press(*query)
                # the search applies after its debounce
                await ui.wait_for(lambda: app.model.needle == query.lower(), what=f"the search {query!r}")
                assert rows_shown(app) == expected, query
                await ui.press("enter")  # keeps the search, back to the table
                assert app.focused is app.table
                await ui.shows(f"search “{query.lower()}”")
            await ui.press("slash", "escape")
            assert len(rows_shown(app)) == len(records)
            await ui.wait_for(lambda: "search" not in ui.lines()[0], what="the search to leave the header")

    asyncio.run(run())


def test_scrolling_up_stops_following_and_end_resumes(tmp_path, real, running_app):
    async def run():
        async with fed_app(running_app, tmp_path) as (ui, feed):
            app = ui.app
            for i in range(100):
                feed.push({**real["ok"], "id": f"t{i}"})
            await ui.wait_for(lambda: len(app.model.rows) == 100, what="100 rows")
            await ui.wait_for(lambda: app.table.current_index == 99, what="the cursor on the newest row")
            assert app.table.follow
            await ui.press("up")
            assert not app.table.follow and app.table.current_index == 98
            await ui.shows("not following")
            feed.push({**real["ok"], "id": "t100"})
            await ui.wait_for(lambda: len(app.model.rows) == 101, what="row 101")
            assert app.table.current_index == 98  # stayed put
            await ui.press("end")
            assert app.table.follow and app.table.current_index == 100
            feed.push({**real["ok"], "id": "t101"})
            await ui.wait_for(lambda: app.table.current_index == 101, what="the cursor to follow row 102")

    asyncio.run(run())


def _bar(app: InspectorApp) -> list[bool]:
    """For each body line of the table, whether the scrollbar's thumb is on it."""
    table = app.table
    thumb = table.style("scrollbar-thumb").bgcolor
    track = table.style("scrollbar").bgcolor
    assert thumb != track
    # through Textual's line cache, as the terminal got them (render_line would draw anew)
    lines = table.render_lines(Region(0, 1, table.size.width, table.body_height))
    cells = [list(line)[-1] for line in lines]
    assert all(c.text == " " and c.style.bgcolor in (thumb, track) for c in cells), cells
    return [c.style.bgcolor == thumb for c in cells]


def test_the_scrollbar_shows_where_the_view_is_and_the_wheel_scrolls(tmp_path, real, running_app):
    """The table draws its own scrollbar in its last column (Textual's ScrollBar widget
    was a second full-height render on every frame that scrolled)."""
    async def run():
        async with fed_app(running_app, tmp_path) as (ui, feed):
            app = ui.app
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(10)))
            await ui.wait_for(lambda: app.table.current_index == 9, what="10 rows")
            assert not any(_bar(app))  # all rows in view: no thumb
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(10, 200)))
            await ui.wait_for(lambda: app.table.current_index == 199, what="200 rows")
            height = app.table.body_height
            bar = _bar(app)
            size = round(height * height / 200)
            assert bar == [False] * (height - size) + [True] * size  # following: at the bottom
            await ui.press("home")
            assert _bar(app) == [True] * size + [False] * (height - size)
            table = app.table
            for _ in range(3):
                table.post_message(events.MouseScrollDown(table, 10, 5, 0, 1, 0, False, False, False))
            await ui.wait_for(lambda: table.scroll_y > 0, what="the wheel to scroll")
            bar = _bar(app)
            assert bar.count(True) == size and not bar[0]  # the thumb moved down
            table.post_message(events.MouseScrollUp(table, 10, 5, 0, -1, 0, False, False, False))
            await ui.wait_for(lambda: not table.follow, what="the wheel up to stop following")
            edge = table.size.width - 1
            await ui.pilot.click(table, offset=(edge, height))  # the scrollbar's bottom: the last row
            await ui.wait_for(lambda: table.current_index == 199 and table.follow, what="the last row")
            await ui.pilot.click(table, offset=(edge, 1 + height // 2))  # its middle: the middle
            await ui.wait_for(lambda: 90 <= table.current_index <= 110, what="the middle row")
            assert 0 < table.scroll_y < table.max_scroll_y
            await ui.pilot.mouse_down(table, offset=(edge, 1 + height // 2))  # dragged to the top
            await ui.pilot.hover(table, offset=(edge, 1))
            await ui.pilot.mouse_up(table, offset=(edge, 1))
            await ui.wait_for(lambda: table.current_index == 0, what="the first row")
            assert _bar(app)[0]

    asyncio.run(run())


def test_with_every_row_in_view_the_last_cell_is_part_of_its_row(tmp_path, real, running_app):
    async def run():
        async with fed_app(running_app, tmp_path) as (ui, feed):
            app = ui.app
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(5)))
            await ui.wait_for(lambda: app.table.current_index == 4, what="5 rows")
            table = app.table
            await ui.pilot.click(table, offset=(table.size.width - 1, 3))  # row 2's line
            await ui.wait_for(lambda: table.cursor == 2, what="row 2 chosen")

    asyncio.run(run())


def test_rows_arriving_below_the_view_redraw_only_the_scrollbar(tmp_path, real, running_app):
    """Not following, new rows land below the view: the lines on screen stay, and only
    the lines the thumb leaves or reaches are drawn again (a whole-table redraw per
    batch cost ~2.5 ms and 18 KB to the terminal, 4 times a second under a flood)."""
    async def run():
        async with fed_app(running_app, tmp_path) as (ui, feed):
            app = ui.app
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(1000)))
            await ui.wait_for(lambda: app.table.current_index == 999, what="1000 rows")
            await ui.press("up")
            await ui.shows("not following")
            before, bar_before = ui.text(), _bar(app)
            table, drawn = app.table, []
            render_line = table.render_line

            def counted(y):
                drawn.append(y)
                return render_line(y)

            table.render_line = counted
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(1000, 1060)))
            await ui.wait_for(lambda: len(app.model.rows) == 1060, what="60 more rows")
            await ui.shows(" 1,060 tunnels")
            table.render_line = render_line
            moved = {y + 1 for y, (a, b) in enumerate(zip(bar_before, _bar(app))) if a != b}
            assert moved and set(drawn) == moved, (sorted(set(drawn)), moved)
            lines = slice(table.region.y, table.region.bottom)
            assert ui.lines()[lines] == before.splitlines()[lines]  # the same rows on screen

    asyncio.run(run())


def test_rows_arriving_in_a_table_not_yet_full_show_while_not_following(tmp_path, real, running_app):
    async def run():
        async with fed_app(running_app, tmp_path) as (ui, feed):
            app = ui.app
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(3)))
            await ui.wait_for(lambda: app.table.current_index == 2, what="3 rows")
            await ui.press("up")
            await ui.shows("not following")
            assert ui.text().count("established") == 3
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(3, 5)))
            await ui.shows(" 5 tunnels")
            assert ui.text().count("established") == 5 and app.table.current_index == 1

    asyncio.run(run())


def test_garbage_is_collected_then_frozen_at_start_and_every_few_thousand_rows(
        tmp_path, real, running_app, monkeypatch):
    """A full collection walks every object not frozen: under a flood it took 35-60 ms
    of the UI's CPU at 6k rows, and a key waited for it. What the UI made at start, and
    the rows, are frozen after a collection (frozen garbage would never be freed), and
    now and then all is unfrozen and collected once (what died frozen is freed)."""
    from inspector.tui import app as app_module

    calls: list[str] = []

    class RecordingGC:
        def collect(self) -> int:
            calls.append("collect")
            return gc.collect()

        def freeze(self) -> None:
            calls.append("freeze")
            gc.freeze()

        def unfreeze(self) -> None:
            calls.append("unfreeze")
            gc.unfreeze()

    monkeypatch.setattr(app_module, "gc", RecordingGC())
    monkeypatch.setattr(app_module, "GC_FREEZE_ROWS", 50)
    monkeypatch.setattr(app_module, "GC_FULL_EVERY", 3)

    async def run():
        feed = ListFeed()
        app = InspectorApp(feed, export_dir=tmp_path, log_path=None)
        async with running_app(app, SIZE) as ui:
            await ui.wait_for(lambda: calls == ["collect", "freeze"], what="the first frame's freeze")
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(49)))
            await ui.wait_for(lambda: len(app.model.rows) == 49, what="the rows")
            assert calls == ["collect", "freeze"]
            feed.push({**real["ok"], "id": "t49"})
            await ui.wait_for(lambda: len(calls) == 4, what="the next freeze")
            feed.push(*({**real["ok"], "id": f"u{i}"} for i in range(50)))
            await ui.wait_for(lambda: len(calls) == 7, what="the third freeze")
            assert calls == ["collect", "freeze"] * 2 + ["unfreeze", "collect", "freeze"]

    asyncio.run(run())


def test_the_header_changes_with_the_table_in_one_frame(tmp_path, real, running_app):
    """Moving off the newest row updates the header in the same call, not in a later
    message: a frame drawn right after shows both (a message cost a second frame, ~30 ms
    later in a real terminal)."""
    async def run():
        async with fed_app(running_app, tmp_path) as (ui, feed):
            app = ui.app
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(5)))
            await ui.wait_for(lambda: app.table.current_index == 4, what="the cursor on the newest row")
            assert app.status.follow
            app.table.move_cursor(2)  # what up does; nothing is awaited before the check
            assert not app.table.follow and not app.status.follow
            app.table.action_last()
            assert app.table.follow and app.status.follow
            await ui.shows("at newest")

    asyncio.run(run())


# --- detail ---------------------------------------------------------------------------


def test_enter_explains_a_broken_chain(jsonl, records, tmp_path, running_app):
    broken = records[5]
    chain = broken["chain"]

    async def run():
        app = app_for(jsonl, tmp_path)
        async with running_app(app, (160, 60)) as ui:
            await loaded(ui, len(records))
            assert app.table.current_index == 5
            await ui.press("enter")
            text = await ui.shows("CONNECT target (proxy request)")
            assert app.detail.display and app.detail.record_id == broken["id"]
            detail = text[text.index("CONNECT target (proxy request)"):]
            head = detail.splitlines()[2]
            # CONNECT target and SNI side by side, on one line
            assert f"{HOST}:{broken['connect']['port']}" in head and HOST in head.split(":", 1)[1]
            for f in broken["findings"]:
                assert f["message"] in detail and f["hint"] in detail
            assert "verdict untrusted" in detail and "source probe" in detail
            assert "CN=Lab Old CA" in detail and "CN=Unknown Root" in detail
            assert "2021-01-01 expired" in detail  # the expired leaf
            assert "2099-01-01" in detail and "2099-01-01 expired" not in detail
            for cert in chain["certificates"]:  # as the verifier wrote them
                assert cert["key"] in detail and cert["signature"] in detail
                assert cert["sha256"][:12] in detail
            assert "EC secp256r1" in detail and "RSA 2048" in detail
            for name, profile in chain["profiles"].items():
                assert name in detail and profile["error"] in detail
            assert "established" in detail and broken["handshake"]["version"] in detail
            # the expired date is drawn in red
            console = Console(width=150, file=io.StringIO())
            rendered = console.render_lines(render_detail(broken), console.options)
            dates = {seg.text.strip(): seg.style for line in rendered for seg in line if "-01-01" in seg.text}
            assert dates["2021-01-01 expired"].color.name == "red"
            assert dates["2099-01-01"] is None or dates["2099-01-01"].color is None
            # moving the cursor updates the pane; escape closes it
            await ui.press("up")
            await ui.shows("could not connect upstream")
            assert app.detail.record_id == records[4]["id"]
            await ui.press("escape")
            assert not app.detail.display

    asyncio.run(run())


def _rendered(renderable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def test_the_chain_stays_readable_in_a_narrow_pane(records):
    """80 columns cannot hold the 9-column certificate table: one block per certificate."""
    broken = records[-1]
    wide, narrow = _rendered(render_detail(broken), 160), _rendered(render_detail(broken), 76)
    assert "not before" in wide and "not before" not in narrow
    for text in (wide, narrow):
        for cert in broken["chain"]["certificates"]:
            assert cert["subject"] in text and cert["issuer"] in text
        assert "2021-01-01 expired" in text
        assert all(p["error"] in text for p in broken["chain"]["profiles"].values())
    lines = [line.rstrip() for line in narrow.splitlines()]
    # no store validates this chain: no certificate is in a validated path
    first = lines.index("#0         not in the validated path")
    assert lines[first + 1:first + 4] == [f"subject    CN={HOST}", "issuer     CN=Lab Old CA",
                                          "valid      2020-01-01 to 2021-01-01 expired"]
    assert max(len(line) for line in lines) <= 76


def test_the_detail_pane_stays_on_its_tunnel_while_new_ones_arrive(tmp_path, records, running_app):
    async def run():
        async with fed_app(running_app, tmp_path) as (ui, feed):
            app = ui.app
            feed.push(*records[:3])
            await ui.wait_for(lambda: len(app.model.rows) == 3, what="3 rows")
            await ui.press("enter")
            assert app.detail.record_id == records[2]["id"] and not app.table.follow
            feed.push(*records[3:])
            # the new rows applied and drawn: a cursor that followed them would have moved
            await ui.shows(f" {len(records)} tunnels")
            assert app.detail.record_id == records[2]["id"] and app.table.current_index == 2

    asyncio.run(run())


def _column_text(screen: str, column: str, next_column: str, row: str) -> str:
    """The certificate table's cell under `column` in the row whose "#" cell starts with
    `row`, with the lines it folded onto."""
    lines = screen.splitlines()
    head = next(i for i, ln in enumerate(lines) if f" {column} " in ln and f" {next_column} " in ln)
    at, to = lines[head].index(f" {column} ") + 1, lines[head].index(f" {next_column} ") + 1
    first = next(i for i in range(head + 1, len(lines)) if lines[i][:at].strip() == row)
    parts = [lines[first][at:to].strip()]
    for ln in lines[first + 1:]:
        if ln[:at].strip() or not ln[at:to].strip():
            break
        parts.append(ln[at:to].strip())
    return "".join(parts)


def test_untrusted_strings_render_literally(tmp_path, real, bad_chain, running_app):
    evil = broken_chain(real["ok"], bad_chain)
    evil["sni"] = EVIL_SNI
    evil["chain"]["certificates"][0]["subject"] = EVIL_SUBJECT
    evil["connect"]["host"] = "[red]h\x1b[2Jost"
    evil["findings"].append({"code": "sni-mismatch", "severity": "error",
                             "message": "SNI [b]x[/b] vs \x1b[31mhost", "hint": "[/]"})
    path = write_jsonl(tmp_path / "evil.jsonl", [evil])

    async def run():
        app = app_for(path, tmp_path)
        async with running_app(app, (160, 60)) as ui:
            await loaded(ui, 1)
            await ui.press("enter")
            text = await ui.shows("CONNECT target (proxy request)")
            assert "\x1b" not in text and "\x07" not in text
            assert "[link=https://evil.test]x.lab.test[/link]" in text  # SNI, in the detail
            row = text.splitlines()[3]  # and in the table, cut in the middle to fit
            assert "[link=https" in row and "[/link]" in row  # the cell cuts the middle
            # the subject, folded in its column: every character there, escaped
            subject = _column_text(text, "subject", "issuer", row="0")
            assert subject.replace(" ", "") == r"CN=[boldred]evil[/]\x1b]0;pwned\x07"
            wide = Console(width=300, file=io.StringIO(), record=True)
            wide.print(render_detail(evil))
            assert r"CN=[bold red]evil[/]\x1b]0;pwned\x07" in wide.export_text()
            assert r"[red]h\x1b[2Jost" in text
            assert r"SNI [b]x[/b] vs \x1b[31mhost" in text and "fix: [/]" in text
            await ui.press("h")
            assert r"[red]h\x1b[2Jost" in await ui.shows("view: hosts")

    asyncio.run(run())


# --- hosts ----------------------------------------------------------------------------


def test_h_lists_hosts_with_counts_and_enter_shows_their_tunnels(jsonl, records, tmp_path, running_app):
    port = records[0]["connect"]["port"]
    target = f"{HOST}:{port}"

    async def run():
        app = app_for(jsonl, tmp_path)
        async with running_app(app, SIZE) as ui:
            await loaded(ui, len(records))
            await ui.press("h")
            await ui.shows("view: hosts")
            assert app.hosts.display and not app.table.display
            stats = {h.target: h for h in app.hosts.hosts}
            assert set(stats) == {target, f"{DEAD}:443"}
            main = stats[target]
            assert main.tunnels == 5 and main.flagged == sum(r["flagged"] for r in records[:4] + records[5:])
            assert set(main.snis) == {HOST, "(none)", "other.lab.test"}
            assert main.snis[HOST] == 3 and len(main.clients) == 1
            assert main.verdict == "untrusted"
            assert main.codes["sni-missing"] == 1 and main.codes["expired"] == 1
            line = next(ln for ln in ui.lines() if ln.strip().startswith(target))
            assert f" 5 {main.flagged:>7} " in line and "3: " in line
            assert "untrusted" in line and "error" in line
            assert "server-alert×2" in line  # errors first, the most frequent first
            # worst first: both hosts have errors; the busier one leads
            assert app.hosts.hosts[0].target == target
            await ui.press("enter")
            await ui.shows(f"host {target}")
            assert app.table.display and app.model.host == target
            assert len(rows_shown(app)) == 5
            await ui.press("escape")
            assert app.model.host is None and len(rows_shown(app)) == len(records)

    asyncio.run(run())


# --- pause, clear, batching -------------------------------------------------------------


def test_p_pauses_with_a_waiting_count_and_resumes(tmp_path, records, running_app):
    async def run():
        feed = ListFeed(stats={"probes_in_flight": 2, "cache_hits": 7})
        app = InspectorApp(feed, export_dir=tmp_path, log_path=None)
        async with running_app(app, SIZE) as ui:
            await ui.wait_for(lambda: feed.on_record is not None, what="the feed to start")
            feed.push(*records[:2])
            await ui.wait_for(lambda: len(app.model.rows) == 2, what="2 rows")
            await ui.press("p")
            feed.push(*records[2:])
            # the header counts them as waiting: a flush ran after they arrived, and kept them
            text = await ui.shows(f"PAUSED: {len(records) - 2} waiting")
            assert len(app.model.rows) == 2
            assert "probes in flight 2" in text and "cache hits 7" in text
            assert "listening on 127.0.0.1:18080" in text
            await ui.press("p")
            await ui.wait_for(lambda: len(app.model.rows) == len(records), what="the waiting rows")
            await ui.wait_for(lambda: "PAUSED" not in ui.text(), what="PAUSED to leave the header")
        assert feed.stopped  # the app stops its feed on the way out

    asyncio.run(run())


def test_c_clears_everything_shown_and_waiting(tmp_path, records, running_app):
    async def run():
        async with fed_app(running_app, tmp_path) as (ui, feed):
            app = ui.app
            feed.push(*records)
            await ui.wait_for(lambda: len(app.model.rows) == len(records), what="every row")
            await ui.press("p")
            feed.push(*records)
            await ui.press("c")
            assert len(app.model.rows) == 0 and not app.waiting
            text = await ui.shows(" 0 tunnels")
            assert "sni-missing" not in text
            await ui.press("p")
            feed.push(records[1])
            await ui.wait_for(lambda: len(app.model.rows) == 1, what="the row after clear")
            await ui.press("enter")
            await ui.wait_for(lambda: app.detail.display, what="the detail pane")
            assert app.detail.record_id == records[1]["id"]  # its own record, after the clear

    asyncio.run(run())


def test_records_arrive_in_batches_not_one_update_each(tmp_path, real, running_app):
    async def run():
        feed = ListFeed()
        app = InspectorApp(feed, export_dir=tmp_path, log_path=None, flush_interval=0.15)
        updates = []
        add = app.model.add

        def counted_add(batch):
            updates.append(len(batch))
            return add(batch)

        app.model.add = counted_add
        async with running_app(app, SIZE) as ui:
            await ui.wait_for(lambda: feed.on_record is not None, what="the feed to start")
            feed.push(*({**real["ok"], "id": f"b{i}"} for i in range(500)))
            await ui.wait_for(lambda: len(app.model.rows) == 500, what="500 rows")
            assert updates == [500]

    asyncio.run(run())



def test_a_steady_flow_is_applied_every_other_tick_and_a_key_goes_first(tmp_path, real, running_app):
    """Each apply repaints the whole table: under a flood at most one per APPLY_GAP, and
    none within KEY_FIRST after a key, so the key's redraw is drawn alone."""
    from inspector.tui.app import APPLY_GAP, KEY_FIRST

    async def run():
        feed = ListFeed()
        app = InspectorApp(feed, export_dir=tmp_path, log_path=None)
        applied: list[float] = []
        add = app.model.add

        def timed_add(batch):
            applied.append(loop.time())
            return add(batch)

        loop = asyncio.get_running_loop()
        app.model.add = timed_add
        keyed: list[float] = []
        cursor = None
        async with running_app(app, SIZE) as ui:
            cursor = app.table.action_cursor

            def timed_cursor(delta):
                keyed.append(loop.time())
                cursor(delta)

            app.table.action_cursor = timed_cursor
            await ui.wait_for(lambda: feed.on_record is not None, what="the feed to start")

            async def flood():  # a record every 20 ms, as 50 tunnels/s would
                for i in range(150):
                    feed.push({**real["ok"], "id": f"f{i}"})
                    await asyncio.sleep(0.02)

            pushing = asyncio.ensure_future(flood())
            for _ in range(3):  # a key when the next tick is due to apply rows
                count = len(applied)
                await ui.wait_for(lambda: len(applied) > count, what="an apply")
                await ui.wait_for(lambda: loop.time() >= applied[-1] + APPLY_GAP + 0.01,
                                  what="the next apply to be due")
                await ui.press("up")
                await ui.wait_for(lambda: applied[-1] > keyed[-1], what="an apply after the key")
            await pushing
            await ui.wait_for(lambda: len(app.model.rows) == 150, what="every row")
        gaps = [b - a for a, b in zip(applied, applied[1:])]
        assert len(applied) >= 5 and min(gaps) >= APPLY_GAP - 0.01, gaps
        for key in keyed:
            after = min(t for t in applied if t > key)
            assert after - key >= KEY_FIRST - 0.02, (key, applied)

    asyncio.run(run())

# --- export ---------------------------------------------------------------------------


def test_e_exports_flagged_tunnels_matching_the_search(jsonl, records, tmp_path, running_app):
    export_dir = tmp_path / "exports"
    export_dir.mkdir()

    async def run():
        app = InspectorApp(FileFeed(jsonl), export_dir=export_dir, log_path=None)
        async with running_app(app, SIZE) as ui:
            await loaded(ui, len(records))
            await ui.press("e")
            await ui.wait_for(lambda: app.last_export is not None, what="the export")
            path, count = app.last_export
            flagged = [r for r in records if r["flagged"]]
            assert count == len(flagged)
            doc = json.loads(path.read_text())
            assert doc["schema"] == 1 and doc["exported"].endswith("Z")
            assert doc["tunnels"] == flagged  # the records exactly as recorded
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert path.name.startswith("tunnel-inspector-flagged-") and path.suffix == ".json"
            said = f"exported {count} flagged tunnels to {path.name}"
            await ui.wait_for(lambda: any(said in m for m in ui.notices), what=f"the notice {said!r}")
            # with a search: only the flagged tunnels that match it
            app.last_export = None
            await ui.press("slash", *"sni-m", "enter")
            await ui.press("e")
            await ui.wait_for(lambda: app.last_export is not None, what="the second export")
            path2, count2 = app.last_export
            assert path2 != path and count2 == 2
            assert {r["id"] for r in json.loads(path2.read_text())["tunnels"]} == {
                records[1]["id"], records[2]["id"]}
            assert sorted(p.name for p in export_dir.iterdir()) == sorted([path.name, path2.name])

    asyncio.run(run())


# --- recorded streams ------------------------------------------------------------------


def test_truncated_last_line_is_reported_not_fatal(tmp_path, records, running_app):
    line = json.dumps(records[3])
    path = write_jsonl(tmp_path / "cut.jsonl", records[:3], tail=line[: len(line) // 2])

    async def run():
        app = app_for(path, tmp_path)
        async with running_app(app, SIZE) as ui:
            await loaded(ui, 3)
            # the warning comes once the whole file, the cut line too, has been read
            await ui.wait_for(lambda: any("line 4" in m and "truncated last line" in m for m in ui.notices),
                              what="the truncated-line notice")
            assert len(app.model.rows) == 3 and app.start_error is None
            await ui.press("l")
            await ui.shows("truncated last line")
            assert "truncated last line" in (tmp_path / "ui.log").read_text()

    asyncio.run(run())


def test_follow_shows_lines_appended_later(tmp_path, records, running_app):
    path = write_jsonl(tmp_path / "grow.jsonl", records[:1])

    async def run():
        app = InspectorApp(FileFeed(path, follow=True, poll_interval=0.05), export_dir=tmp_path,
                           log_path=None)
        async with running_app(app, SIZE) as ui:
            await ui.wait_for(lambda: len(app.model.rows) == 1, what="the first row")
            await ui.shows("following")
            line = json.dumps(records[1]) + "\n"
            with path.open("a") as f:
                f.write(line[:40])  # a writer caught mid-line
                f.flush()
                # the feed has read the partial line and holds it back (the header says so)
                await ui.shows("partial line 40 bytes")
                assert len(app.model.rows) == 1
                f.write(line[40:] + json.dumps(records[2]) + "\n")
            await ui.wait_for(lambda: len(app.model.rows) == 3, what="the completed rows")
            assert [r.id for r in app.model.rows] == [r["id"] for r in records[:3]]
            assert not any(n.severity == "warning" for n in ui.notifications)

    asyncio.run(run())


# --- feeds and the terminal -------------------------------------------------------------


def test_a_feed_that_cannot_start_ends_the_app_with_its_reason(tmp_path, running_app):
    async def run():
        app = app_for(tmp_path / "missing.jsonl", tmp_path)
        async with running_app(app, SIZE) as ui:
            await ui.wait_for(lambda: app.start_error is not None, what="the start error")
        assert app.return_code == 2
        assert "cannot open" in app.start_error and "missing.jsonl" in app.start_error

    asyncio.run(run())


def test_log_records_go_to_the_panel_and_file_never_the_terminal(tmp_path, capfd, running_app):
    root = logging.getLogger()
    stderr_handler = logging.StreamHandler()  # what the CLI installs for headless mode
    root.addHandler(stderr_handler)
    try:
        async def run():
            feed = ListFeed()
            app = InspectorApp(feed, export_dir=tmp_path, log_path=tmp_path / "ui.log")
            async with running_app(app, SIZE) as ui:
                await ui.wait_for(lambda: feed.on_record is not None, what="the feed to start")
                logging.getLogger("mitmproxy.proxy.server").warning("mitm says \x1b[31mhello")
                logging.getLogger("mitmproxy.proxy.server").info("client connect chatter")
                await ui.press("l")
                # Both were handled as they were logged, in order: once the warning is in
                # the panel, the INFO line would be there too if it were let in.
                text = await ui.shows(r"mitm says \x1b[31mhello")
                assert "client connect chatter" not in text  # mitmproxy's INFO: file only
            return app

        asyncio.run(run())
        assert stderr_handler in root.handlers  # put back after the UI
        log = (tmp_path / "ui.log").read_text()
        assert "mitm says" in log and "client connect chatter" in log
        assert stat.S_IMODE(os.stat(tmp_path / "ui.log").st_mode) == 0o600
        err = capfd.readouterr().err
        assert "mitm says" not in err and "chatter" not in err
    finally:
        root.removeHandler(stderr_handler)


# --- the client's stack -----------------------------------------------------------------

def test_stack_column_detail_and_search(tmp_path, real, running_app):
    """The stack is a column a narrow terminal leaves out first, a line of the detail
    pane, and something `/` finds."""
    java = json.loads(json.dumps(real["ok"]))
    java["id"] = "java-tunnel"
    java["client_hello"] |= {"stack": "java", "ja4": "t13d371200_db35923f8641_7c76daad20ec"}
    path = write_jsonl(tmp_path / "stacks.jsonl", [real["ok"], java])

    async def run():
        app = app_for(path, tmp_path)
        async with running_app(app, size=(160, 40)) as ui:
            await loaded(ui, 2)
            lines = ui.lines()
            header = next(line for line in lines if "CONNECT host" in line)
            assert "stack" in header and "client" in header
            assert any("openssl" in line for line in lines) and any(" java " in line for line in lines)
            await ui.press("slash", *"java")
            await ui.wait_for(lambda: rows_shown(app) == ["java-tunnel"], what="the search for java")
            await ui.press("enter", "enter")
            await ui.shows("client stack java   JA4 t13d371200_db35923f8641_7c76daad20ec")
        async with running_app(app_for(path, tmp_path), size=(100, 30)) as ui:
            await loaded(ui, 2)
            header = next(line for line in ui.lines() if "CONNECT host" in line)
            assert "stack" not in header and "client" in header  # the stack goes first

    asyncio.run(run())


def test_the_ui_log_is_capped_and_private(tmp_path):
    """ui.log rotates at LOG_MAX_BYTES into one older file, both 0600: it never grows forever."""
    import logging

    from inspector.tui.eventlog.router import LOG_MAX_BYTES, LogRouter

    path = tmp_path / "state" / "ui.log"
    router = LogRouter(path)
    router.install()
    try:
        line = "x" * 1000
        for _ in range(3 * LOG_MAX_BYTES // len(line)):
            logging.getLogger("inspector.test").warning(line)
    finally:
        router.uninstall()
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["ui.log", "ui.log.1"]
    assert all(f.stat().st_size <= LOG_MAX_BYTES + 2000 for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)


@pytest.mark.parametrize("follow,empty", [
    (False, "no tunnel records in this file"),
    (True, "no tunnel records yet: waiting for the file to grow"),
])
def test_an_empty_file_says_so_not_to_point_a_client_at_an_address(tmp_path, running_app,
                                                                     follow, empty):
    path = tmp_path / "empty.jsonl"
    path.write_text("")

    async def run():
        async with running_app(app_for(path, tmp_path, follow=follow)) as ui:
            screen = await ui.shows(empty)
            assert "point a client" not in screen

    asyncio.run(run())


def test_an_empty_view_says_why_it_is_empty(tmp_path, real, running_app):
    """A table with no row to show never says "no tunnels yet" when there are tunnels:
    it says that rows wait behind pause, or that the filter hides every one."""
    async def run():
        async with fed_app(running_app, tmp_path) as (ui, feed):
            app = ui.app
            await ui.shows("no tunnels yet")
            await ui.press("p")
            feed.push(*({**real["ok"], "id": f"t{i}"} for i in range(2)))
            await ui.shows("2 tunnels waiting: p shows them")
            await ui.press("p")
            await ui.shows(" 2 tunnels")
            await ui.press("slash", *"no-such-host")
            await ui.wait_for(lambda: app.model.needle == "no-such-host", what="the search")
            await ui.press("enter")
            screen = await ui.shows("nothing matches the filter (see the header)")
            assert "no tunnels yet" not in screen
            await ui.press("h")
            screen = await ui.shows("view: hosts", "nothing matches the filter (see the header)")
            assert "no hosts yet" not in screen
            await ui.press("h", "slash", "escape")
            screen = await ui.shows(" 2 tunnels")
            assert "nothing matches" not in screen

    asyncio.run(run())


def test_a_file_being_read_is_not_called_empty(tmp_path, records):
    path = write_jsonl(tmp_path / "r.jsonl", records)
    feed = FileFeed(path)
    assert feed.empty_text == "reading…"  # the reader has not finished the file
    feed.loaded.set()
    assert feed.empty_text == "no tunnel records in this file"
