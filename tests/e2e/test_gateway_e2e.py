"""The gateway in front of the real mesh (scripts/devstack.py Stack): log in, create a token, write
JSON and line protocol (official influxdb-client), query it back, receive the same points live over
WebSocket in both subprotocols, and close a live socket by revoking its token."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets
from devstack import DEMO_EMAIL, DEMO_TENANT, Stack
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from stackkit import private_stack
from tsmesh.v1 import stream_pb2

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with private_stack(tmp_path_factory.mktemp("gateway-stack")) as running:
        yield running


async def _json_frames(ws: websockets.ClientConnection, want: int) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    while len(points) < want:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
        if frame["type"] == "points":
            points.extend(frame["points"])
    return points


async def _proto_points(ws: websockets.ClientConnection, want: int) -> list[Any]:
    points: list[Any] = []
    while len(points) < want:
        message = stream_pb2.StreamServerMessage.FromString(await asyncio.wait_for(ws.recv(), 20))
        if message.WhichOneof("message") == "points":
            points.extend(message.points.points)
    return points


async def test_login_token_write_query_and_live_stream(stack: Stack) -> None:
    base = stack.gateway_url
    ws_url = base.replace("http", "ws") + "/v1/stream"
    metric = f"e2e_json_{uuid.uuid4().hex[:8]}"
    measurement = f"e2e_lp_{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        login = await http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        assert login.status_code == 200, login.text
        session = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = await http.post("/v1/tokens", json={"name": "e2e", "scopes": ["read", "write"]}, headers=session)
        assert created.status_code == 201, created.text
        api_token, token_id = created.json()["secret"], created.json()["token"]["id"]
        api = {"Authorization": f"Bearer {api_token}"}

        ws_json = await websockets.connect(ws_url, subprotocols=["tsmesh.json.v1"], additional_headers=api)
        ws_proto = await websockets.connect(ws_url, subprotocols=["tsmesh.proto.v1"])
        await ws_proto.send(
            stream_pb2.StreamClientMessage(authenticate={"token": login.json()["access_token"]}).SerializeToString()
        )
        for i, name in enumerate((metric, f"{measurement}_v")):
            await ws_json.send(
                orjson.dumps({"type": "subscribe", "id": f"j{i}", "selector": {"metric": name}}).decode()
            )
            assert orjson.loads(await asyncio.wait_for(ws_json.recv(), 20))["type"] == "ack"
            sub = stream_pb2.StreamClientMessage(subscribe={"id": f"p{i}", "selector": {"metric": name}})
            await ws_proto.send(sub.SerializeToString())
        acks = 0
        while acks < 3:
            message = stream_pb2.StreamServerMessage.FromString(await asyncio.wait_for(ws_proto.recv(), 20))
            acks += message.WhichOneof("message") == "ack"

        now = time.time_ns()
        points = [
            {"metric": metric, "labels": {"host": f"h{i}"}, "timestamp_ns": now + i, "value": float(i)}
            for i in range(3)
        ]
        written = await http.post("/v1/write", json={"points": points}, headers=api)
        assert written.status_code == 200 and written.json()["accepted"] == 3, written.text

        with InfluxDBClient(url=base, token=api_token, org="any") as influx:
            write_api = influx.write_api(write_options=SYNCHRONOUS)
            write_api.write(
                bucket="telegraf",
                record=[
                    Point(measurement).tag("host", "lp").field("v", 42.5).time(now, WritePrecision.NS),
                    Point(measurement).tag("host", "lp2").field("v", 7).time(now, WritePrecision.NS),
                ],
            )

        live_json = await _json_frames(ws_json, 5)
        assert sorted((p["metric"], p["labels"].get("host"), p["value"]) for p in live_json) == sorted(
            [(metric, f"h{i}", float(i)) for i in range(3)]
            + [(f"{measurement}_v", "lp", 42.5), (f"{measurement}_v", "lp2", 7.0)]
        )
        assert {p["labels"].get("bucket") for p in live_json if p["metric"] != metric} == {"telegraf"}
        live_proto = await _proto_points(ws_proto, 5)
        assert sorted((p.metric, p.timestamp_ns) for p in live_proto) == sorted(
            [(metric, now + i) for i in range(3)] + [(f"{measurement}_v", now)] * 2
        )

        async def latest() -> list[dict[str, Any]] | None:
            answer = await http.post("/v1/query/latest", json={"selector": {"metric": metric}}, headers=api)
            assert answer.status_code == 200, answer.text
            found = answer.json()["points"]
            return found if len(found) == 3 else None

        deadline = time.monotonic() + 30
        found = None
        while found is None and time.monotonic() < deadline:
            found = await latest()
            if found is None:
                await asyncio.sleep(0.2)
        assert found is not None
        assert sorted(p["value"] for p in found) == [0.0, 1.0, 2.0]
        ranged = await http.post(
            "/v1/query/range",
            json={
                "selector": {"metric": f"{measurement}_v"},
                "start_ns": now - 10**9,
                "end_ns": now + 10**9,
                "step_ns": 2 * 10**9,
                "aggregation": "sum",
            },
            headers=api,
        )
        assert ranged.status_code == 200, ranged.text
        assert sum(b["value"] or 0 for s in ranged.json()["series"] for b in s["buckets"]) == 49.5

        revoked = await http.delete(f"/v1/tokens/{token_id}", headers=session)
        assert revoked.status_code == 200, revoked.text
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws_json.recv(), 20)
        assert ws_json.close_code == 4401
        refused = await http.post("/v1/query/latest", json={"selector": {"metric": metric}}, headers=api)
        assert refused.status_code == 401
        await ws_proto.close()


# A token that lacks the scope an operation documents (an admin token may do everything).
_LACKING = {"read": ["write"], "write": ["read"], "admin": ["read", "write"]}


def _probe(
    http: httpx.AsyncClient, path: str, method: str, operation: dict[str, Any], secret: str | None, token_id: str
) -> httpx.Request:
    """A request for ``operation``, with placeholder parameters and an empty body of its media type."""
    url = path.replace("{token_id}", token_id).replace("{name}", "job")
    schemes = [scheme for requirement in operation.get("security", []) for scheme in requirement]
    headers = {}
    if secret is not None:
        headers["Authorization"] = f"Token {secret}" if schemes == ["influxToken"] else f"Bearer {secret}"
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return http.build_request(method.upper(), url, headers=headers, json={})
    if content:
        headers["Content-Type"] = next(iter(content))
    return http.build_request(method.upper(), url, headers=headers, content=b"" if content else None)


async def test_no_documented_route_answers_without_its_scope(stack: Stack) -> None:
    """Every operation of the OpenAPI document that names a scope answers 401 without a token and 403
    to a token lacking that scope, and gets past authorisation with it; the unauthenticated ones are
    exactly the login, refresh, logout, JWKS and health routes."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as http:
        document = (await http.get("/openapi.json")).json()
        login = await http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        session = {"Authorization": f"Bearer {login.json()['access_token']}"}
        secrets: dict[tuple[str, ...], str] = {}
        for scopes in (["read"], ["write"], ["admin"], ["read", "write"]):
            created = await http.post("/v1/tokens", json={"name": "scopes", "scopes": scopes}, headers=session)
            assert created.status_code == 201, created.text
            secrets[tuple(scopes)] = created.json()["secret"]
        spare = await http.post(
            "/v1/tokens", json={"name": "rotated-then-revoked", "scopes": ["read"]}, headers=session
        )
        spare_id = spare.json()["token"]["id"]

        public: list[str] = []
        wrong: list[str] = []
        refusals: list[str] = []  # every 403 the gateway gave is in auth's audit log
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                requirements = operation.get("security", document["security"])
                if not requirements:
                    public.append(f"{method.upper()} {path}")
                    continue
                (scope,) = {s for requirement in requirements for names in requirement.values() for s in names}
                for secret, refused in (
                    (None, 401),
                    (secrets[tuple(_LACKING[scope])], 403),
                    (secrets[(scope,)], None),
                ):
                    status = (await http.send(_probe(http, path, method, operation, secret, spare_id))).status_code
                    passed = status not in (401, 403, 500) if refused is None else status == refused
                    if refused == 403:
                        refusals.append(path)
                    if not passed:
                        wrong.append(f"{method.upper()} {path} [{scope}] token={secret is not None}: {status}")
        assert wrong == [], "\n".join(wrong)
        denied = 0
        async with asyncio.timeout(20):
            conn = await asyncpg.connect(stack.cfg.pg_admin_url.rsplit("/", 1)[0] + "/" + stack.cfg.database)
            try:
                while denied < len(refusals):
                    await asyncio.sleep(0.1)
                    denied = await conn.fetchval(
                        "SELECT count(*) FROM auth.audit_log WHERE action = 'permission_denied'"
                        " AND detail LIKE 'gateway %' AND client_address <> ''"
                    )
            finally:
                await conn.close()
        assert sorted(public) == [
            "GET /.well-known/jwks.json",
            "GET /healthz",
            "GET /readyz",
            "POST /v1/auth/login",
            "POST /v1/auth/logout",
            "POST /v1/auth/refresh",
        ]


async def _until_closed(ws: websockets.ClientConnection) -> None:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 20)


async def test_a_scope_downgrade_ends_live_subscriptions_and_the_socket_follows_the_new_token(stack: Stack) -> None:
    base = stack.gateway_url
    ws_url = base.replace("http", "ws") + "/v1/stream"
    metric = f"e2e_down_{uuid.uuid4().hex[:8]}"
    subscribe = orjson.dumps({"type": "subscribe", "id": "s", "selector": {"metric": metric}}).decode()
    ping = orjson.dumps({"type": "ping"}).decode()
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        login = await http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        session = {"Authorization": f"Bearer {login.json()['access_token']}"}
        tokens = {}
        for name, scopes in (("reader", ["read"]), ("witness", ["read"]), ("writer", ["write"])):
            created = await http.post("/v1/tokens", json={"name": f"e2e-{name}", "scopes": scopes}, headers=session)
            assert created.status_code == 201, created.text
            tokens[name] = (created.json()["secret"], created.json()["token"]["id"])
        bearer = {name: {"Authorization": f"Bearer {secret}"} for name, (secret, _) in tokens.items()}

        async def write(value: float) -> None:
            point = {"metric": metric, "labels": {}, "timestamp_ns": time.time_ns(), "value": value}
            answer = await http.post("/v1/write", json={"points": [point]}, headers=bearer["writer"])
            assert answer.status_code == 200, answer.text

        ws = await websockets.connect(ws_url, subprotocols=["tsmesh.json.v1"], additional_headers=bearer["reader"])
        witness = await websockets.connect(
            ws_url, subprotocols=["tsmesh.json.v1"], additional_headers=bearer["witness"]
        )
        for socket in (ws, witness):
            await socket.send(subscribe)
            assert orjson.loads(await asyncio.wait_for(socket.recv(), 20))["type"] == "ack"
        await write(1.0)
        assert [p["value"] for p in await _json_frames(ws, 1)] == [1.0]
        assert [p["value"] for p in await _json_frames(witness, 1)] == [1.0]

        await ws.send(orjson.dumps({"type": "auth", "token": tokens["writer"][0]}).decode())
        error = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
        assert (error["type"], error["id"], error["code"]) == ("error", "s", "PERMISSION_DENIED")
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 20)) == {"type": "ack", "id": "", "op": "auth"}
        await write(2.0)
        assert [p["value"] for p in await _json_frames(witness, 1)] == [2.0]  # the point went live ...
        await ws.send(ping)
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "pong"  # ... but not here

        # revoking the reader token (the one that opened the socket) leaves it open; the witness, still
        # on a token of its own, shows revocations are applied
        assert (await http.delete(f"/v1/tokens/{tokens['reader'][1]}", headers=session)).status_code == 200
        assert (await http.delete(f"/v1/tokens/{tokens['witness'][1]}", headers=session)).status_code == 200
        await _until_closed(witness)
        await ws.send(ping)
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "pong"
        assert (await http.delete(f"/v1/tokens/{tokens['writer'][1]}", headers=session)).status_code == 200
        await _until_closed(ws)
        assert ws.close_code == 4401


async def test_a_promql_selector_subscription_receives_what_the_structured_one_does(stack: Stack) -> None:
    """Both subprotocols: a subscription by PromQL string (parsed by query's PromQL parser) gets
    exactly the points of the equivalent structured selector; a bad string gets an error frame
    naming the problem and the socket goes on."""
    metric = f"e2e_promql_{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as http:
        login = await http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        session = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = await http.post(
            "/v1/tokens", json={"name": "promql-live", "scopes": ["read", "write"]}, headers=session
        )
        api = {"Authorization": f"Bearer {created.json()['secret']}"}
        ws_url = stack.gateway_url.replace("http", "ws") + "/v1/stream"
        async with (
            websockets.connect(ws_url, subprotocols=["tsmesh.json.v1"], additional_headers=api) as ws_json,
            websockets.connect(ws_url, subprotocols=["tsmesh.proto.v1"], additional_headers=api) as ws_proto,
        ):
            structured = {"metric": metric, "matchers": [{"name": "host", "op": "=~", "value": "web.*"}]}
            for frame in (
                {"type": "subscribe", "id": "structured", "selector": structured},
                {"type": "subscribe", "id": "bad", "promql": f"rate({metric}[5m])"},
                {"type": "subscribe", "id": "promql", "promql": f'{metric}{{host=~"web.*"}}'},
            ):
                await ws_json.send(orjson.dumps(frame).decode())
            answers = [orjson.loads(await asyncio.wait_for(ws_json.recv(), 20)) for _ in range(3)]
            assert answers[0] == {"type": "ack", "id": "structured", "op": "subscribe"}
            assert answers[1]["type"] == "error" and answers[1]["id"] == "bad"
            assert answers[1]["code"] == "INVALID_ARGUMENT" and "must be a series selector" in answers[1]["message"]
            assert answers[2] == {"type": "ack", "id": "promql", "op": "subscribe"}
            subscribe = stream_pb2.StreamClientMessage(
                subscribe={"id": "p", "promql": f'{{__name__="{metric}", host!~"db.*|"}}'}
            )
            await ws_proto.send(subscribe.SerializeToString())
            ack = stream_pb2.StreamServerMessage.FromString(await asyncio.wait_for(ws_proto.recv(), 20))
            assert (ack.ack.id, ack.ack.type) == ("p", "subscribe")

            now = time.time_ns()
            points = [
                {"metric": metric, "labels": labels, "timestamp_ns": now + i, "value": float(i)}
                for i, labels in enumerate(({"host": "db1"}, {"dc": "x"}, {"host": "web1"}, {"host": "web2"}))
            ]
            written = await http.post("/v1/write", json={"points": points}, headers=api)
            assert written.status_code == 200 and written.json()["accepted"] == 4, written.text

            by_subscription: dict[str, list[tuple[str, float]]] = {"structured": [], "promql": []}
            while sum(map(len, by_subscription.values())) < 4:
                frame = orjson.loads(await asyncio.wait_for(ws_json.recv(), 20))
                if frame["type"] == "points":
                    by_subscription[frame["id"]] += [(p["labels"].get("host", ""), p["value"]) for p in frame["points"]]
            assert (
                sorted(by_subscription["promql"])
                == sorted(by_subscription["structured"])
                == [("web1", 2.0), ("web2", 3.0)]
            )
            live = await _proto_points(ws_proto, 2)
            assert sorted((dict(p.labels)["host"], p.value) for p in live) == [("web1", 2.0), ("web2", 3.0)]
