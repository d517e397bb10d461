"""A tree's switches as OVSDB operations (RFC 7047), the rows ovs-vsctl would
write for add-br, add-port and set-controller, in one transaction per batch.

Pure: the tree and the controller's address in, plain JSON-ready operations
out. Each bridge is what the lab's are (testbed/lab.py): OpenFlow 1.3 only,
fail-mode secure (never a learning switch without its controller), a
pinned datapath id, and Open vSwitch's own packet-in cap on its Controller
record (controller_rate_limit, as lab.limit_controller_rate sets). Besides:
the dummy datapath (no kernel, no namespaces), in-band control off (the
controller is on loopback; in-band would add hidden flows to every bridge),
links as patch-port pairs (LLDP packet-outs cross them, so the controller
discovers the tree itself) and subscribers as dummy ports.
"""
from __future__ import annotations

from collections.abc import Sequence

from testbed.scale.tree import Port, Switch, Tree

RATE_LIMIT = 1000   # as the lab: testbed/lab.py start_network(controller_rate_limit)


def _map(pairs: dict[str, str]) -> list:
    return ["map", sorted([k, v] for k, v in pairs.items())]


def _interface(port: Port, options: dict[str, str]) -> dict:
    row: dict = {"name": port.name, "ofport_request": port.number}
    if port.peer:
        row.update(type="patch", options=_map({"peer": port.peer}))
    else:
        row.update(type="dummy", options=_map(options))
    return row


def add_switches(tree: Tree, switches: Sequence[Switch], controller: str, *,
                 rate_limit: int | None = RATE_LIMIT,
                 port_options: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """Operations adding these switches of the tree with all their ports,
    each connected to controller ("tcp:127.0.0.1:6653"). port_options:
    extra options by port name (tx_pcap for a port whose output a test
    reads)."""
    port_options = port_options or {}
    ops: list[dict] = []
    names: list[list[str]] = []
    serial = 0

    def name(kind: str) -> str:
        nonlocal serial
        serial += 1
        return f"{kind}{serial}"

    for switch in switches:
        port_refs = []
        # The bridge's own (local) port, as ovs-vsctl add-br makes it.
        local = Port(switch.name, 65534, switch.name)
        for port in (local, *tree.ports_of(switch.name)):
            iface, row_port = name("i"), name("p")
            interface = ({"name": local.name, "type": "internal"} if port is local
                         else _interface(port, port_options.get(port.name, {})))
            ops.append({"op": "insert", "table": "Interface", "uuid-name": iface,
                        "row": interface})
            ops.append({"op": "insert", "table": "Port", "uuid-name": row_port,
                        "row": {"name": port.name, "interfaces": ["named-uuid", iface]}})
            port_refs.append(["named-uuid", row_port])
        ctl = name("c")
        controller_row: dict = {"target": controller}
        if rate_limit:
            controller_row.update(controller_rate_limit=rate_limit,
                                  controller_burst_limit=max(25, rate_limit // 4))
        ops.append({"op": "insert", "table": "Controller", "uuid-name": ctl,
                    "row": controller_row})
        bridge = name("b")
        ops.append({"op": "insert", "table": "Bridge", "uuid-name": bridge, "row": {
            "name": switch.name, "datapath_type": "dummy", "fail_mode": "secure",
            "protocols": ["set", ["OpenFlow13"]],
            "other_config": _map({"datapath-id": f"{switch.dpid:016x}",
                                  "disable-in-band": "true"}),
            "controller": ["named-uuid", ctl], "ports": ["set", port_refs]}})
        names.append(["named-uuid", bridge])
    ops.append({"op": "mutate", "table": "Open_vSwitch", "where": [],
                "mutations": [["bridges", "insert", ["set", names]]]})
    return ops
