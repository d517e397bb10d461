"""Refused identity claims in the events table: which claim, by whom, on what,
whose it was.

An identity event (kind identity_refused) is raised by the controller, not
by a decision, so like a port alarm it stores empty enforcement_id, case_id
and state, and the switch and port in the columns 0002 added. The new
columns are NULL on every other event. Nullable columns only, so an
existing database upgrades in place, without rewriting its events.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = ("identity", "claimant_mac", "claimed", "owner")


def upgrade() -> None:
    # address_claim, mac_claim, lldp_forged or dhcp_untrusted
    # (enforcement.domain.model.IDENTITY_KINDS)
    op.add_column("events", sa.Column("identity", sa.String(32), nullable=True))
    op.add_column("events", sa.Column("claimant_mac", sa.String(32), nullable=True))
    # Text: an address, a MAC or "switch X port Y", worded by the controller;
    # a length limit here would turn a longer wording into a lost event.
    op.add_column("events", sa.Column("claimed", sa.Text, nullable=True))
    op.add_column("events", sa.Column("owner", sa.Text, nullable=True))


def downgrade() -> None:
    # The events go with their columns: code at 0003 could not show them.
    op.execute(sa.text("DELETE FROM events WHERE kind = 'identity_refused'"))
    with op.batch_alter_table("events") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
