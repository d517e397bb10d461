"""The deployment's LLDP key: from a file the operator gives, else from
the store.

Every instance must verify the probes the leader sends (followers hear
them too, and know the links when they take over), so they need one key.
A file (identity.lldp_key_file, $ENFORCEMENT_LLDP_KEY) is the operator's
choice: its bytes, surrounding whitespace aside, are the key (`openssl rand
-hex 32` makes a good one). Without it the key is kept in the store (the
secrets table): the first instance to start makes a random one, the others
read it; an instance alone on its SQLite file keeps its own across
restarts. Whoever can read the store or the file can forge probes: guard
them as the TLS key is guarded.
"""
from __future__ import annotations

import os
import pathlib

from controller.topology.lldp.auth import KEY_BYTES_MIN

STORE_NAME = "lldp"


def read_file(path: str) -> bytes:
    """The key in a file; OSError or ValueError saying what is wrong."""
    key = pathlib.Path(path).read_bytes().strip()
    if len(key) < KEY_BYTES_MIN:
        raise ValueError(f"the LLDP key in {path} is {len(key)} bytes; it needs "
                         f"{KEY_BYTES_MIN} or more (openssl rand -hex 32 makes one)")
    return key


def load(path: str | None, store) -> tuple[bytes, str]:
    """The key, and where it came from (for the log)."""
    if path:
        return read_file(path), path
    return store.shared_secret(STORE_NAME, lambda: os.urandom(32)), "the store"
