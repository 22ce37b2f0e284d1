"""The shared benchmark harness: percentiles, the bare echo baseline and the report table."""

from __future__ import annotations

import pytest
from harness import LatencyRecorder, Report, echo_baseline


def test_latency_summary_uses_nearest_rank_percentiles_in_ms() -> None:
    rec = LatencyRecorder()
    for i in range(1, 1001):
        rec.record(i / 1000.0)  # 1 ms .. 1000 ms
    summary = rec.summary()
    assert summary["count"] == 1000
    assert summary["p50"] == pytest.approx(500.0)
    assert summary["p99"] == pytest.approx(990.0)
    assert summary["p999"] == pytest.approx(999.0)
    assert summary["mean"] == pytest.approx(500.5)
    assert summary["max"] == pytest.approx(1000.0)


def test_empty_recorder_summarises_to_zeroes() -> None:
    summary = LatencyRecorder().summary()
    assert summary["count"] == 0
    assert summary["p99"] == 0.0


def test_recorders_merge() -> None:
    a, b = LatencyRecorder(), LatencyRecorder()
    a.record(0.001)
    b.record(0.003)
    a.extend(b)
    assert a.summary()["count"] == 2
    assert a.summary()["p999"] == pytest.approx(3.0)


async def test_echo_baseline_measures_real_calls() -> None:
    result = await echo_baseline(duration_s=0.3, concurrency=4)
    assert result.latency["count"] > 0
    assert result.calls_per_s > 0
    assert result.latency["p50"] <= result.latency["p99"] <= result.latency["p999"]
    # the rate is derived from the same calls the recorder saw
    assert result.calls_per_s == pytest.approx(result.latency["count"] / 0.3, rel=0.5)


def test_report_prints_each_figure_beside_its_baseline_with_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    report = Report("ingest")
    report.add("WriteBatch calls/s", 1800, "calls/s", "bare echo", 2400, ">= 70% of baseline")
    report.add("p99", 3.25, "ms")
    report.print()
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "== ingest =="
    row = next(line for line in lines if line.startswith("WriteBatch"))
    assert "1,800" in row and "2,400" in row and "0.75x (75%)" in row and ">= 70% of baseline" in row
    header = lines[1]
    assert row.index("  calls/s  ") == header.index("  unit ")  # columns aligned
    assert row.index("bare echo") == header.index("baseline ")
    md = report.markdown()
    assert md.startswith("### ingest\n")
    assert "| WriteBatch calls/s | 1,800 | calls/s | bare echo | 2,400 | 0.75x (75%) | >= 70% of baseline |" in md
    assert "| p99 | 3.25 | ms |  |  |  |  |" in md
