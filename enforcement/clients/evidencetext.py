"""An enforcement's evidence in words a person reads (enforcementctl get).

    evidence:  dropped 5,678 packets (306,612 bytes) since 06 Dec 2026 09:40:00, 1,234
               packets (66,636 bytes) in the last hour; last at 10:42:05 (read at 10:44:55)
               5,678 packets (306,612 bytes) dropped by dpid=0000000000000002 table=0 ...

Times are local; a time on another day than now carries its date.
"""
from __future__ import annotations

import datetime

from enforcement.v1 import enforcement_pb2 as pb

_VERBS = (("dropped", "dropped_packets", "dropped_bytes"),
          ("metered", "metered_packets", "metered_bytes"),
          ("let on", "allowed_packets", "allowed_bytes"))
_INDENT = " " * 11


def when(stamp, now: datetime.datetime) -> str:
    """A protobuf Timestamp as a time of day, with its date if not today."""
    at = datetime.datetime.fromtimestamp(stamp.ToNanoseconds() / 1e9, tz=now.tzinfo)
    return at.strftime("%H:%M:%S") if at.date() == now.date() else \
        at.strftime("%d %b %Y %H:%M:%S")


def amount(packets: int, octets: int) -> str:
    return f"{packets:,} packet{'' if packets == 1 else 's'} ({octets:,} bytes)"


def lines(enforcement: pb.Enforcement, now: datetime.datetime | None = None) -> list[str]:
    """The evidence lines of `get`; one line when nothing was ever read."""
    now = now or datetime.datetime.now().astimezone()
    if not enforcement.HasField("evidence"):
        return ["evidence:  not counted yet (its switch is read every few seconds)"]
    e = enforcement.evidence
    since = when(e.counted_since, now)
    # Counted for over an hour: the last hour said apart.
    older = now.timestamp() - e.counted_since.ToNanoseconds() / 1e9 > 3600
    hour = e.last_hour if older and e.HasField("last_hour") else None
    done = []
    for verb, p, b in _VERBS:
        if getattr(e, p):
            done.append(f"{verb} {amount(getattr(e, p), getattr(e, b))} since {since}"
                        + ("" if hour is None else
                           f", {amount(getattr(hour, p), getattr(hour, b))} in the last hour"))
    for meter in e.meters:
        done.append(f"meter {meter.meter_id} let through "
                    f"{amount(meter.passed_packets, meter.passed_bytes)} and dropped "
                    f"{amount(meter.dropped_packets, meter.dropped_bytes)}")
    if e.HasField("last_matched_at") and done:
        head = f"{'; '.join(done)}; last at {when(e.last_matched_at, now)}"
    else:
        head = f"nothing matched since {since}"
    if e.HasField("read_at"):
        head += f" (read at {when(e.read_at, now)})"
    out = [f"evidence:  {head}"]
    if e.resets:
        out.append(f"{_INDENT}counters found reset {e.resets} time(s), added up")
    for rule in e.rules:
        out.append(f"{_INDENT}{amount(rule.packets, rule.bytes)} {rule.verdict} by {rule.rule}")
    return out
