"""tsmesh gateway service."""
