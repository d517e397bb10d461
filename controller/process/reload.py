"""Live reload of the files a running controller decides with: the policy,
the access rules and the inventory (SIGHUP, `systemctl reload`).

All three are read and checked before anything changes: a mistake in any
of them refuses the reload as a whole, the files in force stay, and the
refusal names each mistake (log, Watch event, audit). A good set takes
effect for new decisions only: live enforcements keep the rules they were
confirmed with, and each records the version of the policy it was planned
with (enforcement.domain.policy.version_of, a content hash, so every instance that
reads the same file runs the same version and says so in GetTopology).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from enforcement.api import access as access_file
from enforcement.domain import inventory as inventory_file
from enforcement.domain import policy as policy_file

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Sources:
    """The files, as the configuration names them (None: the shipped
    policy, no access rules, no inventory)."""
    policy: str | None = None
    access: str | None = None
    inventory: str | None = None


@dataclasses.dataclass(frozen=True)
class Loaded:
    policy: policy_file.Policy
    access: access_file.Access
    pinned: tuple[inventory_file.Pinned, ...]


class Refused(ValueError):
    """One or more of the files is wrong; mistakes lists each."""

    def __init__(self, mistakes: list[str]):
        super().__init__("; ".join(mistakes))
        self.mistakes = mistakes


def load(sources: Sources) -> Loaded:
    """Reads and checks all three; Refused names every mistake found."""
    mistakes: list[str] = []
    policy = access = pinned = None
    try:
        policy = policy_file.load(sources.policy)
    except policy_file.PolicyError as exc:
        mistakes.append(f"policy: {exc}")
    try:
        access = access_file.load(sources.access)
    except access_file.AccessError as exc:
        mistakes.append(f"access: {exc}")
    try:
        pinned = tuple(inventory_file.load(sources.inventory))
    except inventory_file.InventoryError as exc:
        mistakes.append(f"inventory: {exc}")
    if mistakes:
        raise Refused(mistakes)
    assert policy is not None and access is not None and pinned is not None
    return Loaded(policy, access, pinned)


def changes(old: Loaded, new: Loaded) -> str:
    """What a reload changed, in words for the event and the log."""
    said = [f"policy {new.policy.version}"
            + ("" if new.policy.version == old.policy.version
               else f" (was {old.policy.version})")]
    if new.access != old.access:
        said.append(f"access rules changed ({len(new.access.clients)} client(s))")
    if new.pinned != old.pinned:
        said.append(f"inventory changed ({len(new.pinned)} subscriber(s))")
    if len(said) == 1 and new.policy.version == old.policy.version:
        said.append("nothing else changed")
    return ", ".join(said)


class Reloader:
    """Applies reloads to the running parts, one at a time.

    service: the EnforcementService (use_policy, reload_refused); set_access
    and set_inventory: where the access rules and the inventory live in the
    running process (the gRPC guard, the view; the topology)."""

    def __init__(self, sources: Sources, current: Loaded, service, *,
                 set_access: Callable[[access_file.Access], None] = lambda a: None,
                 set_inventory: Callable[[tuple], None] = lambda p: None):
        self.sources = sources
        self.current = current
        self._service = service
        self._set_access = set_access
        self._set_inventory = set_inventory
        self._lock = threading.Lock()

    def reload(self, actor: str = "SIGHUP") -> bool:
        """True when the files were taken, False when refused (nothing
        changed). Never raises for a bad file."""
        with self._lock:
            try:
                loaded = load(self.sources)
            except Refused as exc:
                detail = "reload refused, the files in force stay: " + "; ".join(exc.mistakes)
                LOG.error("%s", detail, extra={"policy_version": self.current.policy.version})
                self._record(lambda: self._service.reload_refused(actor, detail))
                return False
            detail = "reloaded: " + changes(self.current, loaded)
            if loaded.access != self.current.access:
                self._set_access(loaded.access)
            if loaded.pinned != self.current.pinned:
                self._set_inventory(loaded.pinned)
            self.current = loaded
            self._record(lambda: self._service.use_policy(loaded.policy, actor, detail))
            LOG.info("%s", detail, extra={"policy_version": loaded.policy.version})
            return True

    @staticmethod
    def _record(write: Callable[[], None]) -> None:
        try:
            write()
        except Exception:  # the store is away: the reload stands, the log says so
            LOG.exception("the reload could not be written to the store")
