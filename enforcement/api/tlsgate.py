"""The mutual-TLS front of the gRPC API.

grpcio does TLS itself, but a refused handshake (no client certificate, a
certificate from another CA) never becomes a call: the server just drops the
connection and nothing reaches our code, so it could not be audited. The gate
terminates TLS with the standard library's ssl module, which does the
certificate verification, records every refusal with the peer's address, and
relays accepted connections byte for byte to the gRPC server listening on
loopback. The gRPC server learns who is calling by the relay connection's
local port (`identity_of`); a connection that did not come through the gate
has no identity and is refused by the guard.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import threading
from collections.abc import Callable

LOG = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
RELAY_CHUNK = 64 * 1024
# Connections at once, all sources together: many addresses (a /8 of
# loopback, a botnet) buy no more than this. Each costs a socket and a
# pending handshake; the process's file descriptors are the hard limit.
MAX_CONNECTIONS = 1024


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str         # the client certificate's common name
    address: str      # host:port the client connected from


def server_context(cert: str, key: str, client_ca: str,
                   alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    """TLS 1.2+ with a required client certificate signed by client_ca.
    alpn: h2 for gRPC; http/1.1 for the topology view's HTTP server."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    # gRPC clients insist on HTTP/2 being negotiated.
    context.set_alpn_protocols(list(alpn))
    return context


def common_name(certificate: dict) -> str | None:
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def describe_refusal(exc: BaseException) -> str:
    """Words for the audit log, from what OpenSSL said."""
    reason = getattr(exc, "reason", None) or ""
    verify = getattr(exc, "verify_message", None)
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "no client certificate"
    if reason == "CERTIFICATE_VERIFY_FAILED":
        return f"client certificate not accepted: {verify or 'verification failed'}"
    if reason in ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE"):
        return "the client refused our certificate (" + reason.lower() + ")"
    if reason in ("HTTP_REQUEST", "WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL",
                  "VERSION_TOO_LOW", "NO_SHARED_CIPHER", "UNEXPECTED_EOF_WHILE_READING",
                  "RECORD_LAYER_FAILURE"):
        return f"not a usable TLS client ({reason.lower()})"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s"
    if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError, EOFError)):
        return "connection closed during the TLS handshake"
    return f"TLS handshake failed ({reason or exc.__class__.__name__})"


class TlsGate:
    """Listens on (host, port) for TLS, relays to 127.0.0.1:backend_port."""

    def __init__(self, host: str, port: int, backend_port: int,
                 context: ssl.SSLContext, *,
                 on_refusal: Callable[[str, str], None],
                 max_connections_per_host: int = 64,
                 max_connections: int = MAX_CONNECTIONS):
        self._host = host
        self._port = port
        self._backend_port = backend_port
        self._context = context
        self._on_refusal = on_refusal
        self._max_per_host = max_connections_per_host
        self._max_connections = max_connections
        self._connections = 0
        self._identities: dict[int, Peer] = {}
        self._per_host: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self.port: int | None = None

    # ---- what the gRPC side asks -------------------------------------------------

    def identity_of(self, relay_port: int) -> Peer | None:
        with self._lock:
            return self._identities.get(relay_port)

    # ---- life ----------------------------------------------------------------------

    def start(self) -> int:
        started = threading.Event()
        failure: list[BaseException] = []

        def run():
            self._loop = asyncio.new_event_loop()
            try:
                self._server = self._loop.run_until_complete(asyncio.start_server(
                    self._accept, self._host, self._port, reuse_address=True))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="tls-gate", daemon=True).start()
        started.wait(10)
        if failure:
            raise OSError(f"cannot listen for TLS on {self._host}:{self._port}: "
                          f"{failure[0]}") from None
        if self.port is None:
            raise OSError(f"cannot listen for TLS on {self._host}:{self._port}: "
                          "not listening after 10 s")
        return self.port

    def stop(self) -> None:
        server = self._server
        if self._loop is None or server is None:
            return

        async def close():
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            # Wait for the cancelled connections to unwind, so none is left
            # half-closed for the interpreter to complain about at exit.
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)

    # ---- connections -----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        address = f"{host}:{port}"
        with self._lock:
            if self._connections >= self._max_connections:
                crowded = f"more than {self._max_connections} connections at once"
            elif self._per_host.get(host, 0) >= self._max_per_host:
                crowded = f"more than {self._max_per_host} connections from {host} at once"
            else:
                crowded = ""
                self._per_host[host] = self._per_host.get(host, 0) + 1
                self._connections += 1
        if crowded:
            self._on_refusal(address, crowded)
            writer.transport.abort()
            return
        try:
            await self._serve(reader, writer, address)
        finally:
            with self._lock:
                self._connections -= 1
                self._per_host[host] -= 1
                if not self._per_host[host]:
                    del self._per_host[host]

    async def _serve(self, reader, writer, address: str) -> None:
        try:
            await writer.start_tls(self._context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (TimeoutError, ssl.SSLError, OSError, EOFError, asyncio.IncompleteReadError) as exc:
            self._on_refusal(address, describe_refusal(exc))
            writer.transport.abort()
            return
        tls = writer.get_extra_info("ssl_object")
        name = common_name(tls.getpeercert() or {})
        if tls.selected_alpn_protocol() != "h2" or not name:
            self._on_refusal(address, "client certificate without a common name"
                             if not name else "client did not offer HTTP/2 (ALPN h2)")
            writer.close()
            return
        try:
            backend_reader, backend_writer = await asyncio.open_connection(
                "127.0.0.1", self._backend_port)
        except OSError as exc:
            LOG.error("TLS gate cannot reach the gRPC server: %s", exc)
            writer.close()
            return
        relay_port = backend_writer.get_extra_info("sockname")[1]
        with self._lock:
            self._identities[relay_port] = Peer(name, address)
        pumps = asyncio.gather(_pump(reader, backend_writer),
                               _pump(backend_reader, writer), return_exceptions=True)
        try:
            await pumps
        except asyncio.CancelledError:
            pumps.cancel()
            raise
        finally:
            with self._lock:
                self._identities.pop(relay_port, None)
            for w in (writer, backend_writer):
                w.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        # One side gone: the other has nothing left to talk to.
        writer.close()
