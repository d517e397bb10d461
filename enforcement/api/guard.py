"""Every call to the enforcement service passes here first: who is calling
(the TLS gate's client certificate, or a loopback peer when TLS is off), may
they make this call, are they within their limits, is there time left before
their deadline. Refusals of calls that change things, and every
authentication or permission refusal, go to the audit log with the caller's
identity.
"""
from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

import grpc

from enforcement.api import access as access_rules
from enforcement.cluster.leaderproxy import forwarded_refusal, on_behalf_of

if TYPE_CHECKING:  # the gate is imported only when TLS is on
    from enforcement.api.tlsgate import Peer

LOG = logging.getLogger(__name__)

# Less than this left before the deadline: refuse rather than start work the
# client will not wait for (and could not learn the outcome of).
MIN_TIME_LEFT = 0.05

_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "caller", default=None)


@dataclasses.dataclass(frozen=True)
class Caller:
    name: str                 # certificate common name, or the peer when unauthenticated
    authenticated: bool
    address: str
    # The original caller, when an instance of this deployment forwarded the
    # call and proved it (enforcement.cluster.leaderproxy); '' otherwise.
    on_behalf_of: str = ""

    def limiter_key(self, streaming: bool) -> str:
        """Whose limits a call counts against. Without TLS each connection is
        a client of its own, so a process opening one connection per stream
        would escape the per-client stream limit: an unauthenticated
        caller's streams count by its address."""
        if streaming and not self.authenticated:
            return self.address.rsplit(":", 1)[0]
        return self.name

    def actor(self) -> str:
        if self.authenticated:
            return f"cert:{self.name} from {self.address}"
        return f"unauthenticated {self.address}"


ACTOR_LENGTH = 256  # the audit log's actor column (enforcement/store/database.py)


def current_actor(context) -> str:
    """The identity to write in the audit log for the call being served
    (for a call another instance forwarded: the original caller, via that
    instance: enforcement.cluster.leaderproxy, whose proof the guard checked;
    a name a client wrote itself never gets here)."""
    caller = _CALLER.get()
    own = caller.actor() if caller else context.peer()
    forwarded = caller.on_behalf_of if caller else ""
    if not forwarded:
        return own[:ACTOR_LENGTH]
    # Within the audit log's column (a longer actor failed the whole batch's
    # insert on PostgreSQL); what is cut is the forwarded name, never who
    # actually called.
    room = max(0, ACTOR_LENGTH - len(own) - len(" via "))
    return f"{forwarded[:room]} via {own}"[-ACTOR_LENGTH:]


def _peer_host_port(peer: str) -> tuple[str, int]:
    # gRPC peers look like ipv4:127.0.0.1:5000 or ipv6:[::1]:5000
    _, _, rest = peer.partition(":")
    host, _, port = rest.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return rest, 0


class Guard(grpc.ServerInterceptor):
    def __init__(self, service_name: str, access: access_rules.Access, *,
                 identify: Callable[[int], Peer | None] | None,
                 record_refusal: Callable[..., None],
                 limiter: access_rules.ClientLimiter | None = None,
                 peer_key: bytes | None = None):
        """identify(relay_port) -> a tlsgate.Peer or None; None as identify
        means TLS is off: callers are loopback peers and may do everything.
        peer_key: the deployment's peer secret, which proves a call another
        instance forwarded; None takes no forwarded call."""
        self._service = service_name
        self._access = access
        self._identify = identify
        self._record = record_refusal
        self._limiter = limiter or access_rules.ClientLimiter()
        self._peer_key = peer_key
        self._audit_budget = _AuditBudget()

    @property
    def access(self) -> access_rules.Access:
        return self._access

    def replace_access(self, access: access_rules.Access) -> None:
        """A reloaded access file: calls from now on are judged by it (one
        reference swap: a call in progress keeps the rules it started with).
        Token buckets are kept, so a reload is no way around a limit."""
        self._access = access

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        service, _, call = details.method.lstrip("/").partition("/")
        if service != self._service:
            return handler  # health and reflection: nothing to guard
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(call, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(call, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler

    # ---- the checks ------------------------------------------------------------------

    def _caller(self, context) -> Caller | None:
        peer = context.peer()
        host, port = _peer_host_port(peer)
        if self._identify is None:
            # Without TLS, each connection counts as a client of its own (all
            # local callers share one address; the channels of one process
            # usually share one connection), and any of them may apply anyway.
            return Caller(name=f"{host}:{port}", authenticated=False,
                          address=f"{host}:{port}")
        who = self._identify(port)
        if who is None:
            return None
        return Caller(name=who.name, authenticated=True, address=who.address)

    def _admit(self, call: str, request, context, streaming: bool) -> Caller:
        """Returns the caller with a limiter slot taken, or aborts the call."""
        caller = self._caller(context)
        access = self._access  # one set of rules for the whole call
        if caller is None:
            self._refuse(context, call, request, "unknown peer " + context.peer(),
                         grpc.StatusCode.UNAUTHENTICATED,
                         "this port takes calls only through the TLS gate "
                         "with a client certificate")
        if caller.authenticated:
            why = access.refusal(caller.name, call)
            if why:
                self._refuse(context, call, request, caller.actor(),
                             grpc.StatusCode.PERMISSION_DENIED, why)
        forwarded = on_behalf_of(context)
        if forwarded:
            why = forwarded_refusal(self._peer_key, call, request, context, time.time())
            if why:
                self._refuse(context, call, request, caller.actor(),
                             grpc.StatusCode.PERMISSION_DENIED, why)
            caller = dataclasses.replace(caller, on_behalf_of=forwarded)
        left = context.time_remaining()
        if left is not None and left < MIN_TIME_LEFT:
            self._refuse(context, call, request, caller.actor(),
                         grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"the call arrived with {max(left, 0) * 1000:.0f} ms left "
                         f"before its deadline; nothing was done")
        limits = access.limits_of(caller.name)
        cost = (max(1, len(request.requests)) if call in access_rules.BATCHES
                else 1)
        why = self._limiter.acquire(caller.limiter_key(streaming), limits, streaming, cost)
        if why:
            self._refuse(context, call, request, caller.actor(),
                         grpc.StatusCode.RESOURCE_EXHAUSTED, why)
        return caller

    def _refuse(self, context, call, request, actor, code, message) -> NoReturn:
        audited = (call in access_rules.CHANGING
                   or code in (grpc.StatusCode.UNAUTHENTICATED,
                               grpc.StatusCode.PERMISSION_DENIED))
        if audited and self._audit_budget.allow(actor, code):
            try:
                self._record(actor, call, getattr(request, "case_id", ""),
                             getattr(request, "id", ""), code.name, message)
            except Exception:  # the refusal stands even if the store is unwell
                LOG.exception("could not audit a refused %s", call)
        LOG.warning("refused %s from %s: %s %s", call, actor, code.name, message)
        context.abort(code, message)
        raise AssertionError("grpc's context.abort returned")  # it raises, by contract

    # ---- wrappers ------------------------------------------------------------------------

    def _unary(self, call, behaviour):
        def guarded(request, context):
            caller = self._admit(call, request, context, streaming=False)
            token = _CALLER.set(caller)
            try:
                return behaviour(request, context)
            finally:
                _CALLER.reset(token)
                self._limiter.release(caller.limiter_key(False), streaming=False)
        return guarded

    def _stream(self, call, behaviour):
        def guarded(request, context):
            caller = self._admit(call, request, context, streaming=True)
            try:
                yield from behaviour(request, context)
            finally:
                self._limiter.release(caller.limiter_key(True), streaming=True)
        return guarded


class _AuditBudget:
    """At most a few refusal entries per second per caller and outcome, and
    a bounded number over all callers together, so a flood of refused calls
    (from one address or from many) cannot flood the audit log; the log
    line stays."""

    MAX_CALLERS = 10_000

    def __init__(self, per_second: float = 5.0, burst: int = 20,
                 all_per_second: float = 50.0, all_burst: int = 200):
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, object], access_rules.TokenBucket] = {}
        self._per_second = per_second
        self._burst = burst
        self._all = access_rules.TokenBucket(all_per_second, all_burst, time.monotonic)

    def allow(self, actor: str, code) -> bool:
        # The actor includes the source port; audit by identity and host.
        key = (actor.rsplit(":", 1)[0], code)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.MAX_CALLERS:
                    self._forget_idle()
                if len(self._buckets) >= self.MAX_CALLERS:
                    # Forgetting callers who still spend would hand each a
                    # fresh burst; a newcomer waits instead.
                    return False
                bucket = self._buckets[key] = access_rules.TokenBucket(
                    self._per_second, self._burst, time.monotonic)
            return bucket.take() == 0 and self._all.take() == 0

    def _forget_idle(self) -> None:
        """Callers whose bucket has refilled lose nothing by being forgotten."""
        now = time.monotonic()
        idle = [key for key, bucket in self._buckets.items() if bucket.full_again(now)]
        for key in idle:
            del self._buckets[key]
