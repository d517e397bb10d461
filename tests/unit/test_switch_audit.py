"""The drift audit's count of a switch's flows (controller/openflow/switchsync.py),
against a scripted switch: decisions that change the switch while it
counts must not make it read every flow. At 100,000 live that read took
seconds, and every decision's barrier waited behind the dump."""
import itertools
import types

from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.openflow import switchsync
from controller.openflow.switchsync import SwitchSync
from tests.doubles import DPID, Fabric, rule


class Switch:
    """Answers what SwitchSync asks: flow_mods and barriers, a count of flows
    (what `count` says, after `meanwhile` ran), flow stats (recorded: which
    part was read) and meters (none)."""

    def __init__(self):
        self.xids = itertools.count(1)
        self.count = lambda: 0
        self.meanwhile = lambda: None
        self.reads = []  # the cookie masks of the flow stats requests

    def transact(self, dpid, messages, timeout, meanwhile=None):
        replies = {}
        for message in messages:
            message.set_xid(next(self.xids))
            if isinstance(message, parser.OFPAggregateStatsRequest):
                self.meanwhile()
                replies[message.xid] = [types.SimpleNamespace(flow_count=self.count())]
            elif isinstance(message, parser.OFPFlowStatsRequest):
                self.reads.append(message.cookie_mask)
                replies[message.xid] = []
            elif isinstance(message, parser.OFPMeterConfigStatsRequest):
                replies[message.xid] = []
        return replies


def test_an_apply_and_a_lift_while_the_audit_counts_do_not_make_it_read_every_flow(
        monkeypatch):
    monkeypatch.setattr(switchsync, "AUDIT_FLOWS", 2)
    switch = Switch()
    sync = SwitchSync(switch.transact, Fabric())
    sync.sync_part(DPID, {rule(n).key: rule(n) for n in range(8)}, {}, 1.0)

    # Counted once nobody changes anything: a quarter of the flows is read.
    switch.count = lambda: 8
    assert sync.audit(DPID, 1.0) is not None
    parts = [mask & 0xFFFF for mask in switch.reads]
    assert parts == [3], parts  # 4 parts: the low two bits of the cookie

    # An apply then a lift land while it counts; the count caught the switch
    # in between, with two flows more than before and after.
    def apply_then_lift():
        sync.sync_part(DPID, {rule(8).key: rule(8)}, {}, 1.0)
        sync.sync_part(DPID, {rule(8).key: None}, {}, 1.0)
    switch.meanwhile, switch.count = apply_then_lift, lambda: 10
    switch.reads.clear()
    sync.audit(DPID, 1.0)
    assert [mask & 0xFFFF for mask in switch.reads] == [3], "every flow was read"

    # Flows deleted behind its back, nothing sent meanwhile: all are read.
    switch.meanwhile, switch.count = lambda: None, lambda: 6
    switch.reads.clear()
    sync.audit(DPID, 1.0)
    assert [mask & 0xFFFF for mask in switch.reads] == [0], "a deletion went unread"


class Holding(Switch):
    """Holds flows: flow stats answer those whose cookie matches, each
    request counted with the transaction it came in."""

    def __init__(self, flows):
        super().__init__()
        self.flows = flows
        self.transactions = []

    def transact(self, dpid, messages, timeout, meanwhile=None):
        replies = super().transact(dpid, messages, timeout, meanwhile)
        self.transactions.append([type(m).__name__ for m in messages])
        for message in messages:
            if isinstance(message, parser.OFPFlowStatsRequest):
                replies[message.xid] = [types.SimpleNamespace(
                    table_id=r.table_id, priority=r.priority, cookie=r.cookie,
                    match=parser.OFPMatch(**dict(r.match)), instructions=[])
                    for r in self.flows
                    if r.cookie & message.cookie_mask == message.cookie]
        return replies


def test_a_full_read_asks_for_a_chunk_at_a_time_so_a_barrier_never_waits_behind_it(
        monkeypatch):
    """Read whole (a stray was counted), eight flows in chunks of two: four
    requests, each in a transaction of its own (a decision's barrier can go
    between them), and together they saw every flow: nothing to repair."""
    monkeypatch.setattr(switchsync, "AUDIT_CHUNK", 2)
    flows = [rule(n) for n in range(8)]
    switch = Holding(flows)
    sync = SwitchSync(switch.transact, Fabric())
    sync.sync_part(DPID, {r.key: r for r in flows}, {}, 1.0)
    switch.count = lambda: 9
    switch.reads.clear()
    switch.transactions.clear()
    change = sync.audit(DPID, 1.0)
    reads = [t for t in switch.transactions if "OFPFlowStatsRequest" in t]
    assert reads == [["OFPFlowStatsRequest"]] * 4
    assert sorted(mask & 0xFFFF for mask in switch.reads) == [3] * 4
    assert change is not None and not change.rules_to_add and not change.rules_to_delete
