"""The decisions tests make: as a case system sends them over gRPC (spam)
and as the domain holds them (decision), under the shipped policy."""
import ipaddress

from enforcement.domain import policy
from enforcement.domain.model import Decision, Subscriber, Violation
from enforcement.v1 import enforcement_pb2 as pb

POLICY = policy.load()


def spam(request_id="r1", ip="10.0.0.1", **kw):
    return pb.ApplyRequest(request_id=request_id, case_id="C-1",
                           subscriber=pb.Subscriber(ip=ip, **kw),
                           violation=pb.VIOLATION_SPAM, reason="bulk mail")


def decision(request_id="r1", ip="10.0.0.1", violation=Violation.SPAM, **kw):
    return Decision(request_id, "CASE-1", Subscriber(ipaddress.ip_address(ip)),
                    violation, "test", **kw)
