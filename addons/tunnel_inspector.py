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
import ssl
import time
from collections.abc import Sequence

from mitmproxy import connection, ctx, exceptions, http, tls
from mitmproxy.proxy import events, layer
from mitmproxy.proxy.layers import TCPLayer
from mitmproxy.proxy.layers.tcp import TcpMessageInjected
from mitmproxy.proxy.utils import expect
from mitmproxy.proxy.layers.http import HttpStream
from mitmproxy.proxy.layers.http._upstream_proxy import HttpUpstreamProxy
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from OpenSSL import crypto

from inspector import handshake, wire
from inspector.analysis import tunnel_findings
from inspector.bad_request import (OPENING_BYTES, bad_request_detail, bad_request_finding,
                                   unparsed_target)
from inspector.chain.judge import ChainJudge, probe_failed, upstream_proxy_address
from inspector.chain.trust import TrustError, load_client_profile, load_profile
from inspector.connect_to import ConnectTo, ConnectToError
from inspector.escape import safe
from inspector.handshake import HandshakeTracker, alert_in_error_text, connect_error_text
from inspector.record import Tunnel, host_port
from inspector.stream import JsonlSink, RecordStream, format_line

log = logging.getLogger(__name__)


class _ObservedTCPLayer(TCPLayer):
    """mitmproxy's raw TCP relay, with the tunnel's bytes shown to an observer first.

    Built as an ignored-host relay (no TCPFlow, so no tcp_* hooks): a hook event is
    dispatched to every addon, and the per-tunnel hooks were most of the inspector's
    cost over bare mitmproxy. The observer sees each chunk before it is relayed, and
    is dropped once the handshake is decided: from then on the tunnel costs exactly
    what an ignored connection costs.
    """

    def __init__(self, context, observe, half_closed, closed) -> None:
        super().__init__(context, ignore=True)
        self._observe = observe  # (from_client, data) -> None
        self._half_closed = half_closed  # (from_client) -> None, as each side closes
        self._closed = closed  # () -> None, once both directions have closed

    def stop_observing(self) -> None:
        self._observe = self._half_closed = self._closed = None

    @expect(events.DataReceived, events.ConnectionClosed, TcpMessageInjected)
    def relay_messages(self, event: events.Event) -> layer.CommandGenerator[None]:
        if self._observe is not None:
            if isinstance(event, events.DataReceived):
                self._observe(event.connection == self.context.client, event.data)
            elif isinstance(event, events.ConnectionClosed):
                self._half_closed(event.connection == self.context.client)
        yield from super().relay_messages(event)
        if self._closed is not None and self._handle_event == self.done:
            self._closed()


class _Live:
    """One tunnel in progress. (A plain class: mitmdump -s loads this file outside
    sys.modules, where @dataclass cannot resolve postponed annotations.)"""

    __slots__ = ("tunnel", "tracker", "layer", "timer", "target", "version",
                 "intercepted_chain", "server_tls", "client_tls", "client_rejected_proxy")

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.tracker = HandshakeTracker()
        self.layer: _ObservedTCPLayer | None = None
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
        self._live: dict[str, _Live] = {}
        self._judging: set[asyncio.Task] = set()
        self._connect_to = ConnectTo([])
        self._jsonl: JsonlSink | None = None
        self._intercept = False
        self._opening: dict[str, bytes] = {}  # client id -> first bytes, until a request parses
        self._auth_refused = 0  # CONNECTs our --proxy-auth answered 407: no tunnel, no record

    def stats(self) -> dict:
        """For the UI's header: tunnels in progress, and the chain stage's probe figures."""
        out = {"tunnels_open": len(self._live)}
        if self._auth_refused:
            out["auth_refused"] = self._auth_refused
        return out | (self.judge.stats() if self.judge else {})

    # --- options -------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option(
            "inspector_jsonl", str | None, None,
            "Append one JSON record per tunnel to this file (JSON Lines).",
        )
        loader.add_option(
            "inspector_connect_to", Sequence[str], [],
            "HOST:PORT:HOST2:PORT2: tunnels to HOST:PORT go to HOST2:PORT2 (curl's "
            "--connect-to); the SNI is untouched.",
        )
        loader.add_option(
            "inspector_handshake_timeout", float, 10.0,
            "Seconds a tunnel may take to finish its TLS handshake before it is "
            "recorded as a timeout.",
        )
        loader.add_option(
            "inspector_trust", Sequence[str], ["mozilla"],
            "What a normal client trusts: a PEM bundle path, 'mozilla' (certifi) or "
            "'system' (the OS bundle). Repeatable; the chain is untrusted when none validates it.",
        )
        loader.add_option(
            "inspector_client", Sequence[str], [],
            "NAME=PEM: a client's own root store (e.g. an old device) judged separately.",
        )
        loader.add_option(
            "inspector_probe", bool, True,
            "Fetch chains the relay cannot see (TLS 1.3) with a probe handshake.",
        )
        loader.add_option(
            "inspector_probe_timeout", float, 5.0, "Seconds a probe handshake may take.",
        )
        loader.add_option(
            "inspector_expiring_days", int, 30,
            "Warn when a certificate expires within this many days.",
        )
        loader.add_option(
            "inspector_intercept", bool, False,
            "Terminate TLS (the client must trust mitmproxy's CA) instead of passing it "
            "through; the upstream gets exactly the client's SNI, none if none.",
        )
        loader.add_option(
            "inspector_log_lines", bool, False,
            "Log one line per tunnel through mitmproxy's log (for mitmdump -s).",
        )

    def configure(self, updated) -> None:
        if "inspector_connect_to" in updated:
            try:
                self._connect_to = ConnectTo(ctx.options.inspector_connect_to)
            except ConnectToError as e:
                raise exceptions.OptionsError(str(e)) from None
        if "inspector_handshake_timeout" in updated:
            if not ctx.options.inspector_handshake_timeout > 0:
                raise exceptions.OptionsError("inspector_handshake_timeout must be > 0 seconds")
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

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._opening.pop(flow.client_conn.id, None)  # plain proxied HTTP: not a tunnel

    def http_connect(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn
        self._opening.pop(client.id, None)
        t = Tunnel(
            id=client.id,
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
        timeout = ctx.options.inspector_handshake_timeout
        live.timer = asyncio.get_running_loop().call_later(timeout, self._timed_out, client.id, timeout)

    def server_connected(self, data: ServerConnectionHookData) -> None:
        live = self._live.get(data.client.id)
        if live is not None:
            live.tunnel.upstream = data.server.peername or data.server.address

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        live = self._live.get(flow.client_conn.id)
        if live is None:
            return
        code = flow.response.status_code if flow.response else None
        if code == 407:
            # Our own proxy refused the CONNECT (--proxy-auth): no tunnel was opened, and a
            # client that answers with credentials opens it next, so a record here would
            # count every tunnel of such a client twice. A client that never sends any
            # fails without a tunnel: the count in stats() and this warning show it.
            self._live.pop(flow.client_conn.id).timer.cancel()
            self._auth_refused += 1
            if self._auth_refused == 1:
                log.warning("CONNECT %s answered 407 (--proxy-auth): a client that does not "
                            "retry with credentials gets no tunnel and no record",
                            host_port(safe(live.tunnel.connect_host), live.tunnel.connect_port))
            return
        reason = flow.server_conn.error or (flow.response.reason if flow.response else None)
        live.tracker.end(handshake.CONNECT_FAILED,
                         f"{connect_error_text(reason)} (proxy answered {code})")
        self._finish(flow.client_conn.id)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        ctx_ = nextlayer.context
        if len(ctx_.layers) == 1 and (first := nextlayer.data_client()):
            # The client's first bytes to the proxy itself: kept until a request parses, so
            # a CONNECT that mitmproxy rejects unparsed (no hook fires) still gets a record.
            self._opening[ctx_.client.id] = first[:OPENING_BYTES]
            return
        live = self._live.get(ctx_.client.id)
        if (
            self._intercept
            or live is None
            or nextlayer.layer is not None
            or live.layer is not None
            or not ctx_.layers
            or not isinstance(ctx_.layers[-1], (HttpStream, HttpUpstreamProxy))
        ):
            return
        cid = ctx_.client.id
        live.layer = _ObservedTCPLayer(
            ctx_, lambda from_client, data: self._observed(cid, from_client, data),
            live.tracker.side_closed, lambda: self._closed(cid),
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
            self._finish(cid)

    def client_disconnected(self, client: connection.Client) -> None:
        # The safety net: whatever path a tunnel took, it gets its record here at the latest.
        self._closed(client.id)
        opening = self._opening.pop(client.id, None)
        if opening is not None:
            self._publish_unparsed(client, opening)

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
        t.decided = time.time()
        if self.judge is not None and self.judge.wants_chain(t):
            # The verdict may need a probe: judge off the relay's path, publish when known.
            task = asyncio.create_task(self._judge_and_publish(live))
            self._judging.add(task)
            task.add_done_callback(self._judging.discard)
        else:
            self._publish(live, None, [])

    async def _judge_and_publish(self, live: _Live) -> None:
        t = live.tunnel
        # Probe the very address the tunnel reached (no second DNS answer), unless an
        # upstream proxy is in between: then the proxy is asked for the CONNECT target.
        target = live.target if self.judge.upstream_proxy else t.upstream
        try:
            chain, chain_findings = await self.judge.judge(
                t, (target[0], target[1]), live.intercepted_chain
            )
        except Exception as e:  # a verdict bug must not cost the tunnel its record
            log.exception("chain verdict failed for %s:%s", t.connect_host, t.connect_port)
            chain, chain_findings = None, [probe_failed(f"the chain verdict failed: {e!r}")]
        self._publish(live, chain, chain_findings)

    def _publish(self, live: _Live, chain: dict | None, chain_findings: list) -> None:
        t = live.tunnel
        findings = tunnel_findings(t, live.client_rejected_proxy) + chain_findings
        self.stream.publish(t.to_record(findings, chain))

    def _publish_unparsed(self, client: connection.Client, opening: bytes) -> None:
        host, port = unparsed_target(opening)
        t = Tunnel(id=client.id, client=client.peername, connect_host=host, connect_port=port,
                   started=client.timestamp_start or time.time(), outcome=handshake.CONNECT_FAILED,
                   detail=bad_request_detail(opening), decided=time.time())
        self.stream.publish(t.to_record([bad_request_finding(opening)]))

    def _log_line(self, record: dict) -> None:
        log.info(format_line(record))


_JUDGE_OPTIONS = {
    "inspector_trust",
    "inspector_client",
    "inspector_probe",
    "inspector_probe_timeout",
    "inspector_expiring_days",
    "mode",
}


def _der(cert) -> bytes:
    """DER of a mitmproxy Cert (to_pem is the accessor stable across mitmproxy 11 and 12)."""
    return ssl.PEM_cert_to_DER_cert(cert.to_pem().decode("ascii"))


def _build_judge() -> ChainJudge:
    o = ctx.options
    if o.inspector_probe_timeout <= 0:
        raise exceptions.OptionsError("inspector_probe_timeout must be > 0 seconds")
    try:
        trust = [load_profile(spec) for spec in o.inspector_trust]
        clients = [load_client_profile(spec) for spec in o.inspector_client]
    except TrustError as e:
        raise exceptions.OptionsError(str(e)) from None
    if not trust:
        raise exceptions.OptionsError("inspector_trust needs at least one trust store")
    return ChainJudge(
        trust,
        clients,
        probing=o.inspector_probe,
        probe_timeout=o.inspector_probe_timeout,
        upstream_proxy=upstream_proxy_address(o.mode),
        expiring_days=o.inspector_expiring_days,
    )


addons = [TunnelInspector()]
