"""What abusive clients cost the proxy: figures for the README's "bounded resources".

    python bench/bench_limits.py        # about 30 s on 2 cores

1. head flood: one client sends header lines without end (up to 256 MiB): bytes the
   proxy took before closing, its RSS growth, and how long closing took.
2. out of descriptors: the proxy started with soft = hard = 256 open files, 300 silent
   clients: its CPU share and stderr bytes per second while accept() fails, and how
   long after the head timeout (1 s here) a good CONNECT is answered.
3. idle clients at soft 1024 (hard as is): descriptors in use after 1,100 silent
   clients, and whether a CONNECT is then answered.
4. loop: one CONNECT to the proxy's own port as 127.1: descriptors and records after.
Each starts its own proxy (`tunnel-inspector --headless --no-probe`) on 127.0.0.1.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK = os.sysconf("SC_CLK_TCK")


def start(*args: str, limits: tuple[int, int] | None = None, err=subprocess.DEVNULL):
    def pre():
        if limits:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    p = subprocess.Popen([sys.executable, "-m", "inspector.cli", "--headless", "--listen-port",
                          "0", "--no-probe", *args], stdout=subprocess.PIPE, stderr=err,
                         text=True, preexec_fn=pre)
    port = int(p.stdout.readline().rsplit(":", 1)[1])
    return p, port


def stop(p) -> str:
    p.terminate()
    out, _ = p.communicate(30)
    return out


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect_answer(port: int, target: str, timeout: float = 15) -> tuple[bytes, float]:
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            return s.recv(64).split(b"\r\n")[0], time.monotonic() - t0
    except OSError as e:
        return repr(e).encode(), time.monotonic() - t0


def head_flood() -> None:
    p, port = start()
    connect_answer(port, "127.0.0.1:9")  # warm
    before = rss_mb(p.pid)
    line = b"X-Padding: " + b"a" * 1000 + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"CONNECT a.example:443 HTTP/1.1\r\n")
        try:
            while sent < 256 * 1024 * 1024:
                s.sendall(line * 64)
                sent += len(line) * 64
        except OSError:
            pass
        t0 = time.monotonic()
    close_s = time.monotonic() - t0
    answer, ms = connect_answer(port, "127.0.0.1:9")
    print(f"head flood: closed after {sent / 1024:,.0f} KiB sent (socket buffers included), "
          f"RSS +{rss_mb(p.pid) - before:.1f} MB, close {close_s * 1000:.0f} ms; "
          f"next CONNECT answered {answer.decode(errors='replace')!r} in {ms * 1000:.0f} ms")
    print("  ", stop(p).strip().splitlines()[-1])


def out_of_descriptors() -> None:
    with tempfile.TemporaryFile("w+") as err:
        p, port = start("--connect-head-timeout", "1", limits=(256, 256), err=err)
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
        c0, t0 = cpu_s(p.pid), time.monotonic()
        time.sleep(0.8)  # accept() failing, before the head timeout frees anything
        share = (cpu_s(p.pid) - c0) / (time.monotonic() - t0)
        rate = os.fstat(err.fileno()).st_size / (time.monotonic() - t0)
        answer, s = connect_answer(port, "127.0.0.1:9")
        for x in socks:
            x.close()
        last = stop(p).strip().splitlines()[-1]
        err.seek(0)
        lines = err.read().splitlines()
    print(f"out of descriptors (256, 300 silent clients): CPU {share:.0%}, stderr {rate:,.0f} B/s; "
          f"a CONNECT then answered {answer.decode(errors='replace')!r} after {s:.1f} s; "
          f"stderr {len(lines)} line(s); {last}")


def idle_clients() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < 1300 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1300, hard))
    p, port = start(limits=(1024, hard))
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(1100)]
    deadline = time.monotonic() + 60
    while fds(p.pid) < 1100 and time.monotonic() < deadline:
        time.sleep(0.1)
    answer, s = connect_answer(port, "127.0.0.1:9")
    n = fds(p.pid)
    for x in socks:
        x.close()
    stop(p)
    print(f"1,100 idle clients at soft 1024 (hard {hard}): {n} descriptors in use; a CONNECT "
          f"answered {answer.decode(errors='replace')!r} in {s * 1000:.0f} ms")


def loop() -> None:
    with tempfile.TemporaryDirectory() as d:
        jsonl = Path(d) / "t.jsonl"
        p, port = start("--jsonl", str(jsonl))
        before = fds(p.pid)
        answer, _ = connect_answer(port, f"127.1:{port}")
        time.sleep(0.5)
        after = fds(p.pid)
        stop(p)
        records = len(jsonl.read_text().splitlines())
    print(f"CONNECT 127.1:<own port>: answered {answer.decode()!r}, descriptors {before} -> "
          f"{after}, {records} record(s)")


if __name__ == "__main__":
    head_flood()
    out_of_descriptors()
    idle_clients()
    loop()
