"""The engineers' topology view: a page drawn with Cytoscape.js (shipped in
controller/view/static/, never fetched at run time), the JSON it reads and a
Server-Sent Events stream that pushes each change, served by aiohttp on its
own thread and event loop.

Read-only: GET and HEAD only, anything else 405. Loopback by default; the
controller refuses a non-loopback address unless a bearer token is
configured (every /api/ request then needs `Authorization: Bearer <token>`,
401 otherwise; the page and its files hold no data and load without it, so
a browser can open .../#token=TOKEN and the page sends the header from
there) or an ssl.SSLContext that requires client certificates is given
(the controller's own CA; `may_read(common_name)` decides, with the roles of
the access file).

Every request must name the view by one of its names in its Host header
(421 otherwise): the listening address, the loopback names when it listens
on loopback, and the names the operator configures. A page on another site
whose name an attacker re-points at 127.0.0.1 (DNS rebinding) is the
engineer's own browser reading the view; its requests carry the attacker's
name, and get nothing.

    GET /                       the page (and /static/: its script, style, library)
    GET /api/topology           switches (position, host counts), links (up or
                                down), hosts with their IPv4 and IPv6 addresses
                                and active enforcements, quarantine paths
    GET /api/stream             text/event-stream: a `snapshot` (the same JSON,
                                numbered), then a `diff` for each change
    GET /api/search?q=          hosts by IPv4 or IPv6 address, MAC, case id,
                                enforcement id or account
    GET /api/enforcements/ID    one enforcement with its rules and the live
                                packet/byte counters of its flows
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import importlib.resources
import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterable

from aiohttp import web

from controller.view.feed import Feed
from controller.view.scene import ViewModel

__all__ = ["TopologyWeb", "ViewModel", "MissingAsset"]

LOG = logging.getLogger(__name__)

# The page's files: everything /static/ may serve. cytoscape.min.js is copied
# from controller/view/viewsrc/node_modules by scripts/setup.sh (generated, not in git).
STATIC = {"index.html": "text/html; charset=utf-8",
          "view.js": "text/javascript; charset=utf-8",
          "view.css": "text/css; charset=utf-8",
          "cytoscape.min.js": "text/javascript; charset=utf-8"}
LIBRARY = "cytoscape.min.js"
# A quiet stream still says something now and then, so that proxies and the
# browser keep it open and a dead client is noticed.
KEEPALIVE_SECONDS = 15
# Differences a stream may fall behind by before it is ended.
BACKLOG = 64
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; frame-ancestors 'none'"),
    "Server": "enforcement-view",
}


class MissingAsset(FileNotFoundError):
    """The view's browser library was never copied in (an OSError, so the
    controller reports it as a view it cannot serve)."""


def load_static() -> dict[str, bytes]:
    folder = importlib.resources.files("controller.view").joinpath("static")
    files = {}
    for name in STATIC:
        path = folder.joinpath(name)
        if not path.is_file():
            hint = ("run scripts/setup.sh (npm ci in controller/view/viewsrc copies it from "
                    "the cytoscape package)" if name == LIBRARY else "the package is incomplete")
            raise MissingAsset(f"the topology view's {name} is missing from "
                               f"controller/view/static/: {hint}")
        files[name] = path.read_bytes()
    return files


class TopologyWeb:
    def __init__(self, model: ViewModel, host: str, port: int, *,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 may_read: Callable[[str], bool] | None = None,
                 names: Iterable[str] = ()):
        self._files = load_static()
        self._names = _names(host, names)
        self._model = model
        self._feed = Feed(model, model.service)
        self._host, self.port = host, port
        self._token = token
        self._ssl = ssl_context
        self._may_read = may_read if ssl_context else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._streams: set[asyncio.Queue] = set()
        self._closing = False

    def start(self) -> int:
        """Binds and serves; returns the bound port. Raises what binding raised."""
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(ready,),
                                        name="topology-view", daemon=True)
        self._thread.start()
        self.port = ready.result(timeout=30)
        self._feed.watching = lambda: len(self._streams)
        self._feed.start(self._publish)
        return self.port

    def stop(self) -> None:
        self._feed.stop()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._end_streams)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ---- the event loop's thread ------------------------------------------

    def _serve(self, ready: concurrent.futures.Future) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self._application(), access_log=None, shutdown_timeout=1)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self._host, self.port, ssl_context=self._ssl)
            loop.run_until_complete(site.start())
        except BaseException as exc:
            ready.set_exception(exc)
            loop.run_until_complete(runner.cleanup())
            loop.close()
            return
        ready.set_result(runner.addresses[0][1])
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def _application(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/index.html", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/topology", self._topology)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_get("/api/search", self._search)
        app.router.add_get("/api/enforcements/{id}", self._enforcement)
        app.on_response_prepare.append(_headers)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"})
        if _host_name(request.headers.get("Host", "")) not in self._names:
            return _error(421, "this view does not answer to that name (Host header); "
                               "see http.names")
        if self._may_read is not None:
            from enforcement.api.tlsgate import common_name
            transport = request.transport
            certificate = transport.get_extra_info("peercert") if transport else None
            name = common_name(certificate or {})
            if not name or not self._may_read(name):
                return _error(403, "this certificate may not read")
        if self._token is not None and request.path.startswith("/api/"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
                return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 404:
                return _error(404, "not found")
            raise
        except Exception:
            LOG.exception("topology view failed on %s", request.path)
            return _error(500, "internal error; see the controller log")

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._files["index.html"], content_type="text/html",
                            charset="utf-8")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            return _error(404, "not found")
        return web.Response(body=self._files[name], headers={"Content-Type": STATIC[name]})

    async def _topology(self, request: web.Request) -> web.Response:
        return _json(await _off_loop(self._model.topology))

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        return _json({"query": query, "hosts": await _off_loop(self._feed.search, query)})

    async def _enforcement(self, request: web.Request) -> web.Response:
        found = await _off_loop(self._model.enforcement, request.match_info["id"])
        if found is None:
            return _error(404, "no such enforcement")
        return _json(found)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "X-Accel-Buffering": "no"})
        response.force_close()  # a stream that ends ends its connection too
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        queue: asyncio.Queue = asyncio.Queue(maxsize=BACKLOG)
        # Subscribed before the snapshot is read: a diff published meanwhile
        # is queued, and the page skips any it already has (by version).
        self._streams.add(queue)
        try:
            # Nobody watched until now, maybe: the feed was idle.
            await _off_loop(self._feed.refresh)
            _, text = self._feed.current()
            await response.write(_event("snapshot", text))
            while not self._closing:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": still here\n\n")
                    continue
                if item is None:
                    break
                await response.write(_event("diff", item))
        except (ConnectionError, asyncio.CancelledError):
            pass  # the page went away
        finally:
            self._streams.discard(queue)
        return response

    def _publish(self, version: int, text: str) -> None:
        """From the feed's thread: over to the loop, which owns the queues."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._broadcast, text)

    def _broadcast(self, text: str) -> None:
        for queue in self._streams:
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                # A page that cannot keep up is cut off rather than buffered
                # for without end; its EventSource reconnects to a snapshot.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    def _end_streams(self) -> None:
        self._closing = True
        for queue in self._streams:
            queue.put_nowait(None)


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain"})


def _names(host: str, configured: Iterable[str]) -> frozenset[str]:
    names = {name.strip().strip("[]").lower().rstrip(".") for name in configured}
    listening = host.strip("[]").lower()
    if listening in ("", "0.0.0.0", "::"):
        # Every address of the machine: its names are the operator's to say,
        # and the loopback ones are always the machine's own.
        names |= _LOOPBACK_NAMES
    elif listening in _LOOPBACK_NAMES or listening.startswith("127."):
        names |= _LOOPBACK_NAMES | {listening}
    else:
        names.add(listening)
    return frozenset(names)


def _host_name(header: str) -> str:
    """The name in a Host header, without its port; '' if there is none."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") <= 1 else ""


async def _off_loop(function, *args):
    """The service's and the model's calls take locks and may take a while
    on a big network: never on the loop that serves every page."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def _event(kind: str, text: str) -> bytes:
    # json.dumps writes no newline, so the data fits on one data: line.
    return f"event: {kind}\ndata: {text}\n\n".encode()


def _json(data) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=json.dumps({"error": message}).encode(),
                        content_type="application/json")
