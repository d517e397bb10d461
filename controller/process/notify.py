"""systemd's readiness protocol (sd_notify): a datagram such as READY=1,
RELOADING=1, STOPPING=1 or STATUS=... to the socket systemd names in
$NOTIFY_SOCKET (a path, or an abstract socket written with a leading '@').
Outside systemd (no $NOTIFY_SOCKET) every call does nothing.

The sdnotify library does the sending (it maps '@' to the abstract
namespace). It is asked to raise, so that a socket that is named but cannot
be reached is logged once per call rather than silently ignored; a service
manager that never hears READY=1 would kill the controller after its start
timeout, and the log should say why.
"""
from __future__ import annotations

import logging
import os
import time

import sdnotify

LOG = logging.getLogger("enforcement-controller")


def notify(state: str) -> bool:
    """Sends `state` (one or more KEY=VALUE lines) to systemd; True when sent.
    A new connection each time: the calls are few (start, reload, stop,
    status), and nothing is held between them."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        notifier = sdnotify.SystemdNotifier(debug=True)
    except OSError as exc:
        LOG.warning("cannot reach systemd's notification socket %s: %s",
                    os.environ["NOTIFY_SOCKET"], exc)
        return False
    try:
        notifier.notify(state)
    except (OSError, UnicodeError) as exc:  # the library sends latin-1 only
        LOG.warning("cannot tell systemd %s: %s", state.split("\n")[0], exc)
        return False
    finally:
        notifier.socket.close()
    return True


def reloading(status: str = "reloading") -> bool:
    """RELOADING=1 before a reload (then notify("READY=1") after it). With
    the time of the request on CLOCK_MONOTONIC, which systemd needs to match
    the reload to its request (required by Type=notify-reload, harmless
    before it)."""
    return notify(reloading_message(status))


def reloading_message(status: str) -> str:
    return (f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}\n"
            f"STATUS={status}")
