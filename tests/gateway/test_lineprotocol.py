"""The InfluxDB line protocol parser (pure) and the /api/v2/write route's partial-write semantics."""

from __future__ import annotations

import gzip

import pytest

from tsmesh_gateway.lineprotocol import LineError, parse_body, parse_line


def test_escapes_types_and_timestamp() -> None:
    line = r"we\ ath\,er,lo\ c=o\,s\=lo,type=x\=y temp=1.5,cnt=3i,big=18446744073709551615u,on=t,off=FALSE 1700"
    parsed = parse_line(line)
    assert parsed.measurement == "we ath,er"
    assert parsed.tags == {"lo_c": "o,s=lo", "type": "x=y"}
    assert parsed.fields == [("temp", 1.5), ("cnt", 3.0), ("big", float(2**64 - 1)), ("on", 1.0), ("off", 0.0)]
    assert parsed.timestamp == 1700


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("cpu", "missing fields"),
        ("cpu value=", "has no value"),
        ('cpu msg="hello world"', "string field 'msg' is not supported"),
        ("cpu value=1 notanumber", "invalid timestamp"),
        ("cpu value=abc", "invalid value"),
        ("cpu value=1_000", "invalid value"),
        ("cpu value=inf", "invalid value"),
        ("cpu value=9223372036854775808i", "int64"),
        ("cpu value=-1u", "invalid value"),
        ("cpu,host value=1", "invalid tag"),
        ("cpu value=1 1 2", "unexpected text"),
        ('cpu msg="unterminated', "unterminated"),
    ],
)
def test_bad_lines_say_why(line: str, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        parse_line(line)


def test_body_maps_fields_to_metrics_tags_to_labels_and_bucket() -> None:
    body = "# comment\n\ncpu,host=a,region=eu-1 usage_idle=90,usage.user=3i 1700000000\nbad line\nmem free=1\n"
    parsed = parse_body(body, precision="s", bucket="telegraf", now_ns=1_700_000_123_456_789_000)
    assert [(p.metric, dict(p.labels), p.timestamp_ns, p.value) for p in parsed.points] == [
        ("cpu_usage_idle", {"host": "a", "region": "eu-1", "bucket": "telegraf"}, 1_700_000_000 * 10**9, 90.0),
        ("cpu_usage_user", {"host": "a", "region": "eu-1", "bucket": "telegraf"}, 1_700_000_000 * 10**9, 3.0),
        ("mem_free", {"bucket": "telegraf"}, 1_700_000_123 * 10**9, 1.0),
    ]
    assert parsed.line_of_point == [3, 3, 5]
    assert parsed.errors == [(4, "invalid field 'line' (expected key=value)")]


def test_precisions_scale_and_overflow_is_a_line_error() -> None:
    for precision, scale in (("ns", 1), ("us", 1000), ("ms", 10**6), ("s", 10**9)):
        parsed = parse_body("m v=1 7", precision=precision, bucket="b")
        assert parsed.points[0].timestamp_ns == 7 * scale
    overflow = parse_body("m v=1 9223372036854775807", precision="s", bucket="b")
    assert overflow.errors and "out of range" in overflow.errors[0][1]


async def test_partial_write_stores_good_lines_and_names_the_first_bad(gateway, mesh) -> None:
    token, _ = mesh.api.mint(gateway.tenant, "write")
    body = 'cpu,host=a v=1 1\ncpu,host=b s="str" 2\nreject_me v=3 3\ncpu,host=c v=4 4\nbroken\n'
    answer = await gateway.client.post(
        "/api/v2/write?org=o&bucket=b1&precision=ns", content=body, headers={"authorization": f"Token {token}"}
    )
    assert answer.status_code == 400
    error = answer.json()
    assert error["details"]["line"] == 2
    assert "string field 's'" in error["message"] and error["message"].startswith("partial write: line 2")
    assert error["details"]["bad_lines"] == 3
    stored = [(p.metric, dict(p.labels)) for p in mesh.ingest.points[gateway.tenant]]
    assert stored == [("cpu_v", {"host": "a", "bucket": "b1"}), ("cpu_v", {"host": "c", "bucket": "b1"})]


async def test_influx_write_gzip_204_and_refusals(gateway, mesh) -> None:
    token, _ = mesh.api.mint(gateway.tenant, "write")
    auth = {"authorization": f"Token {token}"}
    body = gzip.compress(b"disk,dev=sda used=10i 1\n")
    ok = await gateway.client.post(
        "/api/v2/write?bucket=b&precision=s", content=body, headers={**auth, "content-encoding": "gzip"}
    )
    assert ok.status_code == 204
    assert mesh.ingest.points[gateway.tenant][-1].timestamp_ns == 10**9
    assert (await gateway.client.post("/api/v2/write?bucket=b", content=b"m v=1")).status_code == 401
    no_bucket = await gateway.client.post("/api/v2/write", content=b"m v=1", headers=auth)
    assert no_bucket.status_code == 400 and no_bucket.json()["details"]["field"] == "bucket"
    bad_precision = await gateway.client.post("/api/v2/write?bucket=b&precision=h", content=b"m v=1", headers=auth)
    assert bad_precision.status_code == 400 and bad_precision.json()["details"]["field"] == "precision"
    read_only, _ = mesh.api.mint(gateway.tenant, "read")
    denied = await gateway.client.post(
        "/api/v2/write?bucket=b", content=b"m v=1", headers={"authorization": f"Token {read_only}"}
    )
    assert denied.status_code == 403
