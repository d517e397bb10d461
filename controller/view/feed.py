"""The view's live feed: notices change cheaply, takes a snapshot only then,
and hands the pages the difference.

What counts as change: a stored event (the service's event listeners, the
same announcement that wakes Watch streams, so a decision is pushed at
once), the ledger's revision (a follower catches up on reading), and the
network's own TopologyView (hosts, links, switches), compared by hash a few
times a second. Nothing of the 2,000-host snapshot is built or sent while
nothing moved, nor while no page watches (a page that connects gets a
fresh one), and under a stream of decisions at most one every
COALESCE_SECONDS, or every twice the time the last one took if longer (a
snapshot lists every live enforcement: with a hundred thousand it takes a
while, and the feed must not take more than a third of the GIL the
decisions need).
"""
from __future__ import annotations

import functools
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable

LOG = logging.getLogger(__name__)

# How often the network is looked at for changes no event announces.
CHECK_SECONDS = 0.25
# The least time between two snapshots: a burst of decisions is one push.
COALESCE_SECONDS = 0.2


class Feed:
    def __init__(self, model, service, *, interval: float = CHECK_SECONDS):
        self._model = model
        self._service = service
        self._interval = interval
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._events = 0
        self._signature: object = None
        self._snapshot: dict | None = None
        self._latest = (0, "")
        self._index: dict[str, list[tuple[str, str]]] = {}
        self.version = 0
        self._publish: Callable[[int, str], None] = lambda version, diff: None
        # How many pages watch the stream (the web server says).
        self.watching: Callable[[], int] = lambda: 1
        self._thread: threading.Thread | None = None
        if hasattr(service, "add_event_listener"):
            # Listeners cannot be removed: a stopped feed's one stays a no-op.
            service.add_event_listener(self._heard)

    def _heard(self, kind, record) -> None:
        self._events += 1
        self._wake.set()

    def start(self, publish: Callable[[int, str], None]) -> None:
        """publish(version, diff JSON) after each change, in version order,
        from whichever thread noticed it: it must only hand over, not block."""
        self._publish = publish
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="topology-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self.watching():
                continue  # the next page to connect refreshes first
            started = time.monotonic()
            try:
                self.refresh()
            except Exception:  # the controller's state mid-change: try again next tick
                LOG.exception("topology view: cannot take a snapshot")
            self._stop.wait(max(COALESCE_SECONDS, 2 * (time.monotonic() - started)))

    def _current_signature(self) -> object:
        if hasattr(self._service, "page"):
            # An empty page: no work on a leader, a follower's catch-up with
            # the store (which announces no events to it) on one.
            self._service.page(size=0)
        revision = getattr(getattr(self._service, "ledger", None), "revision", None)
        return hash(self._model.network.topology()), revision, self._events

    def refresh(self) -> bool:
        """A new snapshot if anything changed since the last one, its
        difference published (whichever thread asked: under the lock, so
        the versions go out in order). Whether there was one."""
        with self._lock:
            signature = self._current_signature()
            if signature == self._signature and self._snapshot is not None:
                return False
            new = self._model.topology()
            self._signature = signature
            changes = None if self._snapshot is None else diff(self._snapshot, new)
            if self._snapshot is not None and changes is None:
                return False
            self.version += 1
            self._snapshot = new
            self._latest = (self.version,
                            json.dumps({"version": self.version, "topology": new}))
            self._index = build_index(new["hosts"])
            if changes is not None:
                self._publish(self.version, json.dumps({"version": self.version, **changes}))
            return True

    def current(self) -> tuple[int, str]:
        """The latest snapshot as the stream's first message. No lock: the
        event loop asks, and must not wait for a snapshot being taken; the
        pair is replaced whole."""
        return self._latest

    def search(self, query: str) -> list[dict]:
        self.refresh()
        with self._lock:
            index, snapshot = self._index, self._snapshot
        hosts = {h["mac"]: h for h in (snapshot or {}).get("hosts", [])}
        return [dict(mac=mac, field=field, switch=hosts[mac]["switch"])
                for mac, field in search(index, query) if mac in hosts]


def diff(old: dict, new: dict) -> dict | None:
    """What the page must change to go from one snapshot to the next:
    switches and hosts changed or removed (by id and MAC), and the links
    and quarantine paths whole when they differ (they are few)."""
    out: dict = {}
    for kind, key in (("switches", "id"), ("hosts", "mac")):
        before = {item[key]: item for item in old[kind]}
        after = {item[key]: item for item in new[kind]}
        changed = [item for k, item in after.items() if before.get(k) != item]
        removed = [k for k in before if k not in after]
        if changed or removed:
            out[kind] = {"changed": changed, "removed": removed}
    for kind in ("links", "paths"):
        if old[kind] != new[kind]:
            out[kind] = new[kind]
    return out or None


def normalise(text: str) -> str:
    """One spelling per thing an engineer may type: an address as ipaddress
    writes it (2001:DB8:0::1 is 2001:db8::1), a MAC with colons, the rest
    in lower case."""
    text = text.strip()
    return _address(text) or _mac(text) or text.lower()


# Addresses stay from one snapshot to the next: each is parsed once.
@functools.lru_cache(maxsize=1 << 16)
def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
    return ""


def _mac(text: str) -> str:
    lowered = text.lower()
    if len(lowered) == 17 and lowered[2::3] in ("-----", ":::::"):
        return lowered.replace("-", ":")
    return ""


def build_index(hosts: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """Every name a host goes by (its addresses, MAC, account, and its
    enforcements' cases, ids and addresses) to (MAC, which name it was).
    Each name is spelled the way normalise() spells a query, knowing what
    it is (parsing every case id as an address would cost more than the
    whole snapshot)."""
    index: dict[str, list[tuple[str, str]]] = {}

    def add(key: str, mac: str, field: str) -> None:
        if key:
            found = index.setdefault(key, [])
            if (mac, field) not in found:
                found.append((mac, field))

    for host in hosts:
        mac = host["mac"]
        add(_address(host["ip"]) if host["ip"] else "", mac, "ip")
        add(_mac(mac) or mac.lower(), mac, "mac")
        add(host["account"].strip().lower(), mac, "account")
        for address in host["ipv6"]:
            add(_address(address) or address.lower(), mac, "ipv6")
        for enforcement in host["enforcements"]:
            add(enforcement["case"].strip().lower(), mac, "case")
            add(enforcement["id"].lower(), mac, "enforcement")
            for address in (enforcement["subscriber"], *enforcement["addresses"]):
                add(_address(address) or address.lower(), mac, "ip")
    return index


def search(index: dict[str, list[tuple[str, str]]], query: str,
           limit: int = 20) -> list[tuple[str, str]]:
    """Exact matches first; failing those, names that contain the query
    (a partial case id, an address prefix), at most limit."""
    wanted = normalise(query)
    if not wanted:
        return []
    if wanted in index:
        return index[wanted][:limit]
    found: list[tuple[str, str]] = []
    for key in sorted(index):
        if wanted in key:
            found.extend(m for m in index[key] if m not in found)
            if len(found) >= limit:
                break
    return found[:limit]
