"""The operator's policy: violation -> escalation ladder of actions, assets,
and the bounds a request must stay within. Loaded from TOML and checked at
start; every mistake names the field it is in.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import ipaddress
import pathlib
import tomllib
from typing import NoReturn

from enforcement.domain.errors import InvalidArgument

# ActionSpec and Network are model's (plain data); they are named here too
# because a policy is where actions come from.
from enforcement.domain.model import ActionKind, ActionSpec, Network, Violation
from enforcement.domain.validation import parse_prefix

PROTOCOLS = ("tcp", "udp", "icmp", "any")
DIRECTIONS = ("from_subscriber", "to_subscriber", "both")
RATE_UNITS = ("kbps", "pktps")
ASSET_LISTS = ("dns", "portal", "billing_portal", "mail_servers", "smarthosts", "protected")


class PolicyError(ValueError):
    """The policy file is wrong; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Rung:
    violation: Violation
    clause: str
    ladder: tuple[ActionSpec, ...]


@dataclasses.dataclass(frozen=True)
class Limits:
    min_rate_kbps: int
    max_rate_kbps: int
    min_rate_pktps: int
    max_rate_pktps: int
    max_ports: int
    allow_wider_scope: bool
    max_scope_prefix_length: int


@dataclasses.dataclass(frozen=True)
class Assets:
    dns: tuple[Network, ...]
    portal: tuple[Network, ...]
    billing_portal: tuple[Network, ...]
    mail_servers: tuple[Network, ...]
    smarthosts: tuple[Network, ...]
    protected: tuple[Network, ...]
    portal_ports: tuple[int, ...]

    def named(self, name: str) -> tuple[Network, ...] | None:
        return getattr(self, name) if name in ASSET_LISTS else None

    def listed(self, name: str) -> tuple[Network, ...]:
        """named() for a name the policy checked already (an ActionSpec's portal)."""
        found = self.named(name)
        if found is None:
            raise KeyError(f"no asset list {name!r}")
        return found

    def protecting(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address
                   ) -> str | None:
        """The asset list that protects an address, if any (a network of the
        other family never contains it: ipaddress says False, not an error)."""
        for name in ASSET_LISTS:
            if any(address in net for net in getattr(self, name)):
                return name
        return None


@dataclasses.dataclass(frozen=True)
class Policy:
    window_seconds: int
    limits: Limits
    assets: Assets
    violations: dict  # Violation -> Rung
    # VLAN id that quarantined traffic carries on its way to the walled garden.
    quarantine_vlan: int = 3999
    # The policy's content hash (load() sets it): every enforcement records
    # the version it was planned with, and a reload says which it runs.
    version: str = ""

    def rung(self, violation: Violation) -> Rung:
        return self.violations[violation]


def load(path: str | pathlib.Path | None = None) -> Policy:
    """Loads and checks a policy file; None loads the shipped default."""
    if path is None:
        text = importlib.resources.files("enforcement.domain").joinpath(
            "default_policy.toml").read_text(encoding="utf-8")
        source = "default policy"
    else:
        try:
            text = pathlib.Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"cannot read policy {path}: {exc.strerror}") from None
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    return dataclasses.replace(parse(data, source), version=version_of(text))


def version_of(text: str) -> str:
    """The version of a policy's text: the same file gives the same version
    on every instance and after every restart."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def parse(data: dict, source: str = "policy") -> Policy:
    reader = _Reader(source)
    _known(reader, data, "", {"escalation", "limits", "assets", "violations", "quarantine"})
    escalation = reader.table(data, "escalation")
    window_days = reader.integer(escalation, "escalation.window_days", 0, 3650)
    limits_data = reader.table(data, "limits")
    limits = Limits(
        min_rate_kbps=reader.integer(limits_data, "limits.min_rate_kbps", 1, 10**9),
        max_rate_kbps=reader.integer(limits_data, "limits.max_rate_kbps", 1, 10**9),
        min_rate_pktps=reader.integer(limits_data, "limits.min_rate_pktps", 1, 10**9),
        max_rate_pktps=reader.integer(limits_data, "limits.max_rate_pktps", 1, 10**9),
        max_ports=reader.integer(limits_data, "limits.max_ports", 1, 64),
        allow_wider_scope=reader.boolean(limits_data, "limits.allow_wider_scope"),
        max_scope_prefix_length=reader.integer(
            limits_data, "limits.max_scope_prefix_length", 8, 32),
    )
    assets_data = reader.table(data, "assets")
    _known(reader, assets_data, "assets.", set(ASSET_LISTS) | {"portal_ports"})
    assets = Assets(
        **{name: reader.networks(assets_data, f"assets.{name}") for name in ASSET_LISTS},
        portal_ports=reader.ports(assets_data, "assets.portal_ports"))
    for name in ("dns", "portal", "billing_portal"):
        # Quarantined traffic is steered to each of these hosts.
        if any(net.prefixlen != net.max_prefixlen for net in getattr(assets, name)):
            reader.fail(f"assets.{name}", "must list single addresses (no prefixes): "
                        "quarantined traffic is steered to each of them")
    quarantine = reader.table(data, "quarantine")
    _known(reader, quarantine, "quarantine.", {"vlan"})
    vlan = reader.integer(quarantine, "quarantine.vlan", 1, 4094)
    violations_data = reader.table(data, "violations")
    known = {v.value for v in Violation}
    for name in violations_data:
        if name not in known:
            raise PolicyError(f"{source}: violations.{name} is not a violation; "
                              f"known: {', '.join(sorted(known))}")
    violations = {}
    for violation in Violation:
        if violation.value not in violations_data:
            raise PolicyError(f"{source}: violations.{violation.value} is missing; "
                              "every violation needs a ladder")
        entry = violations_data[violation.value]
        where = f"violations.{violation.value}"
        clause = entry.get("clause", "")
        if not isinstance(clause, str):
            raise PolicyError(f"{source}: {where}.clause must be text")
        ladder = entry.get("ladder")
        if not isinstance(ladder, list) or not ladder:
            raise PolicyError(f"{source}: {where}.ladder must be a non-empty list of actions")
        violations[violation] = Rung(violation, clause, tuple(
            action_spec(step, f"{where}.ladder[{i}]", assets, limits, source)
            for i, step in enumerate(ladder)))
    return Policy(window_days * 86400, limits, assets, violations, vlan)


def action_spec(step: dict, where: str, assets: Assets, limits: Limits,
                source: str = "request") -> ActionSpec:
    """Checks one action (from the policy file, or asked for by a request)."""
    reader = _Reader(source)
    if not isinstance(step, dict):
        raise PolicyError(f"{source}: {where} must be a table like {{ action = \"block\" }}")
    kinds = {k.value: k for k in ActionKind}
    kind = kinds.get(step.get("action", ""))
    if kind is None:
        raise PolicyError(f"{source}: {where}.action must be one of {', '.join(kinds)}")
    allowed = {
        ActionKind.BLOCK: {"protocol", "ports", "direction", "to", "except_to"},
        ActionKind.RATE_LIMIT: {"protocol", "ports", "to", "rate", "unit", "burst"},
        ActionKind.QUARANTINE: {"portal"},
        ActionKind.CUTOFF: set(),
        ActionKind.ANTI_SPOOFING: set(),
    }[kind]
    _known(reader, step, f"{where}.", allowed | {"action"})
    protocol = step.get("protocol", "any")
    if protocol not in PROTOCOLS:
        raise PolicyError(f"{source}: {where}.protocol must be one of {', '.join(PROTOCOLS)}")
    ports = reader.ports(step, f"{where}.ports") if "ports" in step else ()
    if ports and protocol not in ("tcp", "udp"):
        raise PolicyError(f"{source}: {where}.ports needs protocol tcp or udp")
    if len(ports) > limits.max_ports:
        raise PolicyError(f"{source}: {where}.ports lists {len(ports)} ports; "
                          f"at most {limits.max_ports}")
    if kind is ActionKind.BLOCK and protocol == "any" and not step.get("to"):
        raise PolicyError(f"{source}: {where} blocks all traffic everywhere; "
                          "that is a cutoff: use action = \"cutoff\"")
    direction = step.get("direction", "from_subscriber")
    if direction not in DIRECTIONS:
        raise PolicyError(f"{source}: {where}.direction must be one of {', '.join(DIRECTIONS)}")
    spec = dict(kind=kind, protocol=protocol, ports=ports, direction=direction,
                to=_destinations(step.get("to", []), f"{where}.to", assets, source),
                except_to=_destinations(step.get("except_to", []), f"{where}.except_to",
                                        assets, source))
    if spec["except_to"] and direction != "from_subscriber":
        raise PolicyError(f"{source}: {where}.except_to works with "
                          "direction = \"from_subscriber\" only")
    if kind is ActionKind.RATE_LIMIT:
        unit = step.get("unit", "kbps")
        if unit not in RATE_UNITS:
            raise PolicyError(f"{source}: {where}.unit must be one of {', '.join(RATE_UNITS)}")
        low, high = ((limits.min_rate_kbps, limits.max_rate_kbps) if unit == "kbps"
                     else (limits.min_rate_pktps, limits.max_rate_pktps))
        rate = reader.integer(step, f"{where}.rate", low, high)
        # A policer drops TCP far below its rate when the bucket is small; half
        # a second's worth keeps TCP near the rate (measured on OVS).
        default_burst = max(1, rate // 2) if unit == "kbps" else rate
        burst = (reader.integer(step, f"{where}.burst", 1, high) if "burst" in step
                 else default_burst)
        spec.update(rate=rate, unit=unit, burst=burst)
    if kind is ActionKind.QUARANTINE:
        portal = step.get("portal", "portal")
        if portal not in ("portal", "billing_portal"):
            raise PolicyError(f"{source}: {where}.portal must be portal or billing_portal")
        if not assets.dns or not assets.named(portal):
            raise PolicyError(f"{source}: {where} needs assets.dns and assets.{portal}")
        spec.update(portal=portal)
    return ActionSpec(**spec)


def _destinations(values, where: str, assets: Assets, source: str) -> tuple[Network, ...]:
    if not isinstance(values, list):
        raise PolicyError(f"{source}: {where} must be a list of asset names or addresses")
    result: list[Network] = []
    for value in values:
        named = assets.named(value) if isinstance(value, str) else None
        if named is not None:
            if not named:
                raise PolicyError(f"{source}: {where} names assets.{value}, which is empty")
            result.extend(named)
            continue
        try:
            if not isinstance(value, str):
                raise InvalidArgument("not text")
            result.append(parse_prefix(value, f"{where} entry"))
        except InvalidArgument as exc:
            raise PolicyError(f"{source}: {where} entry {value!r} is neither an asset name "
                              f"({', '.join(ASSET_LISTS)}) nor an IPv4 or IPv6 address/prefix "
                              f"({exc})") from None
    return tuple(dict.fromkeys(result))


def _not_text() -> NoReturn:
    raise InvalidArgument("entries must be strings")


def _known(reader: _Reader, table: dict, prefix: str, allowed: set) -> None:
    for key in table:
        if key not in allowed:
            raise PolicyError(f"{reader.source}: {prefix}{key} is not a known field; "
                              f"expected one of {', '.join(sorted(allowed))}")


class _Reader:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, what: str) -> NoReturn:
        raise PolicyError(f"{self.source}: {where} {what}")

    def table(self, data: dict, key: str) -> dict:
        value = data.get(key)
        if not isinstance(value, dict):
            self.fail(key, "must be a table ([" + key + "])")
        return value

    def integer(self, data: dict, where: str, low: int, high: int) -> int:
        value = data.get(where.rsplit(".", 1)[-1])
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, "must be a whole number")
        if not low <= value <= high:
            self.fail(where, f"is {value}; it must be between {low} and {high}")
        return value

    def boolean(self, data: dict, where: str) -> bool:
        value = data.get(where.rsplit(".", 1)[-1])
        if not isinstance(value, bool):
            self.fail(where, "must be true or false")
        return value

    def ports(self, data: dict, where: str) -> tuple[int, ...]:
        value = data.get(where.rsplit(".", 1)[-1], [])
        if not isinstance(value, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535
                for p in value):
            self.fail(where, "must be a list of port numbers 1-65535")
        return tuple(dict.fromkeys(value))

    def networks(self, data: dict, where: str) -> tuple[Network, ...]:
        value = data.get(where.rsplit(".", 1)[-1], [])
        if not isinstance(value, list):
            self.fail(where, "must be a list of IPv4 or IPv6 addresses or prefixes")
        try:
            return tuple(parse_prefix(v, "entry") if isinstance(v, str) else _not_text()
                         for v in value)
        except InvalidArgument as exc:
            self.fail(where, f"has an entry that is not an IPv4 or IPv6 address/prefix "
                             f"({exc})")
