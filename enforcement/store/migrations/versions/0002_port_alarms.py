"""Port alarms in the events table: the port, the budget, the rate and the limit.

A port alarm (kind port_over_budget) is raised by the controller, not by a
decision, so it has no enforcement: it stores empty enforcement_id, case_id
and state (those columns stay NOT NULL) and fills the new columns, which are
NULL on every other event. Nullable columns only, so an existing database
upgrades in place, without rewriting its events.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = ("datapath_id", "port", "budget", "rate", "budget_limit")


def upgrade() -> None:
    # 64 bits unsigned, kept as their two's complement (enforcement.store.database._Unsigned64).
    op.add_column("events", sa.Column("datapath_id", sa.BigInteger, nullable=True))
    # An OpenFlow port number is 32 bits unsigned: more than INTEGER holds.
    op.add_column("events", sa.Column("port", sa.BigInteger, nullable=True))
    # learn, storm, learning_ban or max_hosts (enforcement.domain.model.BUDGET_UNITS)
    op.add_column("events", sa.Column("budget", sa.String(32), nullable=True))
    # Measured and configured, in the budget's unit.
    op.add_column("events", sa.Column("rate", sa.Float, nullable=True))
    op.add_column("events", sa.Column("budget_limit", sa.Float, nullable=True))


def downgrade() -> None:
    # The alarms go with their columns: code at 0001 could not show them.
    op.execute(sa.text("DELETE FROM events WHERE kind = 'port_over_budget'"))
    with op.batch_alter_table("events") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
