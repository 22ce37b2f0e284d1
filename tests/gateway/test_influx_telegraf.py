"""`/api/v2/write` against the exact requests Telegraf's `outputs.influxdb_v2` plugin sends.

Telegraf is a Go binary that this machine's registries (PyPI, Debian, npm) do not offer, so the
requests are rebuilt here from its plugin (plugins/outputs/influxdb_v2/http.go, Telegraf 1.3x):
`POST <url>/api/v2/write?bucket=<b>&org=<o>` with no `precision` (nanoseconds), a gzip body
(`content_encoding = "gzip"` is its default), `Content-Type: text/plain; charset=utf-8`,
`Authorization: Token <token>` and `User-Agent: Telegraf/<version>`; its influx serializer sorts
tags, writes integers as `12i`, unsigned integers as `12u` (`influx_uint_support`), and ends every
line with a newline. What it does with our answers is part of the contract too: 204 is success,
413 makes it split the batch and retry, 400 drops the batch, 429/503 retry after `Retry-After`
(parsed as float seconds).
"""

from __future__ import annotations

import gzip

TELEGRAF_HEADERS = {
    "content-type": "text/plain; charset=utf-8",
    "content-encoding": "gzip",
    "user-agent": "Telegraf/1.34.0 Go/1.24.1",
}

# One collection interval of cpu, mem and system inputs, as the influx serializer writes it.
TELEGRAF_BATCH = (
    "cpu,cpu=cpu-total,host=web-1 usage_idle=97.5,usage_system=0.75,usage_user=1.75 1732780800000000000\n"
    "mem,host=web-1 available=6271205376i,used_percent=23.0 1732780800000000000\n"
    "system,host=web-1 load1=0.12,n_cpus=2u,uptime=86400u 1732780800000000000\n"
)


def _telegraf_headers(token: str) -> dict[str, str]:
    return {**TELEGRAF_HEADERS, "authorization": f"Token {token}"}


async def test_a_telegraf_batch_is_stored_with_nanosecond_default(gateway, mesh) -> None:
    token, _ = mesh.api.mint(gateway.tenant, "write")
    answer = await gateway.client.post(
        "/api/v2/write?bucket=telegraf&org=acme",
        content=gzip.compress(TELEGRAF_BATCH.encode()),
        headers=_telegraf_headers(token),
    )
    assert answer.status_code == 204, answer.text
    stored = {
        (p.metric, tuple(sorted(p.labels.items())), p.timestamp_ns, p.value) for p in mesh.ingest.points[gateway.tenant]
    }
    web = (("bucket", "telegraf"), ("host", "web-1"))
    ts = 1_732_780_800_000_000_000
    assert stored == {
        ("cpu_usage_idle", (("bucket", "telegraf"), ("cpu", "cpu-total"), ("host", "web-1")), ts, 97.5),
        ("cpu_usage_system", (("bucket", "telegraf"), ("cpu", "cpu-total"), ("host", "web-1")), ts, 0.75),
        ("cpu_usage_user", (("bucket", "telegraf"), ("cpu", "cpu-total"), ("host", "web-1")), ts, 1.75),
        ("mem_available", web, ts, 6_271_205_376.0),
        ("mem_used_percent", web, ts, 23.0),
        ("system_load1", web, ts, 0.12),
        ("system_n_cpus", web, ts, 2.0),
        ("system_uptime", web, ts, 86_400.0),
    }


async def test_an_oversized_telegraf_batch_gets_413_so_telegraf_splits_it(gateway_factory, mesh) -> None:
    gateway = await gateway_factory(TSMESH_GATEWAY_MAX_BODY_BYTES="2048")
    token, _ = mesh.api.mint(gateway.tenant, "write")
    # compresses far below the limit; the limit applies to the decompressed body (a gzip bomb guard)
    body = gzip.compress(TELEGRAF_BATCH.encode() * 40)
    assert len(body) < 2048
    answer = await gateway.client.post(
        "/api/v2/write?bucket=telegraf&org=acme",
        content=body,
        headers=_telegraf_headers(token),
    )
    assert answer.status_code == 413
    assert answer.json()["details"] == {"field": "body"}
    assert gateway.tenant not in mesh.ingest.points


async def test_overload_answers_429_with_a_retry_after_telegraf_can_parse(gateway, mesh) -> None:
    token, _ = mesh.api.mint(gateway.tenant, "write")
    answer = await gateway.client.post(
        "/api/v2/write?bucket=telegraf&org=acme",
        content=gzip.compress(b"overload_me,host=web-1 v=1 1732780800000000000\n"),
        headers=_telegraf_headers(token),
    )
    assert answer.status_code == 429
    assert float(answer.headers["retry-after"]) > 0
    # Telegraf decodes the JSON error body for its log line: it must carry code and message
    body = answer.json()
    assert body["code"] == "RESOURCE_EXHAUSTED" and body["message"]
