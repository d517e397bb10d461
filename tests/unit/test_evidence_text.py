"""enforcementctl get: an enforcement's evidence in words a person reads."""
import datetime

from enforcement.clients import cli, evidencetext
from enforcement.v1 import enforcement_pb2 as pb

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 7, 10, 45, 0, tzinfo=UTC)


def stamp(hour, minute, second=0, day=7):
    message = pb.Enforcement().created_at
    message.FromDatetime(datetime.datetime(2026, 12, day, hour, minute, second, tzinfo=UTC))
    return message


def block(**fields):
    enforcement = pb.Enforcement(id="enf-1")
    evidence = enforcement.evidence
    evidence.counted_since.CopyFrom(stamp(9, 40))
    evidence.read_at.CopyFrom(stamp(10, 44, 55))
    for name, value in fields.items():
        if isinstance(value, int):
            setattr(evidence, name, value)
        else:
            getattr(evidence, name).CopyFrom(value)
    return enforcement


def test_a_block_that_dropped_says_how_much_since_when_and_last_when():
    enforcement = block(dropped_packets=1234, dropped_bytes=66636,
                        last_matched_at=stamp(10, 42, 5))
    enforcement.evidence.rules.add(datapath_id=2, rule="dpid=0000000000000002 table=0 "
                                   "priority=3000 in_port=2,tcp_dst=25", verdict="dropped",
                                   packets=1234, bytes=66636)
    assert evidencetext.lines(enforcement, NOW) == [
        ("evidence:  dropped 1,234 packets (66,636 bytes) since 09:40:00; last at 10:42:05 "
        "(read at 10:44:55)"),
        ("           1,234 packets (66,636 bytes) dropped by dpid=0000000000000002 table=0 "
        "priority=3000 in_port=2,tcp_dst=25")]


def test_a_meter_says_what_it_let_through_and_what_it_dropped():
    enforcement = block(metered_packets=300, metered_bytes=29400,
                        last_matched_at=stamp(10, 44))
    enforcement.evidence.meters.add(datapath_id=2, meter_id=7, passed_packets=40,
                                    passed_bytes=3920, dropped_packets=260,
                                    dropped_bytes=25480)
    (line,) = evidencetext.lines(enforcement, NOW)
    assert line == ("evidence:  metered 300 packets (29,400 bytes) since 09:40:00; meter 7 "
                    "let through 40 packets (3,920 bytes) and dropped 260 packets (25,480 "
                    "bytes); last at 10:44:00 (read at 10:44:55)")


def test_nothing_matched_and_never_read_and_other_days():
    assert evidencetext.lines(block(), NOW) == [
        "evidence:  nothing matched since 09:40:00 (read at 10:44:55)"]
    assert evidencetext.lines(pb.Enforcement(id="enf-2"), NOW)[0].startswith(
        "evidence:  not counted yet")
    old = block(dropped_packets=1, dropped_bytes=54, last_matched_at=stamp(23, 59, day=6))
    old.evidence.resets = 2
    first, resets = evidencetext.lines(old, NOW)
    assert "1 packet (54 bytes)" in first and "last at 06 Dec 2026 23:59:00" in first
    assert resets.strip() == "counters found reset 2 time(s), added up"


def test_counted_for_over_an_hour_the_last_hour_is_said_apart():
    enforcement = block(dropped_packets=5678, dropped_bytes=306612,
                        last_matched_at=stamp(10, 42, 5),
                        last_hour=pb.Amounts(dropped_packets=1234, dropped_bytes=66636))
    enforcement.evidence.counted_since.CopyFrom(stamp(9, 40, day=6))
    (line,) = evidencetext.lines(enforcement, NOW)
    assert line == ("evidence:  dropped 5,678 packets (306,612 bytes) since 06 Dec 2026 "
                    "09:40:00, 1,234 packets (66,636 bytes) in the last hour; last at "
                    "10:42:05 (read at 10:44:55)")


def test_get_is_the_command_a_person_types():
    args = cli.build_parser().parse_args(["get", "enf-1"])
    assert args.run is cli._show and args.id == "enf-1"
