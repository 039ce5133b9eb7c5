"""Fixtures and helpers for tests on the network test-bed (docs/testbed.md).

Import what a test module uses; importing a fixture makes pytest find it::

    from tests.testbed_fixtures import (
        multicast_receiver, multicast_sender, receive, require_root, standard_net, testbed,
    )

    def test_something(standard_net):
        rx = multicast_receiver(standard_net, "h2", "239.1.2.3", 5000)
        tx = multicast_sender(standard_net, "h1", 4)
        tx.sendto(b"hi", ("239.1.2.3", 5000))
        assert receive(rx, 2.0) == (b"hi", standard_net.address("h1", 4))

Every fixture that builds namespaces calls :func:`require_root` first: without
root the test is skipped with a message that says so; as root, a missing
program (pimd, smcroute) is an error, not a skip — ``make test`` installs them.
A kernel without multicast routing (built without ``CONFIG_IP_MROUTE``) is
different: nothing can install it. Tests that need a multicast router call
:func:`require_multicast_routing`, which skips them loudly there, and the
standard topology's r1 is then a unicast router (lan1 and lan2 are separate
multicast links), so every other test still runs.

The standard topology (:func:`standard_topology`)::

      lan1  10.1.0.0/24 fd00:1::/64           lan2  10.2.0.0/24 fd00:2::/64
      h1 .1 ──┐                              ┌── h3 .1
      h2 .2 ──┴── .254 r1 (pimd) .254 ───────┘
      plain 10.3.0.0/24 fd00:3::/64, no router:        h4 .1, h5 .2
      dark  10.9.0.0/24 fd00:9::/64, no multicast:     d1 .1, d2 .2

Where the kernel routes multicast, r1 runs pimd with itself (10.1.0.254) as
the rendezvous point: SSM (232.0.0.0/8) is routed at once, ASM once
``net.wait_ready()`` returns (~20 s after the start; join after it). IPv6 is
routed by smcroute beside pimd: ff0e::/16 (global ASM) and ff3e::/16 (global
SSM) in both directions.
The bridges of lan1 and lan2 see pimd's IGMPv3 queries and PIM hellos; plain
has no querier and no router; dark floods no multicast and its hosts have
multicast switched off. IPv6 addresses carry the same number as IPv4 ones.

``standard_net`` is built once per pytest session, however many modules use it,
and torn down at the end (pimd's 20 s warm-up is paid once). Tests must leave
it as they found it: close sockets, stop processes (``net.popen`` processes
are stopped at teardown at the latest).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from hamcast.testbed import (
    DEFAULT_PREFIX,
    Network,
    Topology,
    multicast_routing_missing,
    route,
)

__all__ = [
    "MCAST_JOIN_GROUP",
    "ROUTED",
    "MCAST_JOIN_SOURCE_GROUP",
    "multicast_receiver",
    "multicast_sender",
    "nothing_arrives",
    "receive",
    "require_multicast_routing",
    "require_root",
    "send_until_received",
    "standard_net",
    "standard_topology",
    "testbed",
]

# Linux socket option numbers the socket module lacks (TESTBED-FACTS).
MCAST_JOIN_GROUP = 42
MCAST_JOIN_SOURCE_GROUP = 46
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29


def require_root() -> None:
    """Skip the calling test, loudly, unless running as root."""
    if os.geteuid() != 0:
        pytest.skip(
            "*** NOT ROOT: this test builds network namespaces and needs root;"
            " run `make test` (or pytest) as root ***"
        )


#: Whether this kernel routes multicast (IPv4 and IPv6): multicast routers can run.
ROUTED = multicast_routing_missing() is None


def require_multicast_routing() -> None:
    """Skip the calling test, loudly, unless root on a kernel that routes multicast."""
    require_root()
    missing = multicast_routing_missing()
    if missing is not None:
        pytest.skip(
            f"*** NO MULTICAST ROUTING: {missing}; this test needs a multicast router"
            " (pimd, smcroute) and is SKIPPED ***"
        )


def standard_topology(prefix: str = DEFAULT_PREFIX, *, routed: bool | None = None) -> Topology:
    """The standard topology drawn in this module's docstring.

    ``routed`` (default: whether the kernel routes multicast) gives r1 pimd
    and smcroute; without it r1 forwards unicast only.
    """
    if routed is None:
        routed = multicast_routing_missing() is None
    topo = Topology(prefix=prefix)
    lan1 = topo.lan("lan1", v4="10.1.0.0/24", v6="fd00:1::/64")
    lan2 = topo.lan("lan2", v4="10.2.0.0/24", v6="fd00:2::/64")
    plain = topo.lan("plain", v4="10.3.0.0/24", v6="fd00:3::/64")
    dark = topo.lan("dark", v4="10.9.0.0/24", v6="fd00:9::/64", multicast=False)
    topo.host("h1", lan1)
    topo.host("h2", lan1)
    topo.host("h3", lan2)
    topo.host("h4", plain)
    topo.host("h5", plain)
    topo.host("d1", dark)
    topo.host("d2", dark)
    if not routed:
        topo.router("r1", [lan1, lan2], kind="unicast")
        return topo
    routes = [
        route(group, src, [dst])
        for group in ("ff0e::/16", "ff3e::/16")
        for src, dst in ((lan1, lan2), (lan2, lan1))
    ]
    topo.router("r1", [lan1, lan2], kind="pimd", routes=routes)
    return topo


# The session's standard network, shared by every module that imports the
# fixture (pytest would otherwise build one per importing module).
_standard: dict[str, Any] = {"net": None, "context": None, "users": 0}


@pytest.fixture(scope="session")
def standard_net() -> Iterator[Network]:
    """The standard topology, up for the whole session (see the module docstring)."""
    require_root()
    if _standard["net"] is None:
        context: AbstractContextManager[Network] = standard_topology().up()
        _standard["net"] = context.__enter__()
        _standard["context"] = context
    _standard["users"] += 1
    try:
        yield _standard["net"]
    finally:
        _standard["users"] -= 1
        if _standard["users"] == 0:
            context = _standard["context"]
            _standard.update(net=None, context=None)
            context.__exit__(None, None, None)


@pytest.fixture
def testbed() -> Iterator[Callable[[Topology], Network]]:
    """Build any topology for one test: ``net = testbed(topo)``; torn down after the test."""
    require_root()
    built: list[Network] = []

    def build(topology: Topology) -> Network:
        net = topology.start()
        built.append(net)
        return net

    try:
        yield build
    finally:
        for net in reversed(built):
            net.close()


# --- plain multicast sockets in a node --------------------------------------------


def _sockaddr_storage(family: int, address: str) -> bytes:
    if family == socket.AF_INET:
        raw = struct.pack("=HH4s", family, 0, socket.inet_pton(family, address))
    else:
        raw = struct.pack("=HHI16sI", family, 0, 0, socket.inet_pton(family, address), 0)
    return raw.ljust(128, b"\0")


def multicast_receiver(
    net: Network,
    node: str,
    group: str,
    port: int,
    *,
    source: str | None = None,
    lan: str | None = None,
) -> socket.socket:
    """A UDP socket in ``node``, bound to ``port`` and joined to ``group`` on ``lan``'s
    interface (default: the first); source-specific to ``source`` when given.

    Receives only ``group`` (IP_MULTICAST_ALL off). The caller closes it.
    """
    family = socket.AF_INET6 if ":" in group else socket.AF_INET
    level = socket.IPPROTO_IPV6 if family == socket.AF_INET6 else socket.IPPROTO_IP
    ifindex = net.ifindex(node, lan)
    sock = net.socket(node, family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET:
            sock.setsockopt(level, IP_MULTICAST_ALL, 0)
        else:
            sock.setsockopt(level, IPV6_MULTICAST_ALL, 0)
        sock.bind(("", port))
        request = struct.pack("=I4x", ifindex) + _sockaddr_storage(family, group)
        if source is None:
            sock.setsockopt(level, MCAST_JOIN_GROUP, request)
        else:
            request += _sockaddr_storage(family, source)
            sock.setsockopt(level, MCAST_JOIN_SOURCE_GROUP, request)
    except BaseException:
        sock.close()
        raise
    return sock


def multicast_sender(
    net: Network, node: str, family: int, *, ttl: int = 8, lan: str | None = None
) -> socket.socket:
    """A UDP socket in ``node`` that sends multicast out of ``lan``'s interface
    (default: the first) with TTL / hop limit ``ttl``. ``family`` is 4 or 6."""
    if family == 4:
        sock = net.socket(node, socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        address = socket.inet_aton(net.address(node, 4, lan))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, address)
    else:
        sock = net.socket(node, socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, net.ifindex(node, lan))
    return sock


def receive(sock: socket.socket, timeout: float) -> tuple[bytes, str] | None:
    """The next datagram and its source address, or None after ``timeout`` seconds."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    data, address = sock.recvfrom(65535)
    return data, address[0]


def send_until_received(
    sender: socket.socket,
    receiver: socket.socket,
    destination: tuple[str, int],
    *,
    timeout: float,
    interval: float = 0.05,
) -> float:
    """Send numbered probes to ``destination`` until one reaches ``receiver``.

    Returns the seconds until the first arrived; fails the test at ``timeout``.
    For paths that need a moment (a router learning a route); the receiver
    gets only the probes, so drain it (``receive``) before reusing it.
    """
    began = time.monotonic()
    deadline = began + timeout
    sent = 0
    while time.monotonic() < deadline:
        sender.sendto(b"probe %d" % sent, destination)
        sent += 1
        if receive(receiver, interval) is not None:
            return time.monotonic() - began
    pytest.fail(f"no probe to {destination} arrived within {timeout:g} s ({sent} sent)")


def nothing_arrives(
    sender: socket.socket,
    receiver: socket.socket,
    destination: tuple[str, int],
    *,
    count: int = 10,
    wait: float = 0.5,
) -> bool:
    """Send ``count`` datagrams and report whether none reached ``receiver`` in ``wait`` s.

    A send the kernel refuses (an interface without multicast) delivers nothing
    either, so it counts as not arriving.
    """
    for number in range(count):
        with contextlib.suppress(OSError):
            sender.sendto(b"unwanted %d" % number, destination)
    return receive(receiver, wait) is None
