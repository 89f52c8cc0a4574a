"""Where the UI's records come from: a recorded file, the spool, the live proxy."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.records.jsonl import MAX_LINE, Entry, JsonlReader, Problem, parse_line, read_records
from inspector.tui import FileFeed
from inspector.tui.feeds import PROBLEMS_REPORTED
from inspector.tui.header.status import status_text

from .support import HOST, RunningUI, good_and_no_sni, live_proxy, wait_for


def rec(i: int, **extra) -> dict:
    return {"schema": 1, "id": f"t{i}", "started": "2025-01-01T00:00:00.000Z", "client": "127.0.0.1:1",
            "connect": {"host": f"h{i}.test", "port": 443}, "sni": f"h{i}.test",
            "client_hello": {"sni_present": True}, "handshake": {"outcome": "established"},
            "chain": None, "findings": [], "flagged": False, **extra}


def line(r: dict) -> str:
    return json.dumps(r) + "\n"


# --- the reader ---------------------------------------------------------------------------


def test_reader_reports_each_bad_line_by_number_and_keeps_going(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(line(rec(1)) + "{not json\n" + "\n" + "[1, 2]\n" + line(rec(2))
                    + '{"connect": "x"}\n' + line(rec(3)))
    records, problems = read_records(path)
    assert [r["id"] for r in records] == ["t1", "t2", "t3"]
    assert [(p.line, p.message.split(" (")[0]) for p in problems] == [
        (2, "not JSON"), (4, "not a tunnel record"), (6, "not a tunnel record")]
    assert str(problems[1]) == "line 4: not a tunnel record (a JSON list)"


def test_reader_truncated_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    whole = line(rec(2))
    path.write_text(line(rec(1)) + whole[:30])
    with JsonlReader(path) as reader:
        items = list(reader.read(final=True))
    assert isinstance(items[0], Entry) and items[0].record["id"] == "t1"
    assert isinstance(items[1], Problem) and items[1].line == 2
    assert "truncated last line (30 bytes, no newline)" in items[1].message
    # a complete last record without its newline is a record, not a problem
    path.write_text(line(rec(1)) + whole.rstrip("\n"))
    records, problems = read_records(path)
    assert [r["id"] for r in records] == ["t1", "t2"] and problems == []


def test_reader_holds_back_a_partial_line_until_it_is_complete(tmp_path):
    path = tmp_path / "r.jsonl"
    whole = line(rec(2))
    path.write_text(line(rec(1)) + whole[:25])
    with JsonlReader(path) as reader:
        assert [e.record["id"] for e in reader.read(final=False)] == ["t1"]
        assert reader.pending_bytes == 25
        with path.open("a") as f:
            f.write(whole[25:] + line(rec(3)))
        entries = list(reader.read(final=False))
        assert [e.record["id"] for e in entries] == ["t2", "t3"]
        # offsets point at the start of each line: a record can be read again
        assert reader.record_at(entries[0].offset)["id"] == "t2"
        assert reader.record_at(0)["id"] == "t1"


def test_reader_skips_a_line_too_long_to_be_a_record(tmp_path):
    path = tmp_path / "r.jsonl"
    with path.open("w") as f:
        f.write(line(rec(1)))
        f.write("x" * (MAX_LINE + 10) + "\n")
        f.write(line(rec(2)))
    records, problems = read_records(path)
    assert [r["id"] for r in records] == ["t1", "t2"]
    assert len(problems) == 1 and problems[0].line == 2 and "longer than" in problems[0].message


def test_reader_notices_a_file_truncated_or_replaced(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(line(rec(1)) + line(rec(2)))
    with JsonlReader(path) as reader:
        list(reader.read(final=False))
        assert reader.changed_under_us() is None
        path.write_text(line(rec(1)))  # same inode, shorter
        assert "shrank" in reader.changed_under_us()
        os.replace(tmp_path / "r.jsonl", tmp_path / "old.jsonl")
        (tmp_path / "r.jsonl").write_text(line(rec(1)) + line(rec(2)) + line(rec(3)))
        assert "replaced" in reader.changed_under_us()


def test_parse_line_accepts_what_json_accepts_and_names_the_rest():
    assert parse_line(line(rec(1)).encode())["id"] == "t1"
    assert parse_line(b"  " + line(rec(1)).encode() + b"  ")["id"] == "t1"
    assert parse_line(b'{"a":') == "not JSON (expecting a value at column 6)"
    assert parse_line(line(rec(1)).encode() + b"x").startswith("not JSON (extra data")
    assert parse_line(b"\xff").startswith("not JSON ('utf-8' codec")
    assert parse_line(b"") == "not JSON (the line is empty)"


# --- the file feed --------------------------------------------------------------------------


def test_file_feed_delivers_refs_and_logs_problems_up_to_a_limit(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    bad = PROBLEMS_REPORTED + 5
    path.write_text(line(rec(1)) + "garbage\n" * bad + line(rec(2)))
    got: list[tuple[str, int]] = []

    async def run():
        feed = FileFeed(path)
        status = await feed.start(lambda r, ref: got.append((r["id"], ref)))
        assert status == "file r.jsonl"
        assert await asyncio.to_thread(feed.loaded.wait, 10)
        assert feed.read_record(got[1][1])["id"] == "t2"
        await feed.stop()
        return feed

    with caplog.at_level(logging.INFO, logger="inspector.tui.feeds"):
        feed = asyncio.run(run())
    assert [i for i, _ in got] == ["t1", "t2"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == PROBLEMS_REPORTED + 1
    assert warnings[0] == "r.jsonl line 2: not JSON (expecting a value at column 1)"
    assert f"{bad} lines skipped in all" in warnings[-1]
    assert feed.stats() == {"problem lines": bad}


def test_file_feed_cannot_start_on_a_missing_file(tmp_path):
    from inspector.tui.feeds import FeedError

    with pytest.raises(FeedError, match="cannot open .*nope.jsonl: No such file"):
        asyncio.run(FileFeed(tmp_path / "nope.jsonl").start(lambda r, ref: None))


def test_follow_stops_when_the_file_is_replaced(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    path.write_text(line(rec(1)))
    got = []

    def stopped_following() -> bool:
        return any("stopped following" in r.getMessage() for r in caplog.records)

    async def run():
        feed = FileFeed(path, follow=True, poll_interval=0.05)
        await feed.start(lambda r, ref: got.append(r["id"]))
        assert await asyncio.to_thread(feed.loaded.wait, 5)  # the file as it was: t1
        path.unlink()
        path.write_text(line(rec(9)))
        await asyncio.to_thread(wait_for, stopped_following, 5, "the feed to stop following")
        await feed.stop()

    with caplog.at_level(logging.WARNING, logger="inspector.tui.feeds"):
        asyncio.run(run())
    assert got == ["t1"]
    assert any("stopped following" in r.getMessage() for r in caplog.records)


# --- the live proxy's process and its UI ----------------------------------------------------


async def _listening_port(ui: RunningUI) -> int:
    """The port once the app's feed says where the proxy listens (bounded: 10 s)."""
    app = ui.app
    await ui.wait_for(lambda: app.status.source.startswith("listening on") or app.start_error,
                      what="the proxy to listen")
    assert app.start_error is None, app.start_error
    return int(app.status.source.rsplit(":", 1)[1])


def test_the_ui_shows_the_proxy_records_and_reads_them_back(tmp_path, strict_server, pki, running_app):
    port = strict_server.port

    async def run():
        async with live_proxy({"inspector_connect_to": [f"{HOST}:{port}:127.0.0.1:{port}"]}) as proxy:
            app = await proxy.ui(tmp_path, tmp_path / "ui.log")
            async with running_app(app) as ui:
                proxy_port = await _listening_port(ui)
                assert proxy_port == proxy.port
                await asyncio.to_thread(good_and_no_sni, proxy_port, port, pki["root_pem"])
                await ui.wait_for(lambda: len(app.model.rows) >= 2, 20, "both records in the table")
                rows = {r.sni: r for r in app.model.rows}
                assert rows[HOST].outcome.startswith("established")
                assert "sni-missing" in dict(rows["(none)"].codes)
                await ui.press("f")  # the flagged one only; enter reads it back from the spool
                await ui.press("enter")
                await ui.wait_for(lambda: app.detail.display, what="the detail pane")
                assert app.detail.record_id == rows["(none)"].id
                assert "sni-missing" in ui.text()

    asyncio.run(run())


def test_a_new_ui_sees_every_record_once_and_the_proxy_never_waited(tmp_path, strict_server, pki,
                                                                     running_app):
    """A UI that goes away (a crash) and a new one: the new UI shows every record so far,
    each once, and the tunnels made with no UI connected are among them."""
    port = strict_server.port

    async def run():
        async with live_proxy({"inspector_connect_to": [f"{HOST}:{port}:127.0.0.1:{port}"]}) as proxy:
            first = await proxy.ui(tmp_path)
            async with running_app(first) as ui:
                proxy_port = await _listening_port(ui)
                await asyncio.to_thread(good_and_no_sni, proxy_port, port, pki["root_pem"])
                await ui.wait_for(lambda: len(first.model.rows) == 2, 20, "2 rows in the first UI")
            proxy.host.disconnect(proxy.link)  # as the supervisor does when a UI process ends
            for _ in range(3):  # no UI at all meanwhile
                await asyncio.to_thread(good_and_no_sni, proxy_port, port, pki["root_pem"])
            second = await proxy.ui(tmp_path)
            async with running_app(second) as ui:
                await ui.shows(" 8 tunnels")
                await asyncio.to_thread(good_and_no_sni, proxy_port, port, pki["root_pem"])
                await ui.shows(" 10 tunnels")
                ids = [r.id for r in second.model.rows]
                assert len(ids) == len(set(ids)) == 10
                assert ids[:2] == [r.id for r in first.model.rows]

    asyncio.run(run())


def test_connects_refused_by_proxy_auth_are_counted_in_the_header(tmp_path, running_app):
    """A 407 opens no tunnel, so no row: the header's count, sent by the proxy's process,
    is what shows a client that never sends credentials."""

    async def run():
        async with live_proxy({"proxyauth": "u:secret"}) as proxy:
            app = await proxy.ui(tmp_path)
            async with running_app(app) as ui:
                proxy_port = await _listening_port(ui)

                def refused() -> bytes:
                    with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as s:
                        s.sendall(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode())
                        return s.recv(100)

                for _ in range(2):
                    assert (await asyncio.to_thread(refused)).startswith(b"HTTP/1.1 407")
                await ui.shows("auth refused 2")
                assert "auth refused 2" in status_text(app.model, app.status).plain
                assert not app.model.rows

    asyncio.run(run())


def test_the_proxy_asks_the_ui_to_quit(tmp_path, running_app):
    async def run():
        async with live_proxy({}) as proxy:
            app = await proxy.ui(tmp_path)
            async with running_app(app) as ui:
                await _listening_port(ui)
                proxy.link.quit()
                await ui.wait_for(lambda: app.return_code is not None, what="the UI to quit")
            assert app.return_code == 0 and app.feed_lost is None

    asyncio.run(run())


def test_a_proxy_process_that_dies_ends_the_ui_with_one_sentence(tmp_path, running_app):
    async def run():
        async with live_proxy({}) as proxy:
            app = await proxy.ui(tmp_path)
            async with running_app(app) as ui:
                await _listening_port(ui)
                proxy.link.close()  # its end of the socket closes, as when the process dies
                await ui.wait_for(lambda: app.return_code is not None, what="the UI to end")
            assert app.return_code == 1
            assert app.feed_lost == ("the proxy process ended unexpectedly: no new tunnels can be "
                                     "shown (those so far are in --jsonl, if it was given)")
            assert not proxy.host.spool_path.parent.exists()  # the UI removed what the proxy left

    asyncio.run(run())


def test_a_port_in_use_is_one_sentence_before_any_ui(tmp_path):
    """Live mode (no --headless) with a busy port: the proxy fails to listen before a UI
    is started, so no terminal is needed; one sentence, exit 2, as headless."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "inspector.cli", "--listen-port", str(port)],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    finally:
        busy.close()
    assert r.returncode == 2
    assert r.stderr == f"tunnel-inspector: port {port} is in use: pick another with --listen-port\n"
    assert r.stdout == ""


def test_a_ui_that_stops_reading_loses_figures_and_log_lines_but_never_quit():
    """The proxy never waits on its UI: past LINK_BUFFER queued bytes, figures and log
    lines are dropped; `quit` still goes out, or a UI that catches up would never learn
    the run is over. (A writer with a full buffer stands in for a UI that stopped reading.)"""
    from inspector.run.uihost import LINK_BUFFER, _Link

    class FullWriter:
        def __init__(self) -> None:
            self.written: list[bytes] = []
            self.transport = self

        def is_closing(self) -> bool:
            return False

        def get_write_buffer_size(self) -> int:
            return LINK_BUFFER + 1

        def write(self, data: bytes) -> None:
            self.written.append(data)

    writer = FullWriter()
    link = _Link(writer)  # type: ignore[arg-type]
    link.send({"stats": {"tunnels_open": 1}})
    link.send({"log": [30, "inspector", "a warning"]})
    link.quit()
    assert [json.loads(x) for x in writer.written] == [{"quit": True}]
    assert link.dropped == 2
