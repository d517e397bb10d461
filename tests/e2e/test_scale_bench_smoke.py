"""The scale benchmark, tiny, so that it cannot rot: it runs end to end (the
3-switch tree alone, every size being the same code; the harness itself is
tested at 50 switches in test_scale_harness.py) against the real controller
and a private Open vSwitch, and prints every row. (Its figures are not
checked here: they live in bench/results/.)"""
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mininet

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "scale.py"
ROWS = ("tiers (gateway / aggregation / access)", "start to sync (no hosts)",
        "hosts located in", "hosts: in sync after", "controller RSS: no hosts / hosts",
        "idle: controller CPU (share of one core)",
        "idle: packet-ins/s sent by the switches / learned from",
        "idle: packet-outs/s received by the switches", "50 live enforcements applied",
        "Apply p50 / p99", "Lift p50 / p99", "flows per switch, gateway",
        "flows per switch, aggregation", "flows per switch, access",
        "kill -9, restart: in sync after", "switches whose flows the restart changed",
        "errors the controller logged after the restart")


def test_the_scale_benchmark_runs_and_prints_every_row(mininet_lock):
    """The lock: not for names (the bench's Open vSwitch is its own) but for
    the two cores the Mininet tests' timing shares."""
    result = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "", "--live", "50", "--pairs", "5",
         "--idle", "2"], capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert "3 switches, 100 subscribers" in rows[0]
    measures = [row.split("|")[1].strip() for row in rows[1:]]
    for wanted in ROWS:
        assert any(m.startswith(wanted) for m in measures), (wanted, measures)
    assert "stopped at" not in result.stdout
