"""The ``overlay`` technology between real daemons on a network without multicast.

Six hosts on a LAN whose multicast is dropped (hosts' MULTICAST flag off and
the bridge floods none); each runs a daemon with the overlay technology only,
all bootstrapped through the first. Messages from any member reach all
members; when an interior node of the tree dies, delivery resumes (the time it
takes is printed and asserted against a bound).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hamcast
from hamcast.testbed import Network, Topology
from hamcast.testbed.daemons import DaemonSet
from tests.conftest import wait_until
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


class Daemons(DaemonSet):
    """The overlay daemons of a test, each listening on its host's address, port 7047."""

    def __init__(self, net: Network, folder: Path) -> None:
        super().__init__(net, folder, CONFIG)
        self.net: Network = net

    def start_on(self, host: str, bootstrap: str | None) -> None:
        self.start(
            host,
            overlay_listen=f"{self.net.address(host, 4)}:{PORT}",
            bootstrap=None if bootstrap is None else f"{self.net.address(bootstrap, 4)}:{PORT}",
            log_level="warning",
        )


@pytest.fixture
def overlay(testbed: Callable[[Topology], Network], tmp_path: Path) -> Iterator[Daemons]:
    topo = Topology()
    dark = topo.lan("dark", v4="10.44.0.0/24", multicast=False)
    for host in HOSTS:
        topo.host(host, dark)
    net = testbed(topo)
    daemons = Daemons(net, tmp_path)
    try:
        daemons.start_on(HOSTS[0], None)
        for host in HOSTS[1:]:
            daemons.start_on(host, HOSTS[0])
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
    daemons.config.write_text(LINK_CONFIG)
    try:
        for host in reversed(hosts):  # the seed (lowest address) starts last
            daemons.start_on(host, None)
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
            on_overlay = {h: daemons.socket(h, overlay_index[h]) for h in hosts}
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
