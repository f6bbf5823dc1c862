"""tenants: per-account limits (max_concurrent_calls, max_calls_per_second, fairness_weight),
and a caller number belongs to one account (phone_numbers.owner_number, unique)

Existing data may hold one number on several accounts. The oldest registration keeps it
(its owner_number is set); every later one is deactivated and left without an owner_number,
so it can never dial, and is kept (its mappings and its calls' history still point at it).
Its account can see it in GET /api/v1/phone as inactive; activating it answers 409.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # AutoString, what autogenerate writes for str columns
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_concurrent_calls", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_calls_per_second", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("fairness_weight", sa.Float(), nullable=True))
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner_number", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
    # The first registration of each number (oldest, then lowest id) owns it; later ones on
    # other accounts are deactivated.
    op.execute(
        """
        UPDATE phone_numbers SET owner_number = number
        WHERE id = (
            SELECT p.id FROM phone_numbers p WHERE p.number = phone_numbers.number
            ORDER BY p.created_at, p.id LIMIT 1
        )
        """
    )
    op.execute(
        sa.text("UPDATE phone_numbers SET active = :off WHERE owner_number IS NULL").bindparams(
            off=False
        )
    )
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_phone_numbers_owner_number", ["owner_number"])


def downgrade() -> None:
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.drop_constraint("uq_phone_numbers_owner_number", type_="unique")
        batch_op.drop_column("owner_number")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("fairness_weight")
        batch_op.drop_column("max_calls_per_second")
        batch_op.drop_column("max_concurrent_calls")
