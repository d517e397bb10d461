"""What each enforcement has done: its counters, added up across resets.

One row per enforcement that has been counted (enforcement/domain/evidence.py
holds the form of body: every counter's totals, last raw reading and birth
time, so that a restarted controller tells what is new in the next read
from what it counted before). Written by the leader at most once per
--evidence-interval, for the enforcements whose counters moved.

The events table gets the evidence an EVIDENCE event carries (JSON, the
same form), NULL on every other event. Nullable, so existing databases
upgrade in place.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evidence",
        sa.Column("enforcement_id", sa.String(64), primary_key=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("body", sa.Text, nullable=False))
    op.add_column("events", sa.Column("evidence", sa.Text, nullable=True))


def downgrade() -> None:
    # The events go with their column: code at 0005 could not show them.
    op.execute(sa.text("DELETE FROM events WHERE kind = 'evidence'"))
    with op.batch_alter_table("events") as batch:
        batch.drop_column("evidence")
    op.drop_table("evidence")
