"""The benchmark, tiny, so that it cannot rot: it must run end to end against
the real controller and switch and print its table. (Its figures are not
checked: speed lives in bench/results/, not in tests.)"""
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mininet

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "bench.py"


def test_the_benchmark_runs_and_prints_every_row():
    result = subprocess.run(
        [sys.executable, str(BENCH), "--decisions", "20", "--seconds", "1",
         "--clients", "1,2", "--batch-clients", "2", "--batch", "4",
         "--reconcile", "50", "--hosts", "3"],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    measures = [row.split("|")[1].strip() for row in rows[1:]]
    for wanted in ("Apply latency p50", "Apply latency p99", "decisions/s, 1 client",
                   "decisions/s, 2 client(s) (Apply+Lift",
                   "decisions/s, 2 client(s) (ApplyBatch+LiftBatch of 4",
                   "install 50 enforcements",
                   "controller memory per 10,000", "reconcile 50: switch reconnects holding",
                   "reconcile 50: switch reconnects having lost"):
        assert any(m.startswith(wanted) for m in measures), (wanted, measures)
    assert re.search(r"\| Apply latency p99 \| [0-9.]+ ms \| [0-9.]+ ms \|", result.stdout)
    assert "Machine:" in result.stdout
    assert "failed calls" not in result.stdout, result.stdout
