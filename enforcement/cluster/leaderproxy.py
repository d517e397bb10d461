"""Changing calls reach the leader, whichever instance a client asked.

A follower hands Apply, ApplyBatch, Lift and LiftBatch to the instance that
holds the lease (its address is in the store, enforcement.cluster.leadership),
with what is left of the client's deadline, and answers with the leader's
answer or status. While there is no leader (a failover under way) it waits
for the next one, within that deadline, so a case system behind one name
or a list of addresses never needs to know who leads. Request ids make the
retries safe: the leader answers a repeated id with the original record.

The forwarded call names its original caller in metadata; the leader
writes "<caller> via <follower>" in the audit log, so the follower's own
identity (its client certificate under mutual TLS) is always on record.
The name is honoured only with a proof next to it: an HMAC, under the
deployment's peer secret (kept in the shared store, which only instances
read), of the call, the name, the time and the request itself. A client
that writes the marker itself, with TLS or without, is refused
(PERMISSION_DENIED) and audited under its own name: the audit log is
evidence, and no header may write someone else's name into it.
A call that was forwarded once is never forwarded again: an instance that
receives one without leading answers UNAVAILABLE and the follower that
sent it tries again, so two instances that disagree cannot bounce a call.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time

import grpc

from enforcement.domain.errors import NotLeader
from enforcement.v1 import enforcement_pb2 as pb

LOG = logging.getLogger(__name__)

ON_BEHALF_OF = "x-enforcement-on-behalf-of"
PROOF = "x-enforcement-forwarded-proof"
# The store's name for the peer secret, and how far apart the instances'
# clocks (and a call's flight) may be before a proof is stale.
PEER_SECRET = "forwarding"
PROOF_WINDOW = 60.0
CHANGING = ("Apply", "ApplyBatch", "Lift", "LiftBatch")
_SERVICE = pb.DESCRIPTOR.services_by_name["EnforcementService"]
# Without a client deadline, a forwarded call waits this long for a leader.
DEFAULT_DEADLINE = 30.0
_RETRY_PAUSE = 0.05
# The time a refusal needs to reach the caller before its deadline (at most;
# a tenth of a short deadline).
ANSWER_MARGIN = 0.25
# How often a forwarded call in flight looks whether the instance it went to
# still holds the lease: a frozen leader keeps its connection open, and the
# call would otherwise wait out the caller's whole deadline.
LEASE_CHECK = 0.2


class Forwarder:
    def __init__(self, leadership, leading, *, key: bytes, credentials=None,
                 clock=time.time):
        """leading() -> whether this instance may run a changing call now;
        key: the deployment's peer secret (peer_secret()); credentials:
        grpc.ChannelCredentials to reach the others (mutual TLS), None for
        plaintext (loopback)."""
        self._leadership = leadership
        self._leading = leading
        self._key = key
        self._clock = clock
        self._credentials = credentials
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}

    def forward(self, method: str, request, context, actor: str):
        """The leader's answer to the call, or None when this instance
        leads (the caller runs it here). Raises NotLeader when no leader
        answered within the deadline; aborts the call with the leader's
        status when the leader refused it."""
        if self._leading():
            return None
        if _metadata(context).get(ON_BEHALF_OF):
            raise NotLeader("this instance does not lead; the forwarding instance "
                            "will try the leader again")
        remaining = context.time_remaining()
        # Given up a little before the caller's deadline, so that the caller
        # hears UNAVAILABLE (and why) rather than its own DEADLINE_EXCEEDED,
        # which says nothing of what happened.
        deadline = time.monotonic() + (DEFAULT_DEADLINE if remaining is None else min(
            remaining - min(ANSWER_MARGIN, remaining / 10), DEFAULT_DEADLINE))
        unreadable, sent = "", False
        while True:
            if self._leading():
                return None
            leader, why = self._leader()
            if why and not unreadable:
                LOG.warning("a forwarded %s waits for the store, which names the leader: %s",
                            method, why)
                unreadable = why
            left = deadline - time.monotonic()
            if (leader is not None and leader.holder
                    and leader.holder != self._leadership.holder
                    and leader.expires_in > 0 and leader.address and left > 0):
                sent = True
                try:
                    answer = self._await(self._call(leader.address, method, request, left,
                                                    actor), leader, deadline)
                    if answer is not None:
                        return answer
                    LOG.info("leader %s (epoch %d) lost the lease while a forwarded %s "
                             "was in flight; sending it where the lead is now",
                             leader.address, leader.epoch, method)
                    continue
                except grpc.RpcError as exc:
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                          grpc.StatusCode.DEADLINE_EXCEEDED):
                        context.abort(exc.code(), exc.details())
                    LOG.info("leader %s (epoch %d) did not take a forwarded %s: %s",
                             leader.address, leader.epoch, method, exc.code().name)
            if time.monotonic() >= deadline:
                if unreadable and not sent:
                    raise NotLeader("this instance does not lead and the store, which names "
                                    f"the leader, could not be read ({unreadable}): the call "
                                    "went nowhere and nothing changed; try again")
                raise NotLeader("this instance does not lead and no leader answered "
                                "within the deadline; try again")
            time.sleep(_RETRY_PAUSE)

    def _leader(self):
        """(who holds the lease, ""), or (None, why) while the store cannot
        say (the database restarting, its connections cut): taken as no
        leader yet and waited out within the caller's deadline like a
        failover, never an error of its own, which gRPC would answer as
        UNKNOWN."""
        try:
            return self._leadership.leader(), ""
        except Exception as exc:
            text = str(exc).splitlines()[0][:200] if str(exc) else ""
            return None, f"{exc.__class__.__name__}: {text}"

    def _await(self, future, leader, deadline: float):
        """The answer of a forwarded call, or None once the instance it went
        to no longer holds the lease it held (the call is cancelled: a
        request id makes sending it again safe). A leader that is alive and
        renewing is waited for as long as the caller's deadline allows."""
        while True:
            try:
                return future.result(timeout=max(0.0, min(LEASE_CHECK,
                                                          deadline - time.monotonic())))
            except grpc.FutureTimeoutError:
                if time.monotonic() >= deadline:
                    future.cancel()
                    raise NotLeader("the leader did not answer within the deadline; "
                                    "try again") from None
                now, _ = self._leader()
                if now is None:  # the store cannot say: the call keeps its chance
                    continue
                if (self._leading() or now.holder != leader.holder
                        or now.epoch != leader.epoch or now.expires_in <= 0):
                    future.cancel()
                    return None

    def _call(self, address: str, method: str, request, timeout: float, actor: str):
        spec = _SERVICE.methods_by_name[method]
        answer_type = getattr(pb, spec.output_type.name)
        call = self._channel(address).unary_unary(
            f"/{_SERVICE.full_name}/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=answer_type.FromString)
        actor = actor[:256]
        proof = prove(self._key, method, actor, request, self._clock())
        return call.future(request, timeout=timeout,
                           metadata=((ON_BEHALF_OF, actor), (PROOF, proof)),
                           wait_for_ready=False)

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = (grpc.secure_channel(address, self._credentials)
                           if self._credentials is not None
                           else grpc.insecure_channel(address))
                self._channels[address] = channel
            return channel

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def _metadata(context) -> dict:
    return dict(context.invocation_metadata() or ())


def peer_secret(store) -> bytes:
    """The deployment's peer secret: made by the first instance, read by the others."""
    return store.shared_secret(PEER_SECRET, lambda: os.urandom(32))


def _signed(key: bytes, method: str, actor: str, request, stamp: str) -> str:
    digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    text = f"{method}\n{actor}\n{stamp}\n{digest}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def prove(key: bytes, method: str, actor: str, request, now: float) -> str:
    """The proof a forwarding instance sends with the original caller's name."""
    stamp = f"{now:.3f}"
    return f"{stamp}:{_signed(key, method, actor, request, stamp)}"


def forwarded_refusal(key: bytes | None, method: str, request, context,
                      now: float) -> str | None:
    """Why a call that names an original caller may not be taken as
    forwarded by an instance of this deployment, or None when it may."""
    metadata = _metadata(context)
    actor, proof = metadata.get(ON_BEHALF_OF, ""), metadata.get(PROOF, "")
    if key is None:
        return "this instance takes no forwarded calls"
    stamp, _, signature = proof.partition(":")
    try:
        sent = float(stamp)
    except ValueError:
        return ("a forwarded call without a valid proof of the instance that forwarded it "
                f"(the {ON_BEHALF_OF} header is for instances of this deployment only)")
    if not hmac.compare_digest(signature, _signed(key, method, actor, request, stamp)):
        return ("a forwarded call whose proof does not match (the "
                f"{ON_BEHALF_OF} header is for instances of this deployment only)")
    if abs(now - sent) > PROOF_WINDOW:
        return f"a forwarded call whose proof is {abs(now - sent):.0f} s old"
    return None


def on_behalf_of(context) -> str:
    """The original caller named in the call's metadata, or '' (raw: the
    guard decides whether it is honoured)."""
    value = _metadata(context).get(ON_BEHALF_OF, "")
    return "".join(ch for ch in value[:256] if ch.isprintable())
