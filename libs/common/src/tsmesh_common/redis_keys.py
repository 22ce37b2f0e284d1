"""Names of every Redis key and channel of tsmesh, all under one per-deployment namespace.

Every name a service reads, writes, publishes or subscribes to comes from a :class:`RedisNamespace`
(``TSMESH_REDIS_NAMESPACE``, default ``tsmesh``; ADR 0011): keys start with ``<namespace>:`` and so
do channels, which Redis shares across its databases. Two deployments on one Redis with different
namespaces share nothing: no throttle, rate limit, cache entry, generation or live point.

What the names hold:

- the data generation of a tenant: bumped by the ingest writer after each commit, read by the
  query caches and the gateway micro-cache;
- the late generation of a tenant: bumped by the ingest writer, after the commit, for each
  tenant whose committed batch held a point older than ``LATE_WRITE_SECONDS`` measured on the
  writer's clock when the commit returned; the query service keys its immutable (older than its
  late-arrival window) cache entries on it, so a late point is seen by the next query;
- both generations only grow, and never revisit a value even if Redis loses them (a restart
  without persistence, a failover): each bump sets ``max(previous + 1, now)``
  (:attr:`RedisNamespace.bump_generation_lua`) and a reader that finds a key missing sets it to
  ``now`` if it is still missing (:attr:`RedisNamespace.init_generations_lua`), ``now`` being the
  Redis server's clock (``TIME``, in microseconds) in both, so a key that starts again from nothing
  starts past every value a cache entry could have been keyed on. A missing key never reads as a
  value of its own (such as 0, which an entry cached before the loss may carry); see ADR 0305;
- generation changes are announced: both scripts PUBLISH ``"<value> <key>"`` on the namespace's
  generation channel for every value they set, in the same atomic script, so a reader that
  subscribed before it read a key can follow it without reading it again (the gateway's
  micro-cache, ADR 0406);
- the live feed: ingest publishes accepted batches (tsmesh.v1.PointBatch) per tenant, query
  subscribes to the namespace's pattern once per process;
- token revocations: auth publishes revoked token ids, every authenticator evicts them;
- login throttles (auth), rate limits (gateway, ingest), active series and series creation
  (ingest) and the query L2 cache, each under a prefix of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_NAMESPACE = "tsmesh"
# No ':' (a namespace must never be a prefix of another one's names), no glob characters (the live
# pattern), no braces (the tenant is each key's hash tag), at most 64 characters.
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# A point older than this when its commit returns bumps the tenant's late generation. Readers treat
# data as immutable only past a window of at least this plus the worst clock skew between hosts.
LATE_WRITE_SECONDS = 300

# Both scripts read the clock of the Redis server (a number of microseconds, exact in Lua's doubles
# until the year 2255), so that values set by writers and readers on different hosts are comparable.
# A Lua number given to redis.call is written in full decimal digits; '%.0f' writes the same digits
# into the announcement (Lua's own tostring would round them to 14).

# KEYS[1] = a generation key; sets and returns max(previous + 1, now), and announces it.
_BUMP_GENERATION_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next = (tonumber(redis.call('GET', KEYS[1])) or 0) + 1
if now > next then next = now end
redis.call('SET', KEYS[1], next)
redis.call('PUBLISH', '{channel}', string.format('%.0f %s', next, KEYS[1]))
return next
"""

# KEYS = generation keys a read found missing; sets each one still missing to now (announcing it),
# returns their values (as GET would, in the order of KEYS).
_INIT_GENERATIONS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local values = {{}}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, now, 'NX') then
    redis.call('PUBLISH', '{channel}', string.format('%.0f %s', now, key))
  end
  values[i] = redis.call('GET', key)
end
return values
"""


@dataclass(frozen=True)
class RedisNamespace:
    """The names of one deployment's keys and channels (``TSMESH_REDIS_NAMESPACE``).

    Raises ``ValueError`` for a name outside ``NAMESPACE_PATTERN``."""

    name: str = DEFAULT_NAMESPACE
    revocation_channel: str = field(init=False)
    generation_channel: str = field(init=False)
    live_pattern: str = field(init=False)
    login_failure_prefix: str = field(init=False)
    gateway_rate_prefix: str = field(init=False)
    ingest_rate_prefix: str = field(init=False)
    bump_generation_lua: str = field(init=False)
    init_generations_lua: str = field(init=False)

    def __post_init__(self) -> None:
        if not NAMESPACE_PATTERN.fullmatch(self.name):
            raise ValueError(
                f"must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit, got {self.name!r}"
            )
        n = self.name
        derived = {
            "revocation_channel": f"{n}:auth:revocations",
            "generation_channel": f"{n}:generations",
            "live_pattern": f"{n}:live:*",
            "login_failure_prefix": f"{n}:auth:loginfail:",
            "gateway_rate_prefix": f"{n}:gw:rl",
            "ingest_rate_prefix": f"{n}:ingest:rate",
            "bump_generation_lua": _BUMP_GENERATION_LUA.format(channel=f"{n}:generations"),
            "init_generations_lua": _INIT_GENERATIONS_LUA.format(channel=f"{n}:generations"),
        }
        for attribute, value in derived.items():
            object.__setattr__(self, attribute, value)

    @property
    def prefix(self) -> str:
        """What every key and channel of this namespace starts with."""
        return f"{self.name}:"

    def data_generation_key(self, tenant_id: str) -> str:
        return f"{self.name}:gen:{{{tenant_id}}}"

    def late_generation_key(self, tenant_id: str) -> str:
        """Same hash tag as the data generation, so one MGET reads both (also on Redis Cluster)."""
        return f"{self.name}:lategen:{{{tenant_id}}}"

    def live_channel(self, tenant_id: str) -> str:
        return f"{self.name}:live:{tenant_id}"

    def tenant_of_live_channel(self, channel: str) -> str:
        return channel.removeprefix(f"{self.name}:live:")

    def active_series_key(self, tenant_id: str) -> str:
        """The ingest replicas' shared sorted set of a tenant's active series (member id, score last write)."""
        return f"{self.name}:ingest:active:{{{tenant_id}}}"

    def series_creation_key(self, tenant_id: str) -> str:
        """The GCRA state of a tenant's series-creation rate; same hash tag as :meth:`active_series_key`
        (one script reads both, also on Redis Cluster)."""
        return f"{self.name}:ingest:newseries:{{{tenant_id}}}"

    def query_cache_key(self, tenant_id: str, digest: str) -> str:
        return f"{self.name}:qc:{{{tenant_id}}}:{digest}"

    def query_cache_pattern(self, tenant_id: str) -> str:
        """A SCAN pattern of the tenant's L2 entries (tenant ids hold no glob characters)."""
        return f"{self.name}:qc:{{{tenant_id}}}:*"
