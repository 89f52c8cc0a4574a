"""The trust stores users name: certifi's bundle whole and quiet on every supported
cryptography (six of its roots have serial number 0), and `--trust system` as this
Python's OpenSSL sees it. Probes are real handshakes with lab servers on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys

from inspector.lab.pki import DAY, NOW, make_cert, resigned
from inspector.lab.server import TLSServer

from .support import env_without_proxy

HOST = "zero.lab.test"

LOAD_MOZILLA = """
import certifi, pathlib, warnings
warnings.simplefilter("error")
from inspector.chain.trust import load_profile
profile = load_profile("mozilla")
blocks = pathlib.Path(certifi.where()).read_bytes().count(b"-----BEGIN CERTIFICATE-----")
names = [c.subject.rfc4514_string() for c in profile.certificates]
print(len(profile.certificates), blocks, profile.skipped,
      sum("Go Daddy Root Certificate Authority - G2" in n for n in names))
"""


def test_certifi_loads_whole_and_without_a_warning_go_daddy_g2_included():
    r = subprocess.run([sys.executable, "-c", LOAD_MOZILLA], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    loaded, blocks, skipped, go_daddy = map(int, r.stdout.split())
    assert loaded == blocks and skipped == 0
    assert go_daddy == 1


def _probe(port: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inspector.cli", "probe", f"{HOST}:443",
         "--connect-to", f"{HOST}:443:127.0.0.1:{port}", *args],
        capture_output=True, text=True, timeout=60, env=env or env_without_proxy())


def _serial_zero_lab(tmp_path):
    """A root with serial number 0, as Go Daddy Root G2 has, and a chain under it."""
    long = {"ca": True, "not_before": NOW - 3650 * DAY, "not_after": NOW + 3650 * DAY}
    root = resigned(make_cert("lab serial-0 root", **long), None, serial=0)
    inter = make_cert("lab intermediate under the serial-0 root", root, **long)
    leaf = make_cert(HOST, inter, sans=(HOST,))
    (tmp_path / "root0.pem").write_bytes(root.pem)
    return root, inter, leaf


def test_a_chain_to_a_serial_zero_root_is_trusted_without_a_warning(tmp_path):
    _, inter, leaf = _serial_zero_lab(tmp_path)
    with TLSServer([leaf.cert, inter.cert], leaf.key) as server:
        r = _probe(server.port, "--trust", str(tmp_path / "root0.pem"))
    assert r.returncode == 0, r.stdout + r.stderr  # 0: trusted, nothing flagged
    assert r.stderr == ""


def test_trust_system_is_the_ca_file_of_this_pythons_openssl(tmp_path):
    """SSL_CERT_FILE is what OpenSSL (and so Python's ssl) trusts: `--trust system`
    must judge with it too, wherever the platform keeps its bundle."""
    _, inter, leaf = _serial_zero_lab(tmp_path)
    env = {**env_without_proxy(), "SSL_CERT_FILE": str(tmp_path / "root0.pem")}
    with TLSServer([leaf.cert, inter.cert], leaf.key) as server:
        trusted = _probe(server.port, "--trust", "system", env=env)
        env.pop("SSL_CERT_FILE")
        untrusted = _probe(server.port, "--trust", "system", env=env)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert untrusted.returncode == 1 and "untrusted" in untrusted.stdout
    assert os.path.exists(str(tmp_path / "root0.pem"))
