"""Every journal gets a random id of its own, created once: it goes into every idempotency key
(``tg:<journal id>:T00001:entry``), so keys never repeat across journals that share an IB account (trade ids
restart at T00001 in each new journal) and recovery can tell this journal's orders from another's.

A journal created before this revision gets its id here; its orders keep the keys they were sent with.

Revision ID: 0006
Revises: 0005
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "journal_meta",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )
    op.bulk_insert(meta, [{"name": "journal_id", "value": secrets.token_hex(4)}])


def downgrade() -> None:
    op.drop_table("journal_meta")
