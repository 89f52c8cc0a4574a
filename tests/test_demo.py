"""`tunnel-inspector demo`: headless, and the real UI in a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from .support import require_tool, wait_for

SCREEN_TIMEOUT = 60.0


def test_demo_headless_shows_every_case_and_exits(tmp_path):
    jsonl = tmp_path / "demo.jsonl"
    r = subprocess.run([sys.executable, "-m", "inspector.cli", "demo", "--headless",
                        "--jsonl", str(jsonl)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in jsonl.read_text().splitlines()]
    codes = {f["code"] for rec in records for f in rec["findings"]}
    # both incidents, and each lab case's main finding
    assert {"sni-missing", "sni-required", "expired-in-chain", "client-fails",
            "client-rejected-certificate", "expired", "not-yet-valid", "hostname-mismatch",
            "self-signed", "untrusted", "incomplete-chain", "wrong-order", "contains-anchor",
            "weak-signature", "expiring-soon", "sni-mismatch", "not-tls",
            "upstream-unreachable"} <= codes
    good = [x for x in records if x["connect"]["host"] == "good.lab.test"
            and x["handshake"]["outcome"] == "established"]
    assert good and not good[0]["flagged"]
    assert r.stdout.strip().splitlines()[-1].startswith(f"{len(records)} tunnels, ")


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-t", session, "-p"], capture_output=True,
                          text=True, timeout=10).stdout


def _wait_for(session: str, text: str) -> str:
    screen = ""

    def shown() -> bool:
        nonlocal screen
        screen = _screen(session)
        return text in screen

    try:
        wait_for(shown, SCREEN_TIMEOUT, f"{text!r} on screen", interval=0.3)
    except AssertionError as e:
        raise AssertionError(f"{e}:\n{screen}") from None
    return screen


def test_demo_in_a_real_terminal(tmp_path):
    tmux = require_tool("tmux")
    session = f"ti-demo-{uuid.uuid4().hex[:8]}"
    cmd = f"cd {tmp_path} && {sys.executable} -m inspector.cli demo"
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": os.getcwd()}
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "45", cmd],
                   check=True, env=env, timeout=10)
    try:
        screen = _wait_for(session, "20 tunnels")
        assert "listening on 127.0.0.1:" in screen
        assert "(none)" in screen and "sni-missing" in screen  # incident 2's row
        assert "expired-in-chain" in screen  # incident 1's row
        assert "\x1b" not in screen
        subprocess.run([tmux, "send-keys", "-t", session, "h"], timeout=10)
        hosts = _wait_for(session, "view: hosts")
        assert "15 hosts" in hosts
        row = next(x for x in hosts.splitlines() if x.strip().startswith("sni-only.lab.test:443"))
        assert row.split()[1:3] == ["3", "2"]  # 3 tunnels, 2 flagged (no SNI, other SNI)
        subprocess.run([tmux, "send-keys", "-t", session, "q"], timeout=10)
        wait_for(lambda: subprocess.run([tmux, "has-session", "-t", session],
                                        capture_output=True).returncode != 0,
                 20, "the demo to quit on q", interval=0.3)
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)
