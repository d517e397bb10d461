"""The evidence table: what each enforcement has done, one row each
(migration 0006). Written in the same transaction as the events that
report it (Store.write), read back at a start or a takeover, and by a
follower answering Get or List.
"""
from __future__ import annotations

import orjson
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite

from enforcement.domain import evidence as domain

_META = sa.MetaData()
EVIDENCE = sa.Table(
    "evidence", _META,
    sa.Column("enforcement_id", sa.String(64), primary_key=True),
    sa.Column("updated_at", sa.Float),
    sa.Column("body", sa.Text))


def row(evidence: domain.Evidence, at: float) -> dict:
    return {"enforcement_id": evidence.enforcement_id, "updated_at": at,
            "body": encode(evidence)}


def encode(evidence: domain.Evidence) -> str:
    return orjson.dumps(domain.to_dict(evidence)).decode()


def decode(body: str) -> domain.Evidence:
    return domain.from_dict(orjson.loads(body))


def upsert_statement(dialect: str):
    """INSERT ... ON CONFLICT DO UPDATE, where the database has it (else
    None: the portable write updates, then inserts)."""
    if dialect not in ("sqlite", "postgresql"):
        return None
    insert = (sa.dialects.sqlite.insert if dialect == "sqlite"
              else sa.dialects.postgresql.insert)(EVIDENCE)
    return insert.on_conflict_do_update(
        index_elements=[EVIDENCE.c.enforcement_id],
        set_={"updated_at": insert.excluded.updated_at, "body": insert.excluded.body})


def write_portable(conn, rows: list[dict]) -> None:
    for values in rows:
        updated = conn.execute(EVIDENCE.update().where(
            EVIDENCE.c.enforcement_id == values["enforcement_id"]).values(**values)).rowcount
        if not updated:
            conn.execute(EVIDENCE.insert().values(**values))


# Ids per query when reading some: far below every database's parameter limit.
_CHUNK = 500


def load(engine: sa.Engine, ids=None) -> dict[str, domain.Evidence]:
    """The stored evidence of these enforcements (all, for None)."""
    query = sa.select(EVIDENCE.c.body)
    with engine.connect() as conn:
        if ids is None:
            bodies = list(conn.execute(query).scalars())
        else:
            wanted, bodies = list(ids), []
            for i in range(0, len(wanted), _CHUNK):
                bodies += conn.execute(query.where(
                    EVIDENCE.c.enforcement_id.in_(wanted[i:i + _CHUNK]))).scalars()
    found = (decode(body) for body in bodies)
    return {e.enforcement_id: e for e in found}
