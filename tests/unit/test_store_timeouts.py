"""A PostgreSQL server that stopped answering does not hold the controller:
a connect to a peer that accepts TCP and then says nothing gives up within
its connect timeout (without one libpq waits for ever), and the timeouts
are the URL's own where it names them."""
import socket
import time

import pytest
import sqlalchemy as sa

from enforcement.store.database import PG_TIMEOUTS, Store


def test_a_silent_server_is_given_up_within_the_connect_timeout():
    silent = socket.create_server(("127.0.0.1", 0))   # accepts, never speaks
    port = silent.getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(sa.exc.OperationalError, match="timeout"):
            Store(f"postgresql+psycopg://nobody@127.0.0.1:{port}/enforcement")
    finally:
        silent.close()
    waited = time.monotonic() - started
    print(f"gave up after {waited:.1f} s (connect_timeout {PG_TIMEOUTS['connect_timeout']} s)")
    assert waited < 30


def test_the_urls_own_timeouts_win():
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(sa.exc.OperationalError):
            Store(f"postgresql+psycopg://nobody@127.0.0.1:{port}/enforcement"
                  "?connect_timeout=2")
    finally:
        silent.close()
    assert time.monotonic() - started < PG_TIMEOUTS["connect_timeout"]
