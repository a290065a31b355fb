"""Real network partitions for real nodes: one Linux network namespace per node.

Each namespace has two veth links:
- data (10.77.<net>.i+1) on bridge A, the nodes' p2p traffic; a partition moves the minority's
  data links to a second bridge B, so the two sides share no wire while each side still talks
  among itself, and healing moves them back;
- management (10.78.<net>.i+1) on bridge M, with this machine at .254: the status endpoints,
  reachable whatever the data plane does.

Needs root and iproute2 (`ip netns`); `NetLab.available()` says whether this machine allows it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from phalanx.apps.cluster import Placement


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class NetLab:
    def __init__(self, n: int) -> None:
        self.n = n
        self.tag = f"{os.getpid() % 10000:04d}"  # parallel test workers get their own names
        self.net = os.getpid() % 200 + 20  # and their own subnets
        self.minority: set[int] = set()

    @staticmethod
    def available() -> bool:
        if shutil.which("ip") is None or os.geteuid() != 0:
            return False
        probe = f"phxprobe{os.getpid() % 10000}"
        try:
            _ip("netns", "add", probe)
        except (subprocess.CalledProcessError, OSError):
            return False
        _ip("netns", "del", probe)
        return True

    def ns(self, i: int) -> str:
        return f"phx{self.tag}n{i}"

    def data_ip(self, i: int) -> str:
        return f"10.77.{self.net}.{i + 1}"

    def mgmt_ip(self, i: int) -> str:
        return f"10.78.{self.net}.{i + 1}"

    def bridge(self, name: str) -> str:
        return f"bp{self.tag}{name}"

    def up(self) -> None:
        for name, address in (("a", None), ("b", None), ("m", f"10.78.{self.net}.254/24")):
            _ip("link", "add", self.bridge(name), "type", "bridge")
            if address:
                _ip("addr", "add", address, "dev", self.bridge(name))
            _ip("link", "set", self.bridge(name), "up")
        for i in range(self.n):
            _ip("netns", "add", self.ns(i))
            _ip("-n", self.ns(i), "link", "set", "lo", "up")
            for plane, bridge, address in (("d", "a", self.data_ip(i)),
                                           ("m", "m", self.mgmt_ip(i))):
                outside, inside = f"v{self.tag}{plane}{i}", f"{plane}{i}"
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside,
                    "netns", self.ns(i))
                _ip("link", "set", outside, "master", self.bridge(bridge), "up")
                _ip("-n", self.ns(i), "addr", "add", f"{address}/24", "dev", inside)
                _ip("-n", self.ns(i), "link", "set", inside, "up")

    def split(self, minority: set[int]) -> None:
        """Cut `minority` off the rest: their data links move to bridge B."""
        for i in sorted(minority):
            _ip("link", "set", f"v{self.tag}d{i}", "master", self.bridge("b"))
        self.minority = set(minority)

    def heal(self) -> None:
        for i in sorted(self.minority):
            _ip("link", "set", f"v{self.tag}d{i}", "master", self.bridge("a"))
        self.minority = set()

    def down(self) -> None:
        for i in range(self.n):
            subprocess.run(["ip", "netns", "del", self.ns(i)], capture_output=True, timeout=30)
        for name in ("a", "b", "m"):
            subprocess.run(["ip", "link", "del", self.bridge(name)], capture_output=True,
                           timeout=30)

    def placement(self) -> Placement:
        return Placement(hosts={i: self.data_ip(i) for i in range(self.n)},
                         status_hosts={i: self.mgmt_ip(i) for i in range(self.n)},
                         prefixes={i: ["ip", "netns", "exec", self.ns(i)]
                                   for i in range(self.n)})
