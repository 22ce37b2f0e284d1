"""The ``tsmesh`` script against a real private stack: import with progress, resume after a kill, query, tail.

``make test`` imports 100,000 lines; ``make test-cli-big`` (TSMESH_CLI_BIG=1) runs the 1,000,000-line
import of the issue (a few minutes on a busy 2-core box)."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cli_stack import TSMESH, Cli, stored_count
from devstack import DEMO_EMAIL, DEMO_TENANT, Stack

pytestmark = pytest.mark.e2e

BIG = os.environ.get("TSMESH_CLI_BIG") == "1"
IMPORT_LINES = 1_000_000 if BIG else 100_000


def line_protocol(path: Path, measurement: str, lines: int, hosts: int = 10) -> tuple[int, int]:
    """``lines`` points 1 ms apart, ending now, spread over ``hosts`` series; the time range written."""
    end = time.time_ns() - 10**9
    start = end - (lines - 1) * 10**6
    with path.open("w") as f:
        f.writelines(f"{measurement},host=h{i % hosts} value={i}.5 {start + i * 10**6}\n" for i in range(lines))
    return start, end


def test_dev_env_is_the_default_profile(cli: Cli, stack: Stack) -> None:
    shown = cli.run("profile", "show")
    assert shown.returncode == 0, shown.stderr
    assert stack.gateway_url in shown.stdout
    assert "dev.env" in shown.stdout


def test_import_shows_progress_and_stores_every_point(cli: Cli, stack: Stack, tmp_path: Path) -> None:
    measurement = f"cli_imp_{uuid.uuid4().hex[:8]}"
    start, end = line_protocol(tmp_path / "points.lp", measurement, IMPORT_LINES)
    done = cli.run("write", str(tmp_path / "points.lp"), "--batch", "5000", timeout=1200)
    assert done.returncode == 0, done.stderr
    assert "points/s" in done.stderr
    assert f"sent {IMPORT_LINES:,} points this run (0 before)" in done.stderr
    assert stored_count(stack, f"{measurement}_value", start, end, IMPORT_LINES) == IMPORT_LINES


def test_second_run_after_a_kill_resumes_without_resending(cli: Cli, stack: Stack, tmp_path: Path) -> None:
    lines = 60_000
    measurement = f"cli_res_{uuid.uuid4().hex[:8]}"
    source = tmp_path / "resume.lp"
    start, end = line_protocol(source, measurement, lines)
    first = cli.popen("write", str(source), "--batch", "1000")
    checkpoints = Path(cli.env["XDG_STATE_HOME"]) / "tsmesh" / "checkpoints"
    acknowledged = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        for found in checkpoints.glob("*.json"):
            try:
                acknowledged = json.loads(found.read_text())["points"]
            except (ValueError, OSError, KeyError):
                continue
        if acknowledged >= 5_000:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert first.returncode == -signal.SIGKILL, "the first run finished before it could be killed"
    resumed = json.loads(next(checkpoints.glob("*.json")).read_text())
    assert 0 < resumed["points"] < lines

    second = cli.run("write", str(source), "--batch", "1000")
    assert second.returncode == 0, second.stderr
    assert f"resuming after {resumed['points']:,} acknowledged points" in second.stderr
    assert f"sent {lines - resumed['points']:,} points this run ({resumed['points']:,} before)" in second.stderr
    assert not list(checkpoints.glob("*.json"))
    assert stored_count(stack, f"{measurement}_value", start, end, lines) == lines


def test_query_as_json_and_csv(cli: Cli, stack: Stack, tmp_path: Path) -> None:
    metric = f"cli_q_{uuid.uuid4().hex[:8]}"
    now = time.time_ns() - 10**9
    rows = ["metric,timestamp_ns,value,host"] + [f"{metric},{now - i * 10**9},{i},a" for i in range(30)]
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    assert cli.run("write", str(tmp_path / "q.csv")).returncode == 0
    assert stored_count(stack, metric, now - 40 * 10**9, now, 30) == 30
    answer = cli.run("query", f'{metric}{{host="a"}}', "--start", "-5m", "--step", "5m", "--agg", "sum", "-o", "json")
    assert answer.returncode == 0, answer.stderr
    buckets = [b for s in json.loads(answer.stdout)["series"] for b in s["buckets"]]
    assert sum(b["value"] or 0 for b in buckets) == sum(range(30))
    table = cli.run("query", metric, "--start", "-5m", "--step", "1m", "-o", "csv")
    assert table.stdout.splitlines()[0] == "series,time,value,count"
    stepless = cli.run("query", metric, "--start", "-5m", "--agg", "count", "-o", "json")  # as the README shows
    assert stepless.returncode == 0, stepless.stderr
    counted = [b["value"] for s in json.loads(stepless.stdout)["series"] for b in s["buckets"] if b["value"]]
    assert sum(counted) == 30
    chart = cli.run("query", metric, "--start", "-5m", "--step", "10s", "-o", "chart")
    assert chart.returncode == 0 and metric in chart.stdout


def test_promql_on_a_gateway_without_it_says_so(cli: Cli, stack: Stack) -> None:
    probe = httpx.get(f"{stack.gateway_url}/api/v1/query_range", headers={"Authorization": f"Bearer {stack.token}"})
    if probe.status_code != 404:
        pytest.skip("this gateway has the PromQL API")
    answer = cli.run("query", "rate(x[5m])")
    assert answer.returncode == 5
    assert "no PromQL API" in answer.stderr


def test_tail_sees_a_point_written_after_it_started(cli: Cli, stack: Stack) -> None:
    metric = f"cli_tail_{uuid.uuid4().hex[:8]}"
    tail = cli.popen("tail", f'{metric}{{k=~"v|w"}}', "--count", "1", "--output", "jsonl")
    assert tail.stderr is not None
    assert "tailing" in tail.stderr.readline()
    time.sleep(0.5)  # the subscription is sent right after the banner; give the gateway a moment to register it
    headers = {"Authorization": f"Bearer {stack.token}"}
    point = {"metric": metric, "labels": {"k": "v"}, "timestamp_ns": time.time_ns(), "value": 7.0}
    assert httpx.post(f"{stack.gateway_url}/v1/write", json={"points": [point]}, headers=headers).status_code == 200
    out, _ = tail.communicate(timeout=60)
    assert tail.returncode == 0
    assert json.loads(out.splitlines()[0]) | {"labels": {"k": "v"}} == point


def test_tail_refuses_anything_but_a_series_selector_with_the_parsers_reason(cli: Cli) -> None:
    answer = cli.run("tail", "rate(cpu[5m])")
    assert answer.returncode == 6, answer.stderr
    assert "INVALID_ARGUMENT" in answer.stderr and "must be a series selector" in answer.stderr


def test_series_labels_and_errors_follow_http(cli: Cli, stack: Stack) -> None:
    metric = f"cli_s_{uuid.uuid4().hex[:8]}"
    lines = "".join(f"{metric},host=h{i} value=1 {time.time_ns() - i}\n" for i in range(3))
    assert cli.run("write", "-", "--format", "lp", stdin=lines.encode()).returncode == 0
    assert stored_count(stack, f"{metric}_value", time.time_ns() - 60 * 10**9, time.time_ns(), 3) == 3
    listed = cli.run("series", f"{metric}_value", "-o", "json")
    assert sorted(s["labels"]["host"] for s in json.loads(listed.stdout)["series"]) == ["h0", "h1", "h2"]
    values = cli.run("labels", "host", "--match", f"{metric}_value", "-o", "csv")
    assert values.stdout.split() == ["host", "h0", "h1", "h2"]
    refused = cli.run("--token", "tsm_not_a_real_token", "series", metric)
    assert refused.returncode == 3, refused.stderr
    forbidden = cli.run("tokens", "create", "--name", "x", "--scope", "admin")
    assert forbidden.returncode in (3, 4), forbidden.stderr


@pytest.fixture(scope="module")
def admin_token(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An admin-scoped API token made the way a person would: `tsmesh login` with the demo admin's
    password, then `tsmesh tokens create --scope admin`."""
    home = tmp_path_factory.mktemp("admin-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TSMESH_", "XDG_"))}
    env |= {"HOME": str(home), "TSMESH_PASSWORD": stack.admin_password or ""}
    cli = Cli(env, home)
    login = cli.run("login", "--url", stack.gateway_url, "--tenant", DEMO_TENANT, "--email", DEMO_EMAIL)
    assert login.returncode == 0, login.stderr
    config = home / ".config" / "tsmesh" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    created = cli.run("tokens", "create", "--name", "cli-admin", "--scope", "admin")
    assert created.returncode == 0, created.stderr
    listed = cli.run("tokens", "list", "-o", "json")
    assert "cli-admin" in {t["name"] for t in json.loads(listed.stdout)["tokens"]}
    return created.stdout.strip()


def test_admin_commands_follow_http_403_for_a_read_write_token(cli: Cli) -> None:
    for args in (("retention", "get"), ("cardinality",), ("delete", "m", "--start", "-1h", "--yes")):
        refused = cli.run(*args)
        assert refused.returncode == 4, (args, refused.stderr)
        assert "403" in refused.stderr


def test_retention_and_cardinality(cli: Cli, admin_token: str) -> None:
    changed = cli.run("--token", admin_token, "retention", "set", "--raw", "3", "--1h", "default", "-o", "json")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["raw_days"] == 3
    shown = cli.run("--token", admin_token, "retention", "get", "-o", "json")
    assert json.loads(shown.stdout)["raw_days"] == 3
    assert cli.run("--token", admin_token, "retention", "set", "--raw", "default").returncode == 0
    card = cli.run("--token", admin_token, "cardinality", "-o", "json")
    assert card.returncode == 0, card.stderr
    assert json.loads(card.stdout)["total_series"] > 0


def test_delete_removes_what_it_says_and_nothing_else(cli: Cli, stack: Stack, admin_token: str, tmp_path: Path) -> None:
    metric = f"cli_del_{uuid.uuid4().hex[:8]}"
    end = time.time_ns() - 10**9
    start = end - 999 * 10**8
    rows = ["metric,timestamp_ns,value,host"]
    rows += [f"{metric},{start + i * 10**8},{i},{host}" for host in ("keep", "drop") for i in range(1000)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    assert cli.run("write", str(tmp_path / "d.csv")).returncode == 0
    assert stored_count(stack, metric, start, end, 2000) == 2000
    cut_from, cut_to = start + 250 * 10**8, start + 750 * 10**8  # points 250..749 of host=drop
    assert _counts_by_host(cli, metric, start, end) == {"keep": 1000, "drop": 1000}  # now in the caches
    refused = cli.run("--token", admin_token, "delete", f'{metric}{{host="drop"}}', "--start", str(cut_from),
                      "--end", str(cut_to), stdin=b"n\n")  # fmt: skip
    assert refused.returncode == 6 and "not deleted" in refused.stderr
    done = cli.run("--token", admin_token, "delete", f'{metric}{{host="drop"}}', "--start", str(cut_from),
                   "--end", str(cut_to), "--yes")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "deleted 500 points of 1 series" in done.stderr
    assert _counts_by_host(cli, metric, start, end) == {"keep": 1000, "drop": 500}  # the same query agrees


def _counts_by_host(cli: Cli, metric: str, start: int, end: int) -> dict[str, int]:
    answer = cli.run("query", metric, "--start", str(start), "--end", str(end + 1), "--step", "200s",
                     "--agg", "count", "--by", "host", "-o", "json")  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    return {s["labels"]["host"]: sum(b["count"] for b in s["buckets"]) for s in json.loads(answer.stdout)["series"]}


EXPORT_POINTS = 1_000_000 if BIG else 100_000
EXPORT_RSS_ALLOWANCE = 16 * 2**20


def _peak_rss(cli: Cli, *args: str) -> tuple[int, str]:
    """Run the CLI and return its own peak RSS in bytes (wait4's rusage of that one child) and its stderr."""
    proc = subprocess.Popen(
        [*TSMESH, *args], env=cli.env, cwd=cli.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    with proc.stderr:
        stderr = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, stderr
    return usage.ru_maxrss * 1024, stderr


def test_export_streams_every_point_in_bounded_memory(cli: Cli, stack: Stack, admin_token: str, tmp_path: Path) -> None:
    metric = f"cli_exp_{uuid.uuid4().hex[:8]}"
    padding = "p" * 200  # long lines: the export is far larger than the memory allowance
    end = time.time_ns() - 10**9
    start = end - (EXPORT_POINTS - 1) * 10**6
    with (tmp_path / "e.lp").open("w") as f:
        f.writelines(
            f"{metric},host=h{i % 4},pad={padding} value={i} {start + i * 10**6}\n" for i in range(EXPORT_POINTS)
        )
    assert cli.run("write", str(tmp_path / "e.lp"), timeout=1200).returncode == 0
    assert stored_count(stack, f"{metric}_value", start, end, EXPORT_POINTS) == EXPORT_POINTS
    baseline, _ = _peak_rss(cli, "profile", "show")
    out = tmp_path / "export.jsonl"
    peak, stderr = _peak_rss(
        cli,
        "--token",
        admin_token,
        "export",
        f"{metric}_value",
        "--start",
        str(start),
        "--end",
        str(end + 1),
        "-O",
        str(out),
    )
    size = out.stat().st_size
    with out.open("rb") as f:
        lines = sum(1 for _ in f)
    assert lines == EXPORT_POINTS
    assert "rows" in stderr
    assert size > 2 * EXPORT_RSS_ALLOWANCE
    assert peak < baseline + EXPORT_RSS_ALLOWANCE, f"export peak RSS {peak} vs {baseline} baseline for {size} bytes"


def test_a_password_profile_renews_its_expired_access_token(stack: Stack, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TSMESH_", "XDG_"))}
    env |= {"HOME": str(tmp_path), "TSMESH_PASSWORD": stack.admin_password or ""}
    cli = Cli(env, tmp_path)
    login = cli.run("login", "--url", stack.gateway_url, "--tenant", DEMO_TENANT, "--email", DEMO_EMAIL)
    assert login.returncode == 0, login.stderr
    config = tmp_path / ".config" / "tsmesh" / "config.json"
    saved = json.loads(config.read_text())
    expired = "e30." + base64.urlsafe_b64encode(b'{"exp": 1}').decode().rstrip("=") + ".sig"
    saved["profiles"]["default"]["token"] = expired
    config.write_text(json.dumps(saved))
    listed = cli.run("tokens", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(config.read_text())["profiles"]["default"]["token"] not in (expired, "")
