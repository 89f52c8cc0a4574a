"""What a run leaves on disk: --jsonl holds whole records only, even on a full disk;
--export-flagged is checked before the proxy listens and waits on disk, not in memory.

The full-disk tests mount a small tmpfs (the tests run as root); where mounting is
impossible they are skipped with the reason, and only then.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import ssl
import stat
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from inspector.records import stream
from inspector.records.stream import JsonlSink
from inspector.run.report import EXIT_NOT_WRITTEN, RunReport

from .support import HOST, tls_through_proxy


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector.cli", *args], capture_output=True,
                          text=True, timeout=60)


@contextlib.contextmanager
def _tmpfs(where: Path, options: str):
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({r.stderr.strip() or r.returncode}): this test "
                    "needs root with CAP_SYS_ADMIN to fill a real file system")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    with _tmpfs(tmp_path / "small", "size=64k,mode=0700") as d:
        yield d


def _fill(path: Path) -> None:
    """Write `path` until the file system refuses: afterwards no page is free."""
    with open(path, "wb", buffering=0) as f:
        for _ in range(10_000):  # 64 KiB in pages is 16 writes; the bound is a safety net
            try:
                f.write(b"x" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                return
    raise AssertionError("the small file system never filled")


def _good_tunnel(p, server, pki) -> None:
    with tls_through_proxy(p.port, HOST, server.port, cafile=pki["root_pem"], sni=HOST):
        pass


def _flagged_tunnel(p, server) -> None:
    with contextlib.suppress(ssl.SSLError):  # no CA: the client rejects the lab chain
        with tls_through_proxy(p.port, HOST, server.port, cafile=None, sni=HOST):
            pass


def _whole_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), data[-200:]
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def _connect_to(server) -> tuple[str, str]:
    return "--connect-to", f"{HOST}:{server.port}:127.0.0.1:{server.port}"


def test_a_full_disk_loses_whole_records_only_and_the_run_says_so(
        small_fs, start_proxy, strict_server, pki):
    jsonl = small_fs / "t.jsonl"
    p = start_proxy(*_connect_to(strict_server), "--no-probe", jsonl=jsonl)
    for _ in range(3):
        _good_tunnel(p, strict_server, pki)
    assert len(p.records(3)) == 3
    _fill(small_fs / "filler")
    # The records' page still has room: the first records fit, one is cut at the page's
    # end by a short write, the rest find no space at all.
    for _ in range(12):
        _good_tunnel(p, strict_server, pki)
    assert len(p.tunnel_lines(15)) == 15
    (small_fs / "filler").unlink()
    for _ in range(3):  # space again: these are written, on lines of their own
        _good_tunnel(p, strict_server, pki)
    assert len(p.tunnel_lines(18)) == 18
    code, out, err = p.stop()

    records = _whole_lines(jsonl)  # every line parses: no fragment, nothing glued
    lost = 18 - len(records)
    assert lost > 0, "the disk never refused a record: the test did not test anything"
    assert len({r["id"] for r in records}) == len(records)
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("18 tunnels, 0 flagged, ")
    assert summary.endswith(f", {lost} records NOT written to {jsonl}: No space left on device")
    assert code == EXIT_NOT_WRITTEN
    (warning,) = err.splitlines()  # one sentence, not one per record
    assert f"cannot write records to {jsonl}: No space left on device" in warning
    assert "Traceback" not in err


def test_a_restart_on_a_torn_last_line_starts_a_new_line(start_proxy, strict_server, pki,
                                                         tmp_path):
    jsonl = tmp_path / "torn.jsonl"
    earlier = start_proxy(*_connect_to(strict_server), "--no-probe", jsonl=jsonl)
    _good_tunnel(earlier, strict_server, pki)
    earlier.records(1)
    earlier.stop()
    whole = jsonl.read_bytes()
    torn = whole[: len(whole) // 2]  # a writer killed mid-line left this behind
    jsonl.write_bytes(whole + torn)

    p = start_proxy(*_connect_to(strict_server), "--no-probe", jsonl=jsonl)
    _good_tunnel(p, strict_server, pki)
    p.tunnel_lines(1)
    code, _, _ = p.stop()
    assert code == 0
    first, kept, new, end = jsonl.read_bytes().split(b"\n")
    assert first + b"\n" == whole and kept == torn and end == b""  # the torn line stays torn
    assert json.loads(new)["handshake"]["outcome"] == "established"


def test_dev_full_as_jsonl_is_one_sentence_a_count_and_a_non_zero_exit(
        start_proxy, strict_server, pki):
    p = start_proxy(*_connect_to(strict_server), "--no-probe", jsonl=Path("/dev/full"))
    for _ in range(3):
        _good_tunnel(p, strict_server, pki)
    assert len(p.tunnel_lines(3)) == 3
    code, out, err = p.stop()
    assert code == EXIT_NOT_WRITTEN
    assert out.strip().splitlines()[-1] == (
        "3 tunnels, 0 flagged, 3 records NOT written to /dev/full: No space left on device")
    assert "Traceback" not in err
    (warning,) = err.splitlines()
    assert warning.startswith("tunnel-inspector: ") and "/dev/full" in warning


class _DiskThatCannotCutBack:
    """The os module as the sink sees it, where the first write stops halfway with the
    disk full and the file cannot be truncated: a corner a real run reaches only with
    a second writer appending at the same moment (or a file system that refuses)."""

    def __init__(self) -> None:
        self.writes = 0

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        self.writes += 1
        if self.writes == 1:
            return os.write(fd, bytes(data[: len(data) // 2]))
        if self.writes == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def ftruncate(self, fd: int, length: int) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")


def test_a_fragment_that_cannot_be_cut_back_is_followed_by_a_new_line(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "os", _DiskThatCannotCutBack())
    sink = JsonlSink(str(tmp_path / "t.jsonl"))
    sink({"id": "lost", "pad": "x" * 100})
    sink({"id": "kept"})
    sink.close()
    fragment, kept, end = (tmp_path / "t.jsonl").read_bytes().split(b"\n")
    assert b'"lost"' in fragment and json.loads(kept) == {"id": "kept"} and end == b""
    assert sink.not_written == 1 and sink.error == "No space left on device"


def test_flagged_tunnels_the_spool_could_not_take_are_named_and_the_exit_is_non_zero(
        small_fs, start_proxy, strict_server, tmp_path):
    export = small_fs / "flagged.json"
    p = start_proxy(*_connect_to(strict_server), "--no-probe", "--export-flagged", str(export),
                    jsonl=tmp_path / "t.jsonl")
    _flagged_tunnel(p, strict_server)
    p.records(1)
    _fill(small_fs / "filler")
    for _ in range(12):
        _flagged_tunnel(p, strict_server)
    p.records(13)
    (small_fs / "filler").unlink()
    _flagged_tunnel(p, strict_server)  # space again: this one is exported
    last = p.records(14)[-1]
    code, out, err = p.stop()
    exported = json.loads(export.read_text())["tunnels"]
    assert exported[-1] == last
    lost = 14 - len(exported)
    assert lost > 0, "the spool never ran out of space: the test did not test anything"
    assert f"exported {len(exported)} flagged tunnels to {export}" in out
    assert err.splitlines()[-1] == (f"tunnel-inspector: {lost} flagged tunnels NOT exported "
                                    f"to {export}: No space left on device")
    assert len(err.splitlines()) == 2  # and the one warning when it happened
    assert code == EXIT_NOT_WRITTEN
    assert {r["id"] for r in exported} < {r["id"] for r in p.records(14)}
    assert [x.name for x in small_fs.iterdir()] == ["flagged.json"]  # no spool left


@pytest.mark.parametrize("where", ["missing-dir", "read-only-fs"])
def test_an_unwritable_jsonl_is_one_sentence_and_exit_2_before_listening(tmp_path, where):
    if where == "missing-dir":
        jsonl = tmp_path / "nope" / "t.jsonl"
        cm = contextlib.nullcontext()
    else:  # as root, permissions do not refuse anything; a read-only file system does
        cm = _tmpfs(tmp_path / "ro", "size=64k,ro")
        jsonl = tmp_path / "ro" / "t.jsonl"
    with cm:
        r = _cli("--headless", "--listen-port", "0", "--jsonl", str(jsonl), "--duration", "5")
    assert r.returncode == 2
    assert "listening on" not in r.stdout
    (sentence,) = r.stderr.splitlines()
    assert sentence.startswith(f"tunnel-inspector: cannot open {jsonl} for records: ")


def test_export_into_a_missing_directory_is_refused_before_listening(tmp_path):
    export = tmp_path / "nope" / "flagged.json"
    r = _cli("--headless", "--listen-port", "0", "--export-flagged", str(export),
             "--duration", "5")
    assert r.returncode == 2
    assert "listening on" not in r.stdout
    assert r.stderr.splitlines() == [
        f"tunnel-inspector: cannot export to {export}: {export.parent} does not exist"]


def test_export_to_a_symbolic_link_is_refused_and_the_link_left_alone(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("someone's file\n")
    link = tmp_path / "flagged.json"
    link.symlink_to(target)
    r = _cli("--headless", "--listen-port", "0", "--export-flagged", str(link), "--duration", "5")
    assert r.returncode == 2
    assert "listening on" not in r.stdout
    (sentence,) = r.stderr.splitlines()
    assert f"cannot export to {link}: it is a symbolic link" in sentence
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "someone's file\n"
    assert sorted(os.listdir(tmp_path)) == ["elsewhere.json", "flagged.json"]  # no spool left


def _spools(directory: Path) -> list[Path]:
    return sorted(directory.glob(".flagged.json.*.spool"))


def test_flagged_tunnels_wait_in_a_private_spool_beside_the_export(start_proxy, strict_server,
                                                                  tmp_path):
    export = tmp_path / "out" / "flagged.json"
    export.parent.mkdir()
    p = start_proxy(*_connect_to(strict_server), "--no-probe", "--export-flagged", str(export))
    _flagged_tunnel(p, strict_server)
    (rec,) = p.records(1)
    assert rec["flagged"] is True
    (spool,) = _spools(export.parent)  # on disk as it arrived, not at exit
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert [json.loads(x)["id"] for x in spool.read_text().splitlines()] == [rec["id"]]
    assert not export.exists()
    code, out, _ = p.stop()
    assert code == 0 and "exported 1 flagged tunnel " in out
    assert _spools(export.parent) == []
    assert json.loads(export.read_text())["tunnels"] == [rec]


class _Record(dict):
    """A record that can be watched: a weak reference dies once nobody holds it."""


def _records(n: int) -> list[_Record]:
    return [_Record(schema=1, id=f"t{i}", connect={"host": f"h{i}.test", "port": 443},
                    findings=[{"code": "sni-missing", "severity": "error", "message": "m",
                               "hint": "h"}], flagged=True, pad="x" * 1000)
            for i in range(n)]


def test_the_run_report_keeps_no_flagged_record_in_memory(tmp_path):
    export = tmp_path / "flagged.json"
    with RunReport(str(export), "never") as report:
        records = _records(200)
        expected = [dict(r) for r in records]
        watch = [weakref.ref(r) for r in records]
        for r in records:
            report(r)
        del records, r
        gc.collect()
        alive = sum(w() is not None for w in watch)
        assert alive == 0, f"the report still holds {alive} of 200 flagged records"
        assert report.finish() == 0
    assert json.loads(export.read_text())["tunnels"] == expected
    assert os.listdir(tmp_path) == ["flagged.json"]  # the spool is gone
