"""Secrets the instances of a deployment share.

One row per secret, by name. The first is "lldp": the key of the
authenticator in the controller's LLDP probes (controller/topology/lldp/auth.py),
when no --lldp-key-file is given. Every instance sharing the store must
verify what the leader sends, so the key lives where they all read: the
first instance to start finds none and writes a random one, the others
read it (controller/topology/lldp/key.py).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        # Hex text: the same in every database, and readable by an operator
        # who must copy it into a key file.
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_table("secrets")
