"""Each order row says which broker session placed it (``placed_through``: for IB, the client id and the gateway's
address).  Why: IB shows a client only its own open orders and executions (``reqOpenOrders``, ``reqExecutions``), so
an engine started through another client cannot tell an order in flight that never reached IB from one working
under the other client - and recovery re-sent the latter: two live orders, one ``orderRef`` (found by an
independent review).  Rows from before say nothing (empty): recovery treats them as before.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("placed_through", sa.String(128), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("placed_through")
