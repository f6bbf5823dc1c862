"""The bench harness's arithmetic and report (the scenarios themselves run with `make bench`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.report import all_rows, markdown
from bench.scenarios import campaign_numbers, percentile, summary_ms, window_stats
from core.phone import normalize


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert summary_ms([0.010, 0.020, 0.030])["p50"] == 20.0


def test_worst_one_second_window_and_rate() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # 20 per second for 3 seconds, evenly spaced, then a burst of 5 within 100 ms.
    times = [start + timedelta(seconds=i / 20) for i in range(60)]
    stats = window_stats(times)
    assert stats["worst_one_second_window"] == 20
    assert stats["dial_rate"] == pytest.approx(20.0, rel=0.02)
    burst = times + [times[-1] + timedelta(milliseconds=10 * i) for i in range(1, 6)]
    assert window_stats(burst)["worst_one_second_window"] == 24


def test_campaign_numbers_are_distinct_valid_and_not_magic() -> None:
    numbers = campaign_numbers(12_000)
    assert len(set(numbers)) == 12_000
    assert all(normalize(n) == n for n in numbers[::997])
    assert not any(n.startswith("+1202555010") for n in numbers)


def test_report_marks_targets() -> None:
    result = {
        "meta": {
            "date": "now",
            "commit": "abc",
            "python": "3.11",
            "cpus": 2,
            "load_average_at_start": [1.0],
            "args": {"reps": 3},
        },
        "scenarios": {
            "latency_accepted": {
                "dialer": {"p50": 26.0, "p90": 30.0, "p99": 40.0},
                "baseline": {"p50": 20.0, "p90": 25.0, "p99": 30.0},
            },
            "throughput": {
                "points": [
                    {
                        "concurrency": 4,
                        "dialer": {"calls_per_second": 10.0},
                        "baseline": {"calls_per_second": 20.0},
                    }
                ],
                "best": {"dialer": 10.0, "baseline": 20.0},
            },
            "campaign_paced": {"recipients": 400, "dial_rate": 19.5, "worst_one_second_window": 21},
        },
        "peak_rss_mb": {"throughput": {"api": 100.0, "worker": 120.0}},
    }
    met = {row.figure: row.met for row in all_rows(result) if row.met is not None}
    assert met["create_call wait=accepted p50 vs raw update-with-start"] is True
    assert met["throughput, best concurrency vs raw best"] is False
    assert met["paced campaign (400) achieved dial rate"] is True
    assert met["paced campaign worst one-second window"] is False
    text = markdown(result)
    assert "| create_call wait=accepted p50 vs raw update-with-start | 26 | 20 | ms | 1.3 |" in text
