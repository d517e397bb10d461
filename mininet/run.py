#!/usr/bin/env python3
"""The main job: the enforcement controller plus a Mininet topology.

Starts enforcement-controller (gRPC on 127.0.0.1:50051, OpenFlow 1.3 on
127.0.0.1:6653 unless told otherwise), builds the topology with Open vSwitch
in userspace, waits until links are discovered and every host is located, and
prints how to send a first decision. With a terminal it opens the Mininet CLI;
without one it runs until SIGINT/SIGTERM. Everything is torn down on exit.

    python mininet/run.py --topo linear --switches 3 --hosts-per-switch 2
"""
from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import lab  # noqa: E402
import topologies  # noqa: E402
from controller.settling import SETTLE_SECONDS  # noqa: E402


def build_topo(args):
    if args.topo == "isp":
        return topologies.IspTopo(access=args.access,
                                  subscribers_per_switch=args.hosts_per_switch)
    if args.topo == "single":
        return topologies.SingleSwitchTopo(hosts=args.hosts)
    if args.topo == "linear":
        return topologies.LinearTopo(switches=args.switches,
                                     hosts_per_switch=args.hosts_per_switch)
    return topologies.TreeTopo(depth=args.depth, fanout=args.fanout)


def main() -> int:
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
    parser.add_argument("--db", default="sqlite:///enforcement.db",
                        help="the controller's store (enforcements survive restarts). "
                             "Default: %(default)s")
    parser.add_argument("--log", default="controller.log",
                        help="controller log file. Default: %(default)s")
    parser.add_argument("--no-cli", action="store_true",
                        help="never open the Mininet CLI; wait for Ctrl-C")
    args = parser.parse_args()
    if min(args.hosts, args.switches, args.hosts_per_switch, args.depth, args.fanout,
           args.access) < 1:
        parser.error("topology sizes must be at least 1")
    if args.topo == "isp" and args.access * args.hosts_per_switch > 199:
        parser.error("isp: at most 199 subscribers (10.0.0.1-199)")

    # SIGTERM unwinds like Ctrl-C, so the network is always torn down.
    signal.signal(signal.SIGTERM, _interrupt)
    topo = build_topo(args)
    lab.cleanup()
    controller = lab.ControllerProcess(args.ofp_port, grpc_listen=args.grpc_listen,
                                       log_path=pathlib.Path(args.log),
                                       extra_args=["--db", args.db,
                                                   "--http-listen", args.http_listen,
                                                   "--metrics-listen", args.metrics_listen])
    net = None
    try:
        grpc_address = controller.wait_ready()
        print(f"controller ready: gRPC {grpc_address}, OpenFlow 127.0.0.1:{args.ofp_port}, "
              f"log {args.log}", flush=True)
        print(f"topology view: http://{controller.http_address}/   "
              f"metrics: http://{controller.metrics_address}/metrics", flush=True)
        net = lab.start_network(topo, args.ofp_port)
        lab.wait_switches_connected(net)
        print(f"{len(net.switches)} switches connected; discovering links and hosts...",
              flush=True)
        expected_links = 2 * (len(topo.links()) - len(net.hosts))  # both directions
        lab.wait_until(lambda: _links(grpc_address) >= expected_links, 30,
                       f"{expected_links} discovered links")
        time.sleep(SETTLE_SECONDS)  # access ports flood nothing before (controller/settling.py)
        loss = net.pingAll(timeout=2)
        print(f"reachability check: {loss:.0f}% loss", flush=True)
        _start_services(net)
        subscribers = [h for h in net.hosts if h.name.startswith("h")]
        first = subscribers[0] if subscribers else net.hosts[0]
        print(f"""
Ready. Hosts: {', '.join(f'{h.name}={h.IP()}' for h in net.hosts)}
Send a first decision (block port 25 for {first.name}):
  .venv/bin/enforcementctl --server {grpc_address} apply --ip {first.IP()} --violation spam --case CASE-1
See it: .venv/bin/enforcementctl --server {grpc_address} topology   (or the view: http://{controller.http_address}/)
Follow: .venv/bin/enforcementctl --server {grpc_address} watch
Lift it: .venv/bin/enforcementctl --server {grpc_address} lift <id>
""", flush=True)
        if sys.stdin.isatty() and not args.no_cli:
            from mininet.cli import CLI
            CLI(net)
        else:
            print("running; Ctrl-C (or SIGTERM) stops and cleans up", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        if net is not None:
            net.stop()
        controller.stop()
        lab.cleanup()
    return 0


def _start_services(net) -> None:
    """Stand-ins for the provider's services, so decisions can be tried with
    real connections (nc -z, the udp probe) from the Mininet CLI."""
    names = {h.name for h in net.hosts}
    for name, tcp, udp in (("dns", (53,), (53,)), ("portal", (80, 443), ()),
                           ("mail", (25, 110, 995), ()), ("inet", (25, 80, 443, 587), ())):
        if name in names:
            lab.start_listener(net.get(name), tcp, udp)
            print(f"{name} answers on TCP {tcp}" + (f", UDP {udp}" if udp else ""), flush=True)


def _interrupt(*_):
    raise KeyboardInterrupt


def _links(grpc_address: str) -> int:
    import grpc
    from enforcement.v1 import enforcement_pb2 as pb
    from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
    with grpc.insecure_channel(grpc_address) as channel:
        stub = pb_grpc.EnforcementServiceStub(channel)
        return len(stub.GetTopology(pb.GetTopologyRequest(), timeout=5).links)


if __name__ == "__main__":
    sys.exit(main())
