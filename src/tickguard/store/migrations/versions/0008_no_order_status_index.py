"""The index on ``orders.status`` goes: no query reads orders by status (recovery and the views read them by trade),
and every order's status changes several times (submitting, submitted, filled...) - each change moved its entry in
that index, and each order row inserted between a crossing and the wire paid for one more B-tree (a page more in
the exit's commit).  The downgrade builds it again.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_orders_status", table_name="orders")


def downgrade() -> None:
    op.create_index("ix_orders_status", "orders", ["status"])
