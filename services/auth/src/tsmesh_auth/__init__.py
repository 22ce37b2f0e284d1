"""tsmesh auth service."""
