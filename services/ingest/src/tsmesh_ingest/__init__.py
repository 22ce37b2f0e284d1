"""tsmesh ingest service."""
