import copy
import ipaddress
import tomllib

import pytest

from enforcement.domain import policy
from enforcement.domain.model import ActionKind, Violation

DEFAULT = tomllib.loads(
    (policy.importlib.resources.files("enforcement.domain") / "default_policy.toml").read_text())


def test_shipped_policy_covers_every_violation_with_the_design_defaults():
    rules = policy.load()
    assert set(rules.violations) == set(Violation)
    first = {v: rules.rung(v).ladder[0].kind for v in Violation}
    assert first[Violation.SPAM] is ActionKind.BLOCK
    assert first[Violation.PING_FLOOD] is ActionKind.RATE_LIMIT
    assert first[Violation.MALWARE] is ActionKind.QUARANTINE
    assert first[Violation.SPOOFING] is ActionKind.ANTI_SPOOFING
    assert first[Violation.ROKSO_LISTED] is ActionKind.CUTOFF
    assert all(rules.rung(v).clause for v in Violation)


def broken(mutate):
    data = copy.deepcopy(DEFAULT)
    mutate(data)
    with pytest.raises(policy.PolicyError) as err:
        policy.parse(data, "test.toml")
    return str(err.value)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["violations"].pop("spam"), "violations.spam is missing"),
    (lambda d: d["violations"].update(spamm=d["violations"]["spam"]), "violations.spamm"),
    (lambda d: d["violations"]["spam"]["ladder"][0].update(action="nuke"),
     "violations.spam.ladder[0].action"),
    (lambda d: d["violations"]["spam"]["ladder"][0].update(ports=[70000]),
     "violations.spam.ladder[0].ports"),
    (lambda d: d["violations"]["spam"]["ladder"][0].update(colour="red"),
     "violations.spam.ladder[0].colour"),
    (lambda d: d["violations"]["ping_flood"]["ladder"][0].update(rate=0),
     "violations.ping_flood.ladder[0].rate"),
    (lambda d: d["violations"]["ping_flood"]["ladder"][0].update(ports=[7]),
     "violations.ping_flood.ladder[0].ports needs protocol tcp or udp"),
    (lambda d: d["violations"]["open_relay"]["ladder"][0].update(except_to=["smarthosts"]),
     "except_to works with"),
    (lambda d: d["violations"]["spam"]["ladder"][0].update(to=["nowhere"]),
     "violations.spam.ladder[0].to entry 'nowhere'"),
    (lambda d: d["violations"]["spam"].update(ladder=[]), "violations.spam.ladder"),
    (lambda d: d["assets"].update(dns=["10.0.0.300"]), "assets.dns"),
    (lambda d: d["assets"].update(dns=["010.0.0.250"]), "assets.dns"),
    (lambda d: d["assets"].update(protected=["10.0.0.0/255.0.0.0"]), "assets.protected"),
    (lambda d: d["assets"].update(protected=[10]), "assets.protected"),
    (lambda d: d["violations"]["spam"]["ladder"][0].update(to=["10.0.0.0/08"]),
     "violations.spam.ladder[0].to entry '10.0.0.0/08'"),
    (lambda d: d["assets"].update(portal=["10.0.1.0/24"]), "assets.portal must list single"),
    (lambda d: d["quarantine"].update(vlan=5000), "quarantine.vlan"),
    (lambda d: d["escalation"].update(window_days="ninety"), "escalation.window_days"),
    (lambda d: d["violations"]["spam"]["ladder"][0].update(protocol="any", ports=[]),
     "that is a cutoff"),
    # IPv6, held to the same canonical forms.
    (lambda d: d["assets"].update(dns=["2001:db8::35/64"]), "assets.dns"),
    (lambda d: d["assets"].update(dns=["fe80::35%eth0"]), "assets.dns"),
    (lambda d: d["assets"].update(smarthosts=["::ffff:10.0.0.252"]), "assets.smarthosts"),
    (lambda d: d["assets"].update(protected=["2001:db8::/129"]), "assets.protected"),
    (lambda d: d["assets"].update(protected=["2001:db8::/032"]), "assets.protected"),
    (lambda d: d["assets"].update(protected=["2001:db8::/ffff::"]), "assets.protected"),
    (lambda d: d["assets"].update(mail_servers=["2001:db8:::1"]), "assets.mail_servers"),
    (lambda d: d["assets"].update(portal=["2001:db8:1::/64"]), "assets.portal must list single"),
    (lambda d: d["assets"].update(billing_portal=["10.0.0.251", "2001:db8::/127"]),
     "assets.billing_portal must list single"),
    (lambda d: d["violations"]["spam"]["ladder"][0].update(to=["2001:db8::1/48"]),
     "violations.spam.ladder[0].to entry '2001:db8::1/48'"),
    (lambda d: d["violations"]["spam"]["ladder"][0].update(except_to=["2001:db8::/0048"]),
     "violations.spam.ladder[0].except_to entry '2001:db8::/0048'"),
])
def test_mistakes_are_reported_with_their_field(mutate, field):
    assert field in broken(mutate)


def test_toml_syntax_errors_name_the_line(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text("[escalation]\nwindow_days = = 3\n")
    with pytest.raises(policy.PolicyError, match="line 2"):
        policy.load(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(policy.PolicyError, match="cannot read policy"):
        policy.load(tmp_path / "nope.toml")


def test_request_actions_are_held_to_the_policy_bounds():
    rules = policy.load()
    spec = policy.action_spec({"action": "rate_limit", "rate": 500, "unit": "kbps"},
                              "action", rules.assets, rules.limits, "request")
    assert (spec.rate, spec.burst) == (500, 250)
    with pytest.raises(policy.PolicyError, match=r"action\.rate is 1"):
        policy.action_spec({"action": "rate_limit", "rate": 1, "unit": "kbps"},
                           "action", rules.assets, rules.limits, "request")
    with pytest.raises(policy.PolicyError, match=r"action\.ports lists 17"):
        policy.action_spec({"action": "block", "protocol": "tcp", "ports": list(range(1, 18))},
                           "action", rules.assets, rules.limits, "request")


def test_ipv6_assets_and_destinations_parse_to_their_family():
    data = copy.deepcopy(DEFAULT)
    data["assets"].update(dns=["10.0.0.250", "2001:DB8::35"], portal=["2001:db8::80"],
                          smarthosts=["10.0.0.252", "2001:db8::fc"],
                          protected=["2001:db8:ff::/48", "192.0.2.0/24"])
    data["violations"]["spam"]["ladder"][0].update(
        to=["2001:db8:5::/48", "10.0.9.0/24", "2001:db8::3"], except_to=["smarthosts"])
    rules = policy.parse(data, "test.toml")
    assert rules.assets.dns == (ipaddress.IPv4Network("10.0.0.250/32"),
                                ipaddress.IPv6Network("2001:db8::35/128"))
    spam = rules.rung(policy.Violation.SPAM).ladder[0]
    assert [str(n) for n in spam.to] == ["2001:db8:5::/48", "10.0.9.0/24", "2001:db8::3/128"]
    assert [str(n) for n in spam.except_to] == ["10.0.0.252/32", "2001:db8::fc/128"]
    assert spam.describe("10.0.0.1") == (
        "drop TCP to port 25 from 10.0.0.1 toward 2001:db8:5::/48, 10.0.9.0/24, 2001:db8::3 "
        "except toward 10.0.0.252, 2001:db8::fc")
    # An address is protected by its own family's entries only.
    assert rules.assets.protecting(ipaddress.IPv6Address("2001:db8:ff::9")) == "protected"
    assert rules.assets.protecting(ipaddress.IPv6Address("::c000:201")) is None
    assert rules.assets.protecting(ipaddress.IPv4Address("192.0.2.1")) == "protected"
    assert rules.assets.protecting(ipaddress.IPv6Address("2001:db8::35")) == "dns"
