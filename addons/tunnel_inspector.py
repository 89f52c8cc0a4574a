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
import time
from collections.abc import Sequence

from mitmproxy import connection, ctx, exceptions, http, tcp
from mitmproxy.proxy import layer as proxy_layer
from mitmproxy.proxy.layers import TCPLayer
from mitmproxy.proxy.layers.http import HttpStream
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from inspector import handshake
from inspector.analysis import tunnel_findings
from inspector.connect_to import ConnectTo, ConnectToError
from inspector.handshake import HandshakeTracker, connect_error_text
from inspector.record import Tunnel
from inspector.stream import JsonlSink, RecordStream, format_line

log = logging.getLogger(__name__)


class _ObservedTCPLayer(TCPLayer):
    """A relaying TCP layer whose observation can be switched off mid-tunnel.

    TCPLayer relays without building messages or calling hooks when its flow is None
    (that is how mitmproxy relays ignored hosts); dropping the flow once the handshake
    is decided makes the rest of the tunnel cost what an ignored connection costs.
    """

    def stop_observing(self) -> None:
        self.flow = None


class _Live:
    """One tunnel in progress. (A plain class: mitmdump -s loads this file outside
    sys.modules, where @dataclass cannot resolve postponed annotations.)"""

    __slots__ = ("tunnel", "tracker", "layer", "timer")

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.tracker = HandshakeTracker()
        self.layer: _ObservedTCPLayer | None = None
        self.timer: asyncio.TimerHandle | None = None


class TunnelInspector:
    def __init__(self) -> None:
        self.stream = RecordStream()
        self._live: dict[str, _Live] = {}
        self._connect_to = ConnectTo([])
        self._jsonl: JsonlSink | None = None

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
        if "inspector_log_lines" in updated:
            self.stream.unsubscribe(self._log_line)
            if ctx.options.inspector_log_lines:
                self.stream.subscribe(self._log_line)

    # --- hooks, in the order they fire for one tunnel -------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn
        t = Tunnel(
            id=client.id,
            client=client.peername,
            connect_host=flow.request.host,
            connect_port=flow.request.port,
            started=flow.request.timestamp_start or time.time(),
        )
        live = _Live(t)
        self._live[client.id] = live
        timeout = ctx.options.inspector_handshake_timeout
        live.timer = asyncio.get_running_loop().call_later(timeout, self._timed_out, client.id, timeout)

    def server_connect(self, data: ServerConnectionHookData) -> None:
        live = self._live.get(data.client.id)
        if live is None or data.server.address is None:
            return
        target = self._connect_to.target(*data.server.address[:2])
        if target is not None:
            data.server.address = target

    def server_connected(self, data: ServerConnectionHookData) -> None:
        live = self._live.get(data.client.id)
        if live is not None:
            live.tunnel.upstream = data.server.peername or data.server.address

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        live = self._live.get(flow.client_conn.id)
        if live is None:
            return
        reason = flow.server_conn.error or (flow.response.reason if flow.response else None)
        code = flow.response.status_code if flow.response else None
        live.tracker.end(handshake.CONNECT_FAILED,
                         f"{connect_error_text(reason)} (proxy answered {code})")
        self._finish(flow.client_conn.id)

    def next_layer(self, nextlayer: proxy_layer.NextLayer) -> None:
        ctx_ = nextlayer.context
        live = self._live.get(ctx_.client.id)
        if (
            live is None
            or nextlayer.layer is not None
            or live.layer is not None
            or not ctx_.layers
            or not isinstance(ctx_.layers[-1], HttpStream)
        ):
            return
        live.layer = _ObservedTCPLayer(ctx_)
        nextlayer.layer = live.layer

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        live = self._live.get(flow.client_conn.id)
        if live is None:
            return
        msg = flow.messages[-1]
        del flow.messages[:-1]  # the relay keeps no history for us
        if live.tracker.feed(msg.from_client, msg.content):
            self._finish(flow.client_conn.id)

    def tcp_end(self, flow: tcp.TCPFlow) -> None:
        self._closed(flow.client_conn.id)

    def tcp_error(self, flow: tcp.TCPFlow) -> None:
        live = self._live.get(flow.client_conn.id)
        if live is not None and live.tunnel.upstream is None:
            live.tracker.end(handshake.CONNECT_FAILED,
                             connect_error_text(flow.error.msg if flow.error else None))
        self._closed(flow.client_conn.id)

    def client_disconnected(self, client: connection.Client) -> None:
        # The safety net: whatever path a tunnel took, it gets its record here at the latest.
        self._closed(client.id)

    def done(self) -> None:
        for cid in list(self._live):
            self._live[cid].tracker.end(
                handshake.CLOSED, "the proxy stopped before the handshake finished"
            )
            self._finish(cid)
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
        t.version = tr.version
        t.alert = tr.alert
        t.detail = tr.detail
        t.observed_chain = tr.certificates
        t.decided = time.time()
        self.stream.publish(t.to_record(tunnel_findings(t)))

    def _log_line(self, record: dict) -> None:
        log.info(format_line(record))


addons = [TunnelInspector()]
