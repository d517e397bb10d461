import ipaddress

import pytest

from enforcement.errors import InvalidArgument
from enforcement.model import Violation
from enforcement.validation import validate_apply


def apply(**overrides):
    fields = dict(request_id="req-1", case_id="CASE-1", ip="10.0.0.1", mac="",
                  violation=Violation.SPAM, reason="bulk mail")
    fields.update(overrides)
    return validate_apply(**fields)


def test_valid_request_becomes_a_decision():
    decision = apply(mac="AA:BB:CC:00:11:22")
    assert decision.subscriber.ip == ipaddress.IPv4Address("10.0.0.1")
    assert decision.subscriber.mac == "aa:bb:cc:00:11:22"
    assert decision.violation is Violation.SPAM


@pytest.mark.parametrize("ip", [
    "", "10.0.0", "10.0.0.256", "010.0.0.1", "10.0.0.1/32", "10.0.0.0-10.0.0.9",
    " 10.0.0.1", "host.example", "0.0.0.0", "127.0.0.1", "224.0.0.1",
    "255.255.255.255", "169.254.1.1", "::1", "2001:db8::1",
])
def test_malformed_or_non_host_ip_is_refused_naming_the_field(ip):
    with pytest.raises(InvalidArgument, match="subscriber.ip"):
        apply(ip=ip)


@pytest.mark.parametrize("mac", ["aa:bb:cc", "aa-bb-cc-dd-ee-ff", "01:00:5e:00:00:01",
                                 "zz:bb:cc:dd:ee:ff"])
def test_bad_mac_is_refused(mac):
    with pytest.raises(InvalidArgument, match="subscriber.mac"):
        apply(mac=mac)


def test_unspecified_violation_is_refused():
    with pytest.raises(InvalidArgument, match="violation is required"):
        apply(violation=None)


@pytest.mark.parametrize("field", ["request_id", "case_id"])
@pytest.mark.parametrize("value", ["", "x" * 129, "has space", "tab\there"])
def test_identifiers_are_required_short_and_printable(field, value):
    with pytest.raises(InvalidArgument, match=field):
        apply(**{field: value})


def test_overlong_reason_is_refused():
    with pytest.raises(InvalidArgument, match="reason"):
        apply(reason="x" * 5000)
