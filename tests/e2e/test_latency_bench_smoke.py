"""The latency benchmark, tiny, so that it cannot rot: it must run end to end
(the floors, the controller on its defaults, the typed Python client and the
grpc-js client, which needs node and npm) and print every row. Its figures
are not checked: speed lives in bench/results/, not in tests. bench/latency.py
starts bench/floors.py for the bare server and the OS-Ken floor, so this runs both."""
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.mininet

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "latency.py"
NUMBER = r"(?:[0-9.]+|nan)"


def test_the_latency_benchmark_runs_and_prints_every_row():
    result = subprocess.run([sys.executable, str(BENCH), "--pairs", "20", "--quick"],
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    rows = [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    floors = [r[0] for r in rows if len(r) == 6]
    for client in ("python", "grpc-js"):
        for what in ("trivial List (page_size 1)", "Apply answered at once",
                     "Lift answered at once"):
            assert any(f.startswith(f"bare grpcio server: {what}") and f.endswith(client)
                       for f in floors), (what, client, floors)
    assert any(f.startswith("OS-Ken: ") and "flow_mod" in f for f in floors), floors
    for what in ("OS-Ken: their delete", "store commit"):
        assert any(f.startswith(what) for f in floors), (what, floors)
    calls = {(r[0], r[1], r[2].rsplit("; ", 1)[-1]) for r in rows if len(r) == 11}
    for client in ("python", "grpc-js"):
        assert ("trivial List (page_size 1)", client, "idle") in calls, calls
        for condition in ("idle", ("while 2 other clients (processes) apply and lift on "
                          "their own subscribers"), "100 live enforcements"):
            for call in ("Apply (block TCP 25)", "Lift"):
                assert (call, client, condition) in calls, (call, client, condition, calls)
    # A subscriber's enforcements following it to a new address: another's decisions meanwhile.
    follow = [r for r in rows if len(r) == 11 and r[1] == "python" and re.search(
        r"while another subscriber's \d+ live enforcements follow it to a new address", r[2])]
    assert [r[0] for r in follow] == ["Apply (block TCP 25)", "Lift"], follow
    # Throughput: measured, its floor (the same fleet against the bare server) and the ratio.
    rates = {r[0]: r for r in rows if len(r) == 7}
    for how in ("Apply+Lift", "ApplyBatch+LiftBatch of 8"):
        row = rates.get(f"decisions/s, 4 clients ({how})")
        assert row is not None, (how, list(rates))
        assert "Floor: the same clients, processes and seconds" in row[1], row
        floor = (rf"{NUMBER}/s \(gRPC\), {NUMBER}/s \(switch\)" if "Batch" in how
                 else rf"{NUMBER}/s")  # a batch's floor: the switch's own rate too
        assert re.fullmatch(rf"{NUMBER}/s", row[2]) and re.fullmatch(floor, row[3]), row
        assert re.fullmatch(rf"x{NUMBER}", row[4]), row
    assert "Switch floor: an OS-Ken" in rates["decisions/s, 4 clients (ApplyBatch+LiftBatch "
                                              "of 8)"][1]
    assert re.search(rf"\| Apply \(block TCP 25\) \| grpc-js \| [^|]+; idle \| 20 \| "
                     rf"{NUMBER} \| {NUMBER} \| {NUMBER} \|", out), out
    assert "Machine:" in out and "failed calls" not in out, out
