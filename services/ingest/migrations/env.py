"""Alembic environment of the ingest service: schema ``ts``, version table inside it.

Run programmatically by ``python -m tsmesh_ingest migrate`` (see ``tsmesh_ingest.migrate``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set by tsmesh_ingest.migrate"

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        version_table="alembic_version",
        version_table_schema="ts",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
