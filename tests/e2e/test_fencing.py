"""The switch-side fence, message by message, against a real Open vSwitch.

Two controller connections to one bridge speak raw OpenFlow 1.3 with the
controller's own messages (controller/openflow/compiler.py role_request): the one
that claims MASTER with a newer generation id demotes the other, whose
flow_mods the switch then refuses (OFPBRC_IS_SLAVE) and whose claim with
its old generation id it refuses as stale (OFPRRFC_STALE). This is what
stops a deposed leader that wakes up (tests/e2e/test_high_availability.py
shows the whole under Mininet); here no timing can hide it.
"""
from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import time

import pytest
from os_ken.ofproto import ofproto_parser, ofproto_protocol, ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.openflow import compiler

pytestmark = pytest.mark.mininet  # needs root and Open vSwitch, like the Mininet tests

OFP = ofproto_v1_3
DESC = ofproto_protocol.ProtocolDesc(OFP.OFP_VERSION)


class Connection:
    """One controller's OpenFlow session, as plain bytes on a socket."""

    def __init__(self, port: int):
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.xid = 0
        self.send(parser.OFPHello(DESC))
        assert isinstance(self.receive(), parser.OFPHello)

    def send(self, message) -> int:
        self.xid += 1
        message.datapath = DESC
        message.set_xid(self.xid)
        message.serialize()
        self.sock.sendall(message.buf)
        return self.xid

    def receive(self):
        """The next message that is not an echo request (answered) or a
        port status."""
        while True:
            head = self._exactly(8)
            version, kind, length, xid = struct.unpack("!BBHI", head)
            body = head + self._exactly(length - 8)
            message = ofproto_parser.msg(DESC, version, kind, length, xid, body)
            if isinstance(message, parser.OFPEchoRequest):
                self.send(parser.OFPEchoReply(DESC, data=message.data))
                continue
            if isinstance(message, parser.OFPPortStatus):
                continue
            return message

    def ask(self, message):
        """Sends message and a barrier; the switch's answer to message
        (an error, a reply) or None when it just did it."""
        xid = self.send(message)
        barrier = self.send(parser.OFPBarrierRequest(DESC))
        answer = None
        while True:
            got = self.receive()
            if got.xid == xid:
                answer = got
            elif got.xid == barrier:
                return answer

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the switch closed the connection")
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def bridge():
    """A bridge that listens for controllers (ptcp), removed afterwards."""
    name, port = f"fence{os.getpid() % 100000}", _free_port()
    subprocess.run(["ovs-vsctl", "--timeout=10", "--", "--may-exist", "add-br", name,
                    "--", "set", "bridge", name, "datapath_type=netdev",
                    "protocols=OpenFlow13", "fail_mode=secure",
                    "--", "set-controller", name, f"ptcp:{port}:127.0.0.1"], check=True)
    try:
        yield name, port
    finally:
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", name],
                       check=True)


def _drop_rule(in_port: int):
    return parser.OFPFlowMod(DESC, table_id=0, priority=7, cookie=in_port,
                             match=parser.OFPMatch(in_port=in_port), instructions=[])


def _rules(name: str) -> str:
    return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", name],
                          check=True, capture_output=True, text=True).stdout


def test_a_newer_master_fences_the_old_one_at_the_switch(bridge):
    name, port = bridge
    with contextlib.ExitStack() as stack:
        old, new = Connection(port), Connection(port)
        stack.callback(old.close)
        stack.callback(new.close)
        reply = old.ask(compiler.role_request(True, 5))
        assert (reply.role, reply.generation_id) == (OFP.OFPCR_ROLE_MASTER, 5)
        assert old.ask(_drop_rule(1)) is None          # the master may change things
        assert "in_port=1" in _rules(name)
        reply = new.ask(compiler.role_request(True, 6))
        assert (reply.role, reply.generation_id) == (OFP.OFPCR_ROLE_MASTER, 6)
        refused = old.ask(_drop_rule(2))                # demoted: refused
        assert isinstance(refused, parser.OFPErrorMsg)
        assert compiler.is_slave_refusal(refused.type, refused.code)
        assert "in_port=2" not in _rules(name)
        stale = old.ask(compiler.role_request(True, 5))  # cannot take it back
        assert isinstance(stale, parser.OFPErrorMsg)
        assert compiler.is_stale_role(stale.type, stale.code)
        stale = old.ask(compiler.role_request(False, 5))  # nor even slave, at 5
        assert compiler.is_stale_role(stale.type, stale.code)
        reply = old.ask(compiler.role_request(False, 6))  # slave at the new epoch
        assert reply.role == OFP.OFPCR_ROLE_SLAVE
        assert new.ask(_drop_rule(3)) is None
        assert "in_port=3" in _rules(name)


def test_a_slave_still_hears_packet_ins_it_asked_for(bridge):
    """compiler.async_config: a follower keeps learning hosts and links."""
    _, port = bridge
    with contextlib.ExitStack() as stack:
        slave = Connection(port)
        stack.callback(slave.close)
        assert slave.ask(compiler.async_config()) is None
        assert slave.ask(compiler.role_request(False, 1)).role == OFP.OFPCR_ROLE_SLAVE
        master = Connection(port)
        stack.callback(master.close)
        assert master.ask(compiler.role_request(True, 1)).role == OFP.OFPCR_ROLE_MASTER
        # A packet sent to the controller through the switch (packet-out to
        # a table whose miss rule copies to the controller).
        send_up = parser.OFPFlowMod(DESC, table_id=0, priority=0, match=parser.OFPMatch(),
                                    instructions=[parser.OFPInstructionActions(
                                        OFP.OFPIT_APPLY_ACTIONS,
                                        [parser.OFPActionOutput(OFP.OFPP_CONTROLLER,
                                                                OFP.OFPCML_NO_BUFFER)])])
        assert master.ask(send_up) is None
        frame = bytes.fromhex("ffffffffffff 020000000001 88b5") + b"hello" * 10
        master.send(parser.OFPPacketOut(DESC, buffer_id=OFP.OFP_NO_BUFFER,
                                        in_port=OFP.OFPP_CONTROLLER,
                                        actions=[parser.OFPActionOutput(OFP.OFPP_TABLE)],
                                        data=frame))
        slave.sock.settimeout(5)
        heard = slave.receive()
        assert isinstance(heard, parser.OFPPacketIn) and heard.data == frame
