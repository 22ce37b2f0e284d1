"""Apply the ts schema migrations (Alembic, version table ``ts.alembic_version``)."""

from __future__ import annotations

from tsmesh_common import migrations

MIGRATIONS = migrations.locate(__file__)


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate schema ``ts`` to ``revision`` (idempotent)."""
    migrations.upgrade(MIGRATIONS, database_url, revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """:func:`upgrade` off the event loop."""
    await migrations.upgrade_async(MIGRATIONS, database_url, revision)
