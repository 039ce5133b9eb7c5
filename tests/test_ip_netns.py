"""The ``ip`` technology between real daemons in network namespaces, with a real pimd router.

Runs on the standard test-bed (tests/testbed_fixtures.py): lan1 (h1, h2) and lan2
(h3) joined by r1 (pimd for IPv4, smcroute for IPv6), a plain LAN (h4, h5) with
no querier and no router, and a dark LAN (d1, d2) without multicast. Each host
runs a hamcast daemon with the ``ip`` and ``local`` technologies; the test
process talks to them over their Unix sockets (which do not belong to a network
namespace) with the ordinary client library.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hamcast
from hamcast.events import InterfaceChanged, MemberJoined, MemberLeft
from hamcast.testbed import Network
from hamcast.testbed.daemons import DaemonSet
from tests.conftest import wait_until
from tests.testbed_fixtures import (
    multicast_receiver,
    multicast_sender,
    receive,
    require_multicast_routing,
    standard_net,
)

__all__ = ["standard_net"]

pytestmark = pytest.mark.integration

HOSTS = ("h1", "h2", "h3", "h4", "h5", "d1", "d2")
SETTLE = 3.0  # discovery's settle time for these daemons, seconds

CONFIG = f"""
technologies = ["ip", "local"]

[technology.ip]
announce_interval = 2
rescan_interval = 1

[technology.ip.discovery]
settle_time = {SETTLE}
"""


class Daemons(DaemonSet):
    """One daemon per host of the standard net; sockets are opened per test."""

    def __init__(self, net: Network, folder: Path) -> None:
        super().__init__(net, folder, CONFIG)
        for host in HOSTS:
            self.start(host, wait=False)
        for host in HOSTS:
            self.wait_ready(host)


@pytest.fixture(scope="module")
def daemons(standard_net: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    running = Daemons(standard_net, tmp_path_factory.mktemp("ipdaemons"))
    try:
        yield running
    finally:
        codes = running.stop()
        assert codes == dict.fromkeys(HOSTS, 0), "every daemon stops cleanly on SIGTERM"


def ip_interface(sock: hamcast.MulticastSocket, family: int) -> hamcast.Interface:
    """The socket's ``ip`` interface of ``family``."""
    for iface in sock.interfaces():
        if iface.technology == "ip" and (":" in iface.address) == (family == 6):
            return iface
    raise AssertionError(f"no IPv{family} interface in {sock.interfaces()}")


def receive_while_sending(
    rx: hamcast.MulticastSocket,
    send: Callable[[int], None],
    *,
    timeout: float,
) -> hamcast.Message:
    """Send numbered messages until the first arrives (a route may need a moment)."""
    deadline = time.monotonic() + timeout
    number = 0
    while time.monotonic() < deadline:
        send(number)
        number += 1
        with contextlib.suppress(hamcast.ReceiveTimeoutError):
            return rx.receive(timeout=0.1)
    pytest.fail(f"nothing arrived within {timeout} s ({number} sent)")


def drain(rx: hamcast.MulticastSocket, quiet: float = 0.3) -> int:
    count = 0
    with contextlib.suppress(hamcast.ReceiveTimeoutError):
        while True:
            rx.receive(timeout=quiet)
            count += 1
    return count


# --- one LAN -------------------------------------------------------------------------


def test_same_lan_ipv4_delivery_carries_the_senders_name(daemons: Daemons) -> None:
    net = daemons.net
    with daemons.socket("h2") as rx, daemons.socket("h1") as tx:
        rx.join("ham:opaque:lan-news")
        for i in range(20):
            tx.send("ham:opaque:lan-news", b"news %d" % i)
        got = [rx.receive(timeout=5) for _ in range(20)]
        assert [m.payload for m in got] == [b"news %d" % i for i in range(20)]
        assert {str(m.group) for m in got} == {"ham:opaque:lan-news"}
        assert {m.source.rsplit(":", 1)[0] for m in got} == {net.address("h1", 4)}
        assert {m.interface for m in got} == {ip_interface(rx, 4).index}


def group_row(sock: hamcast.MulticastSocket, group: str) -> hamcast.GroupInfo:
    (row,) = [r for r in sock.groups() if str(r.group) == group]
    return row


def test_native_sends_take_the_direct_path_and_are_counted(daemons: Daemons) -> None:
    group = "ham:opaque:direct-counted"
    with daemons.socket("h2") as rx, daemons.socket("h1") as tx:
        rx.join(group)
        tx.send_many(group, [b"batch %d" % i for i in range(30)])
        for i in range(20):
            tx.send(group, b"one %d" % i)
        got = [rx.receive(timeout=5).payload for _ in range(50)]
        assert got == [b"batch %d" % i for i in range(30)] + [b"one %d" % i for i in range(20)]
        assert tx.stats().sent == 50, "stats() collects what went out directly"
        row = group_row(tx, group)
        assert (row.technology, row.senders, row.direct_senders) == ("ip", 1, 1)
        assert (row.messages_out, row.bytes_out) == (50, sum(len(m) for m in got))


def test_native_receives_take_the_direct_path_and_are_counted(daemons: Daemons) -> None:
    net = daemons.net
    group = "ham:opaque:direct-received"
    with daemons.socket("h2") as rx, daemons.socket("h2") as watcher, daemons.socket("h1") as tx:
        rx.join(group)
        row = group_row(rx, group)
        assert (row.technology, row.listeners, row.direct_listeners) == ("ip", 1, 1)
        tx.send_many(group, [b"m %d" % i for i in range(40)])
        got = [rx.receive(timeout=5) for _ in range(40)]
        assert [m.payload for m in got] == [b"m %d" % i for i in range(40)]
        assert {m.source.rsplit(":", 1)[0] for m in got} == {net.address("h1", 4)}
        assert {(str(m.group), m.interface) for m in got} == {(group, ip_interface(rx, 4).index)}
        assert drain(rx) == 0, "exactly once: the daemon does not deliver it as well"
        assert rx.stats().received == 40
        row = group_row(rx, group)
        assert (row.messages_in, row.bytes_in) == (40, sum(len(m.payload) for m in got))
        # A socket that wants events makes the daemon receive the group again, for
        # new-source events; the direct listener still gets each message once.
        watcher.enable_events()
        tx.send(group, b"after")
        assert rx.receive(timeout=5).payload == b"after"
        assert drain(rx) == 0
        assert any(isinstance(e, hamcast.SourceAppeared) for e in iter_events(watcher, timeout=5))


def iter_events(sock: hamcast.MulticastSocket, timeout: float) -> Iterator[hamcast.Event]:
    with contextlib.suppress(hamcast.ReceiveTimeoutError):
        while True:
            yield sock.next_event(timeout=timeout)


def test_a_revoked_direct_socket_falls_back_and_loses_nothing(daemons: Daemons) -> None:
    group = "ham:opaque:direct-revoked"
    with daemons.socket("h2") as rx, daemons.socket("h1") as tx:
        rx.join(group)
        tx.src_register(group)
        for i in range(10):
            tx.send(group, b"before %d" % i)
        # Deregistering revokes the socket (the daemon shuts it down): the next send
        # meets EPIPE, goes through the daemon and asks for a direct socket again.
        tx.src_deregister(group)
        for i in range(10):
            tx.send(group, b"after %d" % i)
        got = [rx.receive(timeout=5).payload for _ in range(20)]
        assert got == [b"before %d" % i for i in range(10)] + [b"after %d" % i for i in range(10)]
        assert drain(rx) == 0
        assert tx.stats().sent == 20
        assert group_row(tx, group).direct_senders == 1, "granted again after the revocation"


def test_same_lan_ipv6_delivery(daemons: Daemons) -> None:
    net = daemons.net
    group = "ham:ip:[ff15::4:1]:6001"
    with daemons.socket("h2") as rx, daemons.socket("h1") as tx:
        rx.join(group)
        for i in range(5):
            tx.send(group, b"v6 %d" % i)
        got = [rx.receive(timeout=5) for _ in range(5)]
        assert [m.payload for m in got] == [b"v6 %d" % i for i in range(5)]
        assert {m.source.rsplit(":", 1)[0] for m in got} == {f"[{net.address('h1', 6)}]"}
        assert {m.interface for m in got} == {ip_interface(rx, 6).index}


def test_plain_sender_reaches_hamcast_receiver(daemons: Daemons) -> None:
    net = daemons.net
    with daemons.socket("h5") as rx:
        rx.join("ham:ip:239.3.3.3:5003")
        plain = multicast_sender(net, "h4", 4, ttl=1)
        try:
            for i in range(5):
                plain.sendto(b"plain %d" % i, ("239.3.3.3", 5003))
        finally:
            plain.close()
        got = [rx.receive(timeout=5) for _ in range(5)]
    assert [m.payload for m in got] == [b"plain %d" % i for i in range(5)]
    assert {str(m.group) for m in got} == {"ham:ip:239.3.3.3:5003"}


def test_hamcast_sender_reaches_plain_receiver_byte_for_byte(daemons: Daemons) -> None:
    net = daemons.net
    plain = multicast_receiver(net, "h5", "239.3.3.4", 5004)
    try:
        with daemons.socket("h4") as tx:
            payloads = [b"", b"\x00\xff binary", b"x" * 1400]
            for payload in payloads:
                tx.send("ham:ip:239.3.3.4:5004", payload)
            got = [receive(plain, 5) for _ in payloads]
    finally:
        plain.close()
    assert got == [(p, net.address("h4", 4)) for p in payloads]


def test_ssm_receiver_gets_only_its_source(daemons: Daemons) -> None:
    net = daemons.net
    h1 = net.address("h1", 4)
    group = f"ham:ip:232.4.4.4@{h1}:5005"
    with daemons.socket("h2") as rx, daemons.socket("h1") as tx:
        rx.join(group)
        intruder = multicast_sender(net, "h2", 4, ttl=1)
        try:
            intruder.sendto(b"not from h1", ("232.4.4.4", 5005))
        finally:
            intruder.close()
        tx.send(group, b"from h1")
        message = rx.receive(timeout=5)
        assert (message.payload, str(message.group)) == (b"from h1", group)
        assert drain(rx) == 0, "the other source's datagram never arrives"


def test_src_register_refuses_an_ssm_source_that_is_not_this_host(daemons: Daemons) -> None:
    net = daemons.net
    with daemons.socket("h2") as s:
        v4 = ip_interface(s, 4).index
        assert v4 not in s.src_register(f"ham:ip:232.4.4.5@{net.address('h2', 4)}:5006")
        assert v4 in s.src_register(f"ham:ip:232.4.4.5@{net.address('h1', 4)}:5006")


# --- across the router ---------------------------------------------------------------


def test_routed_ssm_across_pimd(daemons: Daemons) -> None:
    require_multicast_routing()
    net = daemons.net
    group = f"ham:ip:232.5.5.5@{net.address('h1', 4)}:5007"
    with daemons.socket("h3") as rx, daemons.socket("h1") as tx:
        tx.set_ttl(8)
        rx.join(group)
        first = receive_while_sending(rx, lambda n: tx.send(group, b"ssm %d" % n), timeout=20)
        assert first.payload.startswith(b"ssm ")
        assert str(first.group) == group


def test_routed_asm_across_pimd_and_ttl_1_stays_on_the_link(daemons: Daemons) -> None:
    require_multicast_routing()
    net = daemons.net
    net.wait_ready()
    group = "ham:ip:239.6.6.6:5008"
    with daemons.socket("h3") as far, daemons.socket("h2") as near, daemons.socket("h1") as tx:
        far.join(group)
        near.join(group)
        tx.set_ttl(8)
        receive_while_sending(far, lambda n: tx.send(group, b"asm %d" % n), timeout=60)
        drain(far)
        drain(near)
        tx.set_ttl(1)
        for i in range(10):
            tx.send(group, b"ttl1 %d" % i)
        assert [near.receive(timeout=5).payload for _ in range(10)] == [
            b"ttl1 %d" % i for i in range(10)
        ]
        assert drain(far, quiet=1.0) == 0, "a TTL-1 message does not cross the router"
        tx.set_ttl(8)
        tx.send(group, b"ttl8 again")
        assert far.receive(timeout=5).payload == b"ttl8 again"


def test_routed_ipv6_across_smcroute(daemons: Daemons) -> None:
    require_multicast_routing()
    group = "ham:ip:[ff0e::6:7]:6008"
    with daemons.socket("h3") as rx, daemons.socket("h1") as tx:
        tx.set_ttl(8)
        rx.join(group)
        first = receive_while_sending(rx, lambda n: tx.send(group, b"v6 %d" % n), timeout=20)
        assert first.payload.startswith(b"v6 ")


# --- discovery and peers ------------------------------------------------------------


def verdict(sock: hamcast.MulticastSocket, family: int) -> str:
    status = sock.interface_status(ip_interface(sock, family))
    value: str = status["discovery"]["verdict"]
    return value


def test_discovery_verdicts(daemons: Daemons) -> None:
    require_multicast_routing()
    with daemons.socket("h1") as routed, daemons.socket("h4") as plain:
        wait_until(lambda: verdict(routed, 4) == "routed", 30, "lan1 to be seen as routed")
        router = daemons.net.address("r1", 4, "lan1")
        assert router in routed.neighbor_set(ip_interface(routed, 4))
        assert routed.parent_set(ip_interface(routed, 4), "ham:ip:239.1.1.1:1") == [router]
        wait_until(lambda: verdict(plain, 4) == "none", SETTLE + 10, "the plain LAN to settle")
        assert verdict(plain, 6) == "none"


def test_no_multicast_link_offers_no_ip_interface(daemons: Daemons) -> None:
    with daemons.socket("d1") as s:
        assert [i.technology for i in s.interfaces()] == ["local"]
        assert s.neighbor_set(s.interfaces()[0]) == []


def test_peers_know_each_other_and_agree_on_the_designated_host(daemons: Daemons) -> None:
    net = daemons.net
    with daemons.socket("h1") as a, daemons.socket("h2") as b:
        a4, b4 = ip_interface(a, 4), ip_interface(b, 4)
        wait_until(lambda: net.address("h2", 4) in a.neighbor_set(a4), 10, "h1 to hear h2")
        wait_until(lambda: net.address("h1", 4) in b.neighbor_set(b4), 10, "h2 to hear h1")
        group = "ham:opaque:elect"
        assert a.designated_host(a4, group) is True, "h1 has the lower address"
        assert b.designated_host(b4, group) is False
    with daemons.socket("h3") as alone:
        assert alone.designated_host(ip_interface(alone, 4), "ham:opaque:elect") is True


def test_other_hosts_membership_is_an_event(daemons: Daemons) -> None:
    net = daemons.net
    with daemons.socket("h2") as watcher:
        watcher.enable_events()
        member = multicast_receiver(net, "h1", "239.8.8.8", 5009)
        try:
            group = hamcast.URI.parse("ham:ip:239.8.8.8")
            deadline = time.monotonic() + 10
            seen: list[object] = []
            while MemberJoined(group, ip_interface(watcher, 4).index) not in seen:
                assert time.monotonic() < deadline, f"no join event; saw {seen}"
                with contextlib.suppress(hamcast.ReceiveTimeoutError):
                    seen.append(watcher.next_event(timeout=0.5))
            entries = watcher.group_set(ip_interface(watcher, 4))
            assert hamcast.GroupSetEntry(group, hamcast.GroupRole.LISTENER) in entries
            assert watcher.children_set(ip_interface(watcher, 4), group) == [net.address("h1", 4)]
        finally:
            member.close()
        deadline = time.monotonic() + 10
        while MemberLeft(group, ip_interface(watcher, 4).index) not in seen:
            assert time.monotonic() < deadline, f"no leave event; saw {seen}"
            with contextlib.suppress(hamcast.ReceiveTimeoutError):
                seen.append(watcher.next_event(timeout=0.5))
        assert all(not isinstance(e, InterfaceChanged) or e.interface > 0 for e in seen)


def test_interfaces_that_come_and_go(daemons: Daemons) -> None:
    net = daemons.net

    def names(sock: hamcast.MulticastSocket) -> set[str]:
        return {i.name for i in sock.interfaces() if i.technology == "ip"}

    with daemons.socket("h5") as s:
        for command in (
            # A veth pair inside the host (this kernel has no dummy driver).
            ["ip", "link", "add", "hcx0", "type", "veth", "peer", "name", "hcx1"],
            ["ip", "link", "set", "hcx1", "up"],
            ["ip", "link", "set", "hcx0", "multicast", "on", "up"],
            ["ip", "addr", "add", "10.77.0.5/24", "dev", "hcx0"],
        ):
            net.run("h5", command, check=True)
        try:

            def new_v4() -> list[hamcast.Interface]:
                return [i for i in s.interfaces() if (i.name, i.address) == ("hcx0", "10.77.0.5")]

            wait_until(lambda: bool(new_v4()), 10, "the new interface to appear")
            (new,) = new_v4()
            with daemons.socket("h5", new.index) as pinned:
                pinned.join("ham:ip:239.9.9.9:5010")
                net.run("h5", ["ip", "link", "del", "hcx0"], check=True)
                wait_until(lambda: "hcx0" not in names(s), 10, "the interface to vanish")
                assert pinned.get_interfaces() == []
                assert pinned.groups() == [] or all(
                    g.interface != new.index for g in pinned.groups()
                )
                with pytest.raises(hamcast.UnsupportedGroupError, match="no interfaces"):
                    pinned.send("ham:ip:239.9.9.9:5010", b"nowhere")
        finally:
            net.run("h5", ["ip", "link", "del", "hcx0"])
        # The daemon carries on with its other interfaces.
        assert "eth0" in names(s)
