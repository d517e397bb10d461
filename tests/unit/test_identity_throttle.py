"""The identity events' throttle (enforcement.lifecycle.identity.Throttle): one stored
event per claim and interval, the rest counted into the next one, a port's
varied claims bounded, and nothing reported lost from the count. Times are
passed in: the tests are the clock."""
import random

import pytest

from enforcement.domain.model import IdentityEvent
from enforcement.lifecycle.identity import Throttle
from tests.events import stands_for

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def claim(claimed="10.0.0.1", *, kind="address_claim", dpid=2, port=1,
          mac="00:00:00:00:00:03", detail=""):
    return IdentityEvent(kind, dpid, port, mac, claimed,
                         owner="00:00:00:00:00:01 at switch 0000000000000001 port 1",
                         subscriber_ip="10.0.0.3", detail=detail)


def test_the_first_report_is_stored_and_the_repeats_wait_for_the_interval():
    throttle = Throttle(interval=10.0)
    first = claim()
    assert throttle.admit(T0, first) == (T0, first, first.text())
    for step in range(1, 1235):
        assert throttle.admit(T0 + step * 0.005, claim()) is None
    at, event, detail = throttle.admit(T0 + 10.0, claim(detail="gratuitous ARP reply"))
    assert (at, event.claimed) == (T0 + 10.0, "10.0.0.1")
    assert detail == "gratuitous ARP reply; and 1,234 more since 08:00:00 UTC"
    # The next interval starts at that stored event.
    assert throttle.admit(T0 + 19.9, claim()) is None
    assert throttle.admit(T0 + 20.0, claim())[2].endswith("; and 1 more since 08:00:10 UTC")


def test_a_claim_is_its_kind_switch_port_and_what_was_claimed():
    throttle = Throttle(interval=10.0)
    variants = [claim(), claim("10.0.0.2"), claim(kind="mac_claim"), claim(dpid=3),
                claim(port=2)]
    assert all(throttle.admit(T0, v) is not None for v in variants)
    # The claimant's MAC is not part of it: a MAC-hopping claimant is one claim.
    assert throttle.admit(T0 + 1, claim(mac="02:00:00:00:00:99")) is None
    assert len(throttle) == 5


def test_a_claimant_gone_quiet_gets_a_summary_when_the_interval_ends():
    throttle = Throttle(interval=10.0)
    throttle.admit(T0, claim())
    for step in range(1, 10):
        throttle.admit(T0 + step, claim(detail=f"copy {step}"))
    assert throttle.next_due() == T0 + 10.0
    assert throttle.due(T0 + 9.99) == []
    (summary,) = throttle.due(T0 + 10.0)
    # The summary is the newest held-back report, standing for the others too.
    at, event, detail = summary
    assert (at, event.detail) == (T0 + 9, "copy 9")
    assert detail == "copy 9; and 8 more since 08:00:00 UTC"
    assert throttle.next_due() is None and throttle.due(T0 + 30) == []
    # Quiet for a whole interval: forgotten, and the next report is stored at once.
    assert len(throttle) == 0
    assert throttle.admit(T0 + 31, claim()) is not None


def test_every_report_is_accounted_for_exactly_once():
    throttle = Throttle(interval=10.0)
    rng = random.Random(23)
    stored, reports, now = [], 0, T0
    for _ in range(20_000):
        now += rng.expovariate(400.0)  # about 50 s of a 400 frames/s flood, with gaps
        reports += 1
        if (admitted := throttle.admit(now, claim())) is not None:
            stored.append(admitted)
        stored += throttle.due(now)
    stored += throttle.due(now, everything=True)
    assert sum(stands_for(detail) for _, _, detail in stored) == reports
    assert len(stored) <= 2 * ((now - T0) / 10.0 + 1)
    ats = [at for at, _, _ in stored]
    assert ats == sorted(ats)


def test_a_port_varying_its_claims_shares_one_bucket_past_its_own_share():
    throttle = Throttle(interval=10.0, claims_per_port=4)
    rng = random.Random(7)
    stored = []
    for n in range(5000):
        forged = f"switch {rng.randrange(1 << 64):016x} port {rng.randrange(1, 48)}"
        if (admitted := throttle.admit(T0 + n * 0.001, claim(forged, kind="lldp_forged"))):
            stored.append(admitted)
    # Four claims of their own, then one event for all the others.
    assert len(stored) == 5 and len(throttle) == 5
    # The shared bucket opened with the fifth claim, 4 ms in.
    (summary,) = throttle.due(T0 + 10.01)
    assert summary[2].endswith(
        "; and 4,994 more of other claims from this port since 08:00:00 UTC")
    # Another port, or another kind from this port, has its own share.
    assert throttle.admit(T0 + 5, claim("x", kind="lldp_forged", port=9)) is not None
    assert throttle.admit(T0 + 5, claim()) is not None


def test_a_port_gets_its_share_back_once_its_claims_are_forgotten():
    throttle = Throttle(interval=10.0, claims_per_port=2)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.5"):
        throttle.admit(T0, claim(address))
    assert throttle.due(T0 + 10.0) == [] and len(throttle) == 0
    assert throttle.admit(T0 + 11, claim("10.0.0.6"))[2] == claim("10.0.0.6").text()
    assert throttle.admit(T0 + 11, claim("10.0.0.7")) is not None
    assert throttle.admit(T0 + 11, claim("10.0.0.8")) is not None  # the shared one
    assert throttle.admit(T0 + 11, claim("10.0.0.9")) is None


def test_a_clock_that_goes_back_does_not_open_the_gate():
    throttle = Throttle(interval=10.0)
    throttle.admit(T0, claim())
    assert throttle.admit(T0 - 3600, claim()) is None
    assert throttle.admit(T0 - 3595, claim()) is None
    assert throttle.admit(T0 - 3590, claim()) is not None


def test_a_throttle_needs_an_interval_and_a_share():
    with pytest.raises(ValueError):
        Throttle(interval=0)
    with pytest.raises(ValueError):
        Throttle(claims_per_port=0)
