"""Exports: the file a user attaches to a ticket, written atomically and privately."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pytest

from inspector.records.export import export_flagged, export_path, write_export

NOW = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)


def record(i: int, flagged: bool) -> dict:
    findings = [{"code": "sni-missing", "severity": "error", "message": "no SNI",
                 "hint": "send SNI"}] if flagged else []
    return {"schema": 1, "id": f"t{i}", "started": "2025-03-04T05:00:00.000Z",
            "client": "127.0.0.1:5000", "connect": {"host": f"h{i}.test", "port": 443},
            "upstream": None, "sni": None if flagged else f"h{i}.test",
            "handshake": {"outcome": "established", "version": "TLSv1.3", "alert": None},
            "chain": None, "findings": findings, "flagged": flagged}


def test_export_flagged_writes_only_flagged_records_to_a_private_timestamped_file(tmp_path):
    records = [record(i, flagged=i % 2 == 0) for i in range(7)]
    path, count = export_flagged(records, tmp_path, NOW)
    assert path == tmp_path / "tunnel-inspector-flagged-20250304-050607.json"
    assert count == 4
    doc = json.loads(path.read_text())
    assert doc == {"schema": 1, "exported": "2025-03-04T05:06:07Z",
                   "tunnels": [r for r in records if r["flagged"]]}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind


def test_the_file_name_uses_local_time_and_the_document_utc(tmp_path):
    local = NOW.astimezone(dt.timezone(dt.timedelta(hours=2)))
    path, _ = export_flagged([record(0, True)], tmp_path, local)
    assert path.name == "tunnel-inspector-flagged-20250304-070607.json"
    assert json.loads(path.read_text())["exported"] == "2025-03-04T05:06:07Z"


def test_a_second_export_in_the_same_second_does_not_overwrite_the_first(tmp_path):
    first, _ = export_flagged([record(0, True)], tmp_path, NOW)
    second, _ = export_flagged([record(1, True)], tmp_path, NOW)
    third, _ = export_flagged([record(2, True)], tmp_path, NOW)
    assert second.name == "tunnel-inspector-flagged-20250304-050607-2.json"
    assert third.name == "tunnel-inspector-flagged-20250304-050607-3.json"
    assert json.loads(first.read_text())["tunnels"][0]["id"] == "t0"
    assert export_path(tmp_path, NOW).name.endswith("-4.json")


def test_write_export_writes_what_it_is_given_and_an_empty_list_is_valid(tmp_path):
    records = [record(0, False), record(1, True)]
    assert write_export(tmp_path / "all.json", records, NOW) == 2
    assert json.loads((tmp_path / "all.json").read_text())["tunnels"] == records
    assert write_export(tmp_path / "none.json", [], NOW) == 0
    assert json.loads((tmp_path / "none.json").read_text()) == {
        "schema": 1, "exported": "2025-03-04T05:06:07Z", "tunnels": []}
    # without `now`: the current time, in UTC
    write_export(tmp_path / "now.json", [])
    exported = json.loads((tmp_path / "now.json").read_text())["exported"]
    assert exported.endswith("Z")
    age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(exported.replace("Z", "+00:00"))
    assert abs(age) < dt.timedelta(minutes=1)


def test_a_failed_export_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_export(target, [record(0, True)], NOW)
    before = target.read_bytes()

    def records():
        yield record(1, True)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_export(target, records(), NOW)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.json"]


def test_errors_are_reported_not_swallowed(tmp_path):
    with pytest.raises(OSError):
        export_flagged([record(0, True)], tmp_path / "missing-dir", NOW)
    with pytest.raises(ValueError):
        export_flagged([record(0, True)], tmp_path, NOW.replace(tzinfo=None))
    assert os.listdir(tmp_path) == []


def test_records_are_one_json_line_each_and_ascii(tmp_path):
    r = record(0, True)
    r["sni"] = "bücher.example\u202e"
    write_export(tmp_path / "x.json", [r, record(1, True)], NOW)
    raw = (tmp_path / "x.json").read_bytes()
    assert raw.isascii()
    assert json.loads(raw)["tunnels"][0]["sni"] == "bücher.example\u202e"
    assert len(raw.splitlines()) == 4  # header, two records, closing
