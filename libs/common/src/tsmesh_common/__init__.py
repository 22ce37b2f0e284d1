"""Shared building blocks of the tsmesh services."""
