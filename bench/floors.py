"""The floors bench/latency.py measures its figures against, in the same run.

A bare grpcio server (a stub servicer of the same proto, canned answers), an OS-Ken
app sending one decision's flow_mods + a barrier to an OVS bridge of its own, the
store's commit alone. The two that must not share a process with the bench (a
server, an OS-Ken app) run as this file in a process of their own, started by
_helper: `bench/floors.py --serve-floor ANSWERS [--threads N]` prints `READY port`
and serves until its stdin closes; `bench/floors.py --ofp-floor PORT,COUNT,FLOWS[,BATCH]`
prints `READY`, then the timings (with BATCH, the rate) as JSON once a switch connected
and was measured.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc

from enforcement.domain.model import State
from enforcement.store import codec
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from testbed import lab as harness

FLOOR_BRIDGE = "latfloor"
FLOOR_COOKIE = 0x1A7E_0000_0000_0000
# Calls not counted at the start of every series, the floors' and the bench's
# alike (latency.py takes it from here: this file runs without latency.py).
WARMUP = 20
# The bare server's pool for the latency floors, as it always was; the
# throughput floor passes a bigger one (latency.py's FLEET_THREADS).
SERVE_THREADS = 16


def serve_floor(answers: str, threads: int = SERVE_THREADS, delay_ms: float = 0.0) -> int:
    """The same proto on a plain grpcio server: List answers an empty page,
    Apply and Lift a real controller answer, at once. For the throughput floor
    (bench/bench.py's worker) also GetTopology, which the worker calls before
    the clock starts, and the batches: one canned real answer per request, so
    that the reply is as big as the controller's."""
    blobs = {k: pb.Enforcement.FromString(bytes.fromhex(v))
             for k, v in json.loads(pathlib.Path(answers).read_text()).items()}
    results = {k: pb.BatchResult(enforcement=v) for k, v in blobs.items()}

    def batch(kind: str):
        # Built per call, as a server builds its reply; only the answers are canned.
        return lambda self, request, context: pb.BatchResponse(
            results=[results[kind]] * len(request.requests))

    def answer(kind: str):
        # delay_ms: the answer comes after a sleep as long as a decision takes,
        # so that the client waits (and its thread sleeps) as long as it does
        # for the controller: what that wait adds to a call is the machine's.
        if not delay_ms:
            return lambda self, request, context: blobs[kind]
        return lambda self, request, context: time.sleep(delay_ms / 1e3) or blobs[kind]
    trivial = type("Trivial", (pb_grpc.EnforcementServiceServicer,), {
        "List": lambda self, request, context: pb.ListResponse(),
        "Apply": answer("apply"),
        "Lift": answer("lift"),
        "GetTopology": lambda self, request, context: pb.Topology(),
        "ApplyBatch": batch("apply"), "LiftBatch": batch("lift")})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    pb_grpc.add_EnforcementServiceServicer_to_server(trivial(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"READY {port}", flush=True)
    sys.stdin.read()  # until the bench closes the pipe
    server.stop(0)
    return 0


def ofp_floor(port: int, count: int, flows: int, batch: int = 0) -> int:
    """Once a switch connects, `count` times: `flows` drop rules + a barrier,
    then their delete + a barrier, each waited for; prints the ms as JSON."""
    # app_manager before the module that registers the --ofp-* options (circular otherwise)
    from os_ken import cfg
    from os_ken.base import app_manager
    from os_ken.controller import controller as _registers_options  # noqa: F401
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
    from os_ken.ofproto import ofproto_v1_3

    cfg.CONF(args=["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(port)],
             project="os_ken")
    finished: queue.Queue = queue.Queue()
    waiting: dict[int, threading.Event] = {}
    errors: list[str] = []  # the switch's refusals: any makes the floor void

    def wire(dp, messages: list) -> tuple[bytes, int]:
        """The messages and a barrier, serialized for one write as controller/openflow/sessions.py
        sends them, and the barrier's xid."""
        buf = bytearray()
        for message in [*messages, dp.ofproto_parser.OFPBarrierRequest(dp)]:
            dp.set_xid(message)
            message.serialize()
            buf += message.buf
        return bytes(buf), message.xid

    def sent(dp, buf: bytes, xid: int, timeout: float) -> None:
        """Sends a wire() and waits for its barrier's reply."""
        waiting[xid] = waiter = threading.Event()
        dp.send(buf)
        if not waiter.wait(timeout):
            raise TimeoutError(f"no barrier reply in {timeout:g} s")

    def confirmed(dp, messages: list) -> float:
        """ms to the barrier's reply, serializing included."""
        started = time.perf_counter()
        sent(dp, *wire(dp, messages), 10)
        return (time.perf_counter() - started) * 1e3

    def measure(dp) -> None:
        time.sleep(0.5)  # the handshake ends (MAIN_DISPATCHER) after the handler
        if batch:
            return measure_rate(dp)
        parser, ofp = dp.ofproto_parser, dp.ofproto
        timings: dict = {"add": [], "delete": [], "errors": errors}
        try:
            for n in range(WARMUP + count):
                add = confirmed(dp, [parser.OFPFlowMod(
                    dp, cookie=FLOOR_COOKIE | n, table_id=0, priority=1000, instructions=[],
                    match=parser.OFPMatch(eth_type=0x0800, ip_proto=6, tcp_dst=25 + k,
                                          ipv4_src=f"10.9.{n >> 8 & 255}.{n & 255}"))
                    for k in range(flows)])
                delete = confirmed(dp, [parser.OFPFlowMod(
                    dp, cookie=FLOOR_COOKIE | n, cookie_mask=2**64 - 1, table_id=ofp.OFPTT_ALL,
                    command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)])
                if n >= WARMUP:
                    timings["add"].append(add)
                    timings["delete"].append(delete)
        finally:
            finished.put(timings)

    def measure_rate(dp) -> None:
        """`count` rounds: `batch` decisions of `flows` rules each, built and serialized
        before the clock starts, in one write + a barrier; then their deletes (strict,
        rule by rule, as a lift sends them) the same way. Prints decisions/s."""
        parser, ofp = dp.ofproto_parser, dp.ofproto

        def matches(n: int):
            return [parser.OFPMatch(eth_type=0x0800, ip_proto=6, tcp_dst=1000 + n % 60000,
                                    ipv4_src=f"10.{8 + k}.{n >> 8 & 255}.{n & 255}")
                    for k in range(flows)]

        rounds = []
        for r in range(count + 2):  # two warm-up rounds
            decisions = range(r * batch, (r + 1) * batch)
            rounds.append((wire(dp, [parser.OFPFlowMod(
                dp, cookie=FLOOR_COOKIE | n, table_id=0, priority=1000, instructions=[],
                match=m) for n in decisions for m in matches(n)]), wire(dp, [parser.OFPFlowMod(
                    dp, cookie=FLOOR_COOKIE | n, cookie_mask=2**64 - 1, table_id=0,
                    command=ofp.OFPFC_DELETE_STRICT, priority=1000, out_port=ofp.OFPP_ANY,
                    out_group=ofp.OFPG_ANY, match=m) for n in decisions for m in matches(n)])))
        result: dict = {"errors": errors}
        try:
            for r, pair in enumerate(rounds):
                if r == 2:
                    started = time.perf_counter()
                for buf, xid in pair:
                    sent(dp, buf, xid, 30)
            result["per_s"] = 2 * batch * count / (time.perf_counter() - started)
        finally:
            finished.put(result)

    class LatencyFloor(app_manager.OSKenApp):
        OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]  # noqa: RUF012  (OS-Ken reads it so)

        @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
        def _features(self, ev):
            # Barriers are waited for off the event thread, as in the controller.
            threading.Thread(target=measure, args=(ev.msg.datapath,), daemon=True).start()

        @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
        def _barrier(self, ev):
            waiting.pop(ev.msg.xid, threading.Event()).set()

        @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
        def _error(self, ev):
            errors.append(f"type {ev.msg.type} code {ev.msg.code}")

    manager = app_manager.AppManager.get_instance()
    manager.load_apps(["os_ken.controller.ofp_handler"])
    manager.applications_cls["latency_floor"] = LatencyFloor
    threading.Thread(target=manager.instantiate_apps, kwargs=manager.create_contexts(),
                     daemon=True).start()
    time.sleep(1.0)  # listening by then; a switch that came too early retries anyway
    print("READY", flush=True)
    print(json.dumps(finished.get(timeout=600)), flush=True)
    os._exit(0)  # OS-Ken's native threads cannot be stopped (DESIGN.md)


def vsctl(*args: str) -> None:
    subprocess.run(["ovs-vsctl", "--timeout=10", *args], check=True, capture_output=True)


def _helper(children: list, *argv: str, stdin=None) -> tuple[subprocess.Popen, str]:
    """This file (floors.py) in a process of its own, one floor, and its READY line."""
    proc = subprocess.Popen([*harness._die_with_parent_prefix(), sys.executable, __file__,
                             *argv], stdin=stdin, stdout=subprocess.PIPE, text=True)
    children.append(proc)
    if not (line := proc.stdout.readline()).startswith("READY"):
        raise RuntimeError(f"{argv[0]} did not start")
    return proc, line


def measure_ofp_floor(count: int, flows: int, children: list, batch: int = 0) -> dict:
    """The OS-Ken floor: one decision's timings, or with `batch` the switch's rate
    in decisions/s ({"per_s": ...})."""
    port = harness.free_port()
    floor, _ = _helper(children, "--ofp-floor", f"{port},{count},{flows},{batch}")
    try:
        vsctl("--if-exists", "del-br", FLOOR_BRIDGE, "--", "add-br", FLOOR_BRIDGE, "--", "set",
              "bridge", FLOOR_BRIDGE, "datapath_type=netdev", "fail_mode=secure",
              "protocols=OpenFlow13", "other-config:datapath-id=00000000000f100f", "--",
              "set-controller", FLOOR_BRIDGE, f"tcp:127.0.0.1:{port}")
        result = json.loads(floor.stdout.readline())
        if result["errors"] or (not batch and len(result["add"]) < count):
            raise RuntimeError(f"OS-Ken floor: {result['errors']}")
        return result
    finally:
        floor.kill()
        with contextlib.suppress(subprocess.CalledProcessError):
            vsctl("--if-exists", "del-br", FLOOR_BRIDGE)


def measure_store_floor(controller_db: pathlib.Path, path: pathlib.Path,
                        count: int) -> list[float]:
    """The controller's own record written anew, with its event and audit entry, per commit."""
    with contextlib.closing(sqlite3.connect(f"file:{controller_db}?mode=ro", uri=True)) as db:
        body = db.execute("SELECT body FROM enforcements LIMIT 1").fetchone()[0]
    record = dataclasses.replace(codec.from_dict(json.loads(body)), state=State.ACTIVE)
    store = Store(f"sqlite:///{path}")
    timings = []
    try:
        for n in range(WARMUP + count):
            # Unique as the store wants them: id, request id, serial (the cookie's low bits).
            copy = dataclasses.replace(
                record, id=f"enf-floor{n:011d}", cookie=(record.cookie >> 48 << 48) | 10**6 + n,
                decision=dataclasses.replace(record.decision, request_id=f"floor-{n}"))
            audit = dict(at=time.time(), actor="bench", call="Apply", outcome="OK",
                         enforcement_id=copy.id, case_id=copy.decision.case_id, clause=copy.
                         escalation.clause, detail="; ".join(r.text() for r in copy.rules))
            started = time.perf_counter()
            store.write([copy], [(time.time(), "applied", copy, copy.action.description)],
                        [audit])
            if n >= WARMUP:
                timings.append((time.perf_counter() - started) * 1e3)
    finally:
        store.close()
    return timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--serve-floor", metavar="ANSWERS", help="serve the bare grpcio server (answers.json)")
    add("--threads", type=int, default=SERVE_THREADS,
        help=f"the bare server's thread pool ({SERVE_THREADS})")
    add("--delay-ms", type=float, default=0.0,
        help="the bare server answers Apply and Lift after sleeping this long (0)")
    add("--ofp-floor", metavar="PORT,COUNT,FLOWS[,BATCH]",
        help="the OS-Ken app's flow_mod+barrier floor (with BATCH: decisions/s)")
    args = parser.parse_args(argv)
    if args.serve_floor:
        return serve_floor(args.serve_floor, args.threads, args.delay_ms)
    if args.ofp_floor:
        return ofp_floor(*(int(x) for x in args.ofp_floor.split(",")))
    parser.error("--serve-floor or --ofp-floor")
    return 2


if __name__ == "__main__":
    sys.exit(main())
