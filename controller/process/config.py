"""The controller's settings: one table of every setting (its flag, its key in
the configuration file, its type, its default), read from the command line,
a few environment variables, a TOML file and the defaults, in that order of
precedence, then checked as a whole.

Every mistake is collected, not only the first, and each names where the
value came from: the flag, the environment variable, or the file, the key
and (when it can be found cheaply) the line. The same checks serve a start
(any mistake: exit 2) and --check-config (list them all).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import ipaddress
import os
import pathlib
import re
import sys
import tomllib
from collections.abc import Mapping
from typing import Any

PROG = "enforcement-controller"


@dataclasses.dataclass(frozen=True)
class Setting:
    dest: str                 # the attribute of the parsed settings
    key: str                  # in the file: "name" or "table.name"
    kind: type                # str, int or float
    default: Any              # None: not set (a callable: computed at start)
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    group: str = ""           # the --help group
    path: bool = False        # a file or folder: relative to the config file
    env: str | None = None    # the environment variable that may set it

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")


def default_state_dir() -> str:
    """systemd's StateDirectory=, else the usual place for root or a user."""
    given = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if given:
        return given
    if os.geteuid() == 0:
        return "/var/lib/sdn-enforcement"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "sdn-enforcement")


HA = "high availability"
TLS = "mutual TLS"
PLANE = "control-plane budgets"
DISCOVERY = "link discovery"
GROUPS = {
    HA: "instances sharing one PostgreSQL --db elect a leader through it; the others "
        "serve reads and forward changes to it",
    TLS: "all three or none; without them gRPC listens in plaintext, on loopback only",
    PLANE: "what one port or one switch may cost the controller; enforced in the "
           "switches (OpenFlow meters), reported as Watch events",
    DISCOVERY: "LLDP probes: a link's ports every second, a port that just came up (or "
               "where a new host or a probe appeared) at once and every second for 30 s, "
               "every other port rarely, in one packet-out per switch",
}

S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("policy", "policy", str, None, "enforcement policy (TOML); default: the shipped one "
      "(enforcement/domain/default_policy.toml)", "FILE", path=True),
    S("inventory", "inventory", str, None, "subscriber accounts pinned to switch ports "
      "(TOML; see enforcement/domain/inventory.py)", "FILE", path=True),
    S("access", "access", str, None, "roles of client certificates and per-client limits "
      "(TOML; see enforcement/api/access.py). Default: no client has a role, default limits",
      "FILE", path=True),
    S("state_dir", "state_dir", str, default_state_dir, "where the controller keeps its "
      "state (the SQLite store unless --db says otherwise); $STATE_DIRECTORY when "
      "systemd gives one", "DIR", path=True),
    S("db", "db", str, None, "where enforcements, events and the audit log live: an "
      "SQLAlchemy URL. sqlite:///FILE: one instance alone; postgresql+psycopg://USER@HOST/DB: "
      "several instances share it, one leads (high availability). Default: "
      "sqlite:///STATE_DIR/enforcement.db", "URL", env="ENFORCEMENT_DB"),
    S("audit_interval", "audit_interval", float, 10.0, "seconds between reads of every "
      "switch to repair drift (0: never)", "S"),
    S("switch_timeout", "switch_timeout", float, 5.0, "seconds to wait for a switch to "
      "confirm a change", "S"),
    S("proofs_per_second", "proofs_per_second", float, 20.0, "live enforcements proven in "
      "the data plane per second at most, in turn, besides each one soon after it is "
      "applied and after its switch reconnects (0: none)", "N"),
    S("grpc_listen", "grpc.listen", str, "127.0.0.1:50051", "gRPC address (host:port; "
      "port 0 picks a free one)", "HOST:PORT"),
    S("ofp_listen_host", "openflow.listen_host", str, "127.0.0.1",
      "address switches connect to", "HOST"),
    S("ofp_port", "openflow.port", int, 6653, "OpenFlow TCP port", "PORT"),
    S("tls_cert", "tls.cert", str, None, "the server's certificate (chain)", "PEM",
      group=TLS, path=True),
    S("tls_key", "tls.key", str, None, "the server's private key", "PEM", group=TLS,
      path=True, env="ENFORCEMENT_TLS_KEY"),
    S("tls_client_ca", "tls.client_ca", str, None, "CA certificate(s) that sign the "
      "clients' certificates", "PEM", group=TLS, path=True),
    S("lease_seconds", "ha.lease_seconds", float, 2.0, "the leader's lease: a dead or "
      "frozen leader is replaced within about this long", "S", group=HA),
    S("advertise", "ha.advertise", str, None, "where the other instances reach this one's "
      "gRPC API. Default: the --grpc-listen address with its bound port", "HOST:PORT",
      group=HA),
    S("instance_name", "ha.instance_name", str, None, "this instance in logs and the "
      "store. Default: HOST:PID", "NAME", group=HA),
    S("peer_cert", "ha.peer_cert", str, None, "with mutual TLS: the client certificate "
      "this instance presents when it forwards a call to the leader (the leader's "
      "--access must give it a role that may Apply and Lift). Default: --tls-cert", "PEM",
      group=HA, path=True),
    S("peer_key", "ha.peer_key", str, None, "its key. Default: --tls-key", "PEM",
      group=HA, path=True, env="ENFORCEMENT_PEER_KEY"),
    S("peer_ca", "ha.peer_ca", str, None, "with mutual TLS: the CA of the other "
      "instances' server certificates. Default: --tls-client-ca", "PEM", group=HA,
      path=True),
    S("metrics_listen", "metrics.listen", str, "127.0.0.1:9108", "Prometheus metrics at "
      "http://HOST:PORT/metrics ('off': none; port 0 picks a free one); a non-loopback "
      "address needs mutual TLS (then HTTPS with a client certificate)", "HOST:PORT"),
    S("http_listen", "http.listen", str, "127.0.0.1:8080", "the topology view (read-only "
      "web page and JSON); 'off': none; a non-loopback address needs --http-token-file or "
      "mutual TLS", "HOST:PORT"),
    S("http_names", "http.names", str, None, "more names the view answers to, "
      "comma-separated (the Host header of every request must be one; the listening "
      "address, and the loopback names on loopback, always are)", "NAMES"),
    S("http_token_file", "http.token_file", str, None, "a bearer token every view request "
      "must carry (Authorization: Bearer TOKEN)", "FILE", path=True,
      env="ENFORCEMENT_HTTP_TOKEN_FILE"),
    S("learn_pps", "control_plane.learn_pps", int, 50, "copies per second one access port "
      "may send the controller (to learn hosts)", "PPS", group=PLANE),
    S("storm_pps", "control_plane.storm_pps", int, 200, "broadcast, multicast and unknown "
      "unicast per second one access port may flood (storm control)", "PPS", group=PLANE),
    S("controller_pps", "control_plane.controller_pps", int, 1000, "packet-ins per second "
      "one switch may send in all (the OpenFlow controller meter)", "PPS", group=PLANE),
    S("max_hosts_per_port", "control_plane.max_hosts_per_port", int, 32, "hosts learned "
      "on one access port at most", "N", group=PLANE),
    S("learn_ban", "control_plane.learn_ban", int, 10, "more new MACs than this on one "
      "port within 10 s bans learning there for --learn-ban-seconds", "MACS", group=PLANE),
    S("learn_ban_seconds", "control_plane.learn_ban_seconds", float, 30.0,
      "how long a learning ban lasts", "S", group=PLANE),
    S("packet_in_queue", "control_plane.packet_in_queue", int, 1024, "packet-ins waiting "
      "to be learned from, at most; the oldest are dropped beyond", "N", group=PLANE),
    S("startup_grace", "control_plane.startup_grace", float, 15.0, "after a start, "
      "switches found holding forwarding flows get only additions this long, while the "
      "others reconnect", "S", group=PLANE),
    S("gateway", "forwarding.gateway", str, None, "the gateway switch, where the "
      "provider's side (its router or BNG, its services) attaches, by datapath id in hex: "
      "forwarding hangs from it as a tree, so a switch holds flows for the hosts below it "
      "only; with subscriber isolation its own access ports are the provider's side. Not "
      "set: the lowest datapath id of each connected part", "DPID"),
    S("subscriber_isolation", "forwarding.subscriber_isolation", str, "auto",
      "split horizon, as ISP access networks isolate subscribers: below the gateway, "
      "whatever a subscriber sends goes toward the gateway by its port alone (its "
      "broadcasts reach the provider's side only, never another subscriber, and no "
      "destination it writes makes a switch hold state); only traffic from the gateway "
      "side is delivered by destination. auto: on when --gateway is set",
      choices=("auto", "on", "off")),
    S("lldp_pps", "discovery.lldp_pps", int, 500, "LLDP packet-outs per second at most, "
      "spread evenly (a sweep of many ports counts as one). When they cannot cover every "
      "port at its period, links are probed first, then new ports, then settled ports, "
      "the log says so once, and links time out later (after three of their real "
      "periods, 10 s at least)", "PPS", group=DISCOVERY),
    S("lldp_settled_seconds", "discovery.lldp_settled_seconds", float, 20.0, "how often "
      "each switch sweeps its settled ports (subscriber lines, ports with nothing on "
      "them) with one LLDP packet-out: a switch plugged in behind one, with no port "
      "going down or up, is found within about this long", "S", group=DISCOVERY),
    S("dhcp_trusted", "identity.dhcp_trusted", str, None, "the switch ports with an "
      "operator's DHCP server behind them, DPID:PORT,... (the datapath id in hex, as the "
      "logs print it): their replies are learned as bindings (DHCP snooping). DHCP server "
      "replies from every other access port are dropped in the switch. Not set: none "
      "trusted", "DPID:PORT,..."),
    S("lldp_key_file", "identity.lldp_key_file", str, None, "a file holding the secret "
      "(16 bytes or more) that authenticates the controller's LLDP probes, the same for "
      "every instance of a deployment. Default: one kept in the store (--db), made by the "
      "first instance to start", "FILE", path=True, env="ENFORCEMENT_LLDP_KEY"),
    S("log_level", "log.level", str, "INFO", "the least important messages logged",
      choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    S("log_format", "log.format", str, "text", "text: one readable line each; json: one "
      "JSON object per line (time, level, logger, message, enforcement_id, case_id...)",
      choices=("text", "json")),
)
del S
BY_DEST = {s.dest: s for s in SETTINGS}
BY_KEY = {s.key: s for s in SETTINGS}
TABLES = list(dict.fromkeys(s.key.split(".")[0] for s in SETTINGS if "." in s.key))


def in_file_order() -> list[Setting]:
    """Top-level keys first (TOML puts them before any [table]), then each
    table's keys, tables in the order they first appear."""
    return sorted(SETTINGS, key=lambda s: TABLES.index(s.key.split(".")[0]) + 1
                  if "." in s.key else 0)


def defaults() -> dict[str, Any]:
    """Every setting's shipped default (None: not set)."""
    return {s.dest: s.default() if callable(s.default) else s.default for s in SETTINGS}


class Origins:
    """Where each setting's value came from, to name it in messages: the flag,
    the environment variable, or the file's key and line."""

    def __init__(self, config_path: str | None, lines: Mapping[str, int]):
        self.config_path = config_path
        self.lines = lines
        self.source: dict[str, str] = {}   # dest -> flag, env, file or default

    def name(self, dest: str) -> str:
        """The setting as the operator wrote it: '--ofp-port', 'ENFORCEMENT_DB',
        or 'FILE:LINE: openflow.port'."""
        setting = BY_DEST[dest]
        source = self.source.get(dest, "default")
        if source == "env":
            return str(setting.env)
        if source == "file":
            return f"{self._where(setting.key)}: {setting.key}"
        return setting.flag

    def short(self, dest: str) -> str:
        """The same without the file's name (for messages naming several)."""
        setting = BY_DEST[dest]
        source = self.source.get(dest, "default")
        return {"env": str(setting.env), "file": setting.key}.get(source, setting.flag)

    def _where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.config_path}:{line}" if line else str(self.config_path)


# ----- the command line -------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="SDN enforcement controller: OpenFlow 1.3 (OS-Ken) plus the "
                    "enforcement.v1 gRPC API. Every option may also be set in the "
                    "--config file; an option given here overrides it.",
        # Absent flags stay absent: the file and the environment fill them in.
        argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="FILE",
                        help="a TOML configuration file (deploy/controller.example.toml "
                             "lists every key)")
    parser.add_argument("--check-config", metavar="FILE",
                        help="check FILE (with any other options given), the policy, "
                             "access and inventory files it names; print the settings "
                             "that would be used; start nothing. Exit 0 when all is good")
    groups = {title: parser.add_argument_group(title, text) for title, text in GROUPS.items()}
    for setting in SETTINGS:
        target = groups[setting.group] if setting.group else parser
        default = setting.default
        if callable(default):
            default = default()
        text = setting.help
        if default is not None:
            text += f". Default: {default}"
        if setting.env:
            text += f" (environment: {setting.env})"
        text += f" [file: {setting.key}]"
        options: dict[str, Any] = {"help": text.replace("%", "%%"), "metavar": setting.metavar}
        if setting.choices:
            options = {"help": options["help"], "choices": setting.choices}
            if setting.dest == "log_level":
                # DEBUG or debug alike.
                options["type"] = str.upper
        else:
            options["type"] = setting.kind
        target.add_argument(setting.flag, **options)
    return parser


# ----- the file -----------------------------------------------------------------

_TABLE_LINE = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]")
_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """The line of each plain `key = ...` under plain `[table]` headers: enough
    to point at the usual mistakes, cheaply (tomllib gives no positions)."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _TABLE_LINE.match(line)
        if header:
            table = header.group(1)
            lines.setdefault(table, number)
            continue
        key = _KEY_LINE.match(line)
        if key:
            lines.setdefault(f"{table}.{key.group(1)}" if table else key.group(1), number)
    return lines


def read_file(path: str, errors: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
    """The settings the file gives (by dest) and the line of each key; every
    mistake appended to errors, naming the file, the key and the line."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        errors.append(f"{path}: cannot read the configuration file: {exc.strerror}")
        return {}, {}
    except UnicodeDecodeError:
        errors.append(f"{path}: not UTF-8 text")
        return {}, {}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        errors.append(f"{path}: not valid TOML: {exc}")
        return {}, {}
    lines = key_lines(text)
    base = pathlib.Path(path).resolve().parent

    problems: list[tuple[int, str]] = []   # (line, message): told in the file's order

    def fail(key: str, message: str) -> None:
        line = lines.get(key)
        problems.append((line or 0, f"{path}:{line}: {message}" if line else
                         f"{path}: {message}"))

    values: dict[str, Any] = {}
    flat: list[tuple[str, Any]] = []
    for name, value in data.items():
        if name in TABLES:
            if not isinstance(value, dict):
                fail(name, f"{name} must be a table ([{name}])")
                continue
            flat.extend((f"{name}.{key}", item) for key, item in value.items())
        elif isinstance(value, dict) and name not in BY_KEY:
            close = difflib.get_close_matches(name, TABLES, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else f" (known: {', '.join(TABLES)})"
            fail(name, f"unknown table [{name}]{hint}")
        else:
            flat.append((name, value))
    for key, value in flat:
        setting = BY_KEY.get(key)
        if setting is None:
            close = difflib.get_close_matches(key, list(BY_KEY) + TABLES, n=1)
            fail(key, f"unknown key {key}" + (f"; did you mean {close[0]}?" if close else ""))
            continue
        problem = _type_problem(setting, value)
        if problem:
            fail(key, f"{key} {problem}")
            continue
        if setting.kind is float:
            value = float(value)
        if setting.dest == "log_level":
            value = value.upper()
        if setting.path and not os.path.isabs(value):
            # Under systemd the working directory is /: a path relative to
            # the file that names it is the only reading that stays true.
            value = str(base / value)
        values[setting.dest] = value
    errors.extend(message for _, message in sorted(problems, key=lambda p: p[0]))
    return values, lines


def _type_problem(setting: Setting, value: Any) -> str | None:
    kinds = {str: "text (in quotes)", int: "a whole number", float: "a number"}
    # TOML's booleans are not numbers here, nor text.
    wrong = isinstance(value, bool) or not (
        isinstance(value, setting.kind) or (setting.kind is float and isinstance(value, int)))
    if wrong:
        return f"must be {kinds[setting.kind]}, not {_toml(value)}"
    if setting.kind is str and not value:
        return "must not be empty (leave the key out for the default)"
    if setting.choices and (value.upper() if setting.dest == "log_level" else value) \
            not in setting.choices:
        return f"must be one of {', '.join(setting.choices)}, not {_toml(value)}"
    return None


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)


# ----- merging and checking -------------------------------------------------------

def load(argv: list[str] | None = None,
         environ: Mapping[str, str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The effective settings and every mistake found in them (empty: good).
    Flag > environment > file > default. Usage errors of the flags themselves
    (an unknown flag, a port that is not a number) exit at once, as argparse does."""
    environ = os.environ if environ is None else environ
    given = vars(build_parser().parse_args(argv))
    config_path = given.pop("config", None)
    check_path = given.pop("check_config", None)
    errors: list[str] = []
    if config_path and check_path and config_path != check_path:
        errors.append(f"--config {config_path} and --check-config {check_path}: "
                      "give one file")
    path = check_path or config_path
    from_file, lines = read_file(path, errors) if path else ({}, {})
    origins = Origins(path, lines)
    values = defaults()
    for setting in SETTINGS:
        dest = setting.dest
        env_value = environ.get(setting.env, "") if setting.env else ""
        if dest in given:
            values[dest], origins.source[dest] = given[dest], "flag"
        elif env_value:
            values[dest], origins.source[dest] = env_value, "env"
        elif dest in from_file:
            values[dest], origins.source[dest] = from_file[dest], "file"
    args = argparse.Namespace(**values, config=path, check_config=check_path,
                              origins=origins)
    errors.extend(check(args, origins))
    return args, errors


def check(args: argparse.Namespace, origins: Origins) -> list[str]:
    """Every mistake in the merged settings; fills in what follows from them
    (args.db's default, args.tls, args.budgets, args.lldp_cadence,
    args.dhcp_trusted_ports, args.gateway_dpid, args.isolated)."""
    errors: list[str] = []
    name, short = origins.name, origins.short

    def prefix(*dests: str) -> str:
        # A message naming several settings names the file once, if any came from it.
        return (f"{origins.config_path}: "
                if any(origins.source.get(d) == "file" for d in dests) else "")

    if not 0 < args.ofp_port < 65536:
        errors.append(f"{name('ofp_port')} {args.ofp_port} is not a TCP port")
    for dest in ("lease_seconds", "switch_timeout"):
        if getattr(args, dest) <= 0:
            errors.append(f"{name(dest)} must be positive")
    if args.db is None:
        args.db = f"sqlite:///{pathlib.Path(args.state_dir).resolve() / 'enforcement.db'}"
    for dest in ("audit_interval", "startup_grace", "proofs_per_second"):
        if getattr(args, dest) < 0:
            errors.append(f"{name(dest)} must not be negative")
    tls = ("tls_cert", "tls_key", "tls_client_ca")
    given = [getattr(args, dest) for dest in tls]
    if any(given) and not all(given):
        if prefix(*tls):
            errors.append(f"{prefix(*tls)}mutual TLS needs tls.cert, tls.key and "
                          "tls.client_ca together (or --tls-cert, --tls-key, "
                          "--tls-client-ca); given: "
                          + ", ".join(short(d) for d in tls if getattr(args, d)))
        else:
            errors.append("mutual TLS needs --tls-cert, --tls-key and --tls-client-ca "
                          "together; given: "
                          + ", ".join(short(d) for d in tls if getattr(args, d)))
    args.tls = all(given)
    budgets = ("learn_pps", "storm_pps", "controller_pps", "max_hosts_per_port",
               "learn_ban", "learn_ban_seconds")
    bad_budgets = [dest for dest in budgets if getattr(args, dest) <= 0]
    for dest in bad_budgets:
        errors.append(f"{name(dest)} must be positive (a control-plane budget)")
    args.budgets = None
    if not bad_budgets:
        from controller.openflow.dataplane import Budgets
        args.budgets = Budgets(
            learn_pps=args.learn_pps, learn_burst=args.learn_pps,
            storm_pps=args.storm_pps, storm_burst=args.storm_pps,
            controller_pps=args.controller_pps, controller_burst=args.controller_pps,
            max_hosts=args.max_hosts_per_port, churn_macs=args.learn_ban,
            ban_seconds=args.learn_ban_seconds)
    if args.packet_in_queue < 1:
        errors.append(f"{name('packet_in_queue')} must be at least 1")
    args.gateway_dpid = None
    if args.gateway is not None:
        digits = args.gateway.strip().lower().removeprefix("0x")
        dpid = int(digits, 16) if re.fullmatch(r"[0-9a-f]{1,16}", digits) else 0
        if dpid:
            args.gateway_dpid = dpid
        else:
            errors.append(f"{name('gateway')} {args.gateway!r} is not a datapath id "
                          "(1 to 16 hex digits, not 0)")
    if args.subscriber_isolation == "on" and args.gateway is None:
        errors.append(f"{name('subscriber_isolation')} on needs the gateway switch named "
                      f"({short('gateway')}): isolation sends everything toward it")
    args.isolated = args.subscriber_isolation == "on" or (
        args.subscriber_isolation == "auto" and args.gateway is not None)
    args.lldp_cadence = None
    from controller.topology.lldp.schedule import LINK_PERIOD, Cadence
    if args.lldp_pps < 1:
        errors.append(f"{name('lldp_pps')} must be at least 1")
    if args.lldp_settled_seconds < LINK_PERIOD:
        errors.append(f"{name('lldp_settled_seconds')} must be at least {LINK_PERIOD:g} "
                      "(a link's ports are probed that often)")
    if args.lldp_pps >= 1 and args.lldp_settled_seconds >= LINK_PERIOD:
        args.lldp_cadence = Cadence(pps=args.lldp_pps,
                                    settled_period=args.lldp_settled_seconds)
    from controller.openflow.dhcpguard import parse_trusted
    args.dhcp_trusted_ports, problems = parse_trusted(args.dhcp_trusted)
    errors.extend(f"{name('dhcp_trusted')} {problem}" for problem in problems)
    listen_ok = {}
    for dest in ("metrics_listen", "http_listen"):
        value = getattr(args, dest)
        listen_ok[dest] = True
        if value != "off":
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                errors.append(f"{name(dest)} {value}: give HOST:PORT or off")
                listen_ok[dest] = False
    host, _, port = args.grpc_listen.rpartition(":")
    grpc_ok = bool(host) and port.isdigit() and int(port) <= 65535
    if not grpc_ok:
        errors.append(f"{name('grpc_listen')} {args.grpc_listen}: give HOST:PORT")
    if (listen_ok["http_listen"] and args.http_listen != "off"
            and not is_loopback(args.http_listen.rpartition(":")[0])
            and not args.http_token_file and not args.tls):
        errors.append(
            f"{name('http_listen')} {args.http_listen} is not a loopback address: the "
            "view shows every subscriber under enforcement; give --http-token-file "
            "(http.token_file) or mutual TLS (--tls-*, [tls]), or listen on 127.0.0.1")
    if (listen_ok["metrics_listen"] and args.metrics_listen != "off"
            and not is_loopback(args.metrics_listen.rpartition(":")[0]) and not args.tls):
        errors.append(
            f"{name('metrics_listen')} {args.metrics_listen} is not a loopback address: "
            "the metrics name every switch and what it holds; give mutual TLS (--tls-*, "
            "[tls]: the scraper then presents a client certificate of that CA), or listen "
            "on 127.0.0.1")
    if grpc_ok and not args.tls and not is_loopback(host):
        errors.append(
            f"{name('grpc_listen')} {args.grpc_listen} is not a loopback address: "
            "without TLS anyone who can reach it could cut subscribers off. Give "
            "--tls-cert, --tls-key and --tls-client-ca ([tls] cert, key, client_ca), "
            "or listen on 127.0.0.1")
    return errors


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None,
               environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The settings of a start; any mistake is printed (each on its own line)
    and ends the process with status 2, as a usage error. With --check-config
    the mistakes are left in args.errors for the check to report."""
    args, errors = load(argv, environ)
    args.errors = errors
    if errors and not args.check_config:
        for error in errors:
            print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(2)
    return args


def effective(args: argparse.Namespace) -> str:
    """The settings in use, as a TOML file would give them, each with where its
    value came from (a key not set shows as a comment)."""
    origins: Origins = args.origins
    out: list[str] = []
    table = ""
    for setting in in_file_order():
        section = setting.key.split(".")[0] if "." in setting.key else ""
        if section != table:
            out.append(f"\n[{section}]")
            table = section
        value = getattr(args, setting.dest)
        source = origins.source.get(setting.dest, "default")
        if source == "flag":
            source = setting.flag
        elif source == "env":
            source = f"${setting.env}"
        elif source == "file":
            source = "file"
        key = setting.key.split(".")[-1]
        if value is None:
            out.append(f"# {key} not set")
            continue
        if setting.dest == "db":
            value = printable_url(value)
        out.append(f"{key} = {_toml(value)}  # {source}")
    return "\n".join(out).lstrip("\n")


def printable_url(url: str) -> str:
    """A database URL as it may be printed (ENFORCEMENT_DB may carry a password)."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: the check says so; print nothing of it
        return "(not a database URL)"

