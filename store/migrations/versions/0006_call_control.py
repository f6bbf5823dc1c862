"""call control: a call's schedule, length limit and machine detection, who answered it and
why it ended, its external_id; a campaign's call-control options

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # AutoString, what autogenerate writes for str columns
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("latest_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("max_duration_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "machine_detection", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column("answered_by", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
        batch_op.add_column(
            sa.Column("ended_reason", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
        batch_op.add_column(
            sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
        batch_op.create_index(
            "ix_call_sessions_user_external_id", ["user_id", "external_id"], unique=False
        )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_duration_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "machine_detection", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True
            )
        )
        batch_op.add_column(sa.Column("voicemail_message", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("voicemail_message")
        batch_op.drop_column("machine_detection")
        batch_op.drop_column("max_duration_seconds")
    with op.batch_alter_table("call_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_call_sessions_user_external_id")
        for column in (
            "external_id",
            "ended_reason",
            "answered_by",
            "machine_detection",
            "max_duration_seconds",
            "latest_at",
            "scheduled_at",
        ):
            batch_op.drop_column(column)
