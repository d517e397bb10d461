"""enforcementctl: the abuse desk's and the engineers' command line.

Talks to the controller's gRPC API. Exit codes scripts can trust: 0 done,
1 the controller refused or failed (the gRPC status is printed), 2 bad usage,
3 the controller could not be reached.
"""
from __future__ import annotations

import argparse
import signal
import sys
import uuid

import grpc

from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc

_VIOLATIONS = {v.name[len("VIOLATION_"):].lower(): v.number
               for v in pb.Violation.DESCRIPTOR.values if v.number}


def _name(enum_type, number: int, prefix: str) -> str:
    return enum_type.Name(number)[len(prefix):].lower()


def _print_enforcement(e: pb.Enforcement) -> None:
    print(f"id:        {e.id}")
    print(f"case:      {e.case_id}   request: {e.request_id}")
    print(f"subscriber {e.subscriber.ip}"
          f"{' (' + e.location.mac + ')' if e.location.mac else ''}"
          f" at switch {e.location.datapath_id:016x} port {e.location.port}")
    print(f"violation: {_name(pb.Violation, e.violation, 'VIOLATION_')}")
    print(f"state:     {_name(pb.State, e.state, 'STATE_')} ({e.state_reason})")
    _print_outcome(e)


def _print_outcome(e: pb.Enforcement | pb.Plan) -> None:
    """What an enforcement or a plan does, and why that step."""
    print(f"action:    {_name(pb.ActionKind, e.action.kind, 'ACTION_KIND_')}: "
          f"{e.action.description}")
    print(f"step:      {e.escalation.step} of {e.escalation.of_steps}: {e.escalation.reason}")
    print(f"clause:    {e.escalation.clause}")
    print(f"a repeat:  {e.escalation.next_action}")
    for rule in e.rules:
        print(f"rule:      {rule.text}")
    for meter in e.meters:
        print(f"meter:     {meter.text}")


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _apply_request(args) -> pb.ApplyRequest:
    return pb.ApplyRequest(
        request_id=args.request_id or f"cli-{uuid.uuid4().hex}",
        case_id=args.case, reason=args.reason,
        subscriber=pb.Subscriber(ip=args.ip, mac=args.mac or ""),
        violation=_VIOLATIONS[args.violation])


def _apply(stub, args):
    result = stub.Apply(_apply_request(args), timeout=args.timeout)
    _print_enforcement(result)
    return 0 if result.state == pb.STATE_ACTIVE else 1


def _plan(stub, args):
    plan = stub.Plan(_apply_request(args), timeout=args.timeout)
    print(f"where:     switch {plan.location.datapath_id:016x} port {plan.location.port}")
    _print_outcome(plan)
    return 0


def _lift(stub, args):
    _print_enforcement(stub.Lift(pb.LiftRequest(id=args.id, reason=args.reason),
                                 timeout=args.timeout))
    return 0


def _show(stub, args):
    _print_enforcement(stub.Get(pb.GetRequest(id=args.id), timeout=args.timeout))
    return 0


def _list(stub, args):
    states = [pb.State.Value("STATE_" + s.upper()) for s in args.state]
    response = stub.List(pb.ListRequest(subscriber_ip=args.ip or "", case_id=args.case or "",
                                        states=states), timeout=args.timeout)
    _table([[e.id, e.case_id, e.subscriber.ip, _name(pb.Violation, e.violation, "VIOLATION_"),
             _name(pb.ActionKind, e.action.kind, "ACTION_KIND_"),
             _name(pb.State, e.state, "STATE_")] for e in response.enforcements],
           ["ID", "CASE", "SUBSCRIBER", "VIOLATION", "ACTION", "STATE"])
    return 0


def _topology(stub, args):
    topo = stub.GetTopology(pb.GetTopologyRequest(), timeout=args.timeout)
    print(f"{len(topo.switches)} switches, {len(topo.links)} links (one per direction), "
          f"{len(topo.hosts)} hosts")
    for switch in topo.switches:
        ports = ", ".join(f"{p.number}:{p.name}" for p in switch.ports)
        print(f"switch {switch.datapath_id:016x}  ports {ports}")
    for link in topo.links:
        print(f"link   {link.src_datapath_id:016x}:{link.src_port} -> "
              f"{link.dst_datapath_id:016x}:{link.dst_port}")
    _table([[h.ip or "-", h.mac, f"{h.datapath_id:016x}", str(h.port),
             ",".join(h.enforcement_ids) or "-"] for h in topo.hosts],
           ["HOST IP", "MAC", "SWITCH", "PORT", "ENFORCEMENTS"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enforcementctl", description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051",
                        help="controller gRPC address. Default: %(default)s")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds before giving up on a call. Default: %(default)s")
    commands = parser.add_subparsers(dest="command", required=True)

    for name, run, text in (("apply", _apply, "enforce a decision"),
                            ("plan", _plan, "what apply would do, changing nothing")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--ip", required=True, help="subscriber IPv4 address")
        command.add_argument("--violation", required=True, choices=sorted(_VIOLATIONS))
        command.add_argument("--case", required=True, help="case id")
        command.add_argument("--reason", default="")
        command.add_argument("--mac", help="subscriber MAC, checked against what was seen")
        command.add_argument("--request-id", help="idempotency key (default: a new one)")
        command.set_defaults(run=run)

    lift = commands.add_parser("lift", help="lift an enforcement")
    lift.add_argument("id")
    lift.add_argument("--reason", default="")
    lift.set_defaults(run=_lift)

    show = commands.add_parser("show", help="one enforcement with its rules")
    show.add_argument("id")
    show.set_defaults(run=_show)

    listing = commands.add_parser("list", help="enforcements, optionally filtered")
    listing.add_argument("--ip")
    listing.add_argument("--case")
    listing.add_argument("--state", action="append", default=[],
                         choices=["pending", "active", "failed", "lifted", "expired"])
    listing.set_defaults(run=_list)

    topology = commands.add_parser("topology", help="switches, links, hosts")
    topology.set_defaults(run=_topology)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Piped into head or less: stop quietly when the reader goes away.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.EnforcementServiceStub(channel)
        try:
            return args.run(stub, args)
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return 3
            return 1


if __name__ == "__main__":
    sys.exit(main())
