"""A typed Python client of the enforcement API, for case systems, the CLI and
the benchmark.

    with EnforcementClient("ctl.example.net:50051", tls=TlsFiles(ca, cert, key)) as ctl:
        record = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-42",
                           reason="1,200 recipients in an hour")
        ctl.lift(record.id, reason="customer cleaned up")

Every call has a deadline (the client's `timeout` unless given). Calls that
find the controller UNAVAILABLE (restarting, network blip) are retried with
jittered exponential backoff until the deadline or `attempts` run out. Apply
is safe to retry because the request id is chosen once, before the first
attempt, and the controller answers a repeat of a request id with the
original enforcement. A Lift whose answer was lost and that is retried finds
the enforcement already lifted: the client then returns it instead of an
error. Failures raise ClientError with the gRPC status code and the
controller's message.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
import uuid
from typing import Iterator

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


class EnforcementClient:
    def __init__(self, target: str = "127.0.0.1:50051", *, tls: TlsFiles | None = None,
                 credentials: grpc.ChannelCredentials | None = None,
                 timeout: float = 10.0, attempts: int = 4):
        """credentials: any grpc.ChannelCredentials (tls builds them from
        files); neither means plaintext, which the controller serves on
        loopback only."""
        if tls is not None:
            credentials = tls.credentials()
        self._channel = (grpc.secure_channel(target, credentials) if credentials
                         else grpc.insecure_channel(target))
        self._stub = pb_grpc.EnforcementServiceStub(self._channel)
        self.timeout = timeout
        self.attempts = attempts

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "EnforcementClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the calls ---------------------------------------------------------------

    def apply(self, *, ip: str, violation: str | int, case_id: str, reason: str = "",
              mac: str = "", request_id: str | None = None, scope: str = "",
              duration: float | None = None, action: pb.ActionRequest | None = None,
              timeout: float | None = None) -> pb.Enforcement:
        request = pb.ApplyRequest(
            request_id=request_id or f"py-{uuid.uuid4().hex}", case_id=case_id,
            subscriber=pb.Subscriber(ip=ip, mac=mac), violation=_violation(violation),
            reason=reason, scope=scope)
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

    def plan(self, *, ip: str, violation: str | int, case_id: str = "plan",
             timeout: float | None = None, **fields) -> pb.Plan:
        request = pb.ApplyRequest(request_id="plan", case_id=case_id,
                                  subscriber=pb.Subscriber(ip=ip, mac=fields.pop("mac", "")),
                                  violation=_violation(violation), **fields)
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
              timeout: float | None = None) -> list[pb.AuditEntry]:
        return list(self._call("ListAudit", pb.ListAuditRequest(
            enforcement_id=enforcement_id, case_id=case_id, limit=limit), timeout).entries)

    def watch(self, *, after_sequence: int = 0, subscriber_ip: str = "",
              case_id: str = "") -> Iterator[pb.Event]:
        """Events as they happen, without a deadline; resumes after a dropped
        stream from the last event seen. Stop by breaking out of the loop."""
        last = after_sequence
        while True:
            stream = self._stub.Watch(pb.WatchRequest(
                after_sequence=last, subscriber_ip=subscriber_ip, case_id=case_id))
            try:
                for event in stream:
                    last = event.sequence
                    yield event
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise ClientError(exc.code(), exc.details()) from None
                time.sleep(0.5)
            finally:
                stream.cancel()

    # ---- retries and deadlines ------------------------------------------------------

    def _call(self, method: str, request, timeout: float | None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        rpc = getattr(self._stub, method)
        attempt_number = 0

        def once():
            nonlocal attempt_number
            attempt_number += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"no time left for {method} after {attempt_number - 1} "
                                  "attempt(s)")
            try:
                return rpc(request, timeout=left)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
            if (method == "Lift" and attempt_number > 1
                    and code == grpc.StatusCode.FAILED_PRECONDITION):
                # The first attempt lifted it and its answer was lost.
                record = rpc_get(request.id)
                if record is not None and record.state == pb.STATE_LIFTED:
                    return record
            raise ClientError(code, details)

        def rpc_get(enforcement_id):
            try:
                return self._stub.Get(pb.GetRequest(id=enforcement_id),
                                      timeout=max(deadline - time.monotonic(), 0.1))
            except grpc.RpcError:
                return None

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, ClientError) and e.code == grpc.StatusCode.UNAVAILABLE
                and deadline - time.monotonic() > 0),
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=2.0),
            reraise=True)
        return retrying(once)
