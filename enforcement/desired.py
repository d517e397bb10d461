"""The desired enforcement state of a switch, and the difference to push.

Pure functions: the service computes what every switch must hold from all
active enforcements, the controller pushes only the difference. Two
enforcements that want the very same flow (same table, priority and match)
share it: the oldest one's rule is kept, and it stays until neither wants it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from enforcement.flows import FlowRule, MeterSpec


@dataclasses.dataclass(frozen=True)
class SwitchState:
    rules: dict  # FlowRule.key -> FlowRule
    meters: dict  # meter_id -> MeterSpec

    @classmethod
    def empty(cls) -> "SwitchState":
        return cls({}, {})

    @classmethod
    def of(cls, rules: Iterable[FlowRule], meters: Iterable[MeterSpec]) -> "SwitchState":
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
