"""Alembic environment of the auth service: schema ``auth``, version table inside it.

Run programmatically by ``python -m tsmesh_auth migrate`` (see ``tsmesh_auth.migrate``).
"""

from tsmesh_common.migrations import run_env

run_env("auth")
