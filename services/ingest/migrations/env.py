"""Alembic environment of the ingest service: schema ``ts``, version table inside it.

Run programmatically by ``python -m tsmesh_ingest migrate`` (see ``tsmesh_ingest.migrate``).
"""

from tsmesh_common.migrations import run_env

run_env("ts")
