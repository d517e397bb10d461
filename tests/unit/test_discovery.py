"""The LLDP pacer against os-ken's own Switches app: its loops are woken on
their periods (the native hub's Event.wait ignores timeouts, so without the
pacer they sleep until some switch event)."""
import threading
import time

from os_ken.lib import hub

from controller import discovery


def test_the_native_hub_event_ignores_its_timeout():
    # The defect the pacer exists for; if os-ken fixes it this test says so.
    event = hub.Event()
    returned = threading.Event()
    threading.Thread(target=lambda: (event.wait(timeout=0.1), returned.set()),
                     daemon=True).start()
    assert not returned.wait(1.0)
    event.set()
    assert returned.wait(1.0)


class FakeSwitches:
    """Only what the pacer touches, with os-ken's real events and periods."""
    LLDP_SEND_PERIOD_PER_PORT = 0.9
    TIMEOUT_CHECK_PERIOD = 5.0

    def __init__(self):
        self.is_active = True
        self.lldp_event = hub.Event()
        self.link_event = hub.Event()


def test_the_pacer_wakes_the_lldp_sender_and_the_link_reaper_on_their_periods():
    switches = FakeSwitches()
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        if len(slept) == 25:
            switches.is_active = False

    lldp_wakes, link_wakes = [], []
    switches.lldp_event.set = lambda: lldp_wakes.append(sum(slept))
    switches.link_event.set = lambda: link_wakes.append(sum(slept))
    discovery.pace(switches, sleep=sleep)
    assert set(slept) == {0.45}
    assert len(lldp_wakes) == 25
    # Every 5 s or so (11 ticks of 0.45 s = 4.95 s).
    assert [round(t, 2) for t in link_wakes] == [4.95, 9.9]


def test_a_wait_on_the_real_event_returns_once_paced():
    switches = FakeSwitches()
    switches.LLDP_SEND_PERIOD_PER_PORT = 0.1
    threading.Thread(target=discovery.pace, args=(switches,), daemon=True).start()
    try:
        started = time.monotonic()
        switches.lldp_event.clear()
        switches.lldp_event.wait(timeout=0.05)
        assert time.monotonic() - started < 1.0
    finally:
        switches.is_active = False
