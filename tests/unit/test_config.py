"""The configuration file, the environment and the flags (controller/process/config.py),
and --check-config run as the real command (controller/process/checkconfig.py)."""
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

from controller.process import config

EXAMPLE = pathlib.Path(__file__).parents[2] / "deploy" / "controller.example.toml"


def _load(*argv, environ=None):
    return config.load(list(argv), environ or {})


def _write(tmp_path, text, name="controller.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_shipped_example_is_the_defaults():
    """The example documents the code: every key it sets is at its default,
    and (below) every key the code knows is in it."""
    args, errors = _load("--config", str(EXAMPLE))
    assert errors == []
    wanted = config.defaults()
    # Not set, so it follows the state directory.
    wanted["db"] = f"sqlite:///{pathlib.Path(wanted['state_dir']).resolve()}/enforcement.db"
    for setting in config.SETTINGS:
        assert getattr(args, setting.dest) == wanted[setting.dest], setting.key
    # The file gives exactly the keys that have a fixed default.
    given = {dest for dest, source in args.origins.source.items() if source == "file"}
    fixed = {s.dest for s in config.SETTINGS
             if s.default is not None and not callable(s.default)}
    assert given == fixed


def test_the_shipped_example_names_every_key_and_its_flag():
    text = EXAMPLE.read_text()
    table = ""
    seen = {}
    for line in text.splitlines():
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            table = header.group(1)
        entry = re.match(r"^#? ?(\w+) = .*# (--[\w-]+)$", line)
        if entry:
            seen[f"{table}.{entry.group(1)}" if table else entry.group(1)] = entry.group(2)
    # Top-level keys document their flag on the comment line above them.
    for setting in config.SETTINGS:
        if "." not in setting.key:
            assert re.search(rf"^#? ?{setting.key} = ", text, re.M), setting.key
            assert setting.flag in text
        else:
            assert seen.get(setting.key) == setting.flag, setting.key
    assert tomllib.loads(text)  # and it is TOML


def test_flag_beats_environment_beats_file_beats_default(tmp_path):
    path = _write(tmp_path, 'db = "sqlite:///from-file"\n[grpc]\nlisten = "127.0.0.1:1"\n'
                            '[tls]\nkey = "file.key"\n')
    env = {"ENFORCEMENT_DB": "sqlite:///from-env", "ENFORCEMENT_TLS_KEY": "/env.key"}
    args, _ = _load("--config", path, "--db", "sqlite:///from-flag", environ=env)
    assert args.db == "sqlite:///from-flag" and args.origins.source["db"] == "flag"
    assert args.tls_key == "/env.key" and args.origins.source["tls_key"] == "env"
    assert args.grpc_listen == "127.0.0.1:1" and args.origins.source["grpc_listen"] == "file"
    assert args.ofp_port == 6653 and "ofp_port" not in args.origins.source
    args, _ = _load("--config", path)
    assert args.db == "sqlite:///from-file"
    # A relative path in the file is read from the file's folder.
    assert args.tls_key == str(tmp_path / "file.key")


def test_the_database_defaults_into_the_state_directory(tmp_path):
    args, errors = _load("--state-dir", str(tmp_path))
    assert errors == [] and args.db == f"sqlite:///{tmp_path}/enforcement.db"


def test_every_mistake_is_named_with_its_file_key_and_line(tmp_path):
    lines = [
        'switch_timeout = "5"',           # 1: text for a number
        "[grpc]",                          # 2
        'lisen = "127.0.0.1:1"',           # 3: a typo
        "[openflow]",                      # 4
        "port = 70000",                    # 5: not a port
        "[log]",                           # 6
        'format = "xml"',                  # 7: not a choice
        "[control_plane]",                 # 8
        "learn_pps = true",                # 9: a boolean for a number
        "storm_pps = 0",                   # 10: not positive
        "[nope]",                          # 11: no such table
        "x = 1",
    ]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    _, errors = _load("--config", path)
    assert errors == [
        f"{path}:1: switch_timeout must be a number, not \"5\"",
        f"{path}:3: unknown key grpc.lisen; did you mean grpc.listen?",
        f"{path}:7: log.format must be one of text, json, not \"xml\"",
        f"{path}:9: control_plane.learn_pps must be a whole number, not true",
        (f"{path}:11: unknown table [nope] (known: grpc, openflow, tls, ha, metrics, http, "
         "control_plane, forwarding, discovery, identity, log)"),
        f"{path}:5: openflow.port 70000 is not a TCP port",
        f"{path}:10: control_plane.storm_pps must be positive (a control-plane budget)",
    ]


def test_the_lldp_budget_and_sweep_period(tmp_path):
    args, errors = _load()
    assert errors == [] and args.lldp_cadence.pps == 500
    assert args.lldp_cadence.settled_period == 20.0
    path = _write(tmp_path, "[discovery]\nlldp_pps = 50\nlldp_settled_seconds = 60\n")
    args, errors = _load("--config", path, "--lldp-pps", "80")
    assert errors == [] and (args.lldp_cadence.pps, args.lldp_cadence.settled_period) == (
        80, 60.0)
    _, errors = _load("--lldp-pps", "0", "--lldp-settled-seconds", "0.5")
    assert errors == ["--lldp-pps must be at least 1",
                      ("--lldp-settled-seconds must be at least 1 (a link's ports are "
                      "probed that often)")]


def test_file_level_mistakes(tmp_path):
    _, errors = _load("--config", str(tmp_path / "absent.toml"))
    assert errors == [(f"{tmp_path}/absent.toml: cannot read the configuration file: "
                       "No such file or directory")]
    _, errors = _load("--config", _write(tmp_path, "grpc = 5\n[log\n"))
    assert len(errors) == 1 and "not valid TOML" in errors[0] and "line 2" in errors[0]
    _, errors = _load("--config", _write(tmp_path, 'grpc = "x"\npolicy = ""\n'))
    assert errors == [f"{tmp_path}/controller.toml:1: grpc must be a table ([grpc])",
                      (f"{tmp_path}/controller.toml:2: policy must not be empty "
                       "(leave the key out for the default)")]


def test_cross_checks_name_the_file_keys(tmp_path):
    path = _write(tmp_path, '[tls]\ncert = "a.pem"\n[http]\nlisten = "0.0.0.0:80"\n')
    _, errors = _load("--config", path)
    assert errors[0].startswith(f"{path}: mutual TLS needs tls.cert, tls.key and "
                                "tls.client_ca together")
    assert errors[0].endswith("given: tls.cert")
    assert errors[1].startswith(f"{path}:4: http.listen 0.0.0.0:80 is not a loopback")
    # The same from flags reads as before the file existed.
    _, errors = _load("--tls-cert", "a.pem")
    assert errors == [("mutual TLS needs --tls-cert, --tls-key and --tls-client-ca "
                       "together; given: --tls-cert")]


def test_log_level_is_read_in_any_case(tmp_path):
    args, errors = _load("--config", _write(tmp_path, '[log]\nlevel = "debug"\n'))
    assert errors == [] and args.log_level == "DEBUG"
    args, errors = _load("--log-level", "warning")
    assert errors == [] and args.log_level == "WARNING"


def test_the_printed_database_url_hides_its_password():
    assert config.printable_url("postgresql+psycopg://u:secret@h/db") == \
        "postgresql+psycopg://u:***@h/db"


def _check(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "controller.main", *argv],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_check_config_prints_what_would_be_used_and_touches_nothing(tmp_path):
    state = tmp_path / "state"
    (tmp_path / "access.toml").write_text('[clients.desk]\nrole = "engineer"\n')
    (tmp_path / "inventory.toml").write_text(
        '[[subscriber]]\naccount = "A-1"\nswitch = 2\nport = 1\nip = "10.0.0.1"\n')
    path = _write(tmp_path, f'state_dir = "{state}"\naccess = "access.toml"\n'
                            'inventory = "inventory.toml"\n[openflow]\nport = 6999\n')
    result = _check("--check-config", path, "--ofp-port", "7000",
                    env={"ENFORCEMENT_DB": "postgresql+psycopg://u:hunter2@db/enf"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "port = 7000  # --ofp-port" in out
    assert f'state_dir = "{state}"  # file' in out
    assert 'db = "postgresql+psycopg://u:***@db/enf"  # $ENFORCEMENT_DB' in out
    assert "hunter2" not in out + result.stderr
    assert re.search(r"policy: the shipped default, version [0-9a-f]{16}, \d+ ladder", out)
    assert "access: " in out and "1 client(s)" in out
    assert "1 subscriber(s)" in out and out.rstrip().endswith(f"{path}: good")
    assert not state.exists()


def test_check_config_lists_every_mistake(tmp_path):
    (tmp_path / "policy.toml").write_text("[escalation]\nwindow_days = -1\n")
    path = _write(tmp_path, f'state_dir = "{tmp_path}/state"\npolicy = "policy.toml"\n'
                            'inventory = "missing.toml"\nswitch_timeout = 0\n'
                            '[grpc]\nlisen = "127.0.0.1:1"\n')
    result = _check("--check-config", path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"4 mistake(s) in {path}:"
    assert lines[1:] == [
        f"  {path}:6: unknown key grpc.lisen; did you mean grpc.listen?",
        f"  {path}:4: switch_timeout must be positive",
        f"  {path}:2: policy: {tmp_path}/policy.toml: "
        + lines[3].split(f"{tmp_path}/policy.toml: ", 1)[1],
        f"  {path}:3: inventory: {tmp_path}/missing.toml: No such file or directory",
    ]
    assert "escalation" in lines[3] or "limits" in lines[3]
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("argv", [["--config", "x.toml", "--check-config", "y.toml"]])
def test_two_different_files_are_refused(argv):
    _, errors = _load(*argv)
    assert errors[0] == "--config x.toml and --check-config y.toml: give one file"


def test_the_gateway_is_a_datapath_id_and_isolation_follows_it(tmp_path):
    args, errors = _load("--gateway", "0x09")
    assert errors == [] and args.gateway_dpid == 9 and args.isolated
    args, errors = _load("--gateway", "9", "--subscriber-isolation", "off")
    assert errors == [] and args.gateway_dpid == 9 and not args.isolated
    args, errors = _load()
    assert errors == [] and args.gateway_dpid is None and not args.isolated
    _, errors = _load("--gateway", "s9")
    assert errors == ["--gateway 's9' is not a datapath id (1 to 16 hex digits, not 0)"]
    _, errors = _load("--subscriber-isolation", "on")
    assert errors == [("--subscriber-isolation on needs the gateway switch named "
                       "(--gateway): isolation sends everything toward it")]
