"""The wheel `pip install .` builds: the licence travels with it, and git leaves the
exports a user writes into the checkout alone."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_license(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    [wheel] = tmp_path.glob("tunnel_inspector-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    [license_file] = [n for n in names if n.endswith("LICENSE") and ".dist-info/" in n]
    text = zipfile.ZipFile(wheel).read(license_file).decode()
    assert text.startswith("MIT License") and text == (ROOT / "LICENSE").read_text()
    assert "inspector/__main__.py" in names


def test_exports_in_the_checkout_are_ignored_and_tracked_data_is_not():
    def ignored(path: str) -> bool:
        r = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path],
                           capture_output=True, timeout=30)
        assert r.returncode in (0, 1), r.stderr
        return r.returncode == 0

    assert ignored("tunnel-inspector-flagged-20260101-120000.json")
    assert ignored("flagged.json") and ignored("run.jsonl")
    assert not ignored("tests/data/ja4_vectors.json") and not ignored("bench/results.json")
