"""Fixtures only: a lab PKI, lab TLS servers, the real proxy as a subprocess, the UI
running headless, and a guard that fails any test during which a traceback was logged.
Helpers live in tests/support.py, imported by name where they are used."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
from pathlib import Path

import pytest

from inspector.lab.pki import make_cert
from inspector.lab.server import TLSServer

from .support import HOST, TRACEBACK, ProxyProcess, RunningUI


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    root = make_cert("Lab Root CA", ca=True)
    leaf = make_cert(HOST, root, sans=(HOST,))
    (d / "root.pem").write_bytes(root.pem)
    return {"root": root, "leaf": leaf, "root_pem": str(d / "root.pem"),
            "leaf_sha256": hashlib.sha256(leaf.der).hexdigest()}


@pytest.fixture(scope="session")
def strict_server(pki):
    """Serves HOST only; refuses a missing or unknown SNI with unrecognized_name."""
    with TLSServer([pki["leaf"].cert], pki["leaf"].key, sni_names=[HOST]) as s:
        yield s


@pytest.fixture(scope="session")
def echo_server(pki):
    with TLSServer([pki["leaf"].cert], pki["leaf"].key, mode="echo") as s:
        yield s


@pytest.fixture
def start_proxy(tmp_path, pki):
    """start(*args, jsonl=PATH) runs the real proxy; teardown stops it, and fails the
    test if the proxy wrote a traceback: a traceback is a bug even when records look fine."""
    started: list[ProxyProcess] = []

    def start(*args: str, jsonl: Path | None = None) -> ProxyProcess:
        # The lab root is what the tests' clients trust, unless a test says otherwise.
        trust = [] if "--trust" in args else ["--trust", pki["root_pem"]]
        p = ProxyProcess([*trust, *args], jsonl or tmp_path / f"tunnels{len(started)}.jsonl")
        started.append(p)
        return p

    yield start
    tracebacks = []
    for p in started:
        _, _, err = p.stop()
        if "Traceback" in err:
            tracebacks.append(f"proxy {' '.join(p.proc.args[2:])}\n{err}")
    if tracebacks:
        pytest.fail("the proxy wrote a traceback to stderr:\n" + "\n".join(tracebacks),
                    pytrace=False)


class _TracebackCatcher(logging.Handler):
    """Keeps every ERROR record that carries a traceback: an exception (exc_info, as
    log.exception and asyncio's "Task exception was never retrieved" log it) or one
    formatted into the text (as mitmproxy's "Addon error" is)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.caught: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info or TRACEBACK in message:
            self.caught.append(f"{record.name}: {self.format(record)}")


@pytest.fixture(autouse=True)
def no_logged_tracebacks():
    """In-process proxies (mitmproxy in the test's own event loop) and the UI log their
    crashes instead of printing them: a test during which one was logged fails. The
    handler is not a StreamHandler, so the UI's log router leaves it in place."""
    catcher = _TracebackCatcher()
    root = logging.getLogger()
    root.addHandler(catcher)
    try:
        yield catcher
    finally:
        root.removeHandler(catcher)
    if catcher.caught:
        pytest.fail("a traceback was logged during the test:\n" + "\n".join(catcher.caught),
                    pytrace=False)


@pytest.fixture
def running_app():
    """`async with running_app(app, size=(w, h)) as ui:` runs `app` headless (Textual's
    run_test) and yields a support.RunningUI: the pilot, the app's notifications, its
    screen as text, and bounded waits inside the app's loop."""

    @contextlib.asynccontextmanager
    async def run(app, size: tuple[int, int] = (160, 45)):
        from textual.notifications import Notify

        notifications: list = []

        def hook(message) -> None:
            if isinstance(message, Notify):
                notifications.append(message.notification)

        try:
            async with app.run_test(size=size, message_hook=hook) as pilot:
                yield RunningUI(app, pilot, notifications)
        finally:
            gc.unfreeze()  # the app froze this process's objects; later tests' garbage is theirs

    return run
