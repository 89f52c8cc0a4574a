"""mitmproxy addon: one record per CONNECT tunnel, from the relayed handshake bytes.

Passthrough: the tunnel's bytes are relayed unmodified (the client needs no CA). The
addon puts a raw TCP layer inside each tunnel, reads the ClientHello and the handshake
records as they pass, and once the handshake is decided stops observing: the rest of
the tunnel is relayed exactly like an ignored connection.

Usable on its own:
    mitmdump -s addons/tunnel_inspector.py --set inspector_jsonl=tunnels.jsonl
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

from mitmproxy import connection, ctx, exceptions, http, tls
from mitmproxy.proxy import layer
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from OpenSSL import crypto

from inspector.chain.judge import ChainJudge, probe_failed, upstream_proxy_address
from inspector.chain.trust import TrustError, load_client_profile, load_profile
from inspector.findings.tunnel import bad_request_finding, loop_finding, tunnel_findings
from inspector.mitm import accept, head_guard, limits, relay
from inspector.mitm.relay import TunnelRelay, is_inside_connect
from inspector.observe import handshake, loop_guard, wire
from inspector.observe.bad_request import OPENING_BYTES, bad_request_detail, unparsed_target
from inspector.observe.connect_to import ConnectTo
from inspector.observe.handshake import HandshakeTracker, alert_in_error_text, connect_error_text
from inspector.options import BY_MITM_NAME, OPTIONS, relay_pump
from inspector.records import text
from inspector.records.escape import safe
from inspector.records.record import Tunnel, host_port
from inspector.records.schema import Chain, Record
from inspector.records.stream import JsonlSink, RecordStream

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class _Live:
    """One tunnel in progress. (A plain class: mitmdump -s loads this file outside
    sys.modules, where @dataclass cannot resolve postponed annotations.)"""

    __slots__ = ("tunnel", "tracker", "layer", "timer", "target", "version",
                 "intercepted_chain", "server_tls", "client_tls", "client_rejected_proxy")

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.tracker = HandshakeTracker()
        self.layer: TunnelRelay | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.target: tuple | None = None  # the CONNECT target after --connect-to
        # intercept mode: what mitmproxy's own two handshakes reported
        self.version: str | None = None
        self.intercepted_chain: list[bytes] | None = None
        self.server_tls = self.client_tls = self.client_rejected_proxy = False


class TunnelInspector:
    def __init__(self) -> None:
        self.stream = RecordStream()
        self.judge: ChainJudge | None = None
        self._live: dict[str, _Live] = {}  # client id -> the tunnel whose record is not written yet
        # client id -> CONNECTs seen on that connection: every passthrough tunnel is relayed
        # by our layer for its whole life, its record written or not (a ClientHello that
        # comes after --handshake-timeout must still reach the server, not mitmproxy's TLS).
        self._connects: dict[str, int] = {}
        # client ids whose CONNECT was let through, until the client leaves: the header's
        # "tunnels open" (a tunnel handed to the fast relay is still open, its record written).
        self._open: set[str] = set()
        self._judging: set[asyncio.Task] = set()
        self._connect_to = ConnectTo([])
        self._jsonl: JsonlSink | None = None
        self._intercept = False
        self._opening: dict[str, bytes] = {}  # client id -> first bytes, until a request parses
        self._left_mid_head_ids: set[str] = set()  # clients that closed with a head half sent
        # Connections closed without a record (no tunnel): refused by --proxy-auth, no
        # request head in time, a head too large. Shown in stats() and the run's summary.
        self.unrecorded = limits.Unrecorded()
        self._warned_407 = False
        self._head_timers: dict[str, asyncio.TimerHandle] = {}  # client id -> head deadline
        self._loops: dict[str, str] = {}  # client id -> why its CONNECT target is this proxy
        self._closing: set[asyncio.Task] = set()
        self._proxyserver = None  # mitmproxy's proxyserver addon, once running
        self._loopback_by_default = False  # listen_host was mitmproxy's "" (mitmdump -s)

    @property
    def jsonl(self) -> JsonlSink | None:
        """The inspector_jsonl sink: the end of a run reports the records it could not write."""
        return self._jsonl

    def stats(self) -> dict:
        """For the UI's header: tunnels open, connections closed without a record, and the
        chain stage's probe figures."""
        out = {"tunnels_open": len(self._open)} | self.unrecorded.nonzero()
        return out | (self.judge.stats() if self.judge else {})

    # --- options -------------------------------------------------------------------

    def load(self, loader) -> None:
        for o in OPTIONS:  # declared once, in inspector/options.py, for the CLI too
            loader.add_option(o.mitm_name, o.type, o.default, o.help)
        _prepare_process()

    def running(self) -> None:
        self._proxyserver = ctx.master.addons.get("proxyserver")
        if self._loopback_by_default and any(a[0] != LOOPBACK for a in self._listening()):
            # mitmproxy 12 loads a script once its servers listen: bind them again, after
            # every running hook (the proxyserver's own included) has run.
            asyncio.get_running_loop().call_soon(_rebind)
        _prepare_process()  # a no-op if load() already ran inside the event loop

    def configure(self, updated) -> None:
        if "listen_host" in updated and ctx.options.listen_host == "":
            # mitmproxy's default, every interface, is an open relay (mitmdump -s): bind
            # loopback unless an address was given (--set listen_host=0.0.0.0).
            ctx.options.listen_host = LOOPBACK
            self._loopback_by_default = True
            log.warning("tunnel-inspector: listening on %s only (every interface: "
                        "--set listen_host=0.0.0.0)", LOOPBACK)
        for name in sorted(updated & BY_MITM_NAME.keys()):
            if (why := BY_MITM_NAME[name].problem(getattr(ctx.options, name))) is not None:
                raise exceptions.OptionsError(f"{name} {why}")
        if "inspector_connect_to" in updated:
            self._connect_to = ConnectTo(ctx.options.inspector_connect_to)
        if "inspector_jsonl" in updated:
            if self._jsonl is not None:
                self.stream.unsubscribe(self._jsonl)
                self._jsonl.close()
                self._jsonl = None
            if ctx.options.inspector_jsonl:
                try:
                    self._jsonl = JsonlSink(ctx.options.inspector_jsonl)
                except OSError as e:
                    raise exceptions.OptionsError(
                        f"cannot open {ctx.options.inspector_jsonl} for records: {e.strerror}"
                    ) from None
                self.stream.subscribe(self._jsonl)
        if "inspector_intercept" in updated:
            self._intercept = ctx.options.inspector_intercept
            if self._intercept and not ctx.options.ssl_insecure:
                # mitmproxy must complete the upstream handshake whatever the chain:
                # judging it is our job, and a refusal would hide what was served.
                ctx.options.ssl_insecure = True
        if updated & _JUDGE_OPTIONS:
            judge = _build_judge()
            if self.judge is not None:
                self.judge.close()  # its verdict worker process
            self.judge = judge
        if "inspector_log_lines" in updated:
            self.stream.unsubscribe(self._log_line)
            if ctx.options.inspector_log_lines:
                self.stream.subscribe(self._log_line)

    # --- hooks, in the order they fire for one tunnel -------------------------------

    def client_connected(self, client: connection.Client) -> None:
        # Until its request head has arrived a connection is no tunnel, only a descriptor.
        self._head_timers[client.id] = asyncio.get_running_loop().call_later(
            ctx.options.inspector_connect_head_timeout, self._head_timed_out, client.id)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._head_done(flow.client_conn.id)
        self._opening.pop(flow.client_conn.id, None)  # plain proxied HTTP: not a tunnel
        # A plain request to this proxy's own address is forwarded to itself, again and
        # again (one GET held 5,000 descriptors within 10 s): refused, like a CONNECT.
        if flow.response is None and (reason := self._loop_reason(flow.request.host,
                                                                   flow.request.port)):
            flow.response = _loop_response(reason)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn
        self._head_done(client.id)
        self._opening.pop(client.id, None)
        # A client may send another CONNECT on the same connection (after a 407 or a
        # 502): each tunnel gets its own record id.
        n = self._connects[client.id] = self._connects.get(client.id, 0) + 1
        t = Tunnel(
            id=client.id if n == 1 else f"{client.id}.{n}",
            client=client.peername,
            connect_host=flow.request.host,
            connect_port=flow.request.port,
            started=flow.request.timestamp_start or time.time(),
        )
        live = _Live(t)
        self._live[client.id] = live
        # --connect-to: rewrite the CONNECT target itself, so the same rule holds with an
        # upstream proxy (which is sent this target) as without; the record keeps the original.
        mapped = self._connect_to.target(flow.request.host, flow.request.port)
        if mapped is not None:
            flow.request.host, flow.request.port = mapped
        live.target = (flow.request.host, flow.request.port)
        # A refusal already made (--proxy-auth, when it runs first) stands; otherwise an
        # address that is this proxy is refused here (a name, in server_connect).
        if flow.response is None and (reason := self._loop_reason(*live.target)):
            self._loops[client.id] = reason
            flow.response = _loop_response(reason)
        if flow.response is None:
            self._open.add(client.id)
        timeout = ctx.options.inspector_handshake_timeout
        live.timer = asyncio.get_running_loop().call_later(timeout, self._timed_out, client.id, timeout)

    def server_connect(self, data: ServerConnectionHookData):
        # A name on one of our own ports is resolved before mitmproxy connects: if it is
        # this proxy, the connection is refused (mitmproxy answers 502). Other ports
        # cannot loop, so ordinary tunnels never pay for a second lookup.
        if data.server.address is None:
            return None
        host, port = data.server.address[:2]
        if loop_guard.needs_resolving(host, port, self._listening()):
            return self._refuse_if_resolves_to_self(data, host, port)
        return None

    def server_connected(self, data: ServerConnectionHookData) -> None:
        live = self._live.get(data.client.id)
        if live is not None:
            live.tunnel.upstream = data.server.peername or data.server.address

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        cid = flow.client_conn.id
        self._open.discard(cid)
        looped = self._loops.pop(cid, None)
        live = self._live.get(cid)
        if live is None:
            return
        code = flow.response.status_code if flow.response else None
        if code == 407:
            # Our own proxy refused the CONNECT (--proxy-auth): no tunnel was opened, and a
            # client that answers with credentials opens it next, so a record here would
            # count every tunnel of such a client twice. A client that never sends any
            # fails without a tunnel: the count in stats() and this warning show it.
            if (timer := self._live.pop(cid).timer) is not None:
                timer.cancel()
            self.unrecorded.add(limits.AUTH_REFUSED)
            if not self._warned_407:
                self._warned_407 = True
                log.warning("CONNECT %s answered 407 (--proxy-auth): a client that does not "
                            "retry with credentials gets no tunnel and no record",
                            host_port(safe(live.tunnel.connect_host), live.tunnel.connect_port))
            return
        if looped is not None:
            self._publish_loop(cid, looped)
            return
        if flow.response is not None:
            # mitmproxy cannot take a second CONNECT on a connection whose first failed
            # (it asserts on the dead server connection): ask the client for a new one.
            flow.response.headers["connection"] = "close"
        reason = flow.server_conn.error or (flow.response.reason if flow.response else None)
        live.tracker.end(handshake.CONNECT_FAILED,
                         f"{connect_error_text(reason)} (proxy answered {code})")
        self._finish(flow.client_conn.id)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        ctx_ = nextlayer.context
        cid = ctx_.client.id
        if len(ctx_.layers) == 1 and (first := nextlayer.data_client()):
            # The client's first bytes to the proxy itself: kept until a request parses, so
            # a CONNECT that mitmproxy rejects unparsed (no hook fires) still gets a record.
            self._opening[cid] = first[:OPENING_BYTES]
            if nextlayer.layer is None and head_guard.applies(ctx_, first):
                nextlayer.layer = head_guard.http_layer(ctx_, limits.HEAD_MAX_BYTES,
                                                        self._head_too_large, self._left_mid_head)
            return
        if (
            self._intercept
            or cid not in self._connects
            or nextlayer.layer is not None
            or not ctx_.layers
            or not is_inside_connect(ctx_)
        ):
            return
        live = self._live.get(cid)
        if live is None or live.layer is not None:
            # The record is written (e.g. --handshake-timeout passed before the client's
            # first byte): the tunnel is still relayed as it is, just no longer observed.
            nextlayer.layer = TunnelRelay(ctx_, None, None, None, _pump())
            return
        live.layer = TunnelRelay(
            ctx_, lambda from_client, data: self._observed(cid, from_client, data),
            lambda from_client: self._side_closed(cid, from_client), lambda: self._closed(cid),
            _pump(), lambda why: self._connect_failed(cid, why),
        )
        nextlayer.layer = live.layer

    # --- intercept mode: mitmproxy terminates TLS on both sides ---------------------

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        live = self._live.get(data.context.client.id)
        if live is not None and self._intercept:
            try:
                # raw_bytes(False) is the handshake message; its body follows 4 header bytes
                live.tracker.client_hello = wire.parse_client_hello(
                    data.client_hello.raw_bytes(wrap_in_record=False)
                )
            except wire.WireError as e:
                live.tracker.end(handshake.NOT_TLS, f"malformed ClientHello: {e}")

    def tls_start_server(self, data: tls.TlsData) -> None:
        live = self._live.get(data.context.client.id)
        if live is not None and self._intercept and data.conn.sni is None:
            # mitmproxy would send `client.sni or CONNECT host`, hiding a client that sent
            # no SNI (the missing-SNI incident). "" makes tlsconfig send none at all.
            data.conn.sni = data.context.client.sni or ""

    def tls_established_server(self, data: tls.TlsData) -> None:
        live = self._live.get(data.context.client.id)
        if live is not None and self._intercept:
            live.version = data.conn.tls_version
            live.intercepted_chain = [_der(c) for c in data.conn.certificate_list]
            live.server_tls = True
            self._established_if_both(data.context.client.id, live)

    def tls_established_client(self, data: tls.TlsData) -> None:
        live = self._live.get(data.context.client.id)
        if live is not None and self._intercept:
            live.client_tls = True
            self._established_if_both(data.context.client.id, live)

    def _established_if_both(self, cid: str, live: _Live) -> None:
        # Intercept mode has two handshakes; the tunnel is up when both are.
        if live.client_tls and live.server_tls:
            live.tracker.end(handshake.ESTABLISHED, None)
            self._finish(cid)

    def tls_failed_server(self, data: tls.TlsData) -> None:
        live = self._live.get(data.context.client.id)
        if live is None or not self._intercept:
            return
        if data.ssl_conn is not None and (peer := data.ssl_conn.get_peer_cert_chain()):
            live.intercepted_chain = [crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in peer]
        error = data.conn.error or "the upstream handshake failed"
        code = alert_in_error_text(error)
        if code is not None:
            live.tracker.alert = handshake.AlertSeen("server", code)
            live.tracker.end(handshake.SERVER_ALERT, f"upstream: {error}")
        else:
            live.tracker.end(handshake.CLOSED, f"upstream: {error}")
        self._finish(data.context.client.id)

    def tls_failed_client(self, data: tls.TlsData) -> None:
        live = self._live.get(data.context.client.id)
        if live is None or not self._intercept:
            return
        error = data.conn.error or "the client handshake failed"
        code = alert_in_error_text(error)
        if code is not None:
            live.tracker.alert = handshake.AlertSeen("client", code)
        live.tracker.end(handshake.CLIENT_ALERT if code is not None else handshake.CLOSED,
                         f"with the proxy: {error}")
        live.client_rejected_proxy = True
        self._finish(data.context.client.id)

    # --- passthrough: the relayed bytes ---------------------------------------------

    def _observed(self, cid: str, from_client: bool, data: bytes) -> None:
        live = self._live.get(cid)
        if live is not None and live.tracker.feed(from_client, data):
            live.tunnel.decided = live.tunnel.decided or time.time()  # not when the watch ends
            if live.tracker.settled:
                self._finish(cid)

    def _side_closed(self, cid: str, from_client: bool) -> None:
        live = self._live.get(cid)
        if live is not None:
            live.tracker.side_closed(from_client)
            if live.tracker.settled:
                self._finish(cid)

    def client_disconnected(self, client: connection.Client) -> None:
        self._head_done(client.id)
        self._loops.pop(client.id, None)
        # The safety net: whatever path a tunnel took, it gets its record here at the latest.
        self._closed(client.id)
        self._connects.pop(client.id, None)
        self._open.discard(client.id)
        opening = self._opening.pop(client.id, None)
        left_mid_head = client.id in self._left_mid_head_ids
        self._left_mid_head_ids.discard(client.id)
        if opening is not None:
            if getattr(ctx.options, "proxyauth", None):
                # No request parsed, so none was authenticated: a stranger's bytes are
                # counted with the refused, never written or gated on (--fail-on).
                self.unrecorded.add(limits.AUTH_REFUSED)
            else:
                self._publish_unparsed(client, opening, left_mid_head)

    async def done(self) -> None:
        for cid in list(self._live):
            self._live[cid].tracker.end(
                handshake.CLOSED, "the proxy stopped before the handshake finished"
            )
            self._finish(cid)
        if self._judging:  # each is bounded by the probe and verdict timeouts
            await asyncio.wait(self._judging)
        if self.judge is not None:
            self.judge.close()
        if self._jsonl is not None:
            self._jsonl.close()

    # --- internals --------------------------------------------------------------------

    def _connect_failed(self, cid: str, why: str) -> None:
        # Through an upstream proxy the client already has its 200: the upstream's own
        # answer to our CONNECT (e.g. its 502) comes only when the tunnel opens.
        live = self._live.get(cid)
        if live is not None:
            live.tracker.end(handshake.CONNECT_FAILED, connect_error_text(why))
            self._finish(cid)

    def _closed(self, cid: str) -> None:
        live = self._live.get(cid)
        if live is not None:
            live.tracker.closed()
            self._finish(cid)

    def _timed_out(self, cid: str, seconds: float) -> None:
        live = self._live.get(cid)
        if live is not None:
            live.tracker.timed_out(seconds)
            self._finish(cid)

    def _finish(self, cid: str) -> None:
        live = self._live.pop(cid, None)
        if live is None:
            return
        if live.timer is not None:
            live.timer.cancel()
        if live.layer is not None:
            live.layer.stop_observing()
        tr, t = live.tracker, live.tunnel
        t.client_hello = tr.client_hello
        t.outcome = tr.outcome or handshake.CLOSED
        t.version = live.version or tr.version
        t.alert = tr.alert
        t.detail = tr.detail
        t.observed_chain = tr.certificates
        t.server_hello, t.client_certificate = tr.server_hello, tr.client_certificate()
        t.decided = t.decided or time.time()
        if self.judge is not None and self.judge.wants_chain(t):
            # The verdict may need a probe: judge off the relay's path, publish when known.
            task = asyncio.create_task(self._judge_and_publish(live, self.judge))
            self._judging.add(task)
            task.add_done_callback(self._judging.discard)
        else:
            self._publish(live, None, [])

    async def _judge_and_publish(self, live: _Live, judge: ChainJudge) -> None:
        t = live.tunnel
        # Probe the very address the tunnel reached (no second DNS answer), unless an
        # upstream proxy is in between: then the proxy is asked for the CONNECT target.
        target = live.target if judge.upstream_proxy else t.upstream
        assert target is not None  # wants_chain: the tunnel reached upstream
        try:
            chain, chain_findings = await judge.judge(
                t, (target[0], target[1]), live.intercepted_chain
            )
        except Exception as e:  # a verdict bug must not cost the tunnel its record
            log.exception("chain verdict failed for %s:%s", t.connect_host, t.connect_port)
            chain, chain_findings = None, [probe_failed(f"the chain verdict failed: {e!r}")]
        self._publish(live, chain, chain_findings)

    def _publish(self, live: _Live, chain: Chain | None, chain_findings: list) -> None:
        t = live.tunnel
        findings = tunnel_findings(t, live.client_rejected_proxy, chain_findings)
        self.stream.publish(t.to_record(findings, chain))

    def _publish_unparsed(self, client: connection.Client, opening: bytes,
                          left_mid_head: bool) -> None:
        host, port = unparsed_target(opening)
        t = Tunnel(id=client.id, client=client.peername, connect_host=host, connect_port=port,
                   started=client.timestamp_start or time.time(), decided=time.time())
        if left_mid_head:  # nothing was malformed: the client just stopped
            t.outcome, t.detail = handshake.CLOSED, "the client left before its request was complete"
            self.stream.publish(t.to_record(tunnel_findings(t)))
            return
        t.outcome, t.detail = handshake.CONNECT_FAILED, bad_request_detail(opening)
        self.stream.publish(t.to_record([bad_request_finding(opening)]))

    def _log_line(self, record: Record) -> None:
        log.info(text.line(record))

    # --- connections that are no tunnel, and tunnels into the proxy itself ------------

    def _listening(self) -> list[tuple]:
        return self._proxyserver.listen_addrs() if self._proxyserver is not None else []

    def _head_done(self, cid: str) -> None:
        timer = self._head_timers.pop(cid, None)
        if timer is not None:
            timer.cancel()

    def _head_timed_out(self, cid: str) -> None:
        self._head_timers.pop(cid, None)
        task = relay.close_idle(cid)
        if task is None:
            return
        self._opening.pop(cid, None)  # closed unanswered: no tunnel, so no record
        self.unrecorded.add(limits.HEAD_TIMED_OUT)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _left_mid_head(self, client: connection.Client) -> None:
        self._left_mid_head_ids.add(client.id)

    def _head_too_large(self, client: connection.Client) -> None:
        self._head_done(client.id)
        self._opening.pop(client.id, None)
        self.unrecorded.add(limits.HEAD_TOO_LARGE)

    def _loop_reason(self, host: str, port: int) -> str | None:
        return loop_guard.loop_reason(host, port, self._listening(), loop_guard.is_local_address)

    async def _refuse_if_resolves_to_self(self, data: ServerConnectionHookData, host: str,
                                          port: int) -> None:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                RESOLVE_S)
        except (OSError, asyncio.TimeoutError):
            return  # mitmproxy's own lookup fails (or succeeds) as it would have
        for info in infos:
            if reason := self._loop_reason(str(info[4][0]), port):
                reason = f"{safe(host)} resolves to {info[4][0]}, and {reason}"
                if data.client.id in self._live:  # a tunnel: its record says why
                    self._loops[data.client.id] = reason
                data.server.error = f"refused: {reason}"
                return

    def _publish_loop(self, cid: str, reason: str) -> None:
        live = self._live.pop(cid)
        if live.timer is not None:
            live.timer.cancel()
        t = live.tunnel
        t.outcome, t.detail, t.decided = handshake.CONNECT_FAILED, f"refused: {reason}", time.time()
        finding = loop_finding(t.connect_host, t.connect_port, reason)
        self.stream.publish(t.to_record([finding]))


_JUDGE_OPTIONS = {
    "inspector_trust",
    "inspector_client",
    "inspector_probe",
    "inspector_probe_timeout",
    "inspector_expiring_days",
    "mode",
}


RESOLVE_S = 5.0  # the loop check's own lookup of a name on one of our ports


def _loop_response(reason: str) -> http.Response:
    """508 Loop Detected, closing the connection. --proxy-auth, when it runs after us,
    still replaces it with its 407: an unauthenticated client learns nothing."""
    response = http.Response.make(508, f"tunnel-inspector: refused, {reason}\n",
                                  {"Content-Type": "text/plain", "Connection": "close"})
    response.reason = "Loop Detected"
    return response


def _prepare_process() -> None:
    """Inside the event loop, before the proxy listens: an accept step that survives
    running out of descriptors, and the open-file limit raised to the hard limit.
    Both are idempotent (load() and running() both call this)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # not inside the loop yet: running() calls again
    accept.install(loop)
    try:
        before, after = limits.raise_open_file_limit()
    except (OSError, ValueError) as e:
        log.warning("cannot raise the open-file limit: %s", e)
        return
    if after != before:
        log.info("open-file limit raised from %d to %d (the hard limit)", before, after)


def _der(cert) -> bytes:
    """DER of a mitmproxy Cert (to_pem is the accessor stable across mitmproxy 11 and 12)."""
    return ssl.PEM_cert_to_DER_cert(cert.to_pem().decode("ascii"))


def _rebind() -> None:
    ctx.options.server = False
    ctx.options.server = True


def _pump() -> str | None:
    return relay_pump(ctx.options.inspector_fast_relay, ctx.options.inspector_relay_pump)


def _build_judge() -> ChainJudge:
    o = ctx.options
    try:
        trust = [load_profile(spec) for spec in o.inspector_trust]
        clients = [load_client_profile(spec) for spec in o.inspector_client]
    except TrustError as e:
        raise exceptions.OptionsError(str(e)) from None
    return ChainJudge(
        trust,
        clients,
        probing=o.inspector_probe,
        probe_timeout=o.inspector_probe_timeout,
        upstream_proxy=upstream_proxy_address(o.mode),
        expiring_days=o.inspector_expiring_days,
    )


addons = [TunnelInspector()]
