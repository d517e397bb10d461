#!/usr/bin/env python3
"""The main job: the enforcement controller plus a Mininet topology.

Starts enforcement-controller (gRPC on 127.0.0.1:50051, OpenFlow 1.3 on
127.0.0.1:6653 unless told otherwise), builds the topology with Open vSwitch
in userspace, waits until links are discovered and every host is located, and
prints how to send a first decision. With a terminal it opens the Mininet CLI;
without one it runs until SIGINT/SIGTERM. Everything is torn down on exit.

    python -m testbed.run --topo linear --switches 3 --hosts-per-switch 2

On the isp topology (the default) a DHCP server (dnsmasq, host dhcp,
10.0.0.253) runs on the services switch, whose port the controllers trust,
and the subscribers take their IPv4 addresses from it with a real DHCP
client (udhcpc), from 10.0.0.100-199; --no-dhcp keeps them static.

With --ha N (2 to 5) it starts N controllers instead, sharing one database:
a throwaway PostgreSQL server (pgcluster.py) unless --db names one. The
instance i (1..N) takes each listening port plus i-1 (gRPC 50051+i-1,
OpenFlow 6653+i-1, metrics 9108+i-1, view 8080+i-1), logs to controller-i.log,
and every switch connects to all of them.

    python -m testbed.run --ha 3
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from controller.topology.settling import SETTLE_SECONDS
from testbed import dhcp, lab, pgcluster, topologies

DHCP_RANGE = ("10.0.0.100", "10.0.0.199")
DHCP_LEASE = 300


def build_topo(args):
    if args.topo == "isp":
        return topologies.IspTopo(access=args.access,
                                  subscribers_per_switch=args.hosts_per_switch,
                                  dhcp=args.dhcp)
    if args.topo == "single":
        return topologies.SingleSwitchTopo(hosts=args.hosts)
    if args.topo == "linear":
        return topologies.LinearTopo(switches=args.switches,
                                     hosts_per_switch=args.hosts_per_switch)
    return topologies.TreeTopo(depth=args.depth, fanout=args.fanout)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topo", choices=["isp", "single", "linear", "tree"], default="isp",
                        help="isp (default): subscribers on access switches behind an "
                             "aggregation switch, plus dns, portal, mail and inet hosts")
    parser.add_argument("--access", type=int, default=2, help="isp: access switches")
    parser.add_argument("--hosts", type=int, default=3, help="single: hosts")
    parser.add_argument("--switches", type=int, default=2, help="linear: switches")
    parser.add_argument("--hosts-per-switch", type=int, default=2, help="isp, linear")
    parser.add_argument("--depth", type=int, default=2, help="tree")
    parser.add_argument("--fanout", type=int, default=2, help="tree")
    parser.add_argument("--grpc-listen", default="127.0.0.1:50051")
    parser.add_argument("--ofp-port", type=int, default=6653)
    parser.add_argument("--http-listen", default="127.0.0.1:8080",
                        help="the topology view. Default: %(default)s")
    parser.add_argument("--metrics-listen", default="127.0.0.1:9108",
                        help="Prometheus metrics. Default: %(default)s")
    parser.add_argument("--db", default=None,
                        help="the controller's store (enforcements survive restarts). "
                             "Default: the controller's own (an SQLite file in its state "
                             "directory, /var/lib/sdn-enforcement as root); with --ha, a throwaway "
                             "PostgreSQL database (or a postgresql+psycopg:// URL given here)")
    parser.add_argument("--log", default="controller.log",
                        help="controller log file (with --ha: controller-1.log...). "
                             "Default: %(default)s")
    parser.add_argument("--ha", type=int, metavar="N", default=None,
                        help="high availability: N controllers (2-5) on one PostgreSQL "
                             "database, every switch connected to all of them")
    parser.add_argument("--no-cli", action="store_true",
                        help="never open the Mininet CLI; wait for Ctrl-C")
    parser.add_argument("--no-dhcp", dest="dhcp", action="store_false",
                        help="isp: no DHCP server; the subscribers keep static addresses")
    args = parser.parse_args()
    args.dhcp = args.dhcp and args.topo == "isp"
    if min(args.hosts, args.switches, args.hosts_per_switch, args.depth, args.fanout,
           args.access) < 1:
        parser.error("topology sizes must be at least 1")
    if args.topo == "isp" and args.access * args.hosts_per_switch > 199:
        parser.error("isp: at most 199 subscribers (10.0.0.1-199)")
    if args.dhcp and args.access * args.hosts_per_switch > 100:
        parser.error("isp: at most 100 subscribers take DHCP leases (10.0.0.100-199); "
                     "give --no-dhcp for more")
    if args.ha is not None:
        if not 2 <= args.ha <= 5:
            parser.error("--ha: 2 to 5 controllers")
        if args.db and args.db.startswith("sqlite"):
            parser.error("--ha: the controllers share a server database, not SQLite "
                         "(leave --db out for a throwaway PostgreSQL)")
        missing = None if args.db else pgcluster.unavailable()
        if missing:
            parser.error(f"--ha: PostgreSQL cannot run here: {missing}")
    return args


def main() -> int:
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C, so the network is always torn down.
    signal.signal(signal.SIGTERM, _interrupt)
    topo = build_topo(args)
    args.controller_extra = (["--dhcp-trusted", dhcp.trusted_port(topo, "s9", "dhcp")]
                             if args.dhcp else [])
    lab.cleanup()
    try:
        # Torn down in reverse: the network, the controllers, PostgreSQL,
        # the temporary directory.
        with contextlib.ExitStack() as started:
            try:
                if args.ha:
                    controllers = _start_ha(args, started)
                else:
                    controllers = [_start_single(args, started)]
                net = lab.start_network(topo, [c.ofp_port for c in controllers])
                started.callback(_stop_network, net)
                _serve(args, topo, net, controllers)
            except KeyboardInterrupt:
                print("stopping", flush=True)
            finally:
                _ignore_signals()  # a second Ctrl-C must not cut the teardown short
    except KeyboardInterrupt:
        print("stopping", flush=True)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        lab.cleanup()
    return 0


def _start_single(args, started: contextlib.ExitStack) -> lab.ControllerProcess:
    controller = lab.ControllerProcess(args.ofp_port, grpc_listen=args.grpc_listen,
                                       log_path=pathlib.Path(args.log),
                                       extra_args=[*(["--db", args.db] if args.db else []),
                                                   "--http-listen", args.http_listen,
                                                   "--metrics-listen", args.metrics_listen,
                                                   *args.controller_extra])
    started.callback(controller.stop)
    grpc_address = controller.wait_ready()
    print(f"controller ready: gRPC {grpc_address}, OpenFlow 127.0.0.1:{args.ofp_port}, "
          f"log {args.log}", flush=True)
    print(f"topology view: http://{controller.http_address}/   "
          f"metrics: http://{controller.metrics_address}/metrics", flush=True)
    return controller


def _start_ha(args, started: contextlib.ExitStack) -> list[lab.ControllerProcess]:
    """A database, then the N controllers all at once (as an operator's
    would start), each waited for in turn."""
    db = args.db
    if db is None:
        cluster = pgcluster.PgCluster(durable=True)
        started.callback(cluster.stop)
        cluster.start()
        db = cluster.create_database("enforcement")
        print(f"PostgreSQL ready (pid {cluster.pid}, data in {cluster.home}, "
              f"removed on exit): {db}", flush=True)
    state_dirs = None
    if "--state-dir" in _controller_help():
        state_dirs = pathlib.Path(tempfile.mkdtemp(prefix="sdn-enforcement-ha-"))
        started.callback(shutil.rmtree, state_dirs, ignore_errors=True)
    log = pathlib.Path(args.log)
    controllers: list[lab.ControllerProcess] = []
    started.callback(_stop_controllers, controllers)
    for i in range(args.ha):
        extra = ["--db", db, "--http-listen", _plus(args.http_listen, i),
                 "--metrics-listen", _plus(args.metrics_listen, i), *args.controller_extra]
        if state_dirs is not None:
            state = state_dirs / f"controller-{i + 1}"
            state.mkdir()
            extra += ["--state-dir", str(state)]
        controller = lab.ControllerProcess(
            args.ofp_port + i, grpc_listen=_plus(args.grpc_listen, i),
            log_path=log.with_name(f"{log.stem}-{i + 1}{log.suffix}"), extra_args=extra)
        controllers.append(controller)
    for i, controller in enumerate(controllers, 1):
        try:
            controller.wait_ready()
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"controller {i} of {len(controllers)}: {exc}") from None
        print(f"controller {i} ready (pid {controller.proc.pid}): gRPC "
              f"{controller.grpc_address}, OpenFlow 127.0.0.1:{controller.ofp_port}, "
              f"view http://{controller.http_address}/, "
              f"metrics http://{controller.metrics_address}/metrics, "
              f"log {controller.log_path}", flush=True)
    return controllers


def _serve(args, topo, net, controllers: list[lab.ControllerProcess]) -> None:
    """Waits for the network to come up under the controllers, prints how
    to use it, then runs the CLI or waits for Ctrl-C/SIGTERM."""
    addresses = [c.grpc_address for c in controllers]
    server = ",".join(addresses)
    lab.wait_switches_connected(net)
    if len(controllers) > 1:
        lab.wait_until(lambda: all(_connected_targets(s.name) == len(controllers)
                                   for s in net.switches), 30,
                       f"every switch connected to all {len(controllers)} controllers")
        print(f"{len(net.switches)} switches connected, each to all {len(controllers)} "
              "controllers; discovering links and hosts...", flush=True)
    else:
        print(f"{len(net.switches)} switches connected; discovering links and hosts...",
              flush=True)
    expected_links = 2 * (len(topo.links()) - len(net.hosts))  # both directions
    lab.wait_until(lambda: _links(addresses) >= expected_links, 30,
                   f"{expected_links} discovered links")
    # Access ports flood nothing before (controller/topology/settling.py).
    time.sleep(SETTLE_SECONDS)
    loss = net.pingAll(timeout=2)
    print(f"reachability check: {loss:.0f}% loss", flush=True)
    _dual_stack(net)
    if args.dhcp:
        _leases(net, addresses)
    _start_services(net)
    subscribers = [h for h in net.hosts if h.name.startswith("h")]
    first = subscribers[0] if subscribers else net.hosts[0]
    ctl = f".venv/bin/enforcementctl --server {server}"
    ha = (f"\n{len(controllers)} controllers; give enforcementctl all their gRPC addresses, "
          f"comma-separated: --server {server}\n") if len(controllers) > 1 else ""
    print(f"""
Ready. Hosts: {', '.join(f'{h.name}={h.IP()},{ipv6_of(h)}' for h in net.hosts)}{ha}
Send a first decision (block port 25 for {first.name}, both families):
  {ctl} apply --ip {first.IP()} --violation spam --case CASE-1
  (or by its IPv6 address: --ip {ipv6_of(first)})
See it: {ctl} topology   (or the view: http://{controllers[0].http_address}/)
Follow: {ctl} watch
Lift it: {ctl} lift <id>
""", flush=True)
    if sys.stdin.isatty() and not args.no_cli:
        from mininet.cli import CLI
        CLI(net)
    else:
        print("running; Ctrl-C (or SIGTERM) stops and cleans up", flush=True)
        threading.Event().wait()


def ipv6_of(host) -> str:
    """The global IPv6 address each host gets next to its 10.0.0.N (the
    topology's, which stays its own when DHCP gives it another)."""
    ip = host.params.get("ip", host.IP()).split("/")[0]
    return f"2001:db8::{ip.rsplit('.', 1)[1]}"


def _leases(net, grpc_addresses: list[str]) -> None:
    """dnsmasq on the dhcp host; every subscriber takes its IPv4 address
    from it with udhcpc, then speaks once so the controllers learn it."""
    server = dhcp.start_dhcp_server(net.get("dhcp"), DHCP_RANGE, DHCP_LEASE)
    print(f"DHCP: dnsmasq on dhcp ({net.get('dhcp').IP()}), {DHCP_RANGE[0]}-"
          f"{DHCP_RANGE[1]}, leases of {DHCP_LEASE} s, files in {server.folder}", flush=True)
    subscribers = [h for h in net.hosts if h.name.startswith("h")]
    for host in subscribers:
        dhcp.dhcp_client(host, wait=False)
    for host in subscribers:
        host.dhcp_client.wait_address(0, 30)
        host.cmd(f"ping -c 1 -W 1 {topologies.IspTopo.SERVICES['dns']} > /dev/null")
    wanted = {h.IP() for h in subscribers}
    lab.wait_until(lambda: wanted <= _host_addresses(grpc_addresses), 15,
                   "the controller to locate every subscriber at its leased address")
    print("DHCP leases: " + ", ".join(f"{h.name}={h.IP()}" for h in subscribers), flush=True)


def _dual_stack(net) -> None:
    """Gives every host its IPv6 address and has it solicit a neighbour
    once, so the controller knows the address (learned from neighbour
    discovery) before the first decision names it."""
    for host in net.hosts:
        host.cmd(f"ip -6 addr add {ipv6_of(host)}/64 dev {host.defaultIntf()} nodad")
    first = net.hosts[0]
    for host in net.hosts:
        peer = first if host is not first else net.hosts[-1]
        host.cmd(f"ping -6 -c 1 -W 1 {ipv6_of(peer)} > /dev/null")
    print("IPv6: every host has 2001:db8::N/64 next to its 10.0.0.N", flush=True)


def _start_services(net) -> None:
    """Stand-ins for the provider's services, so decisions can be tried with
    real connections (nc -z, the udp probe) from the Mininet CLI."""
    names = {h.name for h in net.hosts}
    for name, tcp, udp in (("dns", (53,), (53,)), ("portal", (80, 443), ()),
                           ("mail", (25, 110, 995), ()), ("inet", (25, 80, 443, 587), ())):
        if name in names:
            lab.start_listener(net.get(name), tcp, udp, v6=True)
            print(f"{name} answers on TCP {tcp}" + (f", UDP {udp}" if udp else ""), flush=True)


def _stop_controllers(controllers: list[lab.ControllerProcess]) -> None:
    """All told at once (each takes a few seconds to stop), then waited for."""
    for controller in controllers:
        if controller.proc.poll() is None:
            controller.proc.terminate()
    for controller in controllers:
        controller.stop()


def _stop_network(net) -> None:
    """net.stop(), also when a signal came in the middle of a command in a
    node's shell (pingAll), which Mininet would refuse; what it cannot
    remove, lab.cleanup() does."""
    for node in (*net.hosts, *net.switches, *net.controllers):
        if node.shell and node.waiting:
            node.sendInt()
            node.waitOutput()
    shells = [node.shell for node in (*net.hosts, *net.switches, *net.controllers)
              if node.shell is not None]
    try:
        net.stop()
    except Exception as exc:  # the rest is torn down all the same
        print(f"network teardown: {exc!r}; cleaning up what is left", file=sys.stderr,
              flush=True)
    # Mininet hangs up on the node shells and forgets them without reaping
    # (the controllers' stay zombies where init does not reap either).
    deadline = time.monotonic() + 3
    for shell in shells:
        with contextlib.suppress(subprocess.TimeoutExpired):
            shell.wait(max(0.0, deadline - time.monotonic()))


def _interrupt(*_):
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _plus(listen: str, offset: int) -> str:
    """HOST:PORT with the port moved by offset ('off' and port 0 stay)."""
    if listen == "off":
        return listen
    host, _, port = listen.rpartition(":")
    return listen if int(port) == 0 else f"{host}:{int(port) + offset}"


def _controller_help() -> str:
    exe = shutil.which("enforcement-controller",
                       path=os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                                             os.environ.get("PATH", "")]))
    if exe is None:
        return ""  # ControllerProcess says what is missing
    return subprocess.run([exe, "--help"], capture_output=True, text=True, check=False).stdout


def _connected_targets(bridge: str) -> int:
    """How many of the bridge's controllers it is connected to."""
    def vsctl(*args: str) -> str:
        return subprocess.run(["ovs-vsctl", "--timeout=5", *args], capture_output=True,
                              text=True, check=False).stdout.strip()
    uuids = vsctl("get", "bridge", bridge, "controller").strip("[]").split(",")
    return sum(vsctl("get", "controller", uuid.strip(), "is_connected") == "true"
               for uuid in uuids if uuid.strip())


def _host_addresses(grpc_addresses: list[str]) -> set[str]:
    import grpc

    from enforcement.v1 import enforcement_pb2 as pb
    from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
    found: set[str] = set()
    for address in grpc_addresses:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.EnforcementServiceStub(channel)
            with contextlib.suppress(grpc.RpcError):  # a follower may not answer
                found |= {h.ip for h in stub.GetTopology(pb.GetTopologyRequest(),
                                                         timeout=5).hosts}
    return found


def _links(grpc_addresses: list[str]) -> int:
    """Links discovered, as the instance that knows most says (with several
    controllers, those that do not serve may answer nothing, or an error)."""
    import grpc

    from enforcement.v1 import enforcement_pb2 as pb
    from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
    best = 0
    for address in grpc_addresses:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.EnforcementServiceStub(channel)
            try:
                links = len(stub.GetTopology(pb.GetTopologyRequest(), timeout=5).links)
            except grpc.RpcError:
                if len(grpc_addresses) == 1:
                    raise
                continue
            best = max(best, links)
    return best


if __name__ == "__main__":
    sys.exit(main())
