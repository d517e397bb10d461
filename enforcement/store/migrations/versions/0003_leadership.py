"""Leadership and revisions: several controllers on one database.

One row in `leadership` says which instance leads, at which epoch (it only
grows: it is the OpenFlow generation_id the leader claims the switches
with), and until when its lease runs, in the database's own clock so that
the instances' clocks never matter. `revision` counts committed changes:
every write of the leader bumps it in the same transaction, after checking
that the epoch is still its own (the fence), and stamps the enforcement
rows it writes with it, so a follower catches up by reading the rows past
the last revision it saw.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "leadership",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("holder", sa.String(256), nullable=False, server_default=""),
        sa.Column("address", sa.String(256), nullable=False, server_default=""),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
        # Seconds since 1970 in the database's clock.
        sa.Column("expires_at", sa.Float, nullable=False, server_default="0"),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"))
    op.bulk_insert(table, [{"id": 1, "holder": "", "address": "", "epoch": 0,
                            "expires_at": 0.0, "revision": 0}])
    op.add_column("enforcements", sa.Column("revision", sa.BigInteger, nullable=False,
                                            server_default="0"))
    op.create_index("enforcements_revision", "enforcements", ["revision"])


def downgrade() -> None:
    op.drop_index("enforcements_revision", "enforcements")
    with op.batch_alter_table("enforcements") as batch:
        batch.drop_column("revision")
    op.drop_table("leadership")
