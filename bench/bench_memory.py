"""Memory of the verdict cache: the proxy's RSS before and after N tunnels, each with
its own SNI, to a server whose chain is ~240 KB. A verdict is cached per chain, SNI
and CONNECT host, so every tunnel adds one entry; the cache's byte budget
(inspector/chain/judge.py CACHE_BYTES) is what bounds them.

    python bench/bench_memory.py                   # 300 tunnels per chain, ~2 min
    python bench/bench_memory.py --code DIR        # the proxy from another checkout

Two chains, each served in clear by a fake TLS 1.2 server (the relay reads it, so no
probe is involved):
  long  ~540 small certificates in issuing order: over verify.MAX_CERTIFICATES;
  wide  100 certificates with ~1 KB names: judged in full, each verdict ~0.3 MB.
The proxy's verdict worker (a child process, if the code has one) is reported too.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cryptography import x509  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from inspector.lab.http1 import connect_tunnel  # noqa: E402
from inspector.lab.pki import make_cert  # noqa: E402
from inspector.lab.scripted import FlightServer  # noqa: E402

TARGET_BYTES = 240 * 1024
RECORD_TIMEOUT = 600.0  # the slowest case: today's code judges the long chain in the loop
# tunnels between two RSS readings; waiting for their records there also keeps the
# chains queued for the verdict worker under its bound (worker.MAX_WAITING)
CHECKPOINT = 50


def long_chain() -> list[bytes]:
    """Small certificates in issuing order until ~240 KB."""
    cas = [make_cert("ca 0", ca=True)]
    ders = [cas[0].der]
    while sum(map(len, ders)) < TARGET_BYTES:
        cas.append(make_cert(f"ca {len(cas)}", cas[-1], ca=True))
        ders.append(cas[-1].der)
    leaf = make_cert("bench.lab.test", cas[-1], sans=("bench.lab.test",))
    return [leaf.der] + [c.der for c in reversed(cas)]


def wide_chain(count: int = 100) -> list[bytes]:
    """`count` certificates with long subjects (15 OUs of 60 characters), ~240 KB."""

    def name(i: int) -> x509.Name:
        units = [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{i:03d}-{u:02d}-" + "u" * 53)
            for u in range(15)
        ]
        return x509.Name([*units, x509.NameAttribute(NameOID.COMMON_NAME, f"wide ca {i}")])

    cas = [make_cert("", ca=True, subject_name=name(0))]
    for i in range(1, count - 1):
        cas.append(make_cert("", cas[-1], ca=True, subject_name=name(i)))
    leaf = make_cert("bench.lab.test", cas[-1], sans=("bench.lab.test",))
    return [leaf.der] + [c.der for c in reversed(cas)]


def client_hello(sni: str) -> bytes:
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def one_tunnel(proxy_port: int, server: FlightServer, sni: str) -> None:
    """CONNECT by IP (no --connect-to), our SNI, the whole flight read, then leave."""
    with connect_tunnel(proxy_port, "127.0.0.1", server.port) as s:
        s.sendall(client_hello(sni))
        got = 0
        while got < len(server.flight):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += len(chunk)


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def records(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def unjudged(path: Path) -> int:
    """Records whose verdict was refused or stopped (worker busy, queue full, timeout)."""
    return sum(b"no chain verdict" in line for line in path.read_bytes().splitlines())


def run(code: Path, label: str, ders: list[bytes], tunnels: int, work: Path) -> dict:
    server = FlightServer(ders)
    root = make_cert("bench memory root", ca=True)
    (work / "root.pem").write_bytes(root.pem)
    jsonl = work / f"{label}.jsonl"
    env = dict(os.environ, PYTHONPATH=str(code))
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "--headless", "--listen-port", "0", "--no-probe",
         "--trust", str(work / "root.pem"), "--jsonl", str(jsonl)],
        cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        first = proc.stdout.readline()
        if not first.startswith("listening on "):
            raise RuntimeError(f"the proxy did not start: {first!r}")
        port = int(first.rsplit(":", 1)[1])
        # drain stdout (one line per tunnel) so the proxy never waits on a full pipe
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        one_tunnel(port, server, "warmup.bench.lab.test")
        deadline = time.monotonic() + RECORD_TIMEOUT
        while records(jsonl) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = rss_mb(proc.pid)
        t0 = time.monotonic()
        steps = {}  # tunnels so far -> RSS, every CHECKPOINT tunnels
        for i in range(tunnels):
            one_tunnel(port, server, f"t{i}.bench.lab.test")
            if (i + 1) % CHECKPOINT == 0 or i + 1 == tunnels:
                while records(jsonl) < i + 2 and time.monotonic() < deadline:
                    time.sleep(0.1)  # every verdict so far is in the cache
                steps[i + 1] = rss_mb(proc.pid)
        took = time.monotonic() - t0
        after = steps[tunnels]
        workers = [rss_mb(c) for c in children(proc.pid)]
        return {"chain": label, "certificates": len(ders), "chain_kb": sum(map(len, ders)) / 1024,
                "records": records(jsonl), "unjudged": unjudged(jsonl), "seconds": took,
                "rss_before_mb": before, "rss_after_mb": after, "rss_steps_mb": steps,
                "worker_rss_mb": sum(workers), "workers": len(workers)}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tunnels", type=int, default=300)
    ap.add_argument("--code", default=str(HERE.parent),
                    help="the checkout whose proxy runs (default: this one)")
    ap.add_argument("--chain", choices=["long", "wide", "both"], default="both")
    a = ap.parse_args()
    chains = {"long": long_chain, "wide": wide_chain}
    names = list(chains) if a.chain == "both" else [a.chain]
    print(f"proxy code: {a.code}; {a.tunnels} tunnels, each with its own SNI")
    with tempfile.TemporaryDirectory(prefix="ti-bench-mem-") as d:
        for name in names:
            r = run(Path(a.code).resolve(), name, chains[name](), a.tunnels, Path(d))
            print(f"  {r['chain']:5} chain ({r['certificates']} certificates, "
                  f"{r['chain_kb']:.0f} KB): "
                  f"proxy RSS {r['rss_before_mb']:.0f} MB before, {r['rss_after_mb']:.0f} MB after "
                  f"(+{r['rss_after_mb'] - r['rss_before_mb']:.0f} MB); verdict worker "
                  f"{r['worker_rss_mb']:.0f} MB ({r['workers']} process); {r['records']} records "
                  f"({r['unjudged']} without a verdict) in {r['seconds']:.1f} s")
            steps = ", ".join(f"{n}: {mb:.0f}" for n, mb in r["rss_steps_mb"].items())
            print(f"        RSS after {steps} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
