"""The engineers' topology view: one page and the JSON it polls, served by
the controller (the standard library's ThreadingHTTPServer; nothing here
needs more).

Read-only: GET and HEAD only, anything else 405. Loopback by default; the
controller refuses a non-loopback address unless a bearer token is
configured (every request then needs `Authorization: Bearer <token>`, 401
otherwise) or an ssl.SSLContext that requires client certificates is given
(the controller's own CA; `may_read(common_name)` decides, with the roles of
the access file).

    GET /                       the page
    GET /api/topology           switches, links (up or down), hosts with their
                                IPv4 and IPv6 addresses and active enforcements
                                (named by any of those), layout coordinates
    GET /api/enforcements/ID    one enforcement with its rules and the live
                                packet/byte counters of its flows
"""
from __future__ import annotations

import hmac
import http.server
import importlib.resources
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable

import networkx as nx

from enforcement.hostaddresses import AddressIndex
from enforcement.model import State
from enforcement.routing import switch_graph

LOG = logging.getLogger(__name__)


class ViewModel:
    """Turns what the controller knows into the JSON the page draws. Keeps
    the links it has seen, so that a link that goes away shows as down
    instead of vanishing."""

    def __init__(self, service, network):
        self._service = service
        self._network = network
        self._seen_links: dict[tuple, dict] = {}
        self._layout: tuple[frozenset, dict] | None = None
        self._lock = threading.Lock()

    def topology(self) -> dict:
        view, _ = self._service.topology()
        live = {r.id: r for r in self._service.list(states=[_ACTIVE, _PENDING])}
        by_address: dict[str, list[str]] = {}
        for record in live.values():
            for address in dict.fromkeys((str(record.decision.subscriber.ip),
                                          *record.addresses)):
                by_address.setdefault(address, []).append(record.id)
        owned = AddressIndex(by_address)
        # A host's enforcements oldest first, whichever of its addresses named them.
        rank = {enforcement_id: n for n, enforcement_id in enumerate(live)}
        with self._lock:
            current = {}
            for link in view.links:
                key = tuple(sorted([(link.src_dpid, link.src_port),
                                    (link.dst_dpid, link.dst_port)]))
                current[key] = {"a": f"{key[0][0]:016x}", "a_port": key[0][1],
                                "b": f"{key[1][0]:016x}", "b_port": key[1][1]}
            self._seen_links.update(current)
            links = [dict(data, up=key in current) for key, data in sorted(
                self._seen_links.items())]
            positions = self._positions(view)
        switches = [{"id": f"{s.dpid:016x}", "name": f"s{s.dpid}",
                     "ports": [{"number": n, "name": name} for n, name in s.ports],
                     **positions.get(f"{s.dpid:016x}", {"x": 0.5, "y": 0.5})}
                    for s in view.switches]
        hosts = []
        for h in view.hosts:
            records = [live[i] for i in sorted(owned.of(h.ip, h.ipv6), key=rank.__getitem__)]
            hosts.append({
                "mac": h.mac, "ip": h.ip or "", "ipv6": list(h.ipv6),
                "switch": f"{h.dpid:016x}", "port": h.port,
                "account": h.account, "pinned": h.pinned,
                **positions.get(h.mac, {"x": 0.5, "y": 0.5}),
                "enforcements": [_summary(r) for r in records]})
        return {"switches": switches, "links": links, "hosts": hosts,
                "generated_at": time.time()}

    def enforcement(self, enforcement_id: str) -> dict | None:
        try:
            record = self._service.get(enforcement_id)
        except Exception:
            return None
        counters = {}
        for dpid in sorted({r.dpid for r in record.rules}):
            try:
                counts = self._network.flow_counters(dpid, record.cookie)
            except Exception as exc:  # switch away: say so, keep the rest
                counters[f"{dpid:016x}"] = {"error": str(exc)}
                continue
            counters[f"{dpid:016x}"] = counts
        packets = sum(c.get("packets", 0) for c in counters.values())
        octets = sum(c.get("bytes", 0) for c in counters.values())
        return {**_summary(record), "rules": [r.text() for r in record.rules],
                "meters": [m.text() for m in record.meters],
                "reason": record.decision.reason, "state_reason": record.state_reason,
                "escalation": record.escalation.reason, "clause": record.escalation.clause,
                "location": {"switch": f"{record.location.dpid:016x}",
                             "port": record.location.port},
                "counters": {"per_switch": counters, "packets": packets, "bytes": octets}}

    def _positions(self, view) -> dict:
        """Spring layout of switches and hosts (networkx), recomputed only
        when the set of nodes changes, so the picture does not jump."""
        graph = switch_graph(view)
        nodes = nx.Graph()
        for a, b in graph.edges:
            nodes.add_edge(f"{a:016x}", f"{b:016x}")
        for s in view.switches:
            nodes.add_node(f"{s.dpid:016x}")
        for data in self._seen_links.values():
            nodes.add_edge(data["a"], data["b"])
        for h in view.hosts:
            nodes.add_edge(h.mac, f"{h.dpid:016x}")
        key = frozenset(nodes.nodes) | frozenset(map(frozenset, nodes.edges))
        if self._layout is None or self._layout[0] != key:
            raw = nx.spring_layout(nodes, seed=7) if len(nodes) else {}
            xs = [p[0] for p in raw.values()] or [0]
            ys = [p[1] for p in raw.values()] or [0]
            span_x, span_y = (max(xs) - min(xs)) or 1, (max(ys) - min(ys)) or 1
            self._layout = (key, {n: {"x": round(0.05 + 0.9 * (p[0] - min(xs)) / span_x, 4),
                                      "y": round(0.05 + 0.9 * (p[1] - min(ys)) / span_y, 4)}
                                  for n, p in raw.items()})
        return self._layout[1]


def _summary(record) -> dict:
    return {"id": record.id, "case": record.decision.case_id,
            "subscriber": str(record.decision.subscriber.ip),
            "addresses": list(record.addresses),
            "violation": record.decision.violation.value,
            "action": record.action.kind.value, "description": record.action.description,
            "state": record.state.value}


_ACTIVE, _PENDING = State.ACTIVE, State.PENDING


class TopologyWeb:
    def __init__(self, model: ViewModel, host: str, port: int, *,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 may_read: Callable[[str], bool] | None = None):
        page = importlib.resources.files("controller").joinpath("view.html").read_bytes()
        handler = _handler(model, page, token, may_read if ssl_context else None)
        self._server = http.server.ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        if ssl_context is not None:
            # The handshake then happens in the request's own thread, so a
            # client that stalls in it cannot hold up everyone else's accept.
            self._server.socket = ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="topology-view", daemon=True)

    def start(self) -> int:
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(model: ViewModel, page: bytes, token: str | None,
             may_read: Callable[[str], bool] | None):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "enforcement-view"

        def log_message(self, fmt, *args):  # the controller log, not stderr
            # fmt is http.server's own %-format: extended, not formatted, it stays lazy.
            LOG.debug("%s " + fmt, self.address_string(), *args)  # noqa: G003

        def _refuse_writes(self):
            self.send_response(405)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_writes

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _allowed(self) -> bool:
            if may_read is not None:
                from enforcement.tlsgate import common_name
                name = common_name(self.connection.getpeercert() or {})
                if not name or not may_read(name):
                    self._send(403, b'{"error": "this certificate may not read"}',
                               "application/json", True)
                    return False
            if token is not None:
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", "Bearer")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
            return True

        def _serve(self, body: bool):
            if not self._allowed():
                return
            path = urllib.parse.urlparse(self.path).path
            try:
                if path in ("/", "/index.html"):
                    return self._send(200, page, "text/html; charset=utf-8", body)
                if path == "/api/topology":
                    return self._json(model.topology(), body)
                if path.startswith("/api/enforcements/"):
                    found = model.enforcement(path.rsplit("/", 1)[1])
                    if found is None:
                        return self._send(404, b'{"error": "no such enforcement"}',
                                          "application/json", body)
                    return self._json(found, body)
            except Exception:
                LOG.exception("topology view failed on %s", path)
                return self._send(500, b'{"error": "internal error; see the controller log"}',
                                  "application/json", body)
            self._send(404, b'{"error": "not found"}', "application/json", body)

        def _json(self, data, body: bool):
            self._send(200, json.dumps(data).encode(), "application/json", body)

        def _send(self, status: int, data: bytes, kind: str, body: bool):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler
