"""Order statuses become the states of ``core.order_state``: the executor's old ``working`` is now
``submitted`` (or ``partially_filled`` once part of it filled), so a journal written before recovers.

Data only: the column (``orders.status``, 16 characters) is unchanged.  The values are spelled out here rather
than taken from ``OrderStatus``: a migration must mean the same thing whatever the code becomes.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

orders = sa.table("orders", sa.column("status", sa.String), sa.column("filled", sa.Float))


def upgrade() -> None:
    working = orders.c.status == "working"
    op.execute(orders.update().where(working, orders.c.filled > 0).values(status="partially_filled"))
    op.execute(orders.update().where(working).values(status="submitted"))


def downgrade() -> None:
    # The old executor knew submitting | working | retry_wait | filled | cancelled | rejected.  An order being
    # cancelled was "working" to it, and one of unknown state is best resolved by the old recovery as
    # "submitting" (adopted if the broker knows it, sent again if not).
    op.execute(orders.update().where(orders.c.status.in_(("submitted", "partially_filled", "cancelling")))
               .values(status="working"))
    op.execute(orders.update().where(orders.c.status.in_(("new", "unknown"))).values(status="submitting"))
