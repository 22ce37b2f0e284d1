"""tsmesh query service."""
