"""The layout keeps its promises: mitmproxy behind one boundary, pure modules pure, no
import cycles, and the commands that need no proxy never load one."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "inspector"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules a file imports (absolute names); top_level_only: at import time, not
    inside functions (a function's own import runs only when it is called)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MODULES = _modules()


def test_only_the_mitm_package_imports_mitmproxy():
    offenders = sorted(name for name, path in MODULES.items()
                       if not name.startswith("inspector.mitm")
                       and any(m.split(".")[0] == "mitmproxy" for m in _imports(path)))
    assert offenders == []


def test_only_the_relay_module_names_mitmproxy_internals():
    """Private mitmproxy modules (a leading underscore) are the relay's business only."""
    offenders = sorted(name for name, path in MODULES.items()
                       if name != "inspector.mitm.relay"
                       and any(m.startswith("mitmproxy") and "._" in m for m in _imports(path)))
    assert offenders == []


def test_the_splice_pump_is_pure_sockets():
    """The kernel relay's pump works on plain sockets: mitmproxy's internals stay in relay.py."""
    roots = {m.split(".")[0] for m in _imports(MODULES["inspector.mitm.splice"])}
    assert "mitmproxy" not in roots


@pytest.mark.parametrize("package", ["inspector.observe", "inspector.findings.codes"])
def test_pure_packages_import_no_io_framework(package):
    banned = {"mitmproxy", "textual", "asyncio", "OpenSSL", "socket"}
    allowed_io = {"inspector.observe.loop_guard"}  # it binds a socket to test an address
    for name, path in MODULES.items():
        if name.startswith(package) and name not in allowed_io:
            roots = {m.split(".")[0] for m in _imports(path)}
            assert not roots & banned, f"{name} imports {sorted(roots & banned)}"


def test_the_data_path_runs_one_way():
    """observe -> findings -> records: a module never imports from a later stage."""
    later = {"inspector.observe": ("inspector.findings.codes", "inspector.records", "inspector.chain",
                                   "inspector.tui", "inspector.run", "inspector.mitm"),
             "inspector.findings.codes": ("inspector.tui", "inspector.run", "inspector.mitm")}
    for name, path in MODULES.items():
        for stage, forbidden in later.items():
            if name.startswith(stage):
                bad = sorted(m for m in _imports(path) if m.startswith(forbidden))
                assert bad == [], f"{name} imports {bad}"


def test_no_import_cycles():
    graph = {name: {m for m in _imports(path, top_level_only=True) if m in MODULES} - {name}
             for name, path in MODULES.items()}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])


@pytest.mark.parametrize("argv", [["--help"], ["probe", "--help"], ["open", "--help"]])
def test_commands_without_a_proxy_do_not_load_mitmproxy(argv):
    code = ("import sys\nfrom inspector import cli\n"
            f"try:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mitmproxy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_open_does_not_load_mitmproxy(tmp_path):
    """The `open` command's own composition root imports no proxy."""
    code = ("import sys\nimport inspector.run.live\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mitmproxy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_connection_handler_internals_are_touched_in_relay_py_only():
    """mitmproxy's ConnectionHandler (its transports, its timeout) is no addon API: the
    one module that relies on it says why at each use."""
    for name, path in MODULES.items():
        if name != "inspector.mitm.relay":
            text = path.read_text()
            assert ".transports" not in text and "on_timeout(" not in text, name
