"""The desired enforcement state of a switch, and the difference to push.

Pure functions: the service computes what every switch must hold from all
active enforcements, the controller pushes only the difference. Two
enforcements that want the very same flow (same table, priority and match)
share it: the oldest one's rule is kept, and it stays until neither wants it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from enforcement.domain.flows import FlowRule, MeterSpec


@dataclasses.dataclass(frozen=True)
class SwitchState:
    rules: dict  # FlowRule.key -> FlowRule
    meters: dict  # meter_id -> MeterSpec

    @classmethod
    def empty(cls) -> SwitchState:
        return cls({}, {})

    @classmethod
    def of(cls, rules: Iterable[FlowRule], meters: Iterable[MeterSpec]) -> SwitchState:
        by_key: dict = {}
        for rule in rules:
            by_key.setdefault(rule.key, rule)
        return cls(by_key, {m.meter_id: m for m in meters})


@dataclasses.dataclass(frozen=True)
class Change:
    """What to send, in the order to send it."""
    meters_to_add: tuple[MeterSpec, ...]
    meters_to_modify: tuple[MeterSpec, ...]
    rules_to_delete: tuple[FlowRule, ...]
    rules_to_add: tuple[FlowRule, ...]
    meters_to_delete: tuple[MeterSpec, ...]

    @property
    def empty(self) -> bool:
        return not (self.meters_to_add or self.meters_to_modify or self.rules_to_delete
                    or self.rules_to_add or self.meters_to_delete)


def diff(actual: SwitchState, desired: SwitchState) -> Change:
    """Meters first (new flows point at them), deletes before adds (so a
    narrowing never passes through a moment with both), stale meters last
    (once no flow points at them). A rule whose key stays but whose cookie or
    instructions change is re-added: OFPFC_ADD replaces it in place."""
    return Change(
        meters_to_add=tuple(m for i, m in sorted(desired.meters.items())
                            if i not in actual.meters),
        meters_to_modify=tuple(m for i, m in sorted(desired.meters.items())
                               if i in actual.meters and actual.meters[i] != m),
        rules_to_delete=tuple(r for k, r in actual.rules.items() if k not in desired.rules),
        rules_to_add=tuple(r for k, r in desired.rules.items() if actual.rules.get(k) != r),
        meters_to_delete=tuple(m for i, m in sorted(actual.meters.items())
                               if i not in desired.meters),
    )


def without_in_flight(change: Change, seen: SwitchState, before: SwitchState) -> Change:
    """A drift audit's change less what decisions did while the switch was
    read: where the read saw what the switch was confirmed holding when the
    read began, the difference from now is their doing, not drift."""
    def drifted(rule: FlowRule) -> bool:
        return seen.rules.get(rule.key) != before.rules.get(rule.key)

    def meter_drifted(meter: MeterSpec) -> bool:
        return seen.meters.get(meter.meter_id) != before.meters.get(meter.meter_id)

    return Change(
        meters_to_add=tuple(filter(meter_drifted, change.meters_to_add)),
        meters_to_modify=tuple(filter(meter_drifted, change.meters_to_modify)),
        rules_to_delete=tuple(filter(drifted, change.rules_to_delete)),
        rules_to_add=tuple(filter(drifted, change.rules_to_add)),
        meters_to_delete=tuple(filter(meter_drifted, change.meters_to_delete)),
    )


def diff_part(actual: SwitchState, rules: dict, meters: dict) -> Change:
    """diff() restricted to some rule keys and meter ids: `rules` maps each
    key to the rule the switch must hold under it (None: none), `meters` the
    same for meter ids. What a handful of decisions touch costs in proportion
    to them, not to everything the switch holds."""
    held_meters = {i: actual.meters.get(i) for i in meters}
    return Change(
        meters_to_add=tuple(m for i, m in sorted(meters.items())
                            if m is not None and held_meters[i] is None),
        meters_to_modify=tuple(m for i, m in sorted(meters.items())
                               if m is not None and held_meters[i] not in (None, m)),
        rules_to_delete=tuple(actual.rules[k] for k, r in rules.items()
                              if r is None and k in actual.rules),
        rules_to_add=tuple(r for k, r in rules.items()
                           if r is not None and actual.rules.get(k) != r),
        meters_to_delete=tuple(actual.meters[i] for i, m in sorted(meters.items())
                               if m is None and held_meters[i] is not None),
    )


def apply_change(state: SwitchState, change: Change) -> None:
    """Updates a switch's confirmed state in place once it took `change`."""
    for rule in change.rules_to_delete:
        if state.rules.get(rule.key) == rule:
            del state.rules[rule.key]
    for rule in change.rules_to_add:
        state.rules[rule.key] = rule
    for meter in change.meters_to_delete:
        state.meters.pop(meter.meter_id, None)
    for meter in (*change.meters_to_add, *change.meters_to_modify):
        state.meters[meter.meter_id] = meter


def audit_parts(wanted: int, held: int, limit: int) -> int:
    """Into how many parts (by cookie, a power of two) a drift audit splits a
    switch's flows: one, i.e. read them all, when the switch holds a number
    of flows other than wanted (some were deleted or added), else as few as
    keep each part at or under `limit` flows."""
    parts = 1
    if held == wanted:
        while wanted > parts * limit:
            parts *= 2
    return parts


class DesiredIndex:
    """What every switch must hold, kept up to date one enforcement at a time.

    Each rule key lists the live enforcements that want it, oldest first (by
    `order`, e.g. (created_at, serial)); the oldest one's rule is the one the
    switch holds, as SwitchState.of() decides for a whole list. Adding or
    removing an enforcement says which keys and meters it touched, so only
    those are compared with the switch.
    """

    def __init__(self):
        self._rules: dict[int, dict] = {}    # dpid -> key -> [(order, rule), ...]
        self._meters: dict[int, dict] = {}   # dpid -> meter_id -> [(order, spec), ...]

    def add(self, order, rules: Iterable[FlowRule], meters: Iterable[MeterSpec]) -> None:
        for rule in rules:
            _insert(self._rules.setdefault(rule.dpid, {}).setdefault(rule.key, []),
                    order, rule)
        for meter in meters:
            _insert(self._meters.setdefault(meter.dpid, {}).setdefault(meter.meter_id, []),
                    order, meter)

    def remove(self, order, rules: Iterable[FlowRule], meters: Iterable[MeterSpec]) -> None:
        for rule in rules:
            _drop(self._rules.get(rule.dpid, {}), rule.key, order, rule)
        for meter in meters:
            _drop(self._meters.get(meter.dpid, {}), meter.meter_id, order, meter)

    def rule(self, dpid: int, key) -> FlowRule | None:
        owners = self._rules.get(dpid, {}).get(key)
        return owners[0][1] if owners else None

    def meter(self, dpid: int, meter_id: int) -> MeterSpec | None:
        owners = self._meters.get(dpid, {}).get(meter_id)
        return owners[0][1] if owners else None

    def part(self, dpid: int, keys: Iterable, meter_ids: Iterable[int]) -> tuple[dict, dict]:
        """(rules, meters) for diff_part: what the switch must hold under
        these keys and meter ids."""
        return ({k: self.rule(dpid, k) for k in keys},
                {i: self.meter(dpid, i) for i in meter_ids})

    def state(self, dpid: int) -> SwitchState:
        """Everything the switch must hold (a fresh copy: for a full sync)."""
        return SwitchState({k: owners[0][1] for k, owners in self._rules.get(dpid, {}).items()},
                           {i: owners[0][1] for i, owners in self._meters.get(dpid, {}).items()})

    def counts(self, dpid: int) -> tuple[int, int]:
        return len(self._rules.get(dpid, {})), len(self._meters.get(dpid, {}))

    def switches(self) -> list[int]:
        return sorted(d for d in {*self._rules, *self._meters}
                      if self._rules.get(d) or self._meters.get(d))


def _insert(owners: list, order, item) -> None:
    at = len(owners)
    while at and owners[at - 1][0] > order:
        at -= 1
    owners.insert(at, (order, item))


def _drop(by_key: dict, key, order, item) -> None:
    owners = by_key.get(key)
    if not owners:
        return
    for at, (o, it) in enumerate(owners):
        if o == order and it == item:
            del owners[at]
            break
    if not owners:
        del by_key[key]
