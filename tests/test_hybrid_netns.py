"""One group across multicast islands and hosts without multicast, through gateways.

The test-bed (docs/hybrid.md draws it)::

    lan1 10.61.0.0/24: h1 (sender), h2        lan2 10.62.0.0/24: h3
         └──────────── r1 (pimd) ────────────────┘          one multicast domain
    lan3 10.63.0.0/24, a querier but no router: h4, h5       an island of its own
    dark 10.69.0.0/24, no multicast at all: d1 (sender), d2
    r2 routes unicast between lan1, lan3 and dark, and no multicast.

Every host runs a daemon with ``ip`` and ``overlay`` (bootstrapped through h1),
so every island host is a gateway candidate. Applications use one name and
never say which technology: island hosts end up on native multicast, dark hosts
on the overlay; each domain's designated gateway bridges. Every receiver gets
every message of both senders exactly once, under the sender's name; when the
designated gateway of the lan1+lan2 domain is killed, another takes over (the
gap is printed).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hamcast
from hamcast.testbed import Network, Topology
from tests.conftest import wait_until
from tests.test_overlay_netns import Daemons
from tests.testbed_fixtures import testbed

__all__ = ["testbed"]

pytestmark = pytest.mark.integration

CONFIG = """
technologies = ["ip", "overlay"]

[technology.ip]
announce_interval = 1
domain_interval = 1

[technology.ip.discovery]
settle_time = 2.0

[technology.overlay.kbr]
keepalive_interval = 1.0
probe_timeout = 0.5
probe_count = 2

[technology.overlay.scribe]
heartbeat_interval = 0.5
parent_timeout = 1.6
child_timeout = 1.6
"""

ISLAND_A = ("h1", "h2", "h3")
ISLAND_B = ("h4", "h5")
DARK = ("d1", "d2")
HOSTS = ISLAND_A + ISLAND_B + DARK


def hybrid_topology() -> Topology:
    topo = Topology()
    lan1 = topo.lan("lan1", v4="10.61.0.0/24")
    lan2 = topo.lan("lan2", v4="10.62.0.0/24")
    lan3 = topo.lan("lan3", v4="10.63.0.0/24", querier=True)
    dark = topo.lan("dark", v4="10.69.0.0/24", multicast=False)
    for host, lan in (("h1", lan1), ("h2", lan1), ("h3", lan2), ("h4", lan3), ("h5", lan3)):
        topo.host(host, lan)
    topo.host("d1", dark)
    topo.host("d2", dark)
    topo.router("r1", [lan1, lan2], kind="pimd")
    topo.router("r2", [lan1, lan3, dark], kind="smcroute")
    return topo


@pytest.fixture
def hybrid(testbed: Callable[[Topology], Network], tmp_path: Path) -> Iterator[Daemons]:
    net = testbed(hybrid_topology())
    net.wait_ready()
    daemons = Daemons(net, tmp_path)
    (tmp_path / "hamcastd.toml").write_text(CONFIG)
    try:
        daemons.start("h1", None)
        for host in HOSTS[1:]:
            daemons.start(host, "h1")
        yield daemons
    finally:
        daemons.stop()


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
    receivers = {"h3": "ip", "h5": "overlay", "d2": "overlay"}
    watcher = sockets["h3"]
    watcher.enable_events()
    for host in receivers:
        sockets[host].join(group)
    # Nobody in h3's domain sends it yet: late binding puts it on the overlay ...
    assert technology_of(watcher, group) == "overlay"
    sockets["h1"].src_register(group)
    # ... and moves it to native multicast once h1's domain announcement names it.
    deadline = time.monotonic() + 30
    moved = None
    while moved is None and time.monotonic() < deadline:
        event = watcher.next_event(timeout=deadline - time.monotonic())
        if isinstance(event, hamcast.BindingChanged) and str(event.group) == group:
            moved = event
    assert moved is not None, "h3 was told that the group moved"
    assert moved.reason.startswith("ip: "), moved.reason
    watcher.disable_events()
    print(f"hybrid: h3 moved the SSM group to native multicast: {moved.reason}")
    wait_until(
        lambda: all(technology_of(sockets[h], group) == t for h, t in receivers.items()),
        30,
        "h3 native (h1's domain), h5 and d2 on the overlay",
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
    print("hybrid: the SSM group reached h3 natively and h5, d2 through the gateway, once each")


def test_every_receiver_gets_every_message_once_and_gateways_fail_over(
    hybrid: Daemons,
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

        # A group whose designated gateway in the lan1+lan2 domain is not the sender h1,
        # so that killing the gateway leaves the sender alive.
        def designated(host: str, name: str) -> bool:
            return sockets[host].designated_host(ip_index[host], name)

        wait_until(
            lambda: all(
                s.interface_status(ip_index[h])["domain"]["daemons"] == 3
                for h, s in sockets.items()
                if h in ISLAND_A
            ),
            30,
            "the lan1+lan2 domain to hear its three daemons",
        )
        group = next(
            name
            for name in (f"ham:opaque:hybrid-{i}" for i in range(50))
            if not designated("h1", name)
        )
        receivers = ("h2", "h3", "h4", "h5", "d2")
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

        check_ssm(daemons.net, sockets)

        # Fail-over: kill the designated gateway of the lan1+lan2 domain mid-stream.
        gateway = next(h for h in ISLAND_A if designated(h, group))
        survivors = [h for h in receivers if h != gateway]
        island_survivor = next(h for h in ("h2", "h3") if h != gateway)
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
        new_gateway = next(h for h in ISLAND_A if h != gateway and designated(h, group))
        print(f"hybrid: {new_gateway} is the designated gateway now")
        for host in survivors:
            got = [m.payload for m in drain(sockets[host], 1.0)]
            assert len(got) == len(set(got)), f"{host} got duplicates after the fail-over"
    finally:
        for sock in sockets.values():
            with contextlib.suppress(hamcast.HamcastError):
                sock.close()
