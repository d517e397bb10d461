"""Durable state: enforcements, lifecycle events, the audit log, and the
secrets the instances of a deployment share.

SQLAlchemy Core over any database it speaks: an SQLite file by default,
PostgreSQL by URL (postgresql+psycopg://...). The schema is owned by Alembic
migrations (enforcement/store/migrations), applied at open. Every write commits
before it returns, so a decision is durable before the RPC acknowledges it;
write() takes a whole batch of decisions (records, events, audit entries) in
one transaction, so a batch costs one commit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import pathlib
import threading
import time
from collections.abc import Callable, Iterable

import orjson
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
from alembic import command
from alembic.config import Config

from enforcement.domain.model import IDENTITY_REFUSED, Enforcement, IdentityEvent, PortAlarm
from enforcement.store import codec


class _Unsigned64(sa.types.TypeDecorator):
    """A 64-bit datapath id in a signed BIGINT column (SQLite and PostgreSQL
    have no unsigned one): ids with the top bit set are stored as their
    two's complement and read back as they were."""
    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value - (1 << 64) if value is not None and value >= 1 << 63 else value

    def process_result_value(self, value, dialect):
        return value + (1 << 64) if value is not None and value < 0 else value


_META = sa.MetaData()
ENFORCEMENTS = sa.Table(
    "enforcements", _META,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(128)),
    sa.Column("case_id", sa.String(128)),
    sa.Column("subscriber_ip", sa.String(64)),
    sa.Column("state", sa.String(16)),
    sa.Column("serial", sa.BigInteger),
    sa.Column("created_at", sa.Float),
    sa.Column("expires_at", sa.Float),
    sa.Column("body", sa.Text),
    sa.Column("revision", sa.BigInteger))  # migration 0003
EVENTS = sa.Table(
    "events", _META,
    sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float), sa.Column("kind", sa.String(32)),
    sa.Column("enforcement_id", sa.String(64)), sa.Column("case_id", sa.String(128)),
    sa.Column("subscriber_ip", sa.String(64)), sa.Column("state", sa.String(16)),
    sa.Column("detail", sa.Text),
    # Port alarms only (migration 0002); NULL on enforcement events.
    sa.Column("datapath_id", _Unsigned64), sa.Column("port", sa.BigInteger),
    sa.Column("budget", sa.String(32)), sa.Column("rate", sa.Float),
    sa.Column("budget_limit", sa.Float),
    # Refused identity claims only (migration 0004), with datapath_id and port.
    sa.Column("identity", sa.String(32)), sa.Column("claimant_mac", sa.String(32)),
    sa.Column("claimed", sa.Text), sa.Column("owner", sa.Text))
AUDIT = sa.Table(
    "audit", _META,
    sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float), sa.Column("actor", sa.String(256)),
    sa.Column("call", sa.String(32)), sa.Column("outcome", sa.String(64)),
    sa.Column("enforcement_id", sa.String(64)), sa.Column("case_id", sa.String(128)),
    sa.Column("clause", sa.Text), sa.Column("detail", sa.Text))

LEADERSHIP = sa.Table(
    "leadership", _META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("holder", sa.String(256)), sa.Column("address", sa.String(256)),
    sa.Column("epoch", sa.BigInteger), sa.Column("expires_at", sa.Float),
    sa.Column("revision", sa.BigInteger))

SECRETS = sa.Table(
    "secrets", _META,  # migration 0005
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text), sa.Column("created_at", sa.Float))

MIGRATIONS = pathlib.Path(__file__).resolve().parent / "migrations"

# PostgreSQL over TCP: a server that is gone (host down, network cut) would
# otherwise hold a connect for the kernel's SYN retries (about two minutes)
# and a dead open connection until TCP gives up (about fifteen), past every
# call's deadline and every lease. A connect gives up after this long, and
# an idle connection to a peer that stopped answering is found dead within
# about 10 s (keepalives). Settings in the URL's query win.
PG_TIMEOUTS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 4,
               "keepalives_interval": 2, "keepalives_count": 3}


class Deposed(Exception):
    """A write carried an epoch that no longer leads: another instance took
    over, and nothing of this transaction was written."""


@dataclasses.dataclass(frozen=True)
class Leader:
    holder: str
    address: str
    epoch: int
    expires_in: float  # seconds left on its lease, by the database's clock


@dataclasses.dataclass(frozen=True)
class Event:
    """A stored event. Enforcement events name their record; a port alarm
    (kind port_over_budget) and a refused identity claim (identity_refused)
    have none: their enforcement_id, case_id and state are empty,
    subscriber_ip too when the port's subscriber is unknown, and the port
    fields below are set (the alarm's, or the claim's)."""
    sequence: int
    at: float
    # pending, applied, failed, lifted, expired, reapplied, drift_repaired,
    # moved, port_over_budget, policy_reloaded, reload_refused, identity_refused
    kind: str
    enforcement_id: str
    case_id: str
    subscriber_ip: str
    state: str
    detail: str
    datapath_id: int | None = None
    port: int | None = None
    budget: str | None = None
    rate: float | None = None
    budget_limit: float | None = None
    identity: str | None = None  # an IdentityEvent's kind (model.IDENTITY_KINDS)
    claimant_mac: str | None = None
    claimed: str | None = None
    owner: str | None = None


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    sequence: int
    at: float
    actor: str
    call: str
    outcome: str
    enforcement_id: str
    case_id: str
    clause: str
    detail: str


class Store:
    def __init__(self, url: str):
        self.url = url
        given = sa.engine.make_url(url)
        extra = ({k: v for k, v in PG_TIMEOUTS.items() if k not in given.query}
                 if given.get_backend_name() == "postgresql" else {})
        self._engine = sa.create_engine(url, connect_args=extra)
        # What may be logged: the URL may carry a password ($ENFORCEMENT_DB).
        self.printable_url = self._engine.url.render_as_string(hide_password=True)
        if self._engine.dialect.name == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        self._write_lock = threading.Lock()
        migrate(self._engine)
        # The write every decision waits for runs on the driver's own cursor,
        # its statements compiled once for this database: through SQLAlchemy's
        # execution layer the whole write took three times as long as its own
        # commit (bench/results/2026-12-02-latency.md).
        dialect = self._engine.dialect
        upsert = _upsert_statement(dialect.name)
        self._upsert_statement = None if upsert is None else _Compiled(upsert, dialect)
        self._insert_event = _Compiled(EVENTS.insert(), dialect,
                                       [c.name for c in EVENTS.columns if c.name != "sequence"])
        self._insert_audit = _Compiled(AUDIT.insert(), dialect,
                                       [c.name for c in AUDIT.columns if c.name != "sequence"])
        self._bump = _Compiled(sa.update(LEADERSHIP)
                               .where(LEADERSHIP.c.id == 1,
                                      LEADERSHIP.c.holder == sa.bindparam("fence_holder"),
                                      LEADERSHIP.c.epoch == sa.bindparam("fence_epoch"))
                               .values(revision=LEADERSHIP.c.revision + 1)
                               .returning(LEADERSHIP.c.revision), dialect)

    def close(self) -> None:
        self._engine.dispose()

    # ---- enforcements ------------------------------------------------------

    def encode(self, records: Iterable[Enforcement]) -> list[dict]:
        """Records as write() stores them, for a write to come (rows=)."""
        return [_row(r, 0) for r in records]

    def write(self, records, events, audits, fence: tuple[str, int] | None = None,
              rows: list[dict] | None = None) -> int:
        """Enforcements (inserted or replaced), events (at, kind, record,
        PortAlarm or IdentityEvent, detail) and audit entries (dicts as
        append_audit takes), all in one transaction. fence (holder, epoch): written only if that
        epoch still leads, else Deposed and nothing written; returns the
        revision the write was given. Without a fence (an instance alone on
        its store, which no follower reads) there is no revision: 0.

        The revision is bumped first: that locks the leadership row until
        the commit, so writes commit in revision (and event sequence)
        order, and a follower that has seen revision R has seen all before."""
        # Encoded before the lock (or before, by encode()): the revision is the
        # one field known only inside.
        rows = self.encode(records) if rows is None else rows
        event_rows = [_event_row(*e) for e in events]
        if self._upsert_statement is None:
            return self._write_portable(rows, event_rows, audits, fence)
        with self._write_lock:
            connection = self._engine.raw_connection()
            try:
                cursor = connection.cursor()
                revision = 0
                if fence is not None:
                    revision = self._bumped(cursor, fence)
                    for row in rows:
                        row["revision"] = revision
                if rows:
                    self._upsert_statement.many(cursor, rows)
                if event_rows:
                    self._insert_event.many(cursor, event_rows)
                if audits:
                    self._insert_audit.many(cursor, audits)
                cursor.close()
                connection.commit()
            except Deposed:
                connection.rollback()
                raise
            except BaseException:
                # Not knowing what broke (the database restarted, the link
                # dropped), the pool gets a fresh connection next time rather
                # than this one back, as SQLAlchemy does on a disconnect. Rolled
                # back first where it still answers: a statement that failed
                # (a trigger, a constraint) leaves its transaction open, and
                # SQLite's write lock with it.
                with contextlib.suppress(Exception):
                    connection.rollback()
                with contextlib.suppress(Exception):
                    connection.invalidate()
                raise
            finally:
                connection.close()  # back to the pool (a no-op once invalidated)
        return revision

    def _bumped(self, cursor, fence: tuple[str, int]) -> int:
        """The new revision, if fence's epoch still leads (see write)."""
        self._bump.one(cursor, {"fence_holder": fence[0], "fence_epoch": fence[1]})
        bumped = cursor.fetchone()
        if bumped is None:
            raise Deposed(f"epoch {fence[1]} no longer leads")
        return bumped[0]

    def _write_portable(self, rows, event_rows, audits, fence) -> int:
        """write() on a database with no INSERT ... ON CONFLICT, through
        SQLAlchemy alone."""
        with self._write_lock, self._engine.begin() as conn:
            revision = 0
            if fence is not None:
                bumped = conn.execute(self._bump.statement, {
                    "fence_holder": fence[0], "fence_epoch": fence[1]}).scalar()
                if bumped is None:
                    raise Deposed(f"epoch {fence[1]} no longer leads")
                revision = bumped
            for row in rows:
                row["revision"] = revision
                updated = conn.execute(ENFORCEMENTS.update().where(
                    ENFORCEMENTS.c.id == row["id"]).values(**row)).rowcount
                if not updated:
                    conn.execute(ENFORCEMENTS.insert().values(**row))
            if event_rows:
                conn.execute(EVENTS.insert(), event_rows)
            if audits:
                conn.execute(AUDIT.insert(), list(audits))
        return revision

    def load_all(self) -> list[Enforcement]:
        return self.changed_since(-1)[0]

    def changed_since(self, revision: int) -> tuple[list[Enforcement], int]:
        """The enforcements written after a revision (all for -1), oldest
        first, and the revision they bring the reader to. The revision is
        read first: rows committed meanwhile come along and are read again
        next time, which is harmless; none is missed."""
        with self._engine.connect() as conn:
            latest = conn.execute(sa.select(LEADERSHIP.c.revision)
                                  .where(LEADERSHIP.c.id == 1)).scalar() or 0
            if revision >= latest:
                return [], latest
            rows = conn.execute(sa.select(ENFORCEMENTS.c.body)
                                .where(ENFORCEMENTS.c.revision > revision)
                                .order_by(ENFORCEMENTS.c.created_at,
                                          ENFORCEMENTS.c.serial)).scalars()
            return [codec.from_dict(orjson.loads(body)) for body in rows], latest

    # ---- leadership ------------------------------------------------------------

    def acquire(self, holder: str, address: str, lease: float,
                force: bool = False) -> int | None:
        """Takes the lead if nobody holds a running lease (force: whatever
        the lease, for an instance that leads alone); returns the new epoch,
        or None. One conditional UPDATE: of instances trying at once,
        exactly one matches the row."""
        now = self._now()
        with self._engine.begin() as conn:
            return conn.execute(
                sa.update(LEADERSHIP)
                .where(LEADERSHIP.c.id == 1, sa.true() if force
                       else LEADERSHIP.c.expires_at < now)
                .values(holder=holder, address=address, epoch=LEADERSHIP.c.epoch + 1,
                        expires_at=now + lease)
                .returning(LEADERSHIP.c.epoch)).scalar()

    def renew(self, holder: str, epoch: int, lease: float) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(
                sa.update(LEADERSHIP)
                .where(LEADERSHIP.c.id == 1, LEADERSHIP.c.holder == holder,
                       LEADERSHIP.c.epoch == epoch)
                .values(expires_at=self._now() + lease)).rowcount == 1

    def raise_epoch(self, holder: str, epoch: int, at_least: int) -> int | None:
        """The holder of epoch goes on leading at a new epoch of at least
        at_least; returns it, or None if epoch no longer leads."""
        with self._engine.begin() as conn:
            return conn.execute(
                sa.update(LEADERSHIP)
                .where(LEADERSHIP.c.id == 1, LEADERSHIP.c.holder == holder,
                       LEADERSHIP.c.epoch == epoch)
                .values(epoch=sa.func.max(LEADERSHIP.c.epoch + 1, at_least)
                        if self._engine.dialect.name == "sqlite"
                        else sa.func.greatest(LEADERSHIP.c.epoch + 1, at_least))
                .returning(LEADERSHIP.c.epoch)).scalar()

    def release(self, holder: str, epoch: int) -> None:
        """Ends a lease at once (a clean stop): a follower need not wait it out."""
        with self._engine.begin() as conn:
            conn.execute(sa.update(LEADERSHIP)
                         .where(LEADERSHIP.c.id == 1, LEADERSHIP.c.holder == holder,
                                LEADERSHIP.c.epoch == epoch)
                         .values(expires_at=0.0))

    def leader(self) -> Leader:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(LEADERSHIP.c.holder, LEADERSHIP.c.address,
                                         LEADERSHIP.c.epoch,
                                         LEADERSHIP.c.expires_at - self._now())
                               .where(LEADERSHIP.c.id == 1)).one()
        return Leader(row[0], row[1], row[2], row[3])

    def _now(self):
        """The database's clock, in seconds since 1970: one clock for every
        instance, whatever their own say."""
        if self._engine.dialect.name == "postgresql":
            return sa.func.extract("epoch", sa.func.clock_timestamp())
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)")

    # ---- shared secrets ---------------------------------------------------------

    def shared_secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The deployment's secret of that name: the one stored, or, when
        none is, make()'s, stored for the other instances. Instances
        starting at once agree: one insert wins, the others read it."""
        query = sa.select(SECRETS.c.value).where(SECRETS.c.name == name)
        with self._engine.connect() as conn:
            found = conn.execute(query).scalar()
        if found is None:
            try:
                with self._write_lock, self._engine.begin() as conn:
                    conn.execute(SECRETS.insert().values(name=name, value=make().hex(),
                                                         created_at=time.time()))
            except sa.exc.IntegrityError:
                pass  # another instance stored one first: that one it is
            with self._engine.connect() as conn:
                found = conn.execute(query).scalar_one()
        return bytes.fromhex(found)

    # ---- events --------------------------------------------------------------

    def events_after(self, sequence: int, *, subscriber_ip: str | Iterable[str] = "",
                     case_id: str = "", limit: int = 500,
                     until: int | None = None) -> list[Event]:
        """subscriber_ip: one address, or any of several (a subscriber's
        addresses of both families): its events, and the refused claims
        others made on one of those addresses. until: none after that sequence."""
        query = sa.select(EVENTS).where(EVENTS.c.sequence > sequence)
        if until is not None:
            query = query.where(EVENTS.c.sequence <= until)
        if isinstance(subscriber_ip, str):
            wanted = [subscriber_ip] if subscriber_ip else []
        else:
            wanted = sorted(set(subscriber_ip))
        if wanted:
            query = query.where(EVENTS.c.subscriber_ip.in_(wanted) | (
                (EVENTS.c.kind == IDENTITY_REFUSED) & EVENTS.c.claimed.in_(wanted)))
        if case_id:
            query = query.where(EVENTS.c.case_id == case_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(EVENTS.c.sequence).limit(limit)).mappings()
            return [Event(**row) for row in rows]

    def last_event_sequence(self) -> int:
        with self._engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(EVENTS.c.sequence))).scalar() or 0

    # ---- audit ---------------------------------------------------------------

    def append_audit(self, **entry) -> None:
        with self._write_lock, self._engine.begin() as conn:
            conn.execute(AUDIT.insert().values(**entry))

    def audit(self, *, enforcement_id: str = "", case_id: str = "",
              limit: int = 100) -> list[AuditEntry]:
        query = sa.select(AUDIT)
        if enforcement_id:
            query = query.where(AUDIT.c.enforcement_id == enforcement_id)
        if case_id:
            query = query.where(AUDIT.c.case_id == case_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(AUDIT.c.sequence.desc()).limit(limit)).mappings()
            return [AuditEntry(**row) for row in rows]


class _Compiled:
    """A statement compiled once for a dialect, run on a DBAPI cursor with
    rows given as dicts (in the statement's parameter order when the driver
    takes positions, as SQLite's does)."""

    def __init__(self, statement, dialect, keys: list[str] | None = None):
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        self.statement = statement
        self.sql = compiled.string
        self._order = compiled.positiontup if compiled.positional else None
        # Values the statement itself binds (WHERE id = 1, revision + 1).
        self._fixed = {name: bind.value for name, bind in compiled.binds.items()
                       if bind.value is not None}

    def _params(self, row: dict):
        if self._fixed:
            row = {**self._fixed, **row}
        return row if self._order is None else tuple(row[k] for k in self._order)

    def one(self, cursor, row: dict) -> None:
        cursor.execute(self.sql, self._params(row))

    def many(self, cursor, rows) -> None:
        cursor.executemany(self.sql, [self._params(row) for row in rows])


def _signed64(value: int | None) -> int | None:
    """What _Unsigned64 stores for a value, for writes that bypass it."""
    return _Unsigned64().process_bind_param(value, None)


def _upsert_statement(dialect: str):
    """INSERT ... ON CONFLICT (id) DO UPDATE, where the database has it."""
    if dialect not in ("sqlite", "postgresql"):
        return None
    insert = (sa.dialects.sqlite.insert if dialect == "sqlite"
              else sa.dialects.postgresql.insert)(ENFORCEMENTS)
    return insert.on_conflict_do_update(
        index_elements=[ENFORCEMENTS.c.id],
        set_={c.name: insert.excluded[c.name] for c in ENFORCEMENTS.columns if c.name != "id"})


def _row(record: Enforcement, revision: int) -> dict:
    return {"id": record.id, "request_id": record.decision.request_id,
            "case_id": record.decision.case_id,
            "subscriber_ip": str(record.decision.subscriber.ip),
            "state": record.state.value, "serial": record.serial,
            "created_at": record.created_at, "expires_at": record.expires_at,
            # orjson: a tenth of json's time for the record written with every decision.
            "body": orjson.dumps(codec.to_dict(record)).decode(), "revision": revision}


def _event_row(at: float, kind: str,
               record: Enforcement | PortAlarm | IdentityEvent | None, detail: str) -> dict:
    if isinstance(record, PortAlarm):
        return _alarm_row(at, kind, record, detail)
    if isinstance(record, IdentityEvent):
        return _identity_row(at, kind, record, detail)
    if record is None:  # the controller's own (a reload): detail says it all
        return {"at": at, "kind": kind, "enforcement_id": "", "case_id": "",
                "subscriber_ip": "", "state": "", "detail": detail, **_NO_PORT}
    return {"at": at, "kind": kind, "enforcement_id": record.id,
            "case_id": record.decision.case_id,
            "subscriber_ip": str(record.decision.subscriber.ip),
            "state": record.state.value, "detail": detail, **_NO_PORT}


# Every row of a batch has the same keys (one executemany, whatever it mixes).
_NO_PORT = dict.fromkeys(("datapath_id", "port", "budget", "rate", "budget_limit",
                          "identity", "claimant_mac", "claimed", "owner"))


def _alarm_row(at: float, kind: str, alarm: PortAlarm, detail: str) -> dict:
    # No record: the columns 0001 made NOT NULL get empty strings, which is
    # also what the proto says for "none" (and what filters never match).
    return {"at": at, "kind": kind, "enforcement_id": "", "case_id": "",
            "subscriber_ip": alarm.subscriber_ip or "", "state": "", "detail": detail,
            **_NO_PORT,
            "datapath_id": _signed64(alarm.dpid), "port": alarm.port, "budget": alarm.budget,
            "rate": alarm.rate_pps, "budget_limit": alarm.limit}


def _identity_row(at: float, kind: str, event: IdentityEvent, detail: str) -> dict:
    # No record, as for a port alarm.
    return {"at": at, "kind": kind, "enforcement_id": "", "case_id": "",
            "subscriber_ip": event.subscriber_ip or "", "state": "", "detail": detail,
            **_NO_PORT,
            "datapath_id": _signed64(event.dpid), "port": event.port,
            "identity": event.kind, "claimant_mac": event.mac,
            "claimed": _as_filtered(event.claimed), "owner": event.owner}


def _as_filtered(claimed: str) -> str:
    """A claimed address spelled as Watch's subscriber filter spells it, so
    that the subscriber whose address it is finds the claim."""
    try:
        return str(ipaddress.ip_address(claimed))
    except ValueError:  # a MAC, a switch port
        return claimed


# Any constant: the key of the advisory lock instances migrate under.
_MIGRATION_LOCK = 0x5DB0_0003


def migrate(engine: sa.Engine) -> None:
    """Brings the schema to the newest migration. Instances started at once
    on an empty PostgreSQL database migrate one at a time (a transaction
    advisory lock): the first creates the schema, the others find it done."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (Watch, List) run beside the writer; FULL makes every
    # commit reach the disk before the RPC that caused it is answered.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()
