import ipaddress

import pytest

from enforcement.domain.errors import InvalidArgument
from enforcement.domain.model import Violation
from enforcement.domain.validation import parse_prefix, validate_apply


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
    "255.255.255.255", "169.254.1.1", "::1", "::", "ff02::1", "fe80::1",
])
def test_malformed_or_non_host_ip_is_refused_naming_the_field(ip):
    with pytest.raises(InvalidArgument, match=r"subscriber\.ip"):
        apply(ip=ip)


@pytest.mark.parametrize("mac", ["aa:bb:cc", "aa-bb-cc-dd-ee-ff", "01:00:5e:00:00:01",
                                 "zz:bb:cc:dd:ee:ff"])
def test_bad_mac_is_refused(mac):
    with pytest.raises(InvalidArgument, match=r"subscriber\.mac"):
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


@pytest.mark.parametrize("text, why", [
    ("10.0.0.1\n", "not an IP address"),
    ("10.1", "not an IP address"),
    ("0x0a.0.0.1", "not an IP address"),
    ("012.0.0.1", "Leading zeros"),
    ("１０.0.0.1", "not an IP address"),
    ("fe80::1%eth0", "zone index"),
    ("::ffff:10.0.0.1", "IPv4 address inside IPv6"),
    ("::ffff:a00:1", "IPv4-mapped"),
    ("1::2::3", "not an IPv6 address"),
    ("fe80::1", "give its global IPv6 address"),
    ("x" * 100, "100 characters long"),
])
def test_odd_address_forms_are_refused_with_the_reason(text, why):
    with pytest.raises(InvalidArgument, match=why):
        apply(ip=text)


def test_ipv6_filters_are_parsed_and_canonical():
    from enforcement.domain.validation import parse_filter_ip
    assert parse_filter_ip("2001:DB8:0::1", "subscriber_ip") == "2001:db8::1"
    assert parse_filter_ip("", "subscriber_ip") == ""


@pytest.mark.parametrize("scope, why", [
    ("10.0.0.0/255.255.255.0", "prefix length"), ("10.0.0.0/08", "prefix length"),
    ("10.0.0.0/33", "prefix length"), ("10.0.0.1/24", "host bits"),
    ("10.0.1.0/24", "does not contain"),
])
def test_scope_must_be_a_plain_prefix_around_the_subscriber(scope, why):
    with pytest.raises(InvalidArgument, match=why):
        apply(scope=scope)


@pytest.mark.parametrize("reason", ["\x1b]0;pwned\x07", "nul\x00", "bell\x07", "c1\x9b"])
def test_reasons_carry_no_control_characters(reason):
    with pytest.raises(InvalidArgument, match="control characters"):
        apply(reason=reason)


def test_reasons_may_have_newlines_tabs_and_any_script():
    assert apply(reason="line 1\nline 2\tété 日本").reason.startswith("line 1")


def test_error_messages_never_echo_a_huge_value():
    with pytest.raises(InvalidArgument) as caught:
        apply(mac="m" * 10000)
    assert len(str(caught.value)) < 200


def test_an_ipv6_subscriber_is_accepted_in_canonical_form_without_a_scope():
    decision = apply(ip="2001:DB8:0::7")
    assert str(decision.subscriber.ip) == "2001:db8::7"
    with pytest.raises(InvalidArgument, match="scopes are IPv4 prefixes"):
        apply(ip="2001:db8::7", scope="2001:db8::/64")


@pytest.mark.parametrize("text, why", [
    ("2001:db8::/64", None), ("2001:db8::1", None), ("2001:db8::1/64", "host bits"),
    ("2001:db8::/129", "from 0 to 128"), ("2001:db8::/064", "without leading zeros"),
    ("fe80::1%eth0/64", "zone index"),
])
def test_ipv6_prefixes_follow_the_ipv4_rules(text, why):
    if why is None:
        assert str(parse_prefix(text, "to")) == (text if "/" in text else text + "/128")
    else:
        with pytest.raises(InvalidArgument, match=why):
            parse_prefix(text, "to")
