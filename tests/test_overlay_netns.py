"""The ``overlay`` technology between real daemons on a network without multicast.

Six hosts on a LAN whose multicast is dropped (hosts' MULTICAST flag off and
the bridge floods none); each runs a daemon with the overlay technology only,
all bootstrapped through the first. Messages from any member reach all
members; when an interior node of the tree dies, delivery resumes (the time it
takes is printed and asserted against a bound).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hamcast
from hamcast.testbed import Network, Topology
from tests.conftest import answers, wait_until
from tests.testbed_fixtures import testbed

__all__ = ["testbed"]

pytestmark = pytest.mark.integration

HOSTS = ("o1", "o2", "o3", "o4", "o5", "o6")
PORT = 7047
GROUP = "ham:opaque:overlay-netns"

# Short timers so failures are noticed within seconds (defaults: 5 s keep-alives).
CONFIG = """
technologies = ["overlay"]

[technology.overlay.kbr]
keepalive_interval = 1.0
probe_timeout = 0.5
probe_count = 2

[technology.overlay.scribe]
heartbeat_interval = 0.5
parent_timeout = 1.6
child_timeout = 1.6
"""


class Daemons:
    def __init__(self, net: Network, folder: Path) -> None:
        self.net = net
        self.folder = folder
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        (folder / "hamcastd.toml").write_text(CONFIG)

    def path(self, host: str) -> str:
        return str(self.folder / f"{host}.sock")

    def start(self, host: str, bootstrap: str | None) -> None:
        argv = [
            sys.executable, "-m", "hamcast.cli", "daemon",
            "--socket", self.path(host),
            "--config", str(self.folder / "hamcastd.toml"),
            "--overlay-listen", f"{self.net.address(host, 4)}:{PORT}",
        ]  # fmt: skip
        if bootstrap is not None:
            argv += ["--overlay-bootstrap", f"{self.net.address(bootstrap, 4)}:{PORT}"]
        with (self.folder / f"{host}.log").open("wb") as log:
            self.processes[host] = self.net.popen(host, argv, stdout=subprocess.DEVNULL, stderr=log)
        wait_until(lambda: answers(self.path(host)), 20, f"the daemon on {host}")

    def socket(self, host: str) -> hamcast.MulticastSocket:
        return hamcast.MulticastSocket(socket_path=self.path(host), embedded=False)

    def kill(self, host: str) -> None:
        self.processes[host].send_signal(signal.SIGKILL)
        self.processes[host].wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            process.wait(timeout=15)


@pytest.fixture
def overlay(testbed: Callable[[Topology], Network], tmp_path: Path) -> Iterator[Daemons]:
    topo = Topology()
    dark = topo.lan("dark", v4="10.44.0.0/24", multicast=False)
    for host in HOSTS:
        topo.host(host, dark)
    net = testbed(topo)
    daemons = Daemons(net, tmp_path)
    try:
        daemons.start(HOSTS[0], None)
        for host in HOSTS[1:]:
            daemons.start(host, HOSTS[0])
        yield daemons
    finally:
        daemons.stop()


def receive_all(sock: hamcast.MulticastSocket, expected: set[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    missing = set(expected)
    while missing:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"missing {sorted(missing)[:5]}"
        message = sock.receive(timeout=remaining)
        assert message.payload not in expected - missing, "a message arrived twice"
        missing.discard(message.payload)


def test_members_reach_each_other_through_the_overlay(overlay: Daemons) -> None:
    sockets = {host: overlay.socket(host) for host in HOSTS}
    try:
        assert [i.technology for i in sockets["o1"].interfaces()] == ["overlay"]
        for sock in sockets.values():
            sock.join(GROUP)
        # Wait until the tree carries a probe from o1 to everyone.
        wait_until(lambda: _probe(sockets, "o1"), 30, "the tree to form")
        for sender in ("o2", "o6"):
            sent = {f"{sender} {i}".encode() for i in range(20)}
            for payload in sorted(sent):
                sockets[sender].send(GROUP, payload)
            for sock in sockets.values():
                receive_all(sock, sent, timeout=10)
        big = b"B" * 30000  # fragmented on the wire
        sockets["o3"].send(GROUP, big)
        for sock in sockets.values():
            assert sock.receive(timeout=10).payload == big
    finally:
        for sock in sockets.values():
            sock.close()


def _probe(sockets: dict[str, hamcast.MulticastSocket], sender: str) -> bool:
    token = f"probe {time.monotonic_ns()}".encode()
    sockets[sender].send(GROUP, token)
    for sock in sockets.values():
        try:
            while sock.receive(timeout=1.0).payload != token:
                pass
        except hamcast.ReceiveTimeoutError:
            return False
    return True


def test_delivery_resumes_after_an_interior_node_dies(overlay: Daemons) -> None:
    sockets = {host: overlay.socket(host) for host in HOSTS}
    try:
        for sock in sockets.values():
            sock.join(GROUP)
        wait_until(lambda: _probe(sockets, "o1"), 30, "the tree to form")
        # An interior node: one with children in the group's tree, not the root.
        interior = None
        for host, sock in sockets.items():
            status = sock.interface_status(1)["groups"][GROUP]
            if status["children"] and not status["root"] and host != "o1":
                interior = host
                break
        if interior is None:
            # Small trees may be flat (all children of the root): kill the root instead.
            interior = next(
                h for h, s in sockets.items() if s.interface_status(1)["groups"][GROUP]["root"]
            )
        sender = "o1" if interior != "o1" else "o2"
        survivors = {h: s for h, s in sockets.items() if h != interior}
        sockets.pop(interior).close()
        overlay.kill(interior)
        killed_at = time.monotonic()
        wait_until(lambda: _probe(survivors, sender), 60, "delivery to resume")
        gap = time.monotonic() - killed_at
        print(f"\noverlay: delivery resumed {gap:.1f} s after {interior} died")
        assert gap < 30
    finally:
        for sock in sockets.values():
            with contextlib.suppress(hamcast.HamcastError):
                sock.close()


LINK_CONFIG = """
technologies = ["ip", "overlay"]

[technology.ip]
announce_interval = 1

[technology.ip.discovery]
settle_time = 2.0
"""


def test_daemons_on_one_link_find_the_overlay_through_peer_announcements(
    testbed: Callable[[Topology], Network], tmp_path: Path
) -> None:
    topo = Topology()
    lan = topo.lan("lan", v4="10.45.0.0/24")
    hosts = ("p1", "p2", "p3")
    for host in hosts:
        topo.host(host, lan)
    net = testbed(topo)
    daemons = Daemons(net, tmp_path)
    (tmp_path / "hamcastd.toml").write_text(LINK_CONFIG)
    try:
        for host in reversed(hosts):  # the seed (lowest address) starts last
            daemons.start(host, None)
        sockets = {host: daemons.socket(host) for host in hosts}
        try:
            overlay_index = {
                host: next(i.index for i in s.interfaces() if i.technology == "overlay")
                for host, s in sockets.items()
            }

            def leaf_sets_full() -> bool:
                return all(
                    len(s.interface_status(overlay_index[h])["leaf_set"]) == len(hosts) - 1
                    for h, s in sockets.items()
                )

            wait_until(leaf_sets_full, 30, "one overlay of all three daemons")
            on_overlay = {h: daemons_socket(daemons, h, overlay_index[h]) for h in hosts}
            try:
                for sock in on_overlay.values():
                    sock.join(GROUP)
                wait_until(lambda: _probe(on_overlay, "p3"), 30, "overlay delivery")
            finally:
                for sock in on_overlay.values():
                    sock.close()
        finally:
            for sock in sockets.values():
                sock.close()
    finally:
        daemons.stop()


def daemons_socket(daemons: Daemons, host: str, index: int) -> hamcast.MulticastSocket:
    """A socket on one interface of ``host``'s daemon."""
    return hamcast.MulticastSocket([index], socket_path=daemons.path(host), embedded=False)
