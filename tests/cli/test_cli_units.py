"""Pure parts of the CLI: selectors and times, batches and their offsets, checkpoints, retries, profiles."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from tsmesh_cli.app import app
from tsmesh_cli.checkpoint import Checkpoint, Fingerprint
from tsmesh_cli.client import Gateway
from tsmesh_cli.errors import HttpFailure, exit_code_for_status
from tsmesh_cli.formats import batches, guess_format, read_header
from tsmesh_cli.profiles import Profiles, Target, resolve
from tsmesh_cli.selectors import parse_duration_ns, parse_selector_or_none, parse_time_ns


def test_selectors_and_promql_are_told_apart() -> None:
    assert parse_selector_or_none('cpu{host="a", dc=~"eu.*"}') == {
        "metric": "cpu",
        "matchers": [{"name": "host", "op": "=", "value": "a"}, {"name": "dc", "op": "=~", "value": "eu.*"}],
    }
    assert parse_selector_or_none('{job!="x"}') == {"matchers": [{"name": "job", "op": "!=", "value": "x"}]}
    assert parse_selector_or_none("rate(cpu[5m])") is None
    assert parse_selector_or_none("sum by (host) (cpu)") is None


def test_times_and_durations() -> None:
    now = 1_700_000_000 * 10**9
    assert parse_time_ns("now", now) == now
    assert parse_time_ns("-1h30m", now) == now - 5400 * 10**9
    assert parse_time_ns("1700000000", now) == now
    assert parse_time_ns("2023-11-14T22:13:20Z", now) == now
    assert parse_duration_ns("90s") == 90 * 10**9


def test_batches_end_at_line_boundaries_and_resume_from_an_offset() -> None:
    data = b"".join(f"m,h=a v={i} {i}\n".encode() for i in range(10))
    got = list(batches(io.BytesIO(data), "lp", start=0, batch_points=4))
    assert [b.points for b in got] == [4, 4, 2]
    assert got[-1].end == len(data)
    resumed = io.BytesIO(data)
    resumed.seek(got[0].end)
    again = list(batches(resumed, "lp", start=got[0].end, batch_points=100))
    assert again[0].lines == data[got[0].end :]


def test_csv_header_and_rows() -> None:
    stream = io.BytesIO(b"metric,timestamp_ns,value,host\ncpu,5,1.5,a\ncpu,6,2,\n")
    columns, _ = read_header(stream)
    (batch,) = batches(stream, "csv", start=stream.tell(), batch_points=10, columns=columns)
    assert batch.objects == [
        {"metric": "cpu", "timestamp_ns": 5, "value": 1.5, "labels": {"host": "a"}},
        {"metric": "cpu", "timestamp_ns": 6, "value": 2.0, "labels": {}},
    ]
    assert guess_format("x.csv", b"") == "csv" and guess_format("-", b'{"metric":1}') == "jsonl"


def test_checkpoint_belongs_to_one_version_of_a_file(tmp_path: Path) -> None:
    source = tmp_path / "in.lp"
    source.write_text("a v=1 1\n")
    Checkpoint(tmp_path / "cp", Fingerprint.of(source)).save(8, 1)
    assert Checkpoint(tmp_path / "cp", Fingerprint.of(source)).load() == (8, 1)
    source.write_text("a v=1 1\nb v=2 2\n")
    assert Checkpoint(tmp_path / "cp", Fingerprint.of(source)).load() == (0, 0)


def test_429_and_503_are_retried_after_retry_after() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "2"}, json={"code": "RESOURCE_EXHAUSTED", "message": "slow"}),
            httpx.Response(503, headers={"Retry-After": "1"}, json={"code": "UNAVAILABLE", "message": "busy"}),
            httpx.Response(200, json={"accepted": 1}),
        ]
    )
    waits: list[float] = []
    transport = httpx.MockTransport(lambda request: next(answers))
    with Gateway(Target("http://gw", "t", "test"), transport=transport, sleep=waits.append) as gateway:
        assert gateway.json("POST", "/v1/write", json={}) == {"accepted": 1}
    assert waits == [2.0, 1.0]


def test_errors_keep_the_gateways_message_and_map_to_exit_codes() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(403, json={"code": "PERMISSION_DENIED", "message": "needs admin"})
    )
    with Gateway(Target("http://gw", "t", "test"), transport=transport) as gateway, pytest.raises(HttpFailure) as got:
        gateway.send("GET", "/v1/admin/retention")
    assert got.value.exit_code == 4 and "needs admin" in str(got.value)
    assert [exit_code_for_status(s) for s in (400, 401, 404, 413, 429, 500, 503)] == [6, 3, 5, 6, 7, 8, 8]


def test_profiles_are_private_and_dev_env_is_the_fallback(tmp_path: Path) -> None:
    (tmp_path / "work" / ".tsmesh").mkdir(parents=True)
    (tmp_path / "work" / ".tsmesh" / "dev.env").write_text(
        "TSMESH_GATEWAY_URL=http://127.0.0.1:1\nTSMESH_TOKEN=tsm_dev\n"
    )
    environ = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    target = resolve(environ, cwd=tmp_path / "work")
    assert (target.url, target.token) == ("http://127.0.0.1:1", "tsm_dev")
    profiles = Profiles(tmp_path / "cfg" / "tsmesh" / "config.json")
    profiles.put("prod", {"url": "https://prod", "token": "tsm_prod"})
    assert stat.S_IMODE(profiles.path.stat().st_mode) == 0o600
    assert resolve(environ, cwd=tmp_path / "work").token == "tsm_prod"
    assert resolve({**environ, "TSMESH_TOKEN": "tsm_env"}, cwd=tmp_path).token == "tsm_env"


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [(*prefix, c.name or c.callback.__name__.replace("_", "-")) for c in group.registered_commands]  # type: ignore[union-attr]
    for sub in group.registered_groups:
        found.extend(_commands(sub.typer_instance, (*prefix, sub.name or "")))  # type: ignore[arg-type]
    return found


def test_every_command_has_examples_in_its_help() -> None:
    commands = _commands(app)
    assert len(commands) == 19
    runner = CliRunner()
    for command in [(), ("tokens",), ("profile",), ("retention",), *commands]:
        shown = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, (command, shown.output)
        assert "Examples" in shown.output and "$ tsmesh" in shown.output, command
