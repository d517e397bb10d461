"""gRPC face of the service: each handler checks its request (one call to
enforcement.api.requests), makes one domain call and converts the answer
(enforcement.api.convert).

Every domain error becomes one status code with the error's message, so a
client always learns what to fix. Reflection and the standard health service
are on, so generic clients (grpcurl, grpc_health_probe) work out of the box.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from enforcement.api import access as access_rules
from enforcement.api import requests

# event_to_proto is also imported from here (test_port_alarms).
from enforcement.api.convert import (
    audit_to_proto,
    enforcement_to_proto,
    event_to_proto,
    proposal_to_proto,
    topology_to_proto,
)
from enforcement.api.convert import enum_from_proto as _enum_from_proto
from enforcement.api.guard import Guard, current_actor
from enforcement.api.workers import Workers
from enforcement.domain import errors
from enforcement.domain.model import State, Violation
from enforcement.lifecycle.service import EnforcementService
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # imported when serving with TLS only
    from enforcement.api.refusals import RefusedConnections
    from enforcement.api.tlsgate import TlsGate

LOG = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EnforcementService"].full_name

_STATUS = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.SwitchError: grpc.StatusCode.UNAVAILABLE,
    errors.NotLeader: grpc.StatusCode.UNAVAILABLE,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.OutcomeUnknown: grpc.StatusCode.UNKNOWN,
}


class EnforcementServicer(pb_grpc.EnforcementServiceServicer):
    def __init__(self, service: EnforcementService, metrics=None, forwarder=None):
        self._service = service
        self._metrics = metrics
        self._forwarder = forwarder  # enforcement.cluster.leaderproxy, when instances share a store

    def _forwarded(self, method: str, request, context):
        """The leader's answer when this instance does not lead, else None."""
        if self._forwarder is None:
            return None
        try:
            return self._forwarder.forward(method, request, context, current_actor(context))
        except errors.NotLeader as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    def Apply(self, request, context):
        forwarded = self._forwarded("Apply", request, context)
        if forwarded is not None:
            return forwarded
        started = time.monotonic()
        outcome = {"action": "none", "outcome": "internal"}

        def run():
            record = self._service.apply(self._decision(request),
                                         actor=current_actor(context))
            outcome.update(action=record.action.kind.value, outcome=record.state.value)
            proofs = getattr(self._service, "proofs", None)
            if request.wait_for_proof and proofs is not None and record.state is State.ACTIVE:
                return enforcement_to_proto(record, proofs.check(record))
            return enforcement_to_proto(record, self._proof(record.id))

        try:
            return _answer(context, run, audit=(self._service, "Apply", request.case_id, ""),
                           on_refusal=lambda code: outcome.update(outcome=code.name.lower()))
        finally:
            if self._metrics is not None:
                self._metrics.observe_apply(_violation_label(request.violation),
                                            outcome["action"], outcome["outcome"],
                                            time.monotonic() - started)

    def ApplyBatch(self, request, context):
        """Apply for each decision, in as few switch pushes and commits as
        group commit allows; each refusal answered (and audited) on its own."""
        forwarded = self._forwarded("ApplyBatch", request, context)
        if forwarded is not None:
            return forwarded
        started = time.monotonic()
        actor = current_actor(context)

        def run():
            outcomes = _each(requests.batch(request, self._decision),
                             lambda decisions: self._service.apply_many(decisions, actor=actor))
            results = []
            for item, outcome in zip(request.requests, outcomes, strict=True):
                result = self._batch_result(outcome, actor, "Apply", item.case_id, "")
                if self._metrics is not None:
                    kind = ("none" if isinstance(outcome, Exception)
                            else outcome.action.kind.value)
                    self._metrics.observe_apply(
                        _violation_label(item.violation), kind,
                        outcome.state.value if not isinstance(outcome, Exception)
                        else _code_name(result.code), time.monotonic() - started)
                results.append(result)
            return pb.BatchResponse(results=results)
        return _answer(context, run)

    def LiftBatch(self, request, context):
        forwarded = self._forwarded("LiftBatch", request, context)
        if forwarded is not None:
            return forwarded
        actor = current_actor(context)

        def run():
            outcomes = _each(requests.batch(request, requests.lift),
                             lambda lifts: self._service.lift_many(lifts, actor=actor))
            return pb.BatchResponse(results=[
                self._batch_result(outcome, actor, "Lift", "", item.id)
                for item, outcome in zip(request.requests, outcomes, strict=True)])
        return _answer(context, run)

    def _batch_result(self, outcome, actor, call, case_id, enforcement_id) -> pb.BatchResult:
        if not isinstance(outcome, Exception):
            return pb.BatchResult(enforcement=enforcement_to_proto(outcome))
        if not isinstance(outcome, errors.EnforcementError):
            LOG.error("internal error in a batch: %r", outcome)
            return pb.BatchResult(code=grpc.StatusCode.INTERNAL.value[0],
                                  message="internal error; the controller log has the details")
        code = _status_of(outcome)
        self._service.record_refusal(actor, call, case_id, enforcement_id, code.name,
                                     str(outcome))
        return pb.BatchResult(code=code.value[0], message=str(outcome))

    def Plan(self, request, context):
        return _answer(context, lambda: proposal_to_proto(
            self._service.plan(self._decision(request))))

    def _decision(self, request):
        return requests.decision(request, self._service.policy,
                                 self._service.account_address)

    def Lift(self, request, context):
        forwarded = self._forwarded("Lift", request, context)
        if forwarded is not None:
            return forwarded
        return _answer(context, lambda: enforcement_to_proto(self._service.lift(
            *requests.lift(request), actor=current_actor(context))),
            audit=(self._service, "Lift", "", request.id))

    def _proof(self, enforcement_id: str):
        proofs = getattr(self._service, "proofs", None)
        return None if proofs is None else proofs.latest(enforcement_id)

    def Get(self, request, context):
        def run():
            record = self._service.get(requests.enforcement_id(request))
            return enforcement_to_proto(record, self._proof(record.id))
        return _answer(context, run)

    def List(self, request, context):
        def run():
            query = requests.page(request)
            page, more = self._service.page(
                subscriber_ip=query.subscriber_ip, case_id=query.case_id,
                states=query.states, start=query.start, size=query.size)
            return pb.ListResponse(enforcements=[enforcement_to_proto(r, self._proof(r.id))
                                                 for r in page],
                                   next_page_token=query.next_token(more))
        return _answer(context, run)

    def GetTopology(self, request, context):
        return _answer(context, lambda: topology_to_proto(*self._service.topology(),
                                                          self._service.policy.version))

    def Watch(self, request, context):
        try:
            query = requests.watch(request)
        except errors.InvalidArgument as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        events = self._service.watch(after=query.after, subscriber_ip=query.subscriber_ip,
                                     case_id=query.case_id, still_wanted=context.is_active)
        for event in events:
            yield _event_message(event)

    def ListAudit(self, request, context):
        def run():
            query = requests.audit_query(request)
            entries = self._service.audit_log(enforcement_id=query.enforcement_id,
                                              case_id=query.case_id, limit=query.limit)
            return pb.ListAuditResponse(entries=[audit_to_proto(e) for e in entries])
        return _answer(context, run)


# Every open stream sends the same events: each is converted once, not once
# per stream (stored events never change, and are hashable).
_event_message = functools.lru_cache(maxsize=4096)(event_to_proto)


def _each(checked: list, run_many) -> list:
    """A batch's outcomes in order: each refusal requests.batch found, and
    the checked items run together; errors as values."""
    outcomes = list(checked)
    ready = [(i, item) for i, item in enumerate(checked)
             if not isinstance(item, errors.EnforcementError)]
    for (i, _), outcome in zip(ready, run_many([item for _, item in ready]), strict=True):
        outcomes[i] = outcome
    return outcomes


def _violation_label(number: int) -> str:
    """The metrics label of a request's violation, refused or not."""
    violation = _enum_from_proto(Violation, "Violation", number)
    return violation.value if violation else "unknown"


def _status_of(exc: errors.EnforcementError) -> grpc.StatusCode:
    return next(code for cls, code in _STATUS.items() if isinstance(exc, cls))


def _code_name(number: int) -> str:
    return next((c.name.lower() for c in grpc.StatusCode if c.value[0] == number), "unknown")


def _answer(context, run, audit=None, on_refusal=None):
    """Runs a call; a domain error becomes its status code (and, for calls
    that change things, an audit entry: refusals are on record too)."""
    try:
        return run()
    except errors.EnforcementError as exc:
        code = _status_of(exc)
        if on_refusal is not None:
            on_refusal(code)
        if audit is not None:
            service, call, case_id, enforcement_id = audit
            service.record_refusal(current_actor(context), call, case_id, enforcement_id,
                                   code.name, str(exc))
        context.abort(code, str(exc))
    except Exception:
        LOG.exception("internal error while answering")
        context.abort(grpc.StatusCode.INTERNAL,
                      "internal error; the controller log has the details")


# Requests are small (an Apply is a few hundred bytes); anything near this is
# hostile or broken and is refused by gRPC before it is even parsed.
MAX_REQUEST_BYTES = 64 * 1024
# Past this many calls at once (all clients together) gRPC answers
# RESOURCE_EXHAUSTED instead of queueing without bound.
MAX_CONCURRENT_CALLS = 512


def create_server(address: str, service: EnforcementService, *,
                  max_workers: int = 128, guard: Guard | None = None, metrics=None,
                  forwarder=None) -> tuple[grpc.Server, int]:
    """Builds (not starts) the server. Returns it and the bound port, which
    differs from the one asked for when the address ends in :0. Without a
    guard, callers are unauthenticated loopback peers under the default
    per-client limits (the controller refuses to listen elsewhere that way)."""
    if guard is None:
        guard = Guard(SERVICE_NAME, access_rules.DEFAULT, identify=None,
                      record_refusal=service.record_refusal)
    # Without so_reuseport=0 a second controller would bind the same port and
    # silently share (and confuse) the clients of the first.
    server = grpc.server(Workers(max_workers),
                         interceptors=[guard],
                         maximum_concurrent_rpcs=MAX_CONCURRENT_CALLS,
                         options=[("grpc.so_reuseport", 0),
                                  ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                                  ("grpc.max_metadata_size", 16 * 1024)])
    pb_grpc.add_EnforcementServiceServicer_to_server(
        EnforcementServicer(service, metrics, forwarder), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not listen for gRPC on {address}")
    return server, port


@dataclasses.dataclass
class Serving:
    server: grpc.Server
    port: int
    gate: TlsGate | None = None   # when mutual TLS is on
    guard: Guard | None = None    # whose access rules a reload replaces
    refused: RefusedConnections | None = None  # the gate's refusals, on their way to the audit

    def stop(self, grace: float | None = None) -> None:
        if self.gate is not None:
            self.gate.stop()
        if self.refused is not None:
            self.refused.stop()
        self.server.stop(grace).wait()


def serve(address: str, service: EnforcementService, *,
          access: access_rules.Access = access_rules.DEFAULT,
          tls_context=None, max_workers: int = 128, metrics=None,
          forwarder=None, peer_key: bytes | None = None) -> Serving:
    """Starts the API on address. With an ssl.SSLContext (tlsgate.server_context)
    the gRPC server listens on a loopback port of its own behind the TLS
    gate, which takes address; without one, address should be loopback
    (the controller's command line insists). peer_key: the deployment's
    peer secret, without which no forwarded call is taken."""
    if tls_context is None:
        guard = Guard(SERVICE_NAME, access, identify=None,
                      record_refusal=service.record_refusal, peer_key=peer_key,
                      # Streams never take more than half the workers: the
                      # other half stays for the decisions.
                      limiter=access_rules.ClientLimiter(max_streams=max(1, max_workers // 2)))
        server, port = create_server(address, service, guard=guard,
                                     max_workers=max_workers, metrics=metrics,
                                     forwarder=forwarder)
        server.start()
        return Serving(server, port, guard=guard)
    from enforcement.api.refusals import RefusedConnections
    from enforcement.api.tlsgate import TlsGate
    gates: list[TlsGate] = []
    guard = Guard(SERVICE_NAME, access, identify=lambda port: gates[0].identity_of(port),
                  record_refusal=service.record_refusal, peer_key=peer_key,
                  limiter=access_rules.ClientLimiter(max_streams=max(1, max_workers // 2)))
    server, backend_port = create_server("127.0.0.1:0", service, guard=guard,
                                         max_workers=max_workers, metrics=metrics,
                                         forwarder=forwarder)
    server.start()
    host, _, listen_port = address.rpartition(":")
    refused = RefusedConnections(service.record_refusal)
    gates.append(TlsGate(host.strip("[]"), int(listen_port), backend_port, tls_context,
                         on_refusal=refused.note))
    try:
        bound = gates[0].start()
    except OSError:
        server.stop(None)
        raise
    refused.start()
    return Serving(server, bound, gates[0], guard, refused)
