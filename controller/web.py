"""The engineers' topology view over HTTP: one page and its JSON, read-only.

The page (controller/view.html, plain JS and SVG) polls /api/topology and
redraws; the layout is computed here with networkx so the browser needs no
graph library. Only GET and HEAD are served: the view must never become a way
to change enforcement (that is the gRPC API's job, behind its roles).
Off loopback a bearer token is required, checked in constant time.
"""
from __future__ import annotations

import hmac
import http.server
import json
import logging
import pathlib
import ssl
import threading
from collections.abc import Callable, Iterable

import networkx as nx

from enforcement.model import Enforcement, LinkView, TopologyView

LOG = logging.getLogger(__name__)

PAGE = pathlib.Path(__file__).with_name("view.html")


def document(view: TopologyView, down_links: Iterable[LinkView],
             enforcements: Iterable[Enforcement]) -> dict:
    """What the page draws: switches, links (up, or seen before and down now),
    hosts with their active enforcements, and a layout in [0, 1]^2."""
    links: dict[frozenset, dict] = {}
    for state, group in (("down", down_links), ("up", view.links)):
        for l in group:
            key = frozenset({(l.src_dpid, l.src_port), (l.dst_dpid, l.dst_port)})
            (a, ap), (b, bp) = sorted(key)
            links[key] = {"id": f"{a}:{ap}-{b}:{bp}", "a": a, "a_port": ap,
                          "b": b, "b_port": bp, "state": state}
    by_ip: dict[str, list[dict]] = {}
    for e in enforcements:
        by_ip.setdefault(str(e.decision.subscriber.ip), []).append({
            "id": e.id, "action": e.action.kind.value,
            "description": e.action.description,
            "case_id": e.decision.case_id, "violation": e.decision.violation.value,
            "reason": e.decision.reason, "state": e.state.value,
            "placed_at": {"dpid": e.location.dpid, "port": e.location.port},
            "rules": [r.text() for r in e.rules] + [m.text() for m in e.meters],
        })
    graph = nx.Graph()
    for s in view.switches:
        graph.add_node(f"s{s.dpid}")
    for link in links.values():
        graph.add_edge(f"s{link['a']}", f"s{link['b']}")
    for h in view.hosts:
        graph.add_edge(f"h{h.mac}", f"s{h.dpid}")
    layout = _layout(graph)
    return {
        "switches": [{"dpid": s.dpid, "name": f"{s.dpid:016x}",
                      "ports": [{"no": no, "name": name} for no, name in s.ports],
                      "x": layout[f"s{s.dpid}"][0], "y": layout[f"s{s.dpid}"][1]}
                     for s in view.switches],
        "links": sorted(links.values(), key=lambda l: l["id"]),
        "hosts": [{"mac": h.mac, "ip": h.ip, "dpid": h.dpid, "port": h.port,
                   "x": layout[f"h{h.mac}"][0], "y": layout[f"h{h.mac}"][1],
                   "enforcements": by_ip.get(h.ip or "", [])}
                  for h in view.hosts],
    }


def _layout(graph: nx.Graph) -> dict[str, tuple[float, float]]:
    if graph.number_of_nodes() == 0:
        return {}
    # Kamada-Kawai is deterministic (no random start) and keeps rings round.
    pos = (nx.kamada_kawai_layout(graph) if graph.number_of_nodes() > 2
           else nx.circular_layout(graph))
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    return {n: (round((p[0] - min(xs)) / span_x, 4), round((p[1] - min(ys)) / span_y, 4))
            for n, p in pos.items()}


class TopologyWeb:
    """A threaded HTTP(S) server for the view.

    snapshot: returns the document to serve (called per request, from the
    server's threads). token: when set, every request must carry
    `Authorization: Bearer <token>`. ssl_context: serve HTTPS with it (for
    example one that requires client certificates).
    """

    def __init__(self, host: str, port: int, snapshot: Callable[[], dict], *,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None):
        handler = type("Handler", (_Handler,), {"snapshot": staticmethod(snapshot),
                                                "token": token})
        self._server = http.server.ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket,
                                                          server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return host, port

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="http-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    snapshot: Callable[[], dict]
    token: str | None
    server_version = "enforcement-view"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        LOG.debug("http %s %s", self.address_string(), format % args)

    def __getattr__(self, name: str):
        # Every method other than GET and HEAD, known or invented, is refused
        # alike (the base class would answer 501 for the ones it lacks).
        if name.startswith("do_"):
            return self._refuse_method
        raise AttributeError(name)

    def _refuse_method(self) -> None:
        self._send(405, b"only GET and HEAD\n", "text/plain", {"Allow": "GET, HEAD"})

    def do_HEAD(self) -> None:
        self._get(with_body=False)

    def do_GET(self) -> None:
        self._get(with_body=True)

    def _authorised(self) -> bool:
        if not self.token:
            return True
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.token}"
        return hmac.compare_digest(given.encode(), expected.encode())

    def _get(self, with_body: bool) -> None:
        if not self._authorised():
            self._send(401, b"bearer token required\n", "text/plain",
                       {"WWW-Authenticate": 'Bearer realm="topology"'}, with_body)
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8", {}, with_body)
        elif path == "/api/topology":
            try:
                body = json.dumps(self.snapshot()).encode()
            except Exception:
                LOG.exception("the topology view could not be built")
                self._send(500, b"internal error\n", "text/plain", {}, with_body)
                return
            self._send(200, body, "application/json", {}, with_body)
        else:
            self._send(404, b"not found\n", "text/plain", {}, with_body)

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str], with_body: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # The page loads nothing from elsewhere; say so to the browser.
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                         "script-src 'self' 'unsafe-inline'")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(body)
