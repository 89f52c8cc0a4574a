"""Chain verdicts in a worker process, so a stranger's chain never costs the event loop.

Everything verify.py does with a served chain (parsing, the served walk, signature
checks, cryptography's path builder) is CPU work on input a server chose, and
cryptography holds the GIL throughout (measured: two threads verifying take twice as
long as one; one path-builder call over 100 certificates holds it ~80 ms). With the
event loop busy, a 0.25 s verdict in a thread took 3.3-4.1 s and cost the loop 40% of
its work; in a child process the loop kept its pace (worst lag 0.4-1.5 ms). The proxy
only waits for the answer, in a thread blocked on a pipe.

A verdict waits at most `timeout` for a free worker, then may take `timeout` to be
judged; past that the worker is killed and the next verdict starts a new one. Chains
waiting for the worker hold at most `max_waiting` bytes: tunnels arrive faster than
large chains are judged, and the queue must not grow with them. `VerdictUnavailable`
carries the sentence for the record.

Wire format on the child's stdin/stdout: a 4-byte length, then a pickle. The first
frame is the trust profiles (DER), then one request per verdict, one reply each.

    python -m inspector.chain.worker    (started by VerdictWorkers, never by hand)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import Store

from inspector.chain.trust import TrustProfile
from inspector.chain.verify import ChainVerdict, KnownChains

# A worker's answer: the verdict, or the traceback of the verdict's own failure.
_Reply = tuple[Literal["ok"], ChainVerdict] | tuple[Literal["error"], str]

log = logging.getLogger(__name__)

VERDICT_TIMEOUT = 10.0  # seconds; a bounded verdict takes ~10 ms, the worker's start ~0.3 s
WORKERS = 1  # verdicts are cached per chain and name: one process keeps up (~100/s)
MAX_WAITING = 16 * 2**20  # bytes of chains queued: 64 of the largest, thousands of usual ones
_HEADER = struct.Struct(">I")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding `inspector`


class VerdictUnavailable(Exception):
    """No verdict for this chain; the message is one sentence for the record."""


class VerdictWorkers:
    """Verdicts from worker processes (started on first use), at most `WORKERS` at once."""

    def __init__(
        self,
        trust: list[TrustProfile],
        clients: list[TrustProfile],
        timeout: float = VERDICT_TIMEOUT,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self.timeout = timeout
        self.max_waiting = max_waiting
        self._waiting = 0  # bytes of the chains asked for and not answered yet
        self._setup = pickle.dumps((_portable(trust), _portable(clients)))
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._slots = asyncio.Semaphore(WORKERS)
        self._io = ThreadPoolExecutor(WORKERS, thread_name_prefix="verdict-io")
        self._closed = False

    async def verify(
        self,
        chain: list[bytes],
        *,
        sni: str | None,
        connect_host: str,
        now: dt.datetime,
        expiring_days: int,
    ) -> ChainVerdict:
        if self._closed:
            raise VerdictUnavailable("no chain verdict: the proxy is stopping")
        size = sum(map(len, chain))
        if self._waiting + size > self.max_waiting:
            raise VerdictUnavailable(
                f"no chain verdict: {self._waiting / 2**20:.1f} MiB of other chains already wait "
                "for the verdict worker"
            )
        self._waiting += size
        try:
            return await self._judged(chain, sni, connect_host, now, expiring_days)
        finally:
            self._waiting -= size

    async def _judged(self, chain, sni, connect_host, now, expiring_days) -> ChainVerdict:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout)
        except TimeoutError:
            raise VerdictUnavailable(
                f"no chain verdict: the verdict worker stayed busy with other chains for "
                f"{self.timeout:g} s"
            ) from None
        try:
            worker = self._idle.pop() if self._idle else self._start()
            request = pickle.dumps((chain, sni, connect_host, now, expiring_days))
            ask = asyncio.get_running_loop().run_in_executor(self._io, worker.ask, request)
            try:
                reply = await asyncio.wait_for(ask, self.timeout)
            except TimeoutError:
                worker.kill()
                raise VerdictUnavailable(
                    f"no chain verdict: judging the chain took over {self.timeout:g} s, so it "
                    "was stopped"
                ) from None
            except _WorkerGone as e:
                worker.kill()
                raise VerdictUnavailable(f"no chain verdict: the verdict worker {e}") from None
            except BaseException:  # cancelled: the worker may be mid-answer, never reuse it
                worker.kill()
                raise
            self._idle.append(worker)
            if reply[0] != "ok":
                log.error("the verdict worker failed on a chain:\n%s", reply[1])
                last = reply[1].splitlines()[-1]
                raise VerdictUnavailable(f"no chain verdict: the verdict failed ({last})")
            return reply[1]
        finally:
            self._slots.release()

    def close(self) -> None:
        """Stop every worker (idle ones finish on EOF, busy ones are killed)."""
        self._closed = True
        for worker in list(self._all):
            worker.close()
        self._all.clear()
        self._idle.clear()
        self._io.shutdown(wait=False)

    def _start(self) -> _Worker:
        try:
            worker = _Worker(self._setup, self._all.discard)
        except OSError as e:
            raise VerdictUnavailable(
                f"no chain verdict: cannot start the verdict worker ({e})"
            ) from None
        self._all.add(worker)
        return worker


class _WorkerGone(Exception):
    """The worker process ended or its pipe broke before it answered."""


class _Worker:
    """One child process. `ask` runs in an I/O thread; `kill` from anywhere."""

    def __init__(self, setup: bytes, forget) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "inspector.chain.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # its errors come back as replies; a terminal UI must not get stray output
            stderr=subprocess.DEVNULL,
            env=env,
            # the terminal's Ctrl-C is the proxy's to handle: it stops the worker itself
            start_new_session=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None  # both PIPE
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        self._setup: bytes | None = setup  # sent with the first request, from the I/O thread
        self._forget = forget
        self._lock = threading.Lock()

    def ask(self, request: bytes) -> _Reply:
        try:
            if self._setup is not None:
                _write(self._stdin, self._setup)
                self._setup = None
            _write(self._stdin, request)
            reply = _read(self._stdout)
        except (OSError, ValueError) as e:  # ValueError: a pipe closed by kill()
            raise _WorkerGone(f"stopped answering ({e})") from None
        if reply is None:
            self._proc.wait()
            raise _WorkerGone(f"exited with code {self._proc.returncode}")
        return pickle.loads(reply)

    def kill(self) -> None:
        with self._lock:
            if self._proc.poll() is None:
                self._proc.kill()  # our own child, by its PID
            self._proc.wait()
            self._forget(self)

    def close(self) -> None:
        with self._lock:
            try:
                self._stdin.close()  # EOF: an idle worker exits at once
                self._proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
            self._stdout.close()


def _portable(profiles: list[TrustProfile]) -> list[tuple[str, list[bytes], int]]:
    """Profiles as picklable data: a cryptography Store does not cross processes."""
    return [
        (p.name, [c.public_bytes(serialization.Encoding.DER) for c in p.certificates], p.skipped)
        for p in profiles
    ]


def _profiles(data: list[tuple[str, list[bytes], int]]) -> list[TrustProfile]:
    out = []
    for name, ders, skipped in data:
        certs = tuple(x509.load_der_x509_certificate(d) for d in ders)
        out.append(TrustProfile(name, certs, Store(list(certs)), skipped))
    return out


def _write(pipe: IO[bytes], payload: bytes) -> None:
    pipe.write(_HEADER.pack(len(payload)) + payload)
    pipe.flush()


def _read(pipe: IO[bytes]) -> bytes | None:
    """One frame, or None at EOF."""
    header = pipe.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    size = _HEADER.unpack(header)[0]
    payload = pipe.read(size)
    return payload if len(payload) == size else None


def main() -> None:
    """The child: profiles first, then one verdict per request, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this ends
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    setup = _read(inp)
    if setup is None:
        return
    trust, clients = (_profiles(p) for p in pickle.loads(setup))
    # The chains' name-independent parts are kept here, not in the proxy: they are
    # parsed certificates and cryptography's paths, which exist only in this process
    # (they do not pickle, and parsing again is the work being saved); the proxy keeps
    # whole verdicts per chain and name (judge.py). A killed worker starts cold.
    known = KnownChains(trust, clients)
    while (request := _read(inp)) is not None:
        chain, sni, connect_host, now, expiring_days = pickle.loads(request)
        try:
            verdict = known.verify(chain, sni=sni, connect_host=connect_host, now=now,
                                   expiring_days=expiring_days)
            reply: _Reply = ("ok", verdict)
        except Exception:  # a verdict bug: sent to the proxy, which logs it
            reply = ("error", traceback.format_exc())
        _write(out, pickle.dumps(reply))
        known.settle()  # while the proxy reads the answer


if __name__ == "__main__":
    main()
