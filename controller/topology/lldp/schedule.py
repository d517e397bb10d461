"""Keeps OS-Ken's LLDP link discovery on its schedule.

os_ken.topology.switches paces its two loops with hub.Event.wait(timeout):
the LLDP sender (each port every 0.9 s) and the link reaper (links not
refreshed for 10 s go down, checked every 5 s). On the native-thread hub that
this process runs (os-ken 4.2.2), Event.wait ignores its timeout and returns
only when the event is set. LLDP then goes out only when a switch or port
event happens to wake the sender, so one lost frame at start-up leaves a link
half-discovered for good, and a link that dies without a port-status (carrier
still up, frames lost) is never reaped. Even with a working timeout, the
sender waits untimed whenever every port is due at once, as after any stall.

The pacer wakes both loops on their own periods. It only sets their events:
what to send and what to reap stays os-ken's decision.
"""
from __future__ import annotations

import logging
import time

LOG = logging.getLogger(__name__)


def pace(switches, *, sleep=time.sleep) -> None:
    """Runs until the switches app closes. switches: the os-ken Switches app
    (with link discovery on)."""
    lldp_period = switches.LLDP_SEND_PERIOD_PER_PORT / 2
    reap_every = max(1, round(switches.TIMEOUT_CHECK_PERIOD / lldp_period))
    LOG.info("LLDP discovery paced every %.2f s, links reaped every %.1f s",
             lldp_period, reap_every * lldp_period)
    tick = 0
    while switches.is_active:
        sleep(lldp_period)
        switches.lldp_event.set()
        tick += 1
        if tick % reap_every == 0:
            switches.link_event.set()
