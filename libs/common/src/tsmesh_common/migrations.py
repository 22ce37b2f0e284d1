"""Run a service's Alembic migrations programmatically (``python -m tsmesh_<svc> migrate``).

Each schema-owning service keeps its migrations in ``services/<svc>/migrations`` (packaged inside
its wheel as ``tsmesh_<svc>/migrations``) with the version table in its own schema. Alembic is
imported lazily: services without a schema never need it installed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path


def locate(module_file: str) -> Path:
    """The Alembic folder of the service whose module is ``module_file``: in the wheel or the tree."""
    here = Path(module_file).resolve().parent
    for candidate in (here / "migrations", here.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"no migrations folder next to {here}")


def sqlalchemy_url(database_url: str) -> str:
    """The psycopg (v3) SQLAlchemy URL of a ``postgresql://`` DSN."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    return database_url


def upgrade(migrations: Path, database_url: str, revision: str = "head") -> None:
    """Migrate to ``revision`` (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    command.upgrade(cfg, revision)


async def upgrade_async(migrations: Path, database_url: str, revision: str = "head") -> None:
    """:func:`upgrade` off the event loop."""
    await asyncio.to_thread(upgrade, migrations, database_url, revision)


def lock_key(schema: str) -> str:
    """The advisory-lock key concurrent migrations of ``schema`` serialise on (``hashtext`` of it)."""
    return f"tsmesh.migrate.{schema}"


def run_env(schema: str) -> None:
    """The body of a service's Alembic ``env.py``: migrate online, version table inside ``schema``.

    The run holds a session advisory lock for its whole length, so concurrent runs (Jobs, replicas)
    queue: the first migrates, the others then find the schema at head and do nothing.
    """
    from alembic import context
    from sqlalchemy import create_engine, pool, text

    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url must be set (run through tsmesh_common.migrations.upgrade)")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            key = {"key": lock_key(schema)}
            connection.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), key)
            connection.commit()
            context.configure(
                connection=connection,
                version_table="alembic_version",
                version_table_schema=schema,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), key)
            connection.commit()
    finally:
        engine.dispose()
