"""Entry point of the ``tsmesh`` console script."""

from __future__ import annotations

from tsmesh_cli.app import app


def main() -> None:
    """Run the CLI (exit codes: :mod:`tsmesh_cli.errors`)."""
    app()


if __name__ == "__main__":
    main()
