"""Every Redis name comes from a namespace (ADR 0011): the default keeps the names deployments have
today, a bad namespace is refused naming its variable, and two namespaces never share a name."""

from __future__ import annotations

import fnmatch

import pytest

from tsmesh_common.config import CommonConfig, ConfigError
from tsmesh_common.redis_keys import RedisNamespace


def names(ns: RedisNamespace, tenant: str) -> list[str]:
    """Every key and channel name of one tenant in ``ns``."""
    return [
        ns.revocation_channel,
        ns.generation_channel,
        ns.login_failure_prefix + "addr:127.0.0.1",
        ns.gateway_rate_prefix + ":t",
        ns.ingest_rate_prefix + ":t",
        ns.data_generation_key(tenant),
        ns.late_generation_key(tenant),
        ns.live_channel(tenant),
        ns.active_series_key(tenant),
        ns.series_creation_key(tenant),
        ns.query_cache_key(tenant, "0" * 32),
    ]


def test_the_default_namespace_keeps_todays_names() -> None:
    ns = CommonConfig.from_env({}, service="x", grpc_port=0, metrics_port=0).redis_namespace
    assert ns == RedisNamespace("tsmesh")
    assert names(ns, "t1") == [
        "tsmesh:auth:revocations",
        "tsmesh:generations",
        "tsmesh:auth:loginfail:addr:127.0.0.1",
        "tsmesh:gw:rl:t",
        "tsmesh:ingest:rate:t",
        "tsmesh:gen:{t1}",
        "tsmesh:lategen:{t1}",
        "tsmesh:live:t1",
        "tsmesh:ingest:active:{t1}",
        "tsmesh:ingest:newseries:{t1}",
        "tsmesh:qc:{t1}:" + "0" * 32,
    ]
    assert ns.live_pattern == "tsmesh:live:*"
    assert "PUBLISH', 'tsmesh:generations'" in ns.bump_generation_lua
    assert "PUBLISH', 'tsmesh:generations'" in ns.init_generations_lua


def test_a_namespace_is_read_from_the_environment_and_prefixes_everything() -> None:
    ns = CommonConfig.from_env(
        {"TSMESH_REDIS_NAMESPACE": "bench-1a2b.x_y"}, service="x", grpc_port=0, metrics_port=0
    ).redis_namespace
    assert ns.name == "bench-1a2b.x_y"
    assert all(name.startswith("bench-1a2b.x_y:") for name in names(ns, "t1"))
    assert "'bench-1a2b.x_y:generations'" in ns.bump_generation_lua
    assert ns.tenant_of_live_channel(ns.live_channel("t:1")) == "t:1"


@pytest.mark.parametrize(
    "value", ["a:b", "a*", "a?", "[a]", "{a}", "a b", "-a", ".a", "_a", "x" * 65, "é", "a\nb", "a\\b"]
)
def test_a_bad_namespace_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="TSMESH_REDIS_NAMESPACE: must be 1-64 letters") as raised:
        CommonConfig.from_env({"TSMESH_REDIS_NAMESPACE": value}, service="x", grpc_port=0, metrics_port=0)
    assert raised.value.variable == "TSMESH_REDIS_NAMESPACE"


@pytest.mark.parametrize(("a", "b"), [("tsmesh", "tsmesh-e2e"), ("a", "a.b"), ("a", "ab"), ("test-1", "test-12")])
def test_two_namespaces_share_no_name_and_their_patterns_match_only_their_own(a: str, b: str) -> None:
    first, second = RedisNamespace(a), RedisNamespace(b)
    ours, theirs = names(first, "t1"), names(second, "t1")
    assert not set(ours) & set(theirs)
    # no name of one starts with the other's prefix, and each live pattern matches its own channels only
    assert not any(n.startswith(second.prefix) for n in ours) and not any(n.startswith(first.prefix) for n in theirs)
    assert fnmatch.fnmatchcase(first.live_channel("t1"), first.live_pattern)
    assert not any(fnmatch.fnmatchcase(n, second.live_pattern) for n in ours)
    assert not any(fnmatch.fnmatchcase(n, first.live_pattern) for n in theirs)
