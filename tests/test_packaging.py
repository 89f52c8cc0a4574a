"""What `pip install .` (not editable) ships, read from the wheel pip builds: the tests
run from the checkout, so a file missing from the wheel would pass them and still
break an installed app."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    """The file names inside the wheel built from a copy of the checkout (the build
    writes build/ and *.egg-info next to the sources: not into the working tree)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(src),
                        "-w", str(work / "dist")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheels = list((work / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as z:
        return z.namelist()


def test_the_wheel_installs_one_top_level_package(wheel_names):
    top = {n.split("/", 1)[0] for n in wheel_names if ".dist-info/" not in n}
    assert top == {"inspector"}, f"top-level names in the wheel: {sorted(top)}"
    assert not [n for n in wheel_names if n.startswith("addons/")]
    assert not [n for n in wheel_names if n.startswith("tests/") or "/tests/" in n
                or n.rsplit("/", 1)[-1].startswith("test_")]


def test_the_wheel_has_every_source_file_and_the_stylesheet(wheel_names):
    assert "inspector/tui/app.tcss" in wheel_names  # without it the UI cannot start
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "inspector").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = sorted(source - set(wheel_names))
    assert not missing, f"in the checkout but not in the wheel: {missing}"
