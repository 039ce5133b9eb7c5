"""One group across multicast islands and hosts without multicast, through gateways.

The hybrid scenario of :mod:`hamcast.testbed.scenarios` (the demo's too): two
islands joined by pimd, an island reachable by unicast only, two hosts without
multicast; senders h1 (island) and d1 (no multicast). Every host runs a daemon
with ``ip`` and ``overlay`` (bootstrapped through h1), so every island host is a
gateway candidate. Applications use one name and
never say which technology: island hosts end up on native multicast, dark hosts
on the overlay; each domain's designated gateway bridges. Every receiver gets
every message of both senders exactly once, under the sender's name; when the
designated gateway of the lan1+lan2 domain is killed, another takes over (the
gap is printed).

On a kernel without multicast routing r1 routes unicast only: lan1, lan2 and
lan3 are three islands (:data:`HYBRID_DOMAINS_UNROUTED`), the SSM group
reaches h3 through the overlay, and the gateway killed is lan3's.
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
from hamcast.testbed.scenarios import (
    HYBRID_CONFIG,
    HYBRID_DARK,
    HYBRID_HOSTS,
    OVERLAY_PORT,
    hybrid_domains,
    hybrid_topology,
)
from tests.conftest import wait_until
from tests.testbed_fixtures import ROUTED, testbed

__all__ = ["testbed"]

pytestmark = pytest.mark.integration

DOMAINS = hybrid_domains(ROUTED)
DARK = HYBRID_DARK
HOSTS = HYBRID_HOSTS
RECEIVERS = ("h2", "h3", "h4", "h5", "d2")
#: The domain whose designated gateway is killed: the first with two receivers.
FAILOVER = next(hs for hs in DOMAINS.values() if len(set(hs) & set(RECEIVERS)) >= 2)


@pytest.fixture
def hybrid(testbed: Callable[[Topology], Network], tmp_path: Path) -> Iterator[DaemonSet]:
    net = testbed(hybrid_topology(prefix="hct", routed=ROUTED))
    net.wait_ready()
    with DaemonSet(net, tmp_path, HYBRID_CONFIG) as daemons:
        h1 = f"{net.address('h1', 4)}:{OVERLAY_PORT}"
        for host in HOSTS:
            daemons.start(
                host,
                overlay_listen=f"{net.address(host, 4)}:{OVERLAY_PORT}",
                bootstrap=None if host == "h1" else h1,
            )
        yield daemons


def technology_of(sock: hamcast.MulticastSocket, group: str) -> str:
    for row in sock.groups():
        if str(row.group) == group and row.listeners:
            return row.technology
    return "-"


def drain(sock: hamcast.MulticastSocket, quiet: float) -> list[hamcast.Message]:
    got = []
    with contextlib.suppress(hamcast.ReceiveTimeoutError):
        while True:
            got.append(sock.receive(timeout=quiet))
    return got


def check_ssm(net: Network, sockets: dict[str, hamcast.MulticastSocket]) -> None:
    """An SSM group of h1: native inside h1's domain, the overlay everywhere else."""
    group = f"ham:ip:232.61.0.9@{net.address('h1', 4)}:6100"
    # h3 shares h1's domain only through the PIM router.
    receivers = {"h3": "ip" if ROUTED else "overlay", "h5": "overlay", "d2": "overlay"}
    watcher = sockets["h3"]
    watcher.enable_events()
    for host in receivers:
        sockets[host].join(group)
    # Nobody in h3's domain sends it yet: late binding puts it on the overlay ...
    assert technology_of(watcher, group) == "overlay"
    sockets["h1"].src_register(group)
    if ROUTED:
        # ... and moves it to native multicast once h1's domain announcement names it.
        deadline = time.monotonic() + 30
        moved = None
        while moved is None and time.monotonic() < deadline:
            event = watcher.next_event(timeout=deadline - time.monotonic())
            if isinstance(event, hamcast.BindingChanged) and str(event.group) == group:
                moved = event
        assert moved is not None, "h3 was told that the group moved"
        assert moved.reason.startswith("ip: "), moved.reason
        print(f"hybrid: h3 moved the SSM group to native multicast: {moved.reason}")
    watcher.disable_events()
    wait_until(
        lambda: all(technology_of(sockets[h], group) == t for h, t in receivers.items()),
        30,
        f"h3 {receivers['h3']}, h5 and d2 on the overlay",
    )
    probe = iter(range(10_000))

    def everyone_hears() -> bool:
        tag = b"ssm-probe-%d" % next(probe)
        sockets["h1"].send(group, tag)
        time.sleep(0.3)
        return all(any(m.payload == tag for m in drain(sockets[h], 0.2)) for h in receivers)

    wait_until(everyone_hears, 60, "the SSM group to reach every receiver")
    for host in receivers:
        drain(sockets[host], 1.0)
    expected = {b"ssm %d" % i for i in range(50)}
    for payload in sorted(expected):
        sockets["h1"].send(group, payload)
        time.sleep(0.01)
    for host in receivers:
        got = [m.payload for m in drain(sockets[host], 2.0)]
        assert sorted(got) == sorted(expected), f"{host}: SSM exactly once"
    for host in receivers:
        sockets[host].leave(group)
    how = "natively" if ROUTED else "through the gateway"
    print(f"hybrid: the SSM group reached h3 {how} and h5, d2 through the gateway, once each")


def test_every_receiver_gets_every_message_once_and_gateways_fail_over(
    hybrid: DaemonSet,
) -> None:
    daemons = hybrid
    sockets = {host: daemons.socket(host) for host in HOSTS}
    # Native multicast leaves the link only with a TTL above 1 (the default, as for
    # plain sockets): the island sender scopes its messages to the domain.
    sockets["h1"].set_ttl(16)
    try:
        ip_index = {
            h: next(i.index for i in s.interfaces() if i.technology == "ip")
            for h, s in sockets.items()
            if h not in DARK
        }

        # A group whose designated gateway in h1's domain is not the sender h1,
        # so that killing the gateway leaves the sender alive.
        def designated(host: str, name: str) -> bool:
            return sockets[host].designated_host(ip_index[host], name)

        wait_until(
            lambda: all(
                sockets[h].interface_status(ip_index[h])["domain"]["daemons"] == len(hosts)
                for hosts in DOMAINS.values()
                for h in hosts
            ),
            30,
            "every domain to hear all its daemons",
        )
        group = next(
            name
            for name in (f"ham:opaque:hybrid-{i}" for i in range(50))
            if not designated("h1", name)
        )
        receivers = RECEIVERS
        for host in receivers:
            sockets[host].join(group)
        wait_until(
            lambda: (
                all(technology_of(sockets[h], group) == "ip" for h in ("h2", "h3", "h4", "h5"))
                and technology_of(sockets["d2"], group) == "overlay"
            ),
            30,
            "islands on native multicast, the dark host on the overlay",
        )

        def everyone_hears(sender: str, tag: bytes) -> bool:
            sockets[sender].send(group, tag)
            time.sleep(0.3)
            return all(any(m.payload == tag for m in drain(sockets[h], 0.2)) for h in receivers)

        probe = iter(range(10_000))
        wait_until(lambda: everyone_hears("h1", b"probe-h1-%d" % next(probe)), 60, "h1 -> all")
        wait_until(lambda: everyone_hears("d1", b"probe-d1-%d" % next(probe)), 60, "d1 -> all")
        for host in receivers:
            drain(sockets[host], 1.0)

        # The counted stream: 100 messages from each sender, interleaved.
        count = 100
        for i in range(count):
            sockets["h1"].send(group, b"h1 %d" % i)
            sockets["d1"].send(group, b"d1 %d" % i)
            time.sleep(0.01)
        expected = {b"h1 %d" % i for i in range(count)} | {b"d1 %d" % i for i in range(count)}
        for host in receivers:
            got = drain(sockets[host], 2.0)
            payloads = [m.payload for m in got]
            assert len(payloads) == len(set(payloads)), f"{host} got duplicates"
            assert set(payloads) == expected, f"{host} missed {len(expected - set(payloads))}"
            assert {str(m.group) for m in got} == {group}, "the sender's name"
        print(f"\nhybrid: {len(receivers)} receivers got all {2 * count} messages exactly once")

        assert daemons.net is not None
        check_ssm(daemons.net, sockets)

        # Fail-over: kill the designated gateway of a domain with two receivers mid-stream.
        gateway = next(h for h in FAILOVER if designated(h, group))
        survivors = [h for h in receivers if h != gateway]
        island_survivor = next(h for h in FAILOVER if h != gateway and h in receivers)
        sockets.pop(gateway).close()
        arrivals: list[float] = []
        start = time.monotonic()
        killed_at = None
        i = 0
        while time.monotonic() - start < 25:
            if killed_at is None and time.monotonic() - start > 2:
                daemons.kill(gateway)
                killed_at = time.monotonic()
            sockets["d1"].send(group, b"after %d" % i)
            i += 1
            for m in drain(sockets[island_survivor], 0.02):
                if m.payload.startswith(b"after "):
                    arrivals.append(time.monotonic())
        assert killed_at is not None
        resumed = [t for t in arrivals if t > killed_at]
        assert resumed, "delivery from the overlay to the island resumed"
        before = max((t for t in arrivals if t <= killed_at), default=killed_at)
        gap = resumed[0] - before
        print(f"hybrid: gateway {gateway} killed; the island heard the overlay after {gap:.1f} s")
        assert gap < 15
        new_gateway = next(h for h in FAILOVER if h != gateway and designated(h, group))
        print(f"hybrid: {new_gateway} is the designated gateway now")
        for host in survivors:
            got = [m.payload for m in drain(sockets[host], 1.0)]
            assert len(got) == len(set(got)), f"{host} got duplicates after the fail-over"
    finally:
        for sock in sockets.values():
            with contextlib.suppress(hamcast.HamcastError):
                sock.close()
