"""line confirmation: the carrier that confirmed a caller line as its account's own number
(phone_numbers.confirmed_by, confirmed_at)

Existing lines were never asked about, so they start unconfirmed (NULL). With the simulated
carrier nothing changes: it keeps no account of numbers and dials every line. With Twilio a
line dials only once Twilio confirmed it: an existing line is confirmed with
POST /api/v1/phone/{id}/confirm, or for every account at once with `dialer lines confirm`
(README "Caller lines confirmed at Twilio").

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # AutoString, what autogenerate writes for str columns
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("confirmed_by", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.drop_column("confirmed_at")
        batch_op.drop_column("confirmed_by")
