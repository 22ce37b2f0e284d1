"""A synthetic QueryService for the gateway fan-out figure: Subscribe streams fed straight from the
benchmark (no ingest, Kafka or Redis in between), so the latency measured is the gateway's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tsmesh.v1 import common_pb2, query_pb2, query_pb2_grpc


class SyntheticQuery(query_pb2_grpc.QueryServiceServicer):
    """Every Subscribe gets the points whose metric equals its selector's metric."""

    def __init__(self) -> None:
        self.streams: dict[str, list[asyncio.Queue[common_pb2.PointBatch]]] = {}

    async def Subscribe(self, request: query_pb2.SubscribeRequest, context: Any) -> AsyncIterator[Any]:
        queue: asyncio.Queue[common_pb2.PointBatch] = asyncio.Queue()
        self.streams.setdefault(request.selector.metric, []).append(queue)
        yield query_pb2.SubscribeResponse(heartbeat=query_pb2.Heartbeat(server_time_ns=1))
        try:
            while True:
                yield query_pb2.SubscribeResponse(points=await queue.get())
        finally:
            self.streams[request.selector.metric].remove(queue)

    def publish(self, points: list[common_pb2.Point]) -> None:
        by_metric: dict[str, list[common_pb2.Point]] = {}
        for point in points:
            by_metric.setdefault(point.metric, []).append(point)
        for metric, group in by_metric.items():
            for queue in self.streams.get(metric, ()):
                queue.put_nowait(common_pb2.PointBatch(tenant_id="bench", points=group))


async def start() -> tuple[grpc.aio.Server, int, SyntheticQuery]:
    server = grpc.aio.server()
    service = SyntheticQuery()
    query_pb2_grpc.add_QueryServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, service
