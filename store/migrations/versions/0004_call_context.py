"""call context: variables and metadata of a call, media stream URLs of agents and flows,
campaign variables, the simulated carrier's recorded call ends

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variables", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("call_metadata", sa.Text(), nullable=True))
    for table in ("agents", "flows"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("media_stream_url", sa.Text(), nullable=True))
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variables", sa.Text(), nullable=True))
    with op.batch_alter_table("simulated_calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("duration_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("simulated_calls", schema=None) as batch_op:
        batch_op.drop_column("duration_seconds")
        batch_op.drop_column("ended_at")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("variables")
    for table in ("flows", "agents"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("media_stream_url")
    with op.batch_alter_table("call_sessions", schema=None) as batch_op:
        batch_op.drop_column("call_metadata")
        batch_op.drop_column("variables")
