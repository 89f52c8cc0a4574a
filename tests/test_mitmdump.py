"""README's mitmdump line, run as written: the addon alone under a real mitmdump."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

from .support import HOST, env_without_proxy, tls_through_proxy, wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_mitmdump_binds_loopback_says_so_and_logs_a_line_per_tunnel(tmp_path, strict_server, pki):
    mitmdump = Path(sys.executable).with_name("mitmdump")
    jsonl = tmp_path / "tunnels.jsonl"
    port = strict_server.port
    p = subprocess.Popen(
        [str(mitmdump), "-s", str(ROOT / "addons" / "tunnel_inspector.py"),
         "--set", f"inspector_jsonl={jsonl}", "--set", "inspector_log_lines=true",
         "--set", "listen_port=0",
         "--set", f"inspector_connect_to={HOST}:443:127.0.0.1:{port}",
         "--set", f"inspector_trust={pki['root_pem']}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_without_proxy())
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    try:
        def listening():
            assert p.poll() is None, "".join(lines)
            return next((m for line in list(lines)
                         if (m := re.search(r"proxy listening at 127\.0\.0\.1:(\d+)\.", line))), None)

        loopback = wait_for(listening, 30, "mitmdump to listen on 127.0.0.1")
        assert sum("listening on 127.0.0.1 only" in line for line in lines) == 1
        # mitmproxy 12 binds its default (every interface) before loading a script: the
        # addon binds again, so any such server must have been stopped
        wide = {m.group(1) for line in list(lines)
                if (m := re.search(r"proxy listening at (\S+)\.$", line.strip()))} - {
            f"127.0.0.1:{loopback.group(1)}"}
        assert all(any(f"at {a} stopped" in line for line in lines) for a in wide), "".join(lines)
        with tls_through_proxy(int(loopback.group(1)), HOST, 443, cafile=pki["root_pem"],
                               sni=HOST):
            pass
        wait_for(lambda: any(f"CONNECT {HOST}:443" in x for x in list(lines)), 30, "the tunnel's line")
        tunnel = [x for x in lines if f"CONNECT {HOST}:443" in x]
        assert tunnel and f"SNI: {HOST}" in tunnel[0] and "established" in tunnel[0], "".join(lines)
    finally:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        reader.join(5)
    assert "Traceback" not in "".join(lines)
    assert jsonl.read_text().count("\n") == 1
