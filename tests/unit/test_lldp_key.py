"""The deployment's LLDP key: every instance on one store uses the same
(followers verify the leader's probes), from a file or kept in the store
(controller/topology/lldp/key.py, migration 0005)."""
import os
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from alembic import command

from controller.process import config
from controller.topology.lldp import key as lldpkey
from controller.topology.lldp.auth import Authenticator
from enforcement.store.database import Store
from tests.events import migrate


def test_instances_on_one_store_share_one_key_made_once(database_url):
    stores = [Store(database_url) for _ in range(4)]
    keys, made = [], []

    def make():
        made.append(1)
        return os.urandom(32)

    def start(store):
        keys.append(lldpkey.load(None, store))

    try:
        threads = [threading.Thread(target=start, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(keys) == 4 and len({key for key, _ in keys}) == 1
        key, source = keys[0]
        assert len(key) == 32 and source == "the store"
        # what one instance signs, another verifies
        assert Authenticator(keys[1][0]).check(
            Authenticator(keys[0][0]).frame(1, 2, "00:00:00:00:00:01")).refusal is None
        # a restart reads it back; make() is not called again
        assert stores[0].shared_secret("lldp", make) == key and made == []
    finally:
        for store in stores:
            store.close()


def test_a_key_file_wins_and_a_short_or_missing_one_is_refused(tmp_path):
    good = tmp_path / "lldp.key"
    good.write_text("0123456789abcdef0123456789abcdef\n")
    store = None  # never asked
    assert lldpkey.load(str(good), store) == (b"0123456789abcdef0123456789abcdef", str(good))
    short = tmp_path / "short.key"
    short.write_text("too short\n")
    with pytest.raises(ValueError, match="needs 16"):
        lldpkey.load(str(short), store)
    with pytest.raises(OSError):
        lldpkey.load(str(tmp_path / "absent.key"), store)


def test_the_key_file_comes_from_the_flag_the_environment_or_the_file(tmp_path):
    (tmp_path / "controller.toml").write_text('[identity]\nlldp_key_file = "lldp.key"\n')
    args, errors = config.load(["--config", str(tmp_path / "controller.toml")], {})
    assert errors == [] and args.lldp_key_file == str(tmp_path / "lldp.key")
    args, _ = config.load([], {"ENFORCEMENT_LLDP_KEY": "/run/secrets/lldp"})
    assert args.lldp_key_file == "/run/secrets/lldp"
    args, _ = config.load(["--lldp-key-file", "/k"], {"ENFORCEMENT_LLDP_KEY": "/e"})
    assert args.lldp_key_file == "/k"


def test_check_config_reads_the_key_file(tmp_path):
    (tmp_path / "lldp.key").write_text("short")
    path = tmp_path / "controller.toml"
    path.write_text('[identity]\nlldp_key_file = "lldp.key"\n')
    done = subprocess.run([sys.executable, "-m", "controller.main", "--check-config",
                           str(path), "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "the LLDP key in" in done.stderr and "needs 16" in done.stderr


def test_migration_0005_adds_the_secrets_and_goes_back(database_url):
    engine = sa.create_engine(database_url)
    try:
        migrate(engine, command.upgrade, "0004")
        assert "secrets" not in sa.inspect(engine).get_table_names()
        store = Store(database_url)  # migrates to the head
        key = store.shared_secret("lldp", lambda: b"\x01" * 32)
        store.close()
        assert key == b"\x01" * 32
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")
                                ).scalar_one() == "0006"
        migrate(engine, command.downgrade, "0004")
        assert "secrets" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_refused_lldp_frames_are_a_counter_by_reason(tmp_path):
    from enforcement.domain import policy
    from enforcement.lifecycle.metrics import Metrics
    from enforcement.lifecycle.service import EnforcementService
    from tests.doubles import RecordingNetwork

    class Network(RecordingNetwork):
        def connected_switches(self):
            return [1]

        def lldp_refused(self):
            return {"bad authenticator": 7, "unreadable": 2}

    service = EnforcementService(Network(), policy.load(),
                                 Store(f"sqlite:///{tmp_path}/state.db"))
    sample = Metrics(service, Network()).registry.get_sample_value
    assert sample("openflow_lldp_refused_total", {"reason": "bad authenticator"}) == 7
    assert sample("openflow_lldp_refused_total", {"reason": "unreadable"}) == 2
