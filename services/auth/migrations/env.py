"""Alembic environment of the auth service: schema ``auth``, version table inside it.

Run programmatically by ``python -m tsmesh_auth migrate`` (see ``tsmesh_auth.migrate``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set by tsmesh_auth.migrate"

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        version_table="alembic_version",
        version_table_schema="auth",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
