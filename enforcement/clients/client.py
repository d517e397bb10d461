"""A typed Python client of the enforcement API, for case systems, the CLI and
the benchmark.

    with EnforcementClient("ctl.example.net:50051", tls=TlsFiles(ca, cert, key)) as ctl:
        record = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-42",
                           reason="1,200 recipients in an hour")
        ctl.lift(record.id, reason="customer cleaned up")

Every call has a deadline (the client's `timeout` unless given). Calls that
find the controller UNAVAILABLE (restarting, network blip) are retried with
jittered exponential backoff until the deadline or `attempts` run out; a
backoff that would outlast the deadline is not slept, the last error is
raised at once. Apply is safe to retry because the request id is chosen
once, before the first attempt, and the controller answers a repeat of a
request id with the original enforcement. A Lift whose answer was lost and
that is retried finds the enforcement already lifted: the client then
returns it instead of an error. Failures raise ClientError with the gRPC
status code and the controller's message.

Several instances of the controller (high availability) are given as a list
of addresses or one comma-separated string, "ctl1:50051,ctl2:50051"; any
instance answers any call. Calls go to the instance that last answered; when
it is UNAVAILABLE (or cannot be connected to) the call moves on to the next
instance at once, and backs off only when it comes back round to an instance
it already tried. Every instance gets one try if the deadline allows,
whatever `attempts` says. So that a frozen instance (it takes the call and
never answers) cannot eat the whole deadline, one attempt gets at most a
share of the time left: that time divided by the number of instances the
call has not tried yet (all of it once every one was tried), or
`attempt_timeout` when given. An attempt cut short by its share ends in
DEADLINE_EXCEEDED and moves on like UNAVAILABLE; one that spent the whole
deadline is not retried. With one address the share is the whole deadline,
as before. A slow but healthy answer (an Apply waiting for a slow switch)
must fit in its share: give a deadline of at least the number of instances
times the slowest answer, or an explicit `attempt_timeout`.

`watch` fails over too: a stream broken with UNAVAILABLE is reopened on the
next instance after the last sequence number received, since every instance
numbers events alike. A stream without a deadline cannot tell a frozen
instance from a quiet one, so only a broken stream moves it.
"""
from __future__ import annotations

import builtins
import dataclasses
import pathlib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Self

import grpc
import tenacity

from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc

VIOLATIONS = {v.name[len("VIOLATION_"):].lower(): v.number
              for v in pb.Violation.DESCRIPTOR.values if v.number}
STATES = {s.name[len("STATE_"):].lower(): s.number
          for s in pb.State.DESCRIPTOR.values if s.number}


class ClientError(Exception):
    """The controller refused or failed the call, or could not be reached."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @property
    def unreachable(self) -> bool:
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA that signed the controller's certificate, and this
    client's certificate and key (mutual TLS)."""
    ca: str | pathlib.Path
    cert: str | pathlib.Path
    key: str | pathlib.Path

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=pathlib.Path(self.ca).read_bytes(),
            private_key=pathlib.Path(self.key).read_bytes(),
            certificate_chain=pathlib.Path(self.cert).read_bytes())


def _violation(value: str | int) -> int:
    if isinstance(value, int):
        return value
    try:
        return VIOLATIONS[value.lower().removeprefix("violation_")]
    except KeyError:
        raise ValueError(f"unknown violation {value!r}; one of "
                         f"{', '.join(sorted(VIOLATIONS))}") from None


def _addresses(target: str | Sequence[str]) -> tuple[str, ...]:
    """"h1:p1,h2:p2" or ["h1:p1", "h2:p2"] as a tuple of addresses."""
    items = [target] if isinstance(target, str) else list(target)
    found = tuple(a.strip() for item in items for a in item.split(",") if a.strip())
    if not found:
        raise ValueError(f"no controller address in {target!r}")
    return found


class EnforcementClient:
    def __init__(self, target: str | Sequence[str] = "127.0.0.1:50051", *,
                 tls: TlsFiles | None = None,
                 credentials: grpc.ChannelCredentials | None = None,
                 timeout: float = 10.0, attempts: int = 4,
                 attempt_timeout: float | None = None,
                 channel_options: Sequence[tuple[str, object]] = ()):
        """target: one "host:port", several separated by commas, or a list of
        them (instances of one controller). credentials: any
        grpc.ChannelCredentials (tls builds them from files); neither means
        plaintext, which the controller serves on loopback only.
        attempt_timeout: the most one attempt may take; by default a fair
        share of the deadline (see the module's notes). channel_options:
        gRPC channel arguments for every instance's channel, such as
        ("grpc.use_local_subchannel_pool", 1) for a connection of its own."""
        if tls is not None:
            credentials = tls.credentials()
        self.addresses = _addresses(target)
        self._credentials = credentials
        self._options = list(channel_options)
        # Channels are made on first use, so an instance this client never
        # needs costs it nothing; making one never dials, so a dead address
        # cannot hold up construction either.
        self._stubs: dict[int, pb_grpc.EnforcementServiceStub] = {}
        self._channels: dict[int, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._current = 0
        self.timeout = timeout
        self.attempts = attempts
        self.attempt_timeout = attempt_timeout

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._stubs.clear()

    def _stub(self, index: int) -> pb_grpc.EnforcementServiceStub:
        with self._lock:
            if index not in self._stubs:
                address = self.addresses[index]
                channel = (grpc.secure_channel(address, self._credentials, self._options)
                           if self._credentials
                           else grpc.insecure_channel(address, self._options))
                self._channels[index] = channel
                self._stubs[index] = pb_grpc.EnforcementServiceStub(channel)
            return self._stubs[index]

    def _failed(self, index: int) -> None:
        # Only the first of several calls failing together on one instance
        # moves the others on; the rest must not skip the next instance too.
        with self._lock:
            if self._current == index:
                self._current = (index + 1) % len(self.addresses)

    def _worked(self, index: int) -> None:
        # Stay with an instance that answers: spreading calls round the
        # instances would only add followers' forwarding to every change.
        self._current = index

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the calls ---------------------------------------------------------------

    def apply(self, *, ip: str = "", violation: str | int, case_id: str, reason: str = "",
              mac: str = "", request_id: str | None = None, scope: str = "",
              duration: float | None = None, action: pb.ActionRequest | None = None,
              timeout: float | None = None, account: str = "",
              wait_for_proof: bool = False) -> pb.Enforcement:
        """ip: any one of the subscriber's addresses, IPv4 or IPv6 (or, instead,
        account: its account in the controller's inventory); the answer's
        subscriber.addresses lists every address it was enforced on.
        wait_for_proof: answered once the data plane showed it bites (the
        answer's proof), not at the switch's confirmation."""
        request = pb.ApplyRequest(
            request_id=request_id or f"py-{uuid.uuid4().hex}", case_id=case_id,
            subscriber=pb.Subscriber(ip=ip, mac=mac, account=account),
            # protoc's .pyi types enum fields as their class; protobuf takes the numbers
            violation=_violation(violation),  # type: ignore[arg-type]
            reason=reason, scope=scope, wait_for_proof=wait_for_proof)
        if duration is not None:
            request.duration.FromNanoseconds(int(duration * 1e9))
        if action is not None:
            request.action.CopyFrom(action)
        return self.apply_request(request, timeout=timeout)

    def apply_request(self, request: pb.ApplyRequest, *,
                      timeout: float | None = None) -> pb.Enforcement:
        if not request.request_id:
            request.request_id = f"py-{uuid.uuid4().hex}"
        return self._call("Apply", request, timeout)

    def apply_batch(self, requests: list[pb.ApplyRequest], *,
                    timeout: float | None = None) -> list[pb.BatchResult]:
        """Many decisions in one call (at most 256); one result per request, in
        order: `enforcement` when taken, else `code` and `message`. Safe to
        retry: request ids are set once, here, before the first attempt."""
        for request in requests:
            if not request.request_id:
                request.request_id = f"py-{uuid.uuid4().hex}"
        return list(self._call("ApplyBatch", pb.ApplyBatchRequest(requests=requests),
                               timeout).results)

    def lift_batch(self, enforcement_ids: list[str], reason: str = "", *,
                   timeout: float | None = None) -> list[pb.BatchResult]:
        """Many lifts in one call; lifting what is already lifted returns it."""
        request = pb.LiftBatchRequest(requests=[pb.LiftRequest(id=i, reason=reason)
                                                for i in enforcement_ids])
        return list(self._call("LiftBatch", request, timeout).results)

    def plan(self, *, ip: str = "", violation: str | int, case_id: str = "plan",
             timeout: float | None = None, account: str = "", **fields) -> pb.Plan:
        request = pb.ApplyRequest(request_id="plan", case_id=case_id,
                                  subscriber=pb.Subscriber(ip=ip, mac=fields.pop("mac", ""),
                                                           account=account),
                                  # as in apply(): protobuf takes the number
                                  violation=_violation(violation),  # type: ignore[arg-type]
                                  **fields)
        return self._call("Plan", request, timeout)

    def lift(self, enforcement_id: str, reason: str = "", *,
             timeout: float | None = None) -> pb.Enforcement:
        request = pb.LiftRequest(id=enforcement_id, reason=reason)
        return self._call("Lift", request, timeout)

    def get(self, enforcement_id: str, *, timeout: float | None = None) -> pb.Enforcement:
        return self._call("Get", pb.GetRequest(id=enforcement_id), timeout)

    def list(self, *, subscriber_ip: str = "", case_id: str = "",
             states: tuple[str, ...] = (), page_size: int = 500,
             timeout: float | None = None) -> list[pb.Enforcement]:
        """Every matching enforcement, oldest first, all pages."""
        numbers = [STATES[s] for s in states]
        found: list[pb.Enforcement] = []
        token = ""
        while True:
            page = self._call("List", pb.ListRequest(
                subscriber_ip=subscriber_ip, case_id=case_id, states=numbers,
                page_size=page_size, page_token=token), timeout)
            found.extend(page.enforcements)
            token = page.next_page_token
            if not token:
                return found

    def topology(self, *, timeout: float | None = None) -> pb.Topology:
        return self._call("GetTopology", pb.GetTopologyRequest(), timeout)

    def audit(self, *, enforcement_id: str = "", case_id: str = "", limit: int = 100,
              timeout: float | None = None) -> builtins.list[pb.AuditEntry]:
        return list(self._call("ListAudit", pb.ListAuditRequest(
            enforcement_id=enforcement_id, case_id=case_id, limit=limit), timeout).entries)

    def watch(self, *, after_sequence: int = 0, subscriber_ip: str = "",
              case_id: str = "") -> Iterator[pb.Event]:
        """Events as they happen, without a deadline; resumes after a dropped
        stream from the last event seen, on the next instance when there are
        several. Stop by breaking out of the loop."""
        last = after_sequence
        tried: set[int] = set()
        while True:
            index = self._current
            tried.add(index)
            stream = self._stub(index).Watch(pb.WatchRequest(
                after_sequence=last, subscriber_ip=subscriber_ip, case_id=case_id))
            try:
                for event in stream:
                    last = event.sequence
                    tried = {index}
                    self._worked(index)
                    yield event
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise ClientError(exc.code(), exc.details()) from None
                self._failed(index)
                # Another instance is worth trying at once; one that already
                # failed since the last event needs a moment to come back.
                if self._current in tried:
                    time.sleep(0.5)
                    tried = set()
            finally:
                stream.cancel()

    # ---- retries and deadlines ------------------------------------------------------

    def _call(self, method: str, request, timeout: float | None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        untried = set(range(len(self.addresses)))
        attempt_number = 0
        last_error: ClientError | None = None

        def once():
            nonlocal attempt_number, last_error
            attempt_number += 1
            left = deadline - time.monotonic()
            if left <= 0:
                if last_error is not None:
                    raise last_error
                raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"no time left for {method} after {attempt_number - 1} "
                                  "attempt(s)")
            index = self._current
            share = (self.attempt_timeout if self.attempt_timeout is not None
                     else left / max(len(untried), 1))
            untried.discard(index)
            stub = self._stub(index)
            try:
                answer = getattr(stub, method)(request, timeout=min(left, share))
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
            else:
                self._worked(index)
                return answer
            if (method == "Lift" and attempt_number > 1
                    and code == grpc.StatusCode.FAILED_PRECONDITION):
                # The first attempt lifted it and its answer was lost.
                record = rpc_get(stub, request.id)
                if record is not None and record.state == pb.STATE_LIFTED:
                    self._worked(index)
                    return record
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._failed(index)
            last_error = ClientError(code, details)
            raise last_error

        def rpc_get(stub, enforcement_id):
            try:
                return stub.Get(pb.GetRequest(id=enforcement_id),
                                timeout=max(deadline - time.monotonic(), 0.1))
            except grpc.RpcError:
                return None

        backoff = tenacity.wait_exponential_jitter(multiplier=0.1, max=2.0)
        pause = 0.0

        def worth_another(retry_state: tenacity.RetryCallState) -> bool:
            nonlocal pause
            assert retry_state.outcome is not None  # an attempt ended before retry= is asked
            error = retry_state.outcome.exception()
            # DEADLINE_EXCEEDED with time left means the attempt's share ran
            # out (a frozen instance), not the caller's deadline.
            if not (isinstance(error, ClientError) and error.code in (
                    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)):
                return False
            # Backing off spares an instance that is coming back; another
            # instance has not been asked yet, so it is asked at once.
            pause = 0.0 if self._current in untried else backoff(retry_state)
            # Sleeping past the deadline only to report that time ran out
            # would keep the caller waiting for nothing.
            return pause < deadline - time.monotonic()

        retrying = tenacity.Retrying(
            retry=worth_another,
            stop=tenacity.stop_after_attempt(max(self.attempts, len(self.addresses))),
            wait=lambda retry_state: pause, reraise=True)
        return retrying(once)
