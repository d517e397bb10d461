"""tcpdump inside a Mininet host, started and stopped by its own process id
(hosts share the machine's PID namespace: stopping "tcpdump" by name would
stop everybody's)."""
from __future__ import annotations

import time


class Capture:
    """Frames arriving on a host's interface (incoming only: what the host
    is sent, not what it sends) that match a pcap filter expression; or on
    another of its interfaces (intf), or leaving it (direction "out")."""

    def __init__(self, host, expression: str, name: str, timeout: float = 5.0,
                 intf: str | None = None, direction: str = "in"):
        self.host = host
        self.path = f"/tmp/capture-{name}.pcap"
        # --immediate-mode: tcpdump otherwise receives frames from the kernel
        # in blocks handed over up to a second late, and a capture stopped
        # meanwhile loses the last ones.
        out = host.cmd(f"rm -f {self.path} {self.path}.log; tcpdump -Q {direction} -n -U "
                       "--immediate-mode "
                       f"-i {intf or host.defaultIntf().name} -w {self.path} '{expression}' "
                       f"> /dev/null 2> {self.path}.log & echo $!")
        self.pid = int(out.split()[-1])
        deadline = time.monotonic() + timeout
        while "listening on" not in host.cmd(f"cat {self.path}.log"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"tcpdump on {host.name} did not start")
            time.sleep(0.1)

    def stop(self) -> list[str]:
        """Stops the capture; the frames it saw, one line each (with MACs)."""
        self.host.cmd(f"kill -INT {self.pid}; wait {self.pid}")
        out = self.host.cmd(f"tcpdump -n -e -r {self.path} 2>/dev/null")
        # tcpdump follows an unknown ethertype's line with a hex dump,
        # indented: one frame is one unindented line.
        return [line for line in out.splitlines() if line.strip() and not line[0].isspace()]
