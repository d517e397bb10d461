"""The Prometheus endpoint of the real controller process, scraped over HTTP
while it runs real switches: decisions, latency, live enforcements, rules
per switch, connected switches and drift repairs move as they should.

Topology (topologies.LinearTopo(2, 2)): h1, h2 on s1; h3, h4 on s2.
"""
import contextlib
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies

pytestmark = pytest.mark.mininet


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory(topologies.LinearTopo(switches=2, hosts_per_switch=2),
                       expected_links=2, controller_args=["--audit-interval", "1"])


def scrape(lab) -> dict[tuple, float]:
    url = f"http://{lab.controller.metrics_address}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def spam(ip, request_id):
    return pb.ApplyRequest(request_id=request_id, case_id="M-1",
                           subscriber=pb.Subscriber(ip=ip), violation=pb.VIOLATION_SPAM,
                           reason="metrics test")


def test_counters_and_gauges_follow_decisions_and_repairs(lab):
    before = scrape(lab)
    assert value(before, "openflow_connected_switches") == 2
    assert value(before, "enforcement_apply_latency_seconds_count") == 0
    # Refused identity claims, by kind only, there at zero before the first.
    assert {labels for name, labels in before if name == "enforcement_identity_refused_total"
            } == {(("kind", kind),) for kind in ("address_claim", "mac_claim", "lldp_forged",
                                                 "dhcp_untrusted")}
    h1 = lab.host("h1").IP()

    record = lab.stub.Apply(spam(h1, "m-1"))
    for bad in (spam("010.0.0.1", "m-2"), spam("10.0.0.99", "m-3")):
        with contextlib.suppress(Exception):
            lab.stub.Apply(bad)
    during = scrape(lab)
    assert value(during, "enforcement_decisions_total", violation="spam", action="block",
                 outcome="active") == 1
    assert value(during, "enforcement_decisions_total", violation="spam", action="none",
                 outcome="invalid_argument") == 1
    assert value(during, "enforcement_decisions_total", violation="spam", action="none",
                 outcome="not_found") == 1
    assert value(during, "enforcement_apply_latency_seconds_count") == 3
    assert 0 < value(during, "enforcement_apply_latency_seconds_sum") < 10
    assert value(during, "enforcement_active", action="block") == 1
    s1 = f"{record.location.datapath_id:016x}"
    assert value(during, "enforcement_switch_rules", datapath_id=s1) == len(record.rules)
    assert value(during, "enforcement_events_total", kind="applied") == 1

    # A rule deleted by hand is put back by the drift audit, and counted.
    cookie = record.rules[0].cookie
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "del-flows", "s1",
                    f"cookie={cookie:#x}/-1"], check=True)
    harness.wait_until(lambda: value(scrape(lab), "enforcement_drift_repairs_total") >= 1,
                       10, "a drift repair counted")

    lab.stub.Lift(pb.LiftRequest(id=record.id, reason="done"))
    after = scrape(lab)
    assert value(after, "enforcement_active", action="block") == 0
    assert value(after, "enforcement_events_total", kind="lifted") == 1
    assert lab.log_problems() == []
