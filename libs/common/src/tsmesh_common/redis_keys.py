"""Names of the Redis keys and channels that several services share.

- the data generation of a tenant: bumped by the ingest writer after each commit, read by the
  query caches and the gateway micro-cache;
- the late generation of a tenant: bumped by the ingest writer, after the commit, for each
  tenant whose committed batch held a point older than ``LATE_WRITE_SECONDS`` measured on the
  writer's clock when the commit returned; the query service keys its immutable (older than its
  late-arrival window) cache entries on it, so a late point is seen by the next query;
- both generations only grow, and never revisit a value even if Redis loses them (a restart
  without persistence, a failover): each bump sets ``max(previous + 1, now)``
  (``BUMP_GENERATION_LUA``) and a reader that finds a key missing sets it to ``now`` if it is
  still missing (``INIT_GENERATIONS_LUA``), ``now`` being the Redis server's clock (``TIME``, in
  microseconds) in both, so a key that starts again from nothing starts past every value a cache
  entry could have been keyed on. A missing key never reads as a value of its own (such as 0,
  which an entry cached before the loss may carry); see ADR 0305;
- generation changes are announced: both scripts PUBLISH ``"<value> <key>"`` on
  ``GENERATION_CHANNEL`` for every value they set, in the same atomic script, so a reader that
  subscribed before it read a key can follow it without reading it again (the gateway's
  micro-cache, ADR 0406);
- the live feed: ingest publishes accepted batches (tsmesh.v1.PointBatch) per tenant, query
  subscribes to the pattern once per process;
- token revocations: auth publishes revoked token ids, every authenticator evicts them.
"""

from __future__ import annotations

LIVE_PATTERN = "tsmesh:live:*"
REVOCATION_CHANNEL = "tsmesh:auth:revocations"
GENERATION_CHANNEL = "tsmesh:generations"
# A point older than this when its commit returns bumps the tenant's late generation. Readers treat
# data as immutable only past a window of at least this plus the worst clock skew between hosts.
LATE_WRITE_SECONDS = 300

# Both scripts read the clock of the Redis server (a number of microseconds, exact in Lua's doubles
# until the year 2255), so that values set by writers and readers on different hosts are comparable.
# A Lua number given to redis.call is written in full decimal digits; '%.0f' writes the same digits
# into the announcement (Lua's own tostring would round them to 14).

# KEYS[1] = a generation key; sets and returns max(previous + 1, now), and announces it.
BUMP_GENERATION_LUA = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next = (tonumber(redis.call('GET', KEYS[1])) or 0) + 1
if now > next then next = now end
redis.call('SET', KEYS[1], next)
redis.call('PUBLISH', '{GENERATION_CHANNEL}', string.format('%.0f %s', next, KEYS[1]))
return next
"""

# KEYS = generation keys a read found missing; sets each one still missing to now (announcing it),
# returns their values (as GET would, in the order of KEYS).
INIT_GENERATIONS_LUA = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local values = {{}}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, now, 'NX') then
    redis.call('PUBLISH', '{GENERATION_CHANNEL}', string.format('%.0f %s', now, key))
  end
  values[i] = redis.call('GET', key)
end
return values
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


def active_series_key(tenant_id: str) -> str:
    """The ingest replicas' shared sorted set of a tenant's active series (member id, score last write)."""
    return f"tsmesh:ingest:active:{{{tenant_id}}}"


def series_creation_key(tenant_id: str) -> str:
    """The GCRA state of a tenant's series-creation rate; same hash tag as :func:`active_series_key`
    (one script reads both, also on Redis Cluster)."""
    return f"tsmesh:ingest:newseries:{{{tenant_id}}}"
