"""Worker hosts of their own, for partition tests: each a network namespace joined to this one by
a veth pair (root only), whose link a test can cut (a black hole: packets vanish, nothing is
refused), heal, or delete with the host. The private PostgreSQL and Redis a partition test uses
listen on the host ends of those links (``PrivatePostgres(addresses=...)``, ``PrivateRedis``), so a
worker inside reaches them only across its link."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

# One /30 per host, in a range of this machine's own making (the namespaces exist only here),
# and of this process's (one of 12,800 by its pid): two runs at once on one machine take
# different ones (with 50, as before, concurrent sessions on a shared machine met).
_SUBNET = f"10.{200 + (os.getpid() // 256) % 50}.{os.getpid() % 256}"


def unavailable() -> str | None:
    """Why namespaced hosts cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "partition tests need root (ip netns, veth pairs)"
    if shutil.which("ip") is None:
        return "partition tests need iproute2's ip"
    probe = f"dprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns is not available here: {made.stderr.strip()[:200]}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


@dataclass
class Host:
    """A namespace ``ns`` whose only link is ``outer`` (this side, ``gateway``) to ``inner``
    (inside, ``address``)."""

    index: int
    ns: str = ""
    outer: str = ""
    inner: str = ""

    def __post_init__(self) -> None:
        tag = f"{os.getpid()}{self.index}"  # interface names stay within 15 characters
        self.ns, self.outer, self.inner = f"descent-h{tag}", f"dso{tag}", f"dsi{tag}"

    @property
    def gateway(self) -> str:
        return f"{_SUBNET}.{4 * self.index + 1}"

    @property
    def address(self) -> str:
        return f"{_SUBNET}.{4 * self.index + 2}"

    def create(self) -> "Host":
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        _ip("link", "set", self.inner, "netns", self.ns)
        _ip("addr", "add", f"{self.gateway}/30", "dev", self.outer)
        _ip("link", "set", self.outer, "up")
        _ip("addr", "add", f"{self.address}/30", "dev", self.inner, ns=self.ns)
        _ip("link", "set", self.inner, "up", ns=self.ns)
        _ip("link", "set", "lo", "up", ns=self.ns)
        return self

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the host (``ip netns exec`` execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def cut(self) -> None:
        """The link goes silent both ways: the inside end is down, so nothing crosses and no
        side is told (no reset, no unreachable)."""
        _ip("link", "set", self.inner, "down", ns=self.ns)

    def heal(self) -> None:
        _ip("link", "set", self.inner, "up", ns=self.ns)

    def delete(self) -> None:
        """The host and its link gone (as a machine that died with its cable pulled)."""
        _ip("link", "del", self.outer, check=False)
        _ip("netns", "del", self.ns, check=False)
