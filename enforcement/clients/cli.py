"""enforcementctl: the abuse desk's and the engineers' command line.

Talks to the controller's gRPC API: one instance, or several given as a
comma-separated --server, failing over between them. Exit codes scripts can
trust: 0 done, 1 the controller refused or failed (the gRPC status is
printed), 2 bad usage, 3 the controller could not be reached.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from enforcement.clients.client import VIOLATIONS as _VIOLATIONS
from enforcement.clients.client import ClientError, EnforcementClient, TlsFiles
from enforcement.domain.model import BUDGET_UNITS, IDENTITY_KINDS, IdentityEvent
from enforcement.v1 import enforcement_pb2 as pb


def _name(enum_type, number: int, prefix: str) -> str:
    return enum_type.Name(number)[len(prefix):].lower()


def _print_enforcement(e: pb.Enforcement) -> None:
    print(f"id:        {e.id}")
    print(f"case:      {e.case_id}   request: {e.request_id}")
    print(f"subscriber {e.subscriber.ip}"
          f"{' (' + e.location.mac + ')' if e.location.mac else ''}"
          f" at switch {e.location.datapath_id:016x} port {e.location.port}")
    if e.subscriber.addresses:
        print(f"addresses: {', '.join(e.subscriber.addresses)}")
    print(f"violation: {_name(pb.Violation, e.violation, 'VIOLATION_')}")
    print(f"state:     {_name(pb.State, e.state, 'STATE_')} ({e.state_reason})")
    print(f"proof:     {proof_words(e.proof) if e.HasField('proof') else 'not proven yet'}")
    if e.policy_version:
        print(f"policy:    version {e.policy_version}")
    _print_outcome(e)


def proof_words(proof: pb.Proof) -> str:
    """Its last proof in the data plane, as a person reads it."""
    at = time.strftime("%H:%M:%S", time.localtime(proof.at.ToSeconds()))
    if proof.state == pb.PROOF_STATE_PROVEN:
        return (f"bites in the switch's data plane: {proof.probes} probe(s) met their fate "
                f"at {at}")
    if proof.state == pb.PROOF_STATE_FAILED:
        shadows = (f"; let through by {'; '.join(proof.shadowing_rules)}"
                   if proof.shadowing_rules else "")
        return f"FAILED at {at}: {proof.reason}{shadows}"
    if proof.state == pb.PROOF_STATE_UNPROVABLE:
        return f"nothing in it a probe can show without reaching a host (at {at})"
    return "not proven yet"


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
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _apply(ctl: EnforcementClient, args):
    result = ctl.apply(ip=args.ip or "", account=args.account or "",
                       violation=args.violation, case_id=args.case,
                       reason=args.reason, mac=args.mac or "",
                       request_id=args.request_id, wait_for_proof=args.wait_for_proof)
    _print_enforcement(result)
    return 0 if result.state == pb.STATE_ACTIVE else 1


def _plan(ctl: EnforcementClient, args):
    plan = ctl.plan(ip=args.ip or "", account=args.account or "",
                    violation=args.violation, case_id=args.case,
                    reason=args.reason, mac=args.mac or "")
    print(f"where:     switch {plan.location.datapath_id:016x} port {plan.location.port}")
    _print_outcome(plan)
    return 0


def _lift(ctl: EnforcementClient, args):
    _print_enforcement(ctl.lift(args.id, args.reason))
    return 0


def _show(ctl: EnforcementClient, args):
    _print_enforcement(ctl.get(args.id))
    return 0


def _list(ctl: EnforcementClient, args):
    found = ctl.list(subscriber_ip=args.ip or "", case_id=args.case or "",
                     states=tuple(args.state))
    _table([[e.id, e.case_id, e.subscriber.ip, _name(pb.Violation, e.violation, "VIOLATION_"),
             _name(pb.ActionKind, e.action.kind, "ACTION_KIND_"),
             _name(pb.State, e.state, "STATE_")] for e in found],
           ["ID", "CASE", "SUBSCRIBER", "VIOLATION", "ACTION", "STATE"])
    return 0


def _topology(ctl: EnforcementClient, args):
    topo = ctl.topology()
    print(f"{len(topo.switches)} switches, {len(topo.links)} links (one per direction), "
          f"{len(topo.hosts)} hosts; policy version {topo.policy_version or '-'}")
    for switch in topo.switches:
        ports = ", ".join(f"{p.number}:{p.name}" for p in switch.ports)
        print(f"switch {switch.datapath_id:016x}  ports {ports}")
    for link in topo.links:
        print(f"link   {link.src_datapath_id:016x}:{link.src_port} -> "
              f"{link.dst_datapath_id:016x}:{link.dst_port}")
    _hosts_table(topo)
    return 0


def _hosts(ctl: EnforcementClient, args):
    _hosts_table(ctl.topology())
    return 0


def _hosts_table(topo: pb.Topology) -> None:
    _table([[h.ip or "-", ",".join(h.ipv6) or "-", h.mac or "-", f"{h.datapath_id:016x}",
             str(h.port), h.account + (" (pinned)" if h.pinned else "") or "-",
             ",".join(h.enforcement_ids) or "-"] for h in topo.hosts],
           ["HOST IP", "IPV6", "MAC", "SWITCH", "PORT", "ACCOUNT", "ENFORCEMENTS"])


def _audit(ctl: EnforcementClient, args):
    entries = ctl.audit(enforcement_id=args.id or "", case_id=args.case or "",
                        limit=args.limit)
    _table([[e.at.ToDatetime().isoformat(sep=" ", timespec="seconds"), e.actor, e.call,
             e.outcome, e.enforcement_id or "-", e.case_id or "-", e.detail[:80]]
            for e in entries],
           ["TIME", "ACTOR", "CALL", "OUTCOME", "ENFORCEMENT", "CASE", "DETAIL"])
    return 0


def _watch(ctl: EnforcementClient, args):
    """One line per event, as they happen; Ctrl-C (or --count) ends it."""
    print(f"{'TIME':<23}  {'SEQ':>6}  {'EVENT':<14}  {'ENFORCEMENT':<20}  {'CASE':<12}  "
          f"{'SUBSCRIBER':<15}  {'STATE':<8}  DETAIL", flush=True)
    seen = 0
    try:
        for event in ctl.watch(after_sequence=args.after, subscriber_ip=args.ip or "",
                               case_id=args.case or ""):
            at = event.at.ToDatetime().isoformat(sep=" ", timespec="milliseconds")
            kind = _name(pb.EventKind, event.kind, "EVENT_KIND_")
            if event.kind == pb.EVENT_KIND_PORT_OVER_BUDGET:
                rest = _port_alarm(event)
            elif event.kind == pb.EVENT_KIND_IDENTITY_REFUSED:
                rest = _identity_refused(event)
            else:
                rest = (f"{event.enforcement_id:<20}  {event.case_id:<12}  "
                        f"{event.subscriber_ip:<15}  "
                        f"{_name(pb.State, event.state, 'STATE_'):<8}  {event.detail}")
            print(f"{at:<23}  {event.sequence:>6}  {kind:<14}  {rest}", flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    except KeyboardInterrupt:
        pass
    return 0


def _port_alarm(event: pb.Event) -> str:
    """A port alarm has no enforcement, case or state: where, who, which
    budget and how far over it take their place."""
    unit = BUDGET_UNITS.get(event.budget, "")
    return (f"switch {event.datapath_id:016x} port {event.port}  "
            f"subscriber {event.subscriber_ip or 'unknown'}  "
            f"{event.budget} {event.rate:g} {unit} (limit {event.limit:g})  {event.detail}")


def _identity_refused(event: pb.Event) -> str:
    """A refused claim has no enforcement, case or state either: where, who,
    what it claimed and whose it is take their place, then what the detail
    adds (what was held back since the last one, the reporter's words)."""
    words = IDENTITY_KINDS.get(event.identity, event.identity)
    owner = f" (held by {event.owner})" if event.owner else ""
    detail = event.detail
    try:  # the detail starts with the same sentence unless the reporter wrote its own
        sentence = IdentityEvent(event.identity, event.datapath_id, event.port,
                                 event.claimant_mac, event.claimed, event.owner).text()
    except ValueError:  # a kind newer than this client
        sentence = ""
    if sentence and detail.startswith(sentence):
        detail = detail[len(sentence):].lstrip("; ")
    return (f"switch {event.datapath_id:016x} port {event.port}  "
            f"subscriber {event.subscriber_ip or 'unknown'}  "
            f"{event.claimant_mac} {words}: {event.claimed}{owner}, refused"
            f"{'  ' + detail if detail else ''}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enforcementctl", description=__doc__.split("\n")[0])
    env = os.environ.get
    parser.add_argument("--server", default=env("ENFORCEMENT_SERVER", "127.0.0.1:50051"),
                        metavar="HOST:PORT[,HOST:PORT...]",
                        help="controller gRPC address, or the addresses of several "
                             "instances separated by commas: a call goes to the one "
                             "that last answered and moves on to the next when it is "
                             "unreachable ($ENFORCEMENT_SERVER). Default: %(default)s")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds before giving up on a call, retries and every "
                             "instance included; with several instances one attempt "
                             "gets at most the time left divided by the instances not "
                             "tried yet. Default: %(default)s")
    tls = parser.add_argument_group(
        "mutual TLS", "all three, or none for plaintext (which the controller "
                      "serves on loopback only); each also from the environment")
    tls.add_argument("--tls-ca", default=env("ENFORCEMENT_TLS_CA"), metavar="PEM",
                     help="CA of the controller's certificate ($ENFORCEMENT_TLS_CA)")
    tls.add_argument("--tls-cert", default=env("ENFORCEMENT_TLS_CERT"), metavar="PEM",
                     help="this client's certificate ($ENFORCEMENT_TLS_CERT)")
    tls.add_argument("--tls-key", default=env("ENFORCEMENT_TLS_KEY"), metavar="PEM",
                     help="this client's private key ($ENFORCEMENT_TLS_KEY)")
    commands = parser.add_subparsers(dest="command", required=True)

    for name, run, text in (("apply", _apply, "enforce a decision"),
                            ("plan", _plan, "what apply would do, changing nothing")):
        command = commands.add_parser(name, help=text)
        who = command.add_mutually_exclusive_group(required=True)
        who.add_argument("--ip", help="any one of the subscriber's addresses, IPv4 or "
                                      "(global) IPv6: the decision covers all of them")
        who.add_argument("--account", help="instead of --ip: the subscriber's account in "
                                           "the controller's inventory")
        command.add_argument("--violation", required=True, choices=sorted(_VIOLATIONS))
        command.add_argument("--case", required=True, help="case id")
        command.add_argument("--reason", default="")
        command.add_argument("--mac", help="subscriber MAC, checked against what was seen")
        command.add_argument("--request-id", help="idempotency key (default: a new one)")
        if name == "apply":
            command.add_argument("--wait-for-proof", action="store_true",
                                 help="answer once the switch's data plane showed it bites "
                                      "(probes), not at the switch's confirmation")
        command.set_defaults(run=run)

    lift = commands.add_parser("lift", help="lift an enforcement")
    lift.add_argument("id")
    lift.add_argument("--reason", default="")
    lift.set_defaults(run=_lift)

    show = commands.add_parser("show", aliases=["get"],
                               help="one enforcement with its rules and its proof")
    show.add_argument("id")
    show.set_defaults(run=_show)

    listing = commands.add_parser("list", help="enforcements, optionally filtered")
    listing.add_argument("--ip", help="only this subscriber, by any of its addresses "
                                      "(IPv4 or IPv6)")
    listing.add_argument("--case")
    listing.add_argument("--state", action="append", default=[],
                         choices=["pending", "active", "failed", "lifted", "expired"])
    listing.set_defaults(run=_list)

    watch = commands.add_parser(
        "watch", help="follow enforcement events live (applied, lifted, expired, "
                      "repaired...), port alarms (port_over_budget) and refused "
                      "identity claims (identity_refused)")
    watch.add_argument("--ip", help="only this subscriber (IPv4 or IPv6 address)")
    watch.add_argument("--case", help="only this case")
    watch.add_argument("--after", type=int, default=0, metavar="SEQ",
                       help="replay events after this sequence number first (0: all)")
    watch.add_argument("--count", type=int, default=0,
                       help="stop after this many events (0: until Ctrl-C)")
    watch.set_defaults(run=_watch)

    audit = commands.add_parser("audit", help="who did what, refusals included (newest first)")
    audit.add_argument("--id", help="only this enforcement")
    audit.add_argument("--case", help="only this case")
    audit.add_argument("--limit", type=int, default=50, help="at most 1000. Default: 50")
    audit.set_defaults(run=_audit)

    topology = commands.add_parser("topology", help="switches, links, hosts")
    topology.set_defaults(run=_topology)

    hosts = commands.add_parser("hosts", help="hosts only: addresses of both families, "
                                              "where, account, enforcements")
    hosts.set_defaults(run=_hosts)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Piped into head or less: stop quietly when the reader goes away.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    files = [args.tls_ca, args.tls_cert, args.tls_key]
    if any(files) and not all(files):
        parser.error("mutual TLS needs --tls-ca, --tls-cert and --tls-key together")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        tls = TlsFiles(*files) if all(files) else None
        client = EnforcementClient(args.server, tls=tls, timeout=args.timeout)
    except OSError as exc:
        print(f"error: cannot read the TLS files: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # --server "" or ","
        parser.error(str(exc))
    with client:
        try:
            return args.run(client, args)
        except ClientError as err:
            print(f"error: {err}", file=sys.stderr)
            return 3 if err.unreachable else 1


if __name__ == "__main__":
    sys.exit(main())
