"""The client address behind trusted proxies (ADR 0451): TSMESH_GATEWAY_TRUSTED_PROXIES, the
X-Forwarded-For walk, and the per-address budgets and audit address it feeds."""

from __future__ import annotations

import uuid
from ipaddress import ip_network
from typing import Any

import httpx
import pytest

from tsmesh_common.config import ConfigError
from tsmesh_gateway.clientaddr import (
    TrustedProxies,
    budget_address,
    client_address_resolver,
    parse_address,
    peer_address,
)
from tsmesh_gateway.config import GatewayConfig

PROXIES = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"), ip_network("192.0.2.1/32"))
RANGE = {"selector": {"metric": "cpu"}, "start_ns": 0, "end_ns": 10**12}


def _scope(peer: str | None, *forwarded_for: str, **other: str) -> dict[str, Any]:
    headers = [(b"host", b"gateway"), *((k.encode(), v.encode()) for k, v in other.items())]
    headers += [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded_for]
    return {"type": "http", "client": (peer, 4242) if peer is not None else None, "headers": headers}


def _resolve(peer: str | None, *forwarded_for: str) -> str:
    return TrustedProxies(PROXIES).client_address(_scope(peer, *forwarded_for))


# --- configuration


def test_trusted_proxies_default_to_none_and_accept_ipv4_ipv6_addresses_and_cidrs() -> None:
    assert GatewayConfig.from_env({}).trusted_proxies == ()
    cfg = GatewayConfig.from_env({"TSMESH_GATEWAY_TRUSTED_PROXIES": " 10.0.0.0/8, 192.0.2.7 ,fd00::/8,2001:db8::1,"})
    assert cfg.trusted_proxies == (
        ip_network("10.0.0.0/8"),
        ip_network("192.0.2.7/32"),
        ip_network("fd00::/8"),
        ip_network("2001:db8::1/128"),
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("10.0.0.300", "does not appear to be an IPv4 or IPv6"),
        ("proxy.internal", "does not appear to be an IPv4 or IPv6"),
        ("10.0.0.1/8", "has host bits set"),
        ("10.0.0.0/33", "does not appear to be an IPv4 or IPv6"),
        ("0.0.0.0/0", "lets any client choose its own"),
        ("::/0", "lets any client choose its own"),
        ("::ffff:10.0.0.0/104", "as IPv4"),
    ],
)
def test_a_bad_trusted_proxy_entry_fails_at_start_naming_the_variable_and_the_entry(entry: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        GatewayConfig.from_env({"TSMESH_GATEWAY_TRUSTED_PROXIES": f"10.1.0.0/16, {entry}"})
    assert raised.value.variable == "TSMESH_GATEWAY_TRUSTED_PROXIES"
    assert f"bad entry {entry!r}" in str(raised.value) and problem in str(raised.value)


# --- parsing


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("203.0.113.9:51234", "203.0.113.9"),
        ("2001:DB8:0::7", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("[::ffff:203.0.113.9]:80", "203.0.113.9"),
    ],
)
def test_addresses_are_parsed_with_optional_ports_and_normalized(text: str, address: str) -> None:
    parsed = parse_address(text)
    assert parsed is not None and str(parsed) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unknown",
        "_hidden",
        "proxy.internal",
        "203.0.113.09",
        "203.0.113.9:",
        "203.0.113.9:http",
        "203.0.113.9:123456",
        "[203.0.113.9]",
        "[2001:db8::7",
        "[2001:db8::7]443",
        "fe80::1%eth0",
        "2001:db8::7:443:",
        "<script>",
    ],
)
def test_anything_else_is_not_an_address(text: str) -> None:
    assert parse_address(text) is None


# --- the X-Forwarded-For walk


def test_without_trusted_proxies_the_peer_is_the_client_and_the_header_is_never_read() -> None:
    resolve = client_address_resolver(())
    assert resolve is peer_address
    assert resolve(_scope("203.0.113.9", "198.51.100.1")) == "203.0.113.9"
    assert resolve(_scope(None, "198.51.100.1")) == "unknown"


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert _resolve("203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert _resolve("192.0.2.2", "198.51.100.1") == "192.0.2.2"
    assert _resolve("fe00::1", "198.51.100.1") == "fe00::1"
    assert _resolve(None, "198.51.100.1") == "unknown"


def test_a_trusted_peer_is_believed_about_the_hop_before_it() -> None:
    assert _resolve("10.1.2.3", "203.0.113.9") == "203.0.113.9"
    assert _resolve("192.0.2.1", "203.0.113.9:5123") == "203.0.113.9"
    assert _resolve("10.1.2.3") == "10.1.2.3"  # no header: the proxy itself
    assert _resolve("::ffff:10.1.2.3", "203.0.113.9") == "203.0.113.9"  # dual-stack view of IPv4


def test_spoofed_left_most_entries_are_ignored() -> None:
    assert _resolve("10.1.2.3", "1.1.1.1, 2.2.2.2, 203.0.113.9") == "203.0.113.9"


def test_the_walk_skips_every_trusted_hop_from_the_right() -> None:
    assert _resolve("10.1.2.3", "1.1.1.1, 203.0.113.9, 10.200.0.1, 192.0.2.1") == "203.0.113.9"
    # every hop trusted: the left-most is the client
    assert _resolve("10.1.2.3", "10.9.0.1, 10.200.0.1") == "10.9.0.1"


def test_all_headers_of_that_name_are_read_in_order() -> None:
    assert _resolve("10.1.2.3", "1.1.1.1, 203.0.113.9", "10.200.0.1") == "203.0.113.9"
    assert _resolve("10.1.2.3", "10.200.0.1", "1.1.1.1, 203.0.113.9") == "203.0.113.9"
    assert _resolve("10.1.2.3", "203.0.113.9", "10.200.0.1, 198.51.100.1") == "198.51.100.1"


def test_ipv6_peers_and_entries() -> None:
    assert _resolve("fd00::10", "2001:db8::7") == "2001:db8::7"
    assert _resolve("fd00::10", "[2001:DB8::7]:4711, fd12::1") == "2001:db8::7"
    assert _resolve("10.1.2.3", "2001:db8::7, fd00::20") == "2001:db8::7"


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("203.0.113.9, garbage", "10.1.2.3"),  # the peer is the last hop that can be trusted
        ("203.0.113.9, unknown, 10.200.0.1", "10.200.0.1"),
        ("garbage, 10.200.0.1", "10.200.0.1"),
        ("203.0.113.9, " + "1" * 100, "10.1.2.3"),
        ("203.0.113.9, fe80::1%eth0", "10.1.2.3"),
        ("203.0.113.9, 10.200.0.1:port", "10.1.2.3"),
    ],
)
def test_a_malformed_entry_stops_the_walk_at_the_last_trusted_hop(forwarded_for: str, client: str) -> None:
    assert _resolve("10.1.2.3", forwarded_for) == client


def test_empty_list_elements_are_ignored() -> None:
    assert _resolve("10.1.2.3", "203.0.113.9, ,") == "203.0.113.9"
    assert _resolve("10.1.2.3", "") == "10.1.2.3"


def test_verdicts_are_remembered_in_bounded_memory_and_stay_right() -> None:
    proxies = TrustedProxies(PROXIES, cache_size=8)
    for i in range(50):
        assert proxies.client_address(_scope("10.1.2.3", f"198.51.100.{i}, 10.0.0.{i}")) == f"198.51.100.{i}"
        assert len(proxies._verdicts) <= 8


# --- through the real app


def _behind(gw: Any, peer: str) -> httpx.AsyncClient:
    """A client of the in-process app whose socket peer is ``peer``."""
    transport = httpx.ASGITransport(app=gw.app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


@pytest.mark.parametrize(
    ("path", "route_class"), [("/v1/query/range", "query"), ("/v1/write", "write")], ids=["fast-path", "starlette"]
)
async def test_clients_behind_a_trusted_proxy_get_their_own_budgets_and_spoofing_changes_nothing(
    gateway_factory, path: str, route_class: str
) -> None:
    gw = await gateway_factory(
        TSMESH_GATEWAY_TRUSTED_PROXIES="10.99.0.0/16, fd00::/8",
        **{f"TSMESH_GATEWAY_LIMIT_{route_class.upper()}_PER_ADDRESS": "0.01:2"},
    )
    body = RANGE if route_class == "query" else {"points": [{"metric": "m", "timestamp_ns": 1, "value": 1}]}
    alice, bob = "203.0.113.10", "203.0.113.11"

    async def statuses(client: httpx.AsyncClient, forwarded_for: list[str]) -> list[int]:
        answers = []
        for value in forwarded_for:
            answer = await client.post(path, json=body, headers={**gw.bearer(), "x-forwarded-for": value})
            answers.append(answer.status_code)
        return answers

    # an untrusted peer naming a new address each time, or alice's, spends its own budget only
    assert await statuses(gw.client, ["198.51.100.1", "198.51.100.2", alice, bob]) == [200, 200, 429, 429]
    async with _behind(gw, "10.99.0.7") as proxy, _behind(gw, "fd00::7") as proxy6:
        # alice, through the proxy, has her own full budget (the untrusted peer's spoof spent none of it);
        # the entries she writes herself (to the left of what the proxy appends) change nothing
        assert await statuses(proxy, [alice, f"{bob}, {alice}", f"198.51.100.3, {alice}"]) == [200, 200, 429]
        # bob, behind the same proxy, still has his: one budget per client, not per proxy; a second
        # trusted hop (or an IPv6 proxy) in front of him changes nothing
        assert await statuses(proxy, [bob]) == [200]
        assert await statuses(proxy6, [f"{bob}, 10.99.0.9"]) == [200]
        assert await statuses(proxy, [bob, alice]) == [429, 429]
    refused = await gw.client.post(path, json=body, headers=gw.bearer())
    assert refused.json()["details"]["limit"] == f"{route_class}_per_address"


async def test_auth_is_told_the_forwarded_client_address(gateway_factory, mesh) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_TRUSTED_PROXIES="10.99.0.0/16")
    request_id = uuid.uuid4().hex
    async with _behind(gw, "10.99.0.7") as proxy:
        answer = await proxy.post(
            "/v1/auth/login",
            json={"tenant": gw.tenant, "email": "ok@x", "password": "pw"},
            headers={"x-request-id": request_id, "x-forwarded-for": "198.51.100.1, 203.0.113.10"},
        )
    assert answer.status_code == 200, answer.text
    seen = [md for name, md in mesh.auth.metadata if name == "Login" and md.get("x-request-id") == request_id]
    assert [md["x-client-address"] for md in seen] == ["203.0.113.10"]


@pytest.mark.parametrize(
    ("address", "budget"),
    [
        ("203.0.113.10", "203.0.113.10"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.10", "203.0.113.10"),
        ("unknown", "unknown"),
        ("not:an:address", "not:an:address"),
    ],
)
def test_ipv6_clients_share_the_budget_of_their_64(address: str, budget: str) -> None:
    assert budget_address(address) == budget


async def test_one_ipv6_64_is_one_per_address_budget(gateway_factory) -> None:
    gw = await gateway_factory(
        TSMESH_GATEWAY_TRUSTED_PROXIES="10.99.0.0/16", TSMESH_GATEWAY_LIMIT_QUERY_PER_ADDRESS="0.01:2"
    )

    async def status(client: httpx.AsyncClient, forwarded_for: str) -> int:
        answer = await client.post(
            "/v1/query/range", json=RANGE, headers={**gw.bearer(), "x-forwarded-for": forwarded_for}
        )
        return answer.status_code

    async with _behind(gw, "10.99.0.7") as proxy:
        rotating = [f"2001:db8:7:7::{i:x}" for i in range(1, 4)]  # one host rotating through its /64
        assert [await status(proxy, address) for address in rotating] == [200, 200, 429]
        assert await status(proxy, "2001:db8:7:8::1") == 200  # the next /64 is another client


async def test_the_gateway_proves_itself_to_auth_and_to_auth_only(gateway_factory, mesh) -> None:
    """Auth believes x-client-address only with the gateway's service credential (ADR 0108); the
    secret never travels to the other upstreams."""
    secret = "gw-" + uuid.uuid4().hex * 2
    gw = await gateway_factory(TSMESH_SERVICE_SECRET=secret)
    request_id = uuid.uuid4().hex
    answer = await gw.client.post(
        "/v1/auth/login",
        json={"tenant": gw.tenant, "email": "ok@x", "password": "pw"},
        headers={"x-request-id": request_id},
    )
    assert answer.status_code == 200, answer.text
    seen = [md for name, md in mesh.auth.metadata if name == "Login" and md.get("x-request-id") == request_id]
    assert [md["x-tsmesh-service-credential"] for md in seen] == [f"gateway:{secret}"]
    body = {"points": [{"metric": "m", "timestamp_ns": 1, "value": 1}]}
    write = await gw.client.post("/v1/write", json=body, headers=gw.bearer())
    assert write.status_code == 200, write.text
    assert mesh.ingest.metadata and all("x-tsmesh-service-credential" not in md for md in mesh.ingest.metadata)
