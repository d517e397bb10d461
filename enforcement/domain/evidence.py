"""What an enforcement has done: its switches' counters, added up across resets.

Pure functions of plain data. A read of a switch gives, per enforcement
flow, its packet and byte counters, and per enforcement meter what went
in and what its band dropped (FlowSample, MeterSample). `fold` turns a
read into new Evidence for the enforcements whose counters changed.

The invariant it keeps: no packet is counted twice, and a counter that
starts again from zero loses nothing already read. A switch counts from
zero when a flow or meter is made anew (a switch that reconnected empty
and got its rules back, a rule deleted and added); the controller restarts
and reads counters it counted before. So each counter keeps its last raw
reading: a later reading adds what grew; one smaller than the last was
reset, and is new in full.

The flow's age (its duration) does not tell a reset: Open vSwitch keeps a
flow's counters when the same flow is added again in place (what a
restarted controller does to a reconnecting switch) but starts its
duration again (seen in tests/e2e/test_evidence.py: counting such a flow
anew counted its packets twice). The bound instead: what a counter counted
after its last read and before it vanished, and a counter made anew that
passed its old reading before the next read (its first packets then look
like the old ones), are not counted. Evidence may fall short; it never
claims a packet that was not there.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from enforcement.domain.flows import ApplyMeter, FlowRule
from enforcement.domain.model import Enforcement

DROPPED, METERED, ALLOWED = "dropped", "metered", "allowed"
VERDICTS = (DROPPED, METERED, ALLOWED)

HOUR = 3600.0
# "In the last hour" is told from the totals after each change, kept at most
# one per HISTORY_STEP seconds: to within that, and never more than was done.
HISTORY_STEP = 300.0


@dataclasses.dataclass(frozen=True)
class FlowSample:
    """One enforcement flow's counters, as a switch reported them."""
    dpid: int
    key: tuple    # FlowRule.key: (dpid, table, priority, match)
    cookie: int
    packets: int
    bytes: int
    verdict: str = DROPPED  # what the flow does with what it matches (verdict_of)
    # Proof probes it counted since the last read (controller/openflow/probetally.py)
    probes: tuple[int, int] = (0, 0)


@dataclasses.dataclass(frozen=True)
class MeterSample:
    """One enforcement meter's statistics: what went in, what its band dropped."""
    dpid: int
    meter_id: int
    packets: int
    bytes: int
    dropped_packets: int
    dropped_bytes: int
    probes: tuple[int, int] = (0, 0)  # proof probes that went in since the last read


@dataclasses.dataclass(frozen=True)
class SwitchCounters:
    dpid: int
    flows: tuple[FlowSample, ...]
    meters: tuple[MeterSample, ...]


@dataclasses.dataclass(frozen=True)
class Count:
    """One counter (a flow's or a meter's): what it counted in all, the
    proof probes among them, and its last raw reading, from which the next
    one is told apart."""
    totals: tuple[int, ...]
    raw: tuple[int, ...]
    last_matched_at: float | None = None
    probes: tuple[int, ...] = ()

    @property
    def net(self) -> tuple[int, ...]:
        """What it counted of the subscriber's: its totals less the probes."""
        if not self.probes:
            return self.totals
        return tuple(max(0, t - p) for t, p in zip(self.totals, self.probes, strict=True))


def advance(count: Count | None, raw: tuple[int, ...], at: float,
            probes: tuple[int, ...] = ()) -> tuple[Count, bool]:
    """The counter after a reading at `at` (probes: the proof probes it
    counted since the last reading); and whether it had been reset (found
    smaller than at the reading before). It matched at `at` when what it
    counted of the subscriber's grew."""
    if count is None:
        # First seen: a new counter counted from zero (one seen before a
        # restart comes with its stored Count, not here).
        delta, reset = raw, False
    elif any(r < p for r, p in zip(raw, count.raw, strict=True)):
        delta, reset = raw, True
    else:
        delta, reset = tuple(r - p for r, p in zip(raw, count.raw, strict=True)), False
    zeros = (0,) * len(raw)
    previous = count.totals if count is not None else zeros
    probed = tuple(a + b for a, b in zip(
        (count.probes or zeros) if count is not None else zeros, probes or zeros, strict=True))
    after = Count(tuple(t + d for t, d in zip(previous, delta, strict=True)), raw, None,
                  probed if any(probed) else ())
    moved = after.net != (count.net if count is not None else zeros)
    last = at if moved else (count.last_matched_at if count is not None else None)
    return dataclasses.replace(after, last_matched_at=last), reset


@dataclasses.dataclass(frozen=True)
class RuleCount:
    dpid: int
    rule: str      # the flow without cookie and actions (rule_label)
    verdict: str   # DROPPED, METERED or ALLOWED
    count: Count   # (packets, bytes)

    @property
    def packets(self) -> int:
        return self.count.net[0]

    @property
    def bytes(self) -> int:
        return self.count.net[1]


@dataclasses.dataclass(frozen=True)
class MeterCount:
    dpid: int
    meter_id: int
    count: Count   # (packets in, bytes in, packets dropped, bytes dropped)

    @property
    def passed(self) -> tuple[int, int]:
        t = self.count.net
        return max(0, t[0] - t[2]), max(0, t[1] - t[3])

    @property
    def dropped(self) -> tuple[int, int]:
        return self.count.net[2], self.count.net[3]


@dataclasses.dataclass(frozen=True)
class Evidence:
    enforcement_id: str
    counted_since: float
    rules: tuple[RuleCount, ...] = ()
    meters: tuple[MeterCount, ...] = ()
    resets: int = 0
    # Moved since the last evidence event (see EvidenceBook): cleared when
    # one is sent.
    unreported: bool = False
    read_at: float = 0.0  # when its switches were last read (0: unknown)
    # (at, totals()) after its changes, back to an hour ago (see noted)
    history: tuple[tuple[float, tuple[int, ...]], ...] = ()

    def total(self, verdict: str) -> tuple[int, int]:
        """(packets, bytes) of its rules with that verdict, on every switch."""
        chosen = [r for r in self.rules if r.verdict == verdict]
        return sum(r.packets for r in chosen), sum(r.bytes for r in chosen)

    def totals(self) -> tuple[int, ...]:
        """(packets, bytes) of each verdict, in VERDICTS order, flattened."""
        return tuple(n for verdict in VERDICTS for n in self.total(verdict))

    @property
    def last_matched_at(self) -> float | None:
        counts = [r.count for r in self.rules] + [m.count for m in self.meters]
        times = [c.last_matched_at for c in counts if c.last_matched_at is not None]
        return max(times, default=None)


def noted(evidence: Evidence, at: float) -> Evidence:
    """Its totals now, in its history: a change within HISTORY_STEP of the
    last one noted joins it (that entry's time stays, so the totals at a
    time are never less than they were); entries older than an hour go,
    but the newest of them, which says what the totals were an hour ago."""
    now = evidence.totals()
    history = list(evidence.history)
    if history and history[-1][1] == now:
        return evidence
    if history and at - history[-1][0] < HISTORY_STEP:
        history[-1] = (history[-1][0], now)
    else:
        history.append((at, now))
    while len(history) > 1 and history[1][0] <= at - HOUR:
        history.pop(0)
    return dataclasses.replace(evidence, history=tuple(history))


def last_hour(evidence: Evidence, now: float) -> tuple[int, ...] | None:
    """What it did in the hour before now, as totals() (None: not known,
    for evidence counted for over an hour before its history was kept)."""
    start = now - HOUR
    before = [totals for at, totals in evidence.history if at <= start]
    if before:
        base = before[-1]
    elif evidence.counted_since > start:
        base = (0,) * (2 * len(VERDICTS))
    else:
        return None
    return tuple(n - b for n, b in zip(evidence.totals(), base, strict=True))


def rule_label(key: tuple) -> str:
    """A flow as Rule.text names it, without cookie and actions: what
    identifies it on its switch."""
    dpid, table, priority, match = key
    text = FlowRule(dpid, table, priority, 0, match).text()
    return text.replace(" cookie=0x0", "").rsplit(" actions=", 1)[0]


def verdict_of(rule: FlowRule) -> str:
    """What a flow does with what it matches: no instructions drop it."""
    if not rule.instructions:
        return DROPPED
    return METERED if any(isinstance(i, ApplyMeter) for i in rule.instructions) else ALLOWED


@dataclasses.dataclass(frozen=True)
class Owners:
    """Who owns what a switch reports, for one read: enforcement ids by
    cookie and by (dpid, meter id)."""
    by_cookie: Mapping[int, str]
    by_meter: Mapping[tuple[int, int], str]


def fold(book: Mapping[str, Evidence], read: SwitchCounters, owners: Owners,
         at: float, label: Callable[[tuple], str] = rule_label) -> dict[str, Evidence]:
    """The new Evidence of every enforcement whose counters on this switch
    changed at this read (moved, or reset), from book's. A counter that did
    not change costs a lookup and a comparison: a read of 100,000 idle
    flows rebuilds nothing. label: rule_label, or a memo of it (a rule's
    label is text the read would otherwise render again for every flow)."""
    changed: dict[str, Evidence] = {}
    rules: dict[str, dict[tuple[int, str], RuleCount]] = {}
    meters: dict[str, dict[tuple[int, int], MeterCount]] = {}

    def current(owner: str) -> Evidence:
        found = changed.get(owner) or book.get(owner)
        return found if found is not None else Evidence(owner, at)

    for sample in read.flows:
        owner = owners.by_cookie.get(sample.cookie)
        if owner is None:
            continue  # an ended enforcement's flow, on its way out
        evidence = current(owner)
        name = label(sample.key)
        # An enforcement has a few rules: a scan of them beats an index.
        known = next((r for r in evidence.rules if r.rule == name and r.dpid == sample.dpid),
                     None)
        raw = (sample.packets, sample.bytes)
        if known is not None and known.count.raw == raw and not any(sample.probes):
            continue
        count, reset = advance(known.count if known else None, raw, at, sample.probes)
        mine = rules.setdefault(owner, {(r.dpid, r.rule): r for r in evidence.rules})
        mine[(sample.dpid, name)] = RuleCount(sample.dpid, name, sample.verdict, count)
        changed[owner] = _with(evidence, rules=tuple(mine.values()), reset=reset,
                               moved=count.net != (known.count.net if known else (0, 0)))
    for meter in read.meters:
        owner = owners.by_meter.get((meter.dpid, meter.meter_id))
        if owner is None:
            continue
        evidence = current(owner)
        known_meter = next((m for m in evidence.meters
                            if m.meter_id == meter.meter_id and m.dpid == meter.dpid), None)
        raw_meter = (meter.packets, meter.bytes, meter.dropped_packets, meter.dropped_bytes)
        if known_meter is not None and known_meter.count.raw == raw_meter \
                and not any(meter.probes):
            continue
        count, reset = advance(known_meter.count if known_meter else None, raw_meter, at,
                               (*meter.probes, 0, 0))
        theirs = meters.setdefault(owner, {(m.dpid, m.meter_id): m for m in evidence.meters})
        theirs[(meter.dpid, meter.meter_id)] = MeterCount(meter.dpid, meter.meter_id, count)
        before = known_meter.count.net if known_meter else (0, 0, 0, 0)
        changed[owner] = _with(evidence, meters=tuple(theirs.values()), reset=reset,
                               moved=count.net != before)
    return changed


def _with(evidence: Evidence, *, rules=None, meters=None, reset: bool,
          moved: bool) -> Evidence:
    return dataclasses.replace(
        evidence,
        rules=evidence.rules if rules is None else rules,
        meters=evidence.meters if meters is None else meters,
        resets=evidence.resets + reset,
        unreported=evidence.unreported or moved)


def moved_between(before: Evidence | None, after: Evidence) -> dict[str, tuple[int, int]]:
    """What grew from one version to the next, by verdict, plus the meters'
    ("meter_passed", "meter_dropped"): (packets, bytes). For aggregates
    (metrics), never kept per enforcement."""
    grown: dict[str, tuple[int, int]] = {}
    for verdict in (DROPPED, METERED, ALLOWED):
        now, then = after.total(verdict), before.total(verdict) if before else (0, 0)
        if now != then:
            grown[verdict] = (now[0] - then[0], now[1] - then[1])
    for name, pick in (("meter_passed", lambda m: m.passed),
                       ("meter_dropped", lambda m: m.dropped)):
        now_p = sum(pick(m)[0] for m in after.meters), sum(pick(m)[1] for m in after.meters)
        then_p = ((sum(pick(m)[0] for m in before.meters), sum(pick(m)[1] for m in before.meters))
                  if before else (0, 0))
        if now_p != then_p:
            grown[name] = (now_p[0] - then_p[0], now_p[1] - then_p[1])
    return grown


# ---- the stored form ---------------------------------------------------------


def to_dict(evidence: Evidence) -> dict:
    return {"id": evidence.enforcement_id, "since": evidence.counted_since,
            "resets": evidence.resets, "unreported": evidence.unreported,
            "read_at": evidence.read_at,
            "history": [[at, list(totals)] for at, totals in evidence.history],
            "rules": [[r.dpid, r.rule, r.verdict, *_count(r.count)] for r in evidence.rules],
            "meters": [[m.dpid, m.meter_id, *_count(m.count)] for m in evidence.meters]}


def from_dict(data: dict) -> Evidence:
    return Evidence(
        data["id"], data["since"],
        tuple(RuleCount(d, rule, verdict, _uncount(*rest))
              for d, rule, verdict, *rest in data["rules"]),
        tuple(MeterCount(d, meter_id, _uncount(*rest)) for d, meter_id, *rest in data["meters"]),
        data["resets"], data.get("unreported", False), data.get("read_at", 0.0),
        tuple((at, tuple(totals)) for at, totals in data.get("history", ())))


def _count(count: Count) -> list:
    return [list(count.totals), list(count.raw), count.last_matched_at, list(count.probes)]


def _uncount(totals, raw, last, probes=()) -> Count:
    return Count(tuple(totals), tuple(raw), last, tuple(probes))


@dataclasses.dataclass(frozen=True)
class EvidenceEvent:
    """What an evidence event is stored from: the enforcement it reports on
    (its id, case, subscriber and state go in the event), and its evidence."""
    record: Enforcement
    evidence: Evidence
