"""Journal each symbol's last volatility, so a restart that cannot fetch bars (pacing) still sizes levels.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volatility",
        sa.Column("symbol", sa.String(32), primary_key=True),
        sa.Column("atr", sa.Float, nullable=False),
        sa.Column("adr", sa.Float, nullable=False),
        sa.Column("ts_ns", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("volatility")
