"""Names of the Redis keys and channels that several services share.

- the data generation of a tenant: bumped by the ingest writer after each commit, read by the
  query caches and the gateway micro-cache;
- the live feed: ingest publishes accepted batches (tsmesh.v1.PointBatch) per tenant, query
  subscribes to the pattern once per process;
- token revocations: auth publishes revoked token ids, every authenticator evicts them.
"""

from __future__ import annotations

LIVE_PATTERN = "tsmesh:live:*"
REVOCATION_CHANNEL = "tsmesh:auth:revocations"


def data_generation_key(tenant_id: str) -> str:
    return f"tsmesh:gen:{{{tenant_id}}}"


def live_channel(tenant_id: str) -> str:
    return f"tsmesh:live:{tenant_id}"


def tenant_of_live_channel(channel: str) -> str:
    return channel.removeprefix("tsmesh:live:")
