"""The hostile-clients benchmark, tiny, so that it cannot rot: it runs end to
end against the real controller (mutual TLS) and switch and prints every row.
(Its figures are not checked here: speed lives in bench/results/.)"""
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mininet

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "hostile.py"


def test_the_hostile_benchmark_runs_and_prints_every_row():
    result = subprocess.run(
        [sys.executable, str(BENCH), "--decisions", "10", "--live", "300",
         "--refusals", "200", "--hosts", "3"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    measures = [row.split("|")[1].strip() for row in rows[1:]]
    for wanted in ("Apply p50 / p99, idle", "Watch streams asked for by 16 clients",
                   "Apply p50 / p99, with 64 Watch streams open",
                   "events the Watch streams received meanwhile",
                   "Apply p50 / p99, while 200 handshakes are refused",
                   "refused handshakes from 200 addresses",
                   "Apply p50 / p99, 20 scrapes/s with 300 live",
                   "one scrape with 300 live"):
        assert any(m.startswith(wanted) for m in measures), (wanted, measures)
    served = next(row for row in rows if "Watch streams asked for" in row)
    assert "128: 64 served, 64 refused (RESOURCE_EXHAUSTED)" in served
