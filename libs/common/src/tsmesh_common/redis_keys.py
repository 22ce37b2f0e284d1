"""Names of the Redis keys and channels that several services share.

- the data generation of a tenant: bumped by the ingest writer after each commit, read by the
  query caches and the gateway micro-cache;
- the late generation of a tenant: bumped by the ingest writer, after the commit, for each
  tenant whose committed batch held a point older than ``LATE_WRITE_SECONDS`` measured on the
  writer's clock when the commit returned; the query service keys its immutable (older than its
  late-arrival window) cache entries on it, so a late point is seen by the next query;
- both generations only grow, and never revisit a value even if Redis loses them (a restart
  without persistence, a failover): each bump sets ``max(previous + 1, now in microseconds)``
  (``BUMP_GENERATION_LUA``), so a counter that starts again from nothing jumps past every value
  a cache entry could have been keyed on;
- the live feed: ingest publishes accepted batches (tsmesh.v1.PointBatch) per tenant, query
  subscribes to the pattern once per process;
- token revocations: auth publishes revoked token ids, every authenticator evicts them.
"""

from __future__ import annotations

LIVE_PATTERN = "tsmesh:live:*"
REVOCATION_CHANNEL = "tsmesh:auth:revocations"
# A point older than this when its commit returns bumps the tenant's late generation. Readers treat
# data as immutable only past a window of at least this plus the worst clock skew between hosts.
LATE_WRITE_SECONDS = 300

# KEYS[1] = a generation key, ARGV[1] = now in microseconds; returns the new generation.
BUMP_GENERATION_LUA = """
local next = (tonumber(redis.call('GET', KEYS[1])) or 0) + 1
local floor = tonumber(ARGV[1])
if floor > next then next = floor end
redis.call('SET', KEYS[1], next)
return next
"""


def data_generation_key(tenant_id: str) -> str:
    return f"tsmesh:gen:{{{tenant_id}}}"


def late_generation_key(tenant_id: str) -> str:
    """Same hash tag as the data generation, so one MGET reads both (also on Redis Cluster)."""
    return f"tsmesh:lategen:{{{tenant_id}}}"


def live_channel(tenant_id: str) -> str:
    return f"tsmesh:live:{tenant_id}"


def tenant_of_live_channel(channel: str) -> str:
    return channel.removeprefix("tsmesh:live:")
