"""WebSocket ``/v1/stream``: live points fanned out from one upstream Subscribe per (tenant, selector)."""
