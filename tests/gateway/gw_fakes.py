"""In-test gRPC upstreams for the gateway's HTTP-layer tests: real gRPC servers (the shared
GrpcApp with its authenticating interceptor) whose answers the tests control.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
from starlette.applications import Starlette
from tsmesh.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    export_pb2,
    export_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)

from tsmesh_common.config import CommonConfig
from tsmesh_common.context import Principal, current_principal
from tsmesh_common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from tsmesh_common.server import GrpcApp, create_server

ROOT = Path(__file__).resolve().parents[2]


class ApiTokens:
    """Introspection of fake API tokens (``tsm_<id>_<secret>``) for both the fakes and the gateway."""

    def __init__(self) -> None:
        self.tokens: dict[str, Principal] = {}

    def mint(self, tenant: str, scopes: str = "read write", expires_at: float | None = None) -> tuple[str, str]:
        token_id = uuid.uuid4().hex[:12]
        token = f"tsm_{token_id}_{uuid.uuid4().hex}"
        self.tokens[token] = Principal(tenant, "user-api", frozenset(scopes.split()), expires_at, token_id, "api_token")
        return token, token_id

    async def introspect(self, token: str) -> Principal | None:
        return self.tokens.get(token)


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    """Login answers for ``tenant``/``email``/``password`` = ``t``/``ok@x``/``pw``; special emails fail."""

    def __init__(self, mint: Any, api: ApiTokens) -> None:
        self.mint = mint
        self.api = api
        self.created: list[auth_pb2.CreateApiTokenRequest] = []
        self.metadata: list[tuple[str, dict[str, str]]] = []

    def _record(self, method: str, context: Any) -> None:
        self.metadata.append((method, {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}))

    async def Login(self, request: auth_pb2.LoginRequest, context: Any) -> auth_pb2.LoginResponse:
        self._record("Login", context)
        failures = {
            "unavailable@x": Unavailable("store down"),
            "denied@x": PermissionDenied("account disabled"),
            "missing@x": NotFound("no such tenant"),
            "limited@x": ResourceExhausted("login_attempts", "too many attempts", retry_after_seconds=7.2),
            "invalid@x": InvalidArgument("email", "not an email"),
        }
        if request.email in failures:
            raise failures[request.email]
        if request.email == "slow@x":
            await asyncio.sleep(5)
        if request.email == "deadline@x":
            raise DeadlineExceeded("store too slow")
        if request.password != "pw":
            raise Unauthenticated("invalid credentials")
        return auth_pb2.LoginResponse(tokens=self._pair(request.tenant))

    def _pair(self, tenant: str) -> auth_pb2.TokenPair:
        return auth_pb2.TokenPair(
            access_token=self.mint.token(tenant), refresh_token=f"r-{tenant}", token_type="Bearer", expires_in=300
        )

    async def Refresh(self, request: auth_pb2.RefreshRequest, context: Any) -> auth_pb2.RefreshResponse:
        self._record("Refresh", context)
        if not request.refresh_token.startswith("r-"):
            raise Unauthenticated("invalid refresh token")
        return auth_pb2.RefreshResponse(tokens=self._pair(request.refresh_token[2:]))

    async def Logout(self, request: auth_pb2.LogoutRequest, context: Any) -> auth_pb2.LogoutResponse:
        self._record("Logout", context)
        return auth_pb2.LogoutResponse()

    async def GetJwks(self, request: auth_pb2.GetJwksRequest, context: Any) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.Jwk(**k) for k in self.mint.jwks.keys])

    async def Introspect(self, request: auth_pb2.IntrospectRequest, context: Any) -> auth_pb2.IntrospectResponse:
        principal = self.api.tokens.get(request.token)
        if principal is None:
            return auth_pb2.IntrospectResponse(active=False)
        return auth_pb2.IntrospectResponse(
            active=True,
            tenant_id=principal.tenant_id,
            subject=principal.subject,
            scopes=sorted(principal.scopes),
            expires_at=int(principal.expires_at or 0),
            kind=auth_pb2.TOKEN_KIND_API_TOKEN,
            token_id=principal.token_id,
        )

    async def CreateApiToken(self, request: auth_pb2.CreateApiTokenRequest, context: Any) -> Any:
        principal = current_principal("admin")
        self.created.append(request)
        secret, token_id = self.api.mint(principal.tenant_id, " ".join(request.scopes))
        token = auth_pb2.ApiToken(id=token_id, name=request.name, scopes=request.scopes, created_at=1)
        return auth_pb2.CreateApiTokenResponse(token=token, secret=secret)

    async def ListApiTokens(self, request: auth_pb2.ListApiTokensRequest, context: Any) -> Any:
        tenant = current_principal("admin").tenant_id
        tokens = [
            auth_pb2.ApiToken(id=p.token_id, name="t", scopes=sorted(p.scopes))
            for p in self.api.tokens.values()
            if p.tenant_id == tenant
        ]
        return auth_pb2.ListApiTokensResponse(tokens=tokens)

    async def RotateApiToken(self, request: auth_pb2.RotateApiTokenRequest, context: Any) -> Any:
        principal = current_principal("admin")
        if not any(p.token_id == request.id for p in self.api.tokens.values()):
            raise NotFound("no such token")
        secret, token_id = self.api.mint(principal.tenant_id)
        return auth_pb2.RotateApiTokenResponse(token=auth_pb2.ApiToken(id=token_id, name="t"), secret=secret)

    async def RevokeApiToken(self, request: auth_pb2.RevokeApiTokenRequest, context: Any) -> Any:
        current_principal("admin")
        if not any(p.token_id == request.id for p in self.api.tokens.values()):
            raise NotFound("no such token")
        return auth_pb2.RevokeApiTokenResponse(token=auth_pb2.ApiToken(id=request.id, revoked=True))


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    """Stores points per tenant; a point named ``reject_me`` is refused, ``overload_me`` refuses the batch."""

    def __init__(self) -> None:
        self.points: dict[str, list[common_pb2.Point]] = {}
        self.metadata: list[dict[str, str]] = []

    async def WriteBatch(self, request: ingest_pb2.WriteRequest, context: Any) -> ingest_pb2.WriteResponse:
        tenant = current_principal("write").tenant_id
        self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        if any(p.metric.startswith("overload_me") for p in request.points):
            raise ResourceExhausted("ingest_queue", "ingest is overloaded", retry_after_seconds=2)
        errors = [
            ingest_pb2.PointError(index=i, field="metric", reason="refused by test")
            for i, p in enumerate(request.points)
            if p.metric.startswith("reject_me")
        ]
        kept = [p for p in request.points if not p.metric.startswith("reject_me")]
        self.points.setdefault(tenant, []).extend(kept)
        return ingest_pb2.WriteResponse(accepted=len(kept), rejected=len(errors), errors=errors)


class FakeLifecycle(lifecycle_pb2_grpc.DataLifecycleServiceServicer):
    """Retention kept per tenant in memory; deletes and cardinality answer zeros; scope ``admin`` as the real one."""

    def __init__(self) -> None:
        self.retention: dict[str, lifecycle_pb2.RetentionDays] = {}

    def _answer(self, tenant: str) -> lifecycle_pb2.Retention:
        defaults = lifecycle_pb2.RetentionDays(raw_days=7, rollup_1m_days=30, rollup_1h_days=365)
        return lifecycle_pb2.Retention(tenant=self.retention.get(tenant), defaults=defaults)

    async def GetRetention(self, request: Any, context: Any) -> lifecycle_pb2.Retention:
        return self._answer(current_principal("admin").tenant_id)

    async def SetRetention(self, request: Any, context: Any) -> lifecycle_pb2.Retention:
        tenant = current_principal("admin").tenant_id
        own = self.retention.setdefault(tenant, lifecycle_pb2.RetentionDays())
        for name in ("raw_days", "rollup_1m_days", "rollup_1h_days"):
            if request.HasField(name):
                setattr(own, name, getattr(request, name))
        return self._answer(tenant)

    async def GetCardinality(self, request: Any, context: Any) -> lifecycle_pb2.Cardinality:
        current_principal("admin")
        return lifecycle_pb2.Cardinality(max_active_series=1000)

    async def DeleteSeries(self, request: Any, context: Any) -> lifecycle_pb2.DeleteSeriesResponse:
        current_principal("admin")
        return lifecycle_pb2.DeleteSeriesResponse()


class FakeExport(export_pb2_grpc.DataExportServiceServicer):
    """Two JSON lines per export; scope ``admin``."""

    async def Export(self, request: Any, context: Any) -> AsyncIterator[export_pb2.ExportChunk]:
        current_principal("admin")
        yield export_pb2.ExportChunk(data=b'{"n":1}\n{"n":2}\n', rows=2)


class FakeQuery(query_pb2_grpc.QueryServiceServicer):
    """Answers from a fixed table, counts calls, and feeds Subscribe streams from ``publish``;
    refuses (INVALID_ARGUMENT) a Subscribe whose metric starts with ``refuse_me``."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.subscribers: list[tuple[str, common_pb2.Selector, asyncio.Queue[common_pb2.PointBatch]]] = []
        self.prom_requests: list[Any] = []

    def _count(self, name: str) -> str:
        self.calls[name] = self.calls.get(name, 0) + 1
        return current_principal("read").tenant_id

    async def QueryRange(self, request: query_pb2.QueryRangeRequest, context: Any) -> query_pb2.QueryRangeResponse:
        tenant = self._count("QueryRange")
        if request.selector.metric == "missing":
            raise NotFound("no such metric")
        bucket = query_pb2.Bucket(start_ns=request.start_ns, value=float(len(tenant)), count=self.calls["QueryRange"])
        series = query_pb2.SeriesResult(metric=request.selector.metric, labels={"tenant": tenant}, buckets=[bucket])
        return query_pb2.QueryRangeResponse(series=[series], resolution=query_pb2.RESOLUTION_RAW)

    async def Latest(self, request: query_pb2.LatestRequest, context: Any) -> query_pb2.LatestResponse:
        self._count("Latest")
        return query_pb2.LatestResponse(
            points=[common_pb2.Point(metric=request.selector.metric, timestamp_ns=5, value=1)]
        )

    async def ListSeries(self, request: query_pb2.ListSeriesRequest, context: Any) -> query_pb2.ListSeriesResponse:
        self._count("ListSeries")
        return query_pb2.ListSeriesResponse(series=[query_pb2.SeriesInfo(metric="cpu", labels={"host": "a"})])

    async def LabelValues(self, request: query_pb2.LabelValuesRequest, context: Any) -> query_pb2.LabelValuesResponse:
        self._count("LabelValues")
        return query_pb2.LabelValuesResponse(values=["a", "b"])

    async def Subscribe(self, request: query_pb2.SubscribeRequest, context: Any) -> AsyncIterator[Any]:
        tenant = self._count("Subscribe")
        if request.selector.metric.startswith("refuse_me"):
            raise InvalidArgument("selector.matchers[0].value", "invalid regex (refused by test)")
        queue: asyncio.Queue[common_pb2.PointBatch] = asyncio.Queue()
        entry = (tenant, request.selector, queue)
        self.subscribers.append(entry)
        await context.send_initial_metadata(())
        try:
            while True:
                batch = await queue.get()
                yield query_pb2.SubscribeResponse(points=batch)
        finally:
            self.subscribers.remove(entry)

    def _prom(self, name: str, request: Any) -> str:
        """Record a Prom* request; queries named after an error raise it (``refuse_bad_data``, ...)."""
        tenant = self._count(name)
        self.prom_requests.append(request)
        query = getattr(request, "query", "")
        if query == "refuse_bad_data":
            raise InvalidArgument("query", "parse error: unexpected end of input")
        if query == "refuse_limit":
            raise ResourceExhausted("max_series", "the query selects more than 10000 series")
        if query == "refuse_execution":
            raise FailedPrecondition("many-to-many matching not allowed")
        if query == "refuse_timeout":
            raise DeadlineExceeded("query timed out")
        return tenant

    async def PromQuery(self, request: query_pb2.PromQueryRequest, context: Any) -> query_pb2.PromQueryResponse:
        tenant = self._prom("PromQuery", request)
        if request.query == "1":
            one = query_pb2.PromSeriesResult(timestamps_ms=[request.time_ms], values=[1.0])
            return query_pb2.PromQueryResponse(result_type="scalar", series=[one])
        labels = [query_pb2.PromLabel(name="__name__", value="up"), query_pb2.PromLabel(name="tenant", value=tenant)]
        series = query_pb2.PromSeriesResult(labels=labels, timestamps_ms=[request.time_ms], values=[float("nan")])
        return query_pb2.PromQueryResponse(result_type="vector", series=[series])

    async def PromQueryRange(
        self, request: query_pb2.PromQueryRangeRequest, context: Any
    ) -> query_pb2.PromQueryResponse:
        tenant = self._prom("PromQueryRange", request)
        times = list(range(request.start_ms, request.end_ms + 1, request.step_ms))
        series = query_pb2.PromSeriesResult(
            labels=[query_pb2.PromLabel(name="tenant", value=tenant)],
            timestamps_ms=times,
            values=[i + 0.5 for i in range(len(times))],
        )
        return query_pb2.PromQueryResponse(result_type="matrix", series=[series])

    async def PromSeries(self, request: query_pb2.PromSeriesRequest, context: Any) -> query_pb2.PromSeriesResponse:
        self._prom("PromSeries", request)
        labels = [query_pb2.PromLabel(name="__name__", value="up"), query_pb2.PromLabel(name="job", value="api")]
        return query_pb2.PromSeriesResponse(series=[query_pb2.PromLabelSet(labels=labels)])

    async def PromLabelNames(
        self, request: query_pb2.PromLabelNamesRequest, context: Any
    ) -> query_pb2.PromLabelNamesResponse:
        self._prom("PromLabelNames", request)
        return query_pb2.PromLabelNamesResponse(names=["__name__", "job"])

    async def PromLabelValues(
        self, request: query_pb2.PromLabelValuesRequest, context: Any
    ) -> query_pb2.PromLabelValuesResponse:
        self._prom("PromLabelValues", request)
        return query_pb2.PromLabelValuesResponse(values=["api", "web"])

    def publish(self, tenant: str, points: list[common_pb2.Point]) -> int:
        """Send points to every open Subscribe of ``tenant`` whose selector metric matches."""
        sent = 0
        for sub_tenant, selector, queue in self.subscribers:
            matching = [p for p in points if sub_tenant == tenant and p.metric == selector.metric]
            if matching:
                queue.put_nowait(common_pb2.PointBatch(tenant_id=tenant, points=matching))
                sent += 1
        return sent


async def start_upstreams(mint: Any, api: ApiTokens) -> tuple[GrpcApp, int, FakeAuth, FakeIngest, FakeQuery]:
    """One gRPC server hosting the three fake services, authenticating like the real ones."""
    from tsmesh_common.authn import Authenticator, AuthenticatorConfig

    authenticator = Authenticator(AuthenticatorConfig(issuer=mint.issuer, audience=mint.audience), mint.jwks, api)
    public = frozenset(f"/tsmesh.v1.AuthService/{m}" for m in ("Login", "Refresh", "Logout", "GetJwks", "Introspect"))
    app = GrpcApp(authenticator, public_methods=public)
    auth, ingest, query = FakeAuth(mint, api), FakeIngest(), FakeQuery()
    app.add_service("tsmesh.v1.AuthService", lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(auth, s))
    app.add_service("tsmesh.v1.IngestService", lambda s: ingest_pb2_grpc.add_IngestServiceServicer_to_server(ingest, s))
    app.add_service("tsmesh.v1.QueryService", lambda s: query_pb2_grpc.add_QueryServiceServicer_to_server(query, s))
    lifecycle, exporter = FakeLifecycle(), FakeExport()
    app.add_service(
        "tsmesh.v1.DataLifecycleService",
        lambda s: lifecycle_pb2_grpc.add_DataLifecycleServiceServicer_to_server(lifecycle, s),
    )
    app.add_service(
        "tsmesh.v1.DataExportService", lambda s: export_pb2_grpc.add_DataExportServiceServicer_to_server(exporter, s)
    )
    cfg = CommonConfig.from_env({}, service="fake", grpc_port=0, metrics_port=0)
    port = await create_server(app, cfg)
    return app, port, auth, ingest, query


def gateway_environ(upstream_port: int, http_port: int, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSMESH_")}
    env.update(
        {
            "TSMESH_HTTP_PORT": str(http_port),
            "TSMESH_AUTH_ADDR": f"127.0.0.1:{upstream_port}",
            "TSMESH_INGEST_ADDR": f"127.0.0.1:{upstream_port}",
            "TSMESH_QUERY_ADDR": f"127.0.0.1:{upstream_port}",
            "TSMESH_REDIS_URL": redis_url,
            "TSMESH_LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


_LOGS: dict[int, str] = {}


def start_gateway(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A gateway process; its output goes to a temporary log file."""
    import tempfile

    log = tempfile.NamedTemporaryFile(prefix="tsmesh-gateway-test-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "tsmesh_gateway"], env=env, stdout=log, stderr=log)
    log.close()
    _LOGS[proc.pid] = log.name
    return proc


def stop_gateway(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process; its log is kept only when it did not exit cleanly."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log = _LOGS.pop(proc.pid, None)
    if log is not None and proc.returncode == 0:
        Path(log).unlink(missing_ok=True)


def grpc_code_of(exc: BaseException) -> grpc.StatusCode | None:
    return exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None


def mounted_alone(routes: list[Any], client_host: str) -> httpx.AsyncClient:
    """A client of an app holding only ``routes`` (one routes module: no fast path, no middleware)."""
    transport = httpx.ASGITransport(app=Starlette(routes=routes), client=(client_host, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")
