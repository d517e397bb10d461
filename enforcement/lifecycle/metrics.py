"""Prometheus metrics of the controller (prometheus_client, a registry of its
own so that nothing else in the process leaks into the scrape).

Counters and the latency histogram are fed as things happen (the API layer
for decisions, the service's event hook for drift repairs and port alarms,
its identity hook for refused claims);
gauges are computed at scrape time from the service and the switch sessions,
so they can never drift from the truth.

    enforcement_decisions_total{violation, action, outcome}
        Apply calls: outcome is the enforcement's state (active, pending,
        failed) or the refusal's status code (invalid_argument, not_found...).
    enforcement_apply_latency_seconds
        From Apply received to answered, switch confirmation included.
    enforcement_events_total{kind}
        applied, lifted, expired, reapplied, drift_repaired, port_over_budget,
        identity_refused... (events stored: refused claims after the throttle)
    enforcement_drift_repairs_total
        Enforcements whose rules were found altered or missing and put back.
    enforcement_port_over_budget_total{budget}
        Port alarms the controller reported: an access port over its learn or
        storm budget (packets/s), banned from learning for MAC churn
        (learning_ban) or refusing hosts beyond its maximum (max_hosts).
    enforcement_identity_refused_total{kind}
        Claims on who is where the controller refused, every one, before the
        throttle that stores one event per claim and interval: address_claim,
        mac_claim, lldp_forged, dhcp_untrusted. Who claimed is in the events,
        never in a label: a series per subscriber would grow without bound.
    enforcement_proofs_total{result}, enforcement_probes_total
        Proofs in the data plane (enforcement.lifecycle.proving): proven,
        failed, unprovable (nothing in it a probe can show); the probe
        packets they sent.
    enforcement_active{action}
        Live (active or pending) enforcements.
    openflow_connected_switches
    openflow_packet_ins_total{outcome}, openflow_packet_in_queue
        Packet-in copies learned from or dropped (oldest first, when they come
        faster than they are learned from), and how many wait.
    openflow_lldp_refused_total{reason}
        LLDP frames that failed authentication (unreadable, no authenticator,
        bad authenticator, stale, from the future, replayed) or were carried
        by a subscriber (subscriber line: the controller's own probe, on an
        inventory line): every one, changing nothing; the identity events
        about them are throttled.
    openflow_lldp_probes_total{kind}, openflow_lldp_ports{kind},
    openflow_lldp_link_timeout_seconds
        LLDP packet-outs discovery sent (link, new: a port on its own;
        new_sweep, settled_sweep: one frame out of many ports of a switch),
        the switch ports up by how they are probed (link, new, settled),
        and how long a link direction may go unheard before it goes down.
    enforcement_switch_rules{datapath_id}, enforcement_switch_meters{datapath_id}
        What the controller keeps on each switch for its enforcements.
    enforcement_policy_info{version}
        Always 1, labelled with the version (content hash) of the policy this
        instance decides with: instances that differ after a reload show it.
"""
from __future__ import annotations

import collections
import ssl

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from enforcement.domain.model import BUDGET_UNITS, IDENTITY_KINDS, PORT_OVER_BUDGET

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)


class Metrics:
    def __init__(self, service=None, network=None):
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "enforcement_decisions", "Apply calls by violation, action and outcome",
            ["violation", "action", "outcome"], registry=self.registry)
        self.apply_latency = Histogram(
            "enforcement_apply_latency_seconds",
            "Time from Apply received to answered, switch confirmation included",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.events = Counter("enforcement_events", "Enforcement events by kind",
                              ["kind"], registry=self.registry)
        self.drift_repairs = Counter(
            "enforcement_drift_repairs",
            "Enforcements whose rules were found altered or missing and put back",
            registry=self.registry)
        self.port_over_budget = Counter(
            "enforcement_port_over_budget",
            "Port alarms: an access port over one of its control-plane budgets",
            ["budget"], registry=self.registry)
        for budget in BUDGET_UNITS:  # at 0 from the start, so rate() sees the first
            self.port_over_budget.labels(budget)
        self.proofs = Counter("enforcement_proofs", "Proofs in the data plane by result",
                              ["result"], registry=self.registry)
        self.probes = Counter("enforcement_probes", "Probe packets the proofs sent",
                              registry=self.registry)
        identity_refused = Counter(
            "enforcement_identity_refused",
            "Refused claims on who is where (every one, stored or throttled), by kind",
            ["kind"], registry=self.registry)
        # Children looked up once: a flood of forged frames calls on_identity per frame.
        self._identity_refused = {kind: identity_refused.labels(kind)
                                  for kind in IDENTITY_KINDS}
        if service is not None:
            self.registry.register(_StateCollector(service, network))
            service.add_event_listener(self.on_event)
            service.add_identity_listener(self.on_identity)

    def observe_apply(self, violation: str, action: str, outcome: str,
                      seconds: float) -> None:
        self.decisions.labels(violation, action, outcome).inc()
        self.apply_latency.observe(seconds)

    def on_event(self, kind: str, record) -> None:
        self.events.labels(kind).inc()
        if kind == "drift_repaired":
            self.drift_repairs.inc()
        elif kind == PORT_OVER_BUDGET:
            self.port_over_budget.labels(record.budget).inc()

    def observe_proof(self, state: str, probes: int) -> None:
        self.proofs.labels(state).inc()
        self.probes.inc(probes)

    def on_identity(self, event) -> None:
        self._identity_refused[event.kind].inc()

    def serve(self, host: str, port: int,
              tls: tuple[str, str, str] | None = None) -> tuple[object, int]:
        """Starts the /metrics HTTP endpoint; returns the server and its port.
        tls: (certificate, key, client CA): HTTPS that requires a client
        certificate signed by that CA."""
        if tls is None:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
        else:
            cert, key, client_ca = tls
            server, _ = start_http_server(port, addr=host, registry=self.registry,
                                          certfile=cert, keyfile=key, client_cafile=client_ca,
                                          client_auth_required=True,
                                          tls_min_version=ssl.TLSVersion.TLSv1_2)
        return server, server.server_port


class _StateCollector:
    def __init__(self, service, network):
        self._service = service
        self._network = network

    def describe(self):
        return []  # computed at scrape time; nothing to register up front

    def collect(self):
        live = self._service.live_summary()
        active = GaugeMetricFamily("enforcement_active",
                                   "Live (active or pending) enforcements by action",
                                   labels=["action"])
        for action, count in sorted(live.by_action.items()):
            active.add_metric([action], count)
        yield active
        rules = GaugeMetricFamily("enforcement_switch_rules",
                                  "Enforcement flow rules the controller keeps on a switch",
                                  labels=["datapath_id"])
        meters = GaugeMetricFamily("enforcement_switch_meters",
                                   "Meters the controller keeps on a switch",
                                   labels=["datapath_id"])
        for dpid in sorted(set(live.rules_by_switch) | set(live.meters_by_switch)):
            rules.add_metric([f"{dpid:016x}"], live.rules_by_switch.get(dpid, 0))
            meters.add_metric([f"{dpid:016x}"], live.meters_by_switch.get(dpid, 0))
        yield rules
        yield meters
        leading, epoch = self._service.leadership_state()
        yield GaugeMetricFamily("enforcement_leader",
                                "1 on the instance that leads (changes switches and "
                                "store), 0 on a follower", value=int(leading))
        policy = GaugeMetricFamily("enforcement_policy_info",
                                   "The version (content hash) of the policy in force "
                                   "on this instance", labels=["version"])
        policy.add_metric([self._service.policy.version], 1)
        yield policy
        yield GaugeMetricFamily("enforcement_leader_epoch",
                                "The newest leadership epoch this instance knows (the "
                                "OpenFlow generation id of the master)", value=epoch)
        if self._network is not None:
            yield GaugeMetricFamily("openflow_connected_switches",
                                    "Switches with an OpenFlow session to the controller",
                                    value=len(self._network.connected_switches()))
            queue = getattr(self._network, "packet_ins", None)
            if queue is not None:
                packet_ins = CounterMetricFamily(
                    "openflow_packet_ins", "Packet-in copies by what became of them "
                    "(handled: learned from; dropped: the oldest, when the queue was full)",
                    labels=["outcome"])
                packet_ins.add_metric(["handled"], queue.handled)
                packet_ins.add_metric(["dropped"], queue.dropped)
                yield packet_ins
                yield GaugeMetricFamily("openflow_packet_in_queue",
                                        "Packet-ins waiting to be learned from",
                                        value=queue.depth())
            lldp_refused = getattr(self._network, "lldp_refused", None)
            if lldp_refused is not None:
                refused = CounterMetricFamily(
                    "openflow_lldp_refused", "LLDP frames refused by discovery (failed "
                    "authentication), by reason", labels=["reason"])
                for reason, count in sorted(lldp_refused().items()):
                    refused.add_metric([reason], count)
                yield refused
            yield from self._discovery_metrics()

    def _discovery_metrics(self):
        probes_sent = getattr(self._network, "lldp_probes", None)
        if probes_sent is None:
            return
        probes = CounterMetricFamily(
            "openflow_lldp_probes", "LLDP packet-outs discovery sent, by what they probed "
            "(a sweep is one frame out of many ports of a switch)", labels=["kind"])
        for kind, count in sorted(probes_sent().items()):
            probes.add_metric([kind], count)
        yield probes
        ports = GaugeMetricFamily("openflow_lldp_ports", "Switch ports up, by how "
                                  "discovery probes them", labels=["kind"])
        for kind, count in sorted(self._network.lldp_ports().items()):
            ports.add_metric([kind], count)
        yield ports
        timeout = self._network.lldp_link_timeout()
        if timeout is not None:
            yield GaugeMetricFamily("openflow_lldp_link_timeout_seconds",
                                    "How long a link direction may go unheard before "
                                    "it goes down", value=timeout)


LiveSummary = collections.namedtuple("LiveSummary",
                                     "by_action rules_by_switch meters_by_switch")
