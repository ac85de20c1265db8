"""Legs as rows of their own (they were only inside the trade snapshot), so they can be queried.

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
    op.create_table(
        "legs",
        sa.Column("trade_id", sa.String(64), sa.ForeignKey("trades.trade_id"), primary_key=True),
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fraction", sa.Float, nullable=False),
        sa.Column("level", sa.Float),
        sa.Column("armed", sa.Boolean, nullable=False),
        sa.Column("fired", sa.Integer, nullable=False),
        sa.Column("filled", sa.Float, nullable=False),
        sa.Column("inflight", sa.Float, nullable=False),
        sa.Column("updated_ns", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("legs")
