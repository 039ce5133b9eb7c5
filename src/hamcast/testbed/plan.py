"""A topology resolved for one run: every namespace, interface, address and route.

Pure and deterministic (no I/O): the same topology and run id always give the
same plan, so the numbering rules are pinned by unit tests that need no root.

Numbering, per LAN:

* hosts get host numbers 1, 2, 3, ... in the order the hosts were declared;
* routers get the top numbers (254, 253, ... on a /24; the last usable
  address downwards on other sizes) in the order the routers were declared;
* a querier bridge gets the number below the routers'.

The IPv6 address carries the same number as the IPv4 one (``10.1.0.2`` and
``fd00:1::2``), so tests can guess either from the other. Interface MACs are
``02:48:43:LL:NN:NN`` (LAN index, number): fixed MACs give fixed link-local
IPv6 addresses, and the static neighbour entries of no-multicast LANs need them.

Unicast routes: a host's default route (per family) points at the first router
on the first of its LANs that has one; hosts with an IPv4 multicast interface
also get ``224.0.0.0/4`` on it, so multicast sends work without a default route
(TESTBED-FACTS). Routers get a route to every LAN they are not on, via the
neighbouring router on a shortest path (breadth-first over the router graph).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import TYPE_CHECKING, Literal

from hamcast.testbed.errors import TopologyError

if TYPE_CHECKING:
    from hamcast.testbed.topology import Lan, Router, Topology

__all__ = [
    "LanPlan",
    "Neighbour",
    "NodePlan",
    "Plan",
    "Port",
    "UnicastRoute",
    "link_local",
    "make_plan",
    "router_addresses",
]

#: 224.0.0.0/4: every IPv4 multicast group.
MULTICAST_V4 = IPv4Network("224.0.0.0/4")


@dataclass(frozen=True)
class Port:
    """One interface of a node, plugged into a LAN's bridge.

    ``ifname`` is its name in the node's namespace (``eth0``...), ``bridge_port``
    the name of the veth end in the LAN's namespace (the node's name).
    """

    node: str
    lan: str
    ifname: str
    bridge_port: str
    number: int
    mac: str
    v4: IPv4Interface | None
    v6: IPv6Interface | None
    multicast: bool
    router: bool

    def address(self, family: int) -> IPv4Interface | IPv6Interface | None:
        """The interface address of ``family`` (4 or 6), if the LAN has that family."""
        return self.v4 if family == 4 else self.v6


@dataclass(frozen=True)
class UnicastRoute:
    """A unicast route: ``destination`` (None: the default route) via a gateway or a device."""

    family: int
    destination: IPv4Network | IPv6Network | None
    via: IPv4Address | IPv6Address | None = None
    device: str | None = None


@dataclass(frozen=True)
class Neighbour:
    """A permanent neighbour entry (IPv6 on no-multicast LANs: ND needs multicast)."""

    ifname: str
    address: IPv6Address
    mac: str


@dataclass(frozen=True)
class NodePlan:
    """A host or router: its namespace, interfaces, routes and static neighbours."""

    name: str
    role: Literal["host", "router"]
    namespace: str
    ports: tuple[Port, ...]
    routes: tuple[UnicastRoute, ...]
    neighbours: tuple[Neighbour, ...]
    router: Router | None = None

    def port(self, lan: str | None = None) -> Port:
        """The interface on ``lan`` (default: the first interface)."""
        if lan is None:
            return self.ports[0]
        for port in self.ports:
            if port.lan == lan:
                return port
        raise TopologyError(f"{self.name} is not on LAN {lan!r}")


@dataclass(frozen=True)
class LanPlan:
    """A LAN's namespace, its bridge's ports, and the bridge's own addresses.

    The bridge's MAC is fixed (number 0, or the querier's number), so a querier
    bridge's MLD queries come from a known link-local address
    (``link_local(bridge_mac)``); its IGMP queries come from ``querier_v4``.
    """

    lan: Lan
    index: int
    namespace: str
    ports: tuple[Port, ...]
    bridge_mac: str
    querier_v4: IPv4Interface | None = None


@dataclass(frozen=True)
class Plan:
    """The resolved topology of one run; ``base`` (``PREFIX-RUNID``) starts every name."""

    prefix: str
    run_id: str
    base: str
    lans: dict[str, LanPlan]
    nodes: dict[str, NodePlan]

    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the run: the LANs' first, then the nodes'."""
        return tuple(lan.namespace for lan in self.lans.values()) + tuple(
            node.namespace for node in self.nodes.values()
        )

    def node(self, name: str) -> NodePlan:
        """The host or router called ``name``."""
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise TopologyError(f"no host or router named {name!r} (known: {known})") from None


def link_local(mac: str) -> IPv6Address:
    """The EUI-64 link-local address the kernel derives from ``mac``."""
    octets = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:6]
    return IPv6Address(b"\xfe\x80" + bytes(6) + eui)


def _top_number(lan: Lan) -> int:
    # The highest usable host number: below the IPv4 broadcast address, and
    # the same 254 on IPv6-only LANs so routers look alike everywhere.
    if lan.v4 is not None:
        return min(254, lan.v4.num_addresses - 2)
    return 254


def _numbers(topology: Topology) -> dict[tuple[str, str], int]:
    """Host number of every (node, LAN) attachment, and of querier bridges as (LAN, LAN)."""
    numbers: dict[tuple[str, str], int] = {}
    next_host = {lan.name: 1 for lan in topology.lans}
    next_router = {lan.name: _top_number(lan) for lan in topology.lans}
    for host in topology.hosts:
        for lan_name in host.lans:
            numbers[(host.name, lan_name)] = next_host[lan_name]
            next_host[lan_name] += 1
    for router in topology.routers:
        for lan_name in router.lans:
            numbers[(router.name, lan_name)] = next_router[lan_name]
            next_router[lan_name] -= 1
    for lan in topology.lans:
        if lan.querier:
            numbers[(lan.name, lan.name)] = next_router[lan.name]
            next_router[lan.name] -= 1
        if next_host[lan.name] > next_router[lan.name] + 1:
            raise TopologyError(
                f"LAN {lan.name} is too small for its {next_host[lan.name] - 1} hosts"
                f" and {_top_number(lan) - next_router[lan.name]} routers/queriers"
            )
    return numbers


def router_addresses(
    topology: Topology, router: str, family: int
) -> list[IPv4Address | IPv6Address]:
    """The addresses of ``family`` a router will have, in the order of its LANs."""
    numbers = _numbers(topology)
    lans = {lan.name: lan for lan in topology.lans}
    found: list[IPv4Address | IPv6Address] = []
    for node in topology.routers:
        if node.name != router:
            continue
        for lan_name in node.lans:
            network = lans[lan_name].v4 if family == 4 else lans[lan_name].v6
            if network is not None:
                found.append(network.network_address + numbers[(router, lan_name)])
    return found


def _mac(lan_index: int, number: int) -> str:
    return f"02:48:43:{lan_index:02x}:{number >> 8:02x}:{number & 0xFF:02x}"


def _port(lan: Lan, *, index: int, node: str, ifindex: int, number: int, router: bool) -> Port:
    mac = _mac(index, number)
    v4 = IPv4Interface((lan.v4.network_address + number, lan.v4.prefixlen)) if lan.v4 else None
    v6 = IPv6Interface((lan.v6.network_address + number, lan.v6.prefixlen)) if lan.v6 else None
    return Port(
        node=node,
        lan=lan.name,
        ifname=f"eth{ifindex}",
        bridge_port=node,
        number=number,
        mac=mac,
        v4=v4,
        v6=v6,
        multicast=lan.multicast,
        router=router,
    )


def _router_routes(
    topology: Topology, ports: dict[str, tuple[Port, ...]], router: Router, family: int
) -> list[UnicastRoute]:
    """Routes of ``router`` to every LAN it is not on, breadth-first over routers."""
    lans = {lan.name: lan for lan in topology.lans}

    def has_family(lan: str) -> bool:
        return (lans[lan].v4 if family == 4 else lans[lan].v6) is not None

    # Breadth-first from this router: each LAN reached is recorded with the
    # first-hop router (a neighbour on one of our LANs) that leads to it.
    first_hop: dict[str, Port | None] = {lan: None for lan in router.lans if has_family(lan)}
    queue: deque[tuple[str, Port | None]] = deque((lan, None) for lan in first_hop)
    while queue:
        lan, hop = queue.popleft()
        for other in topology.routers:
            if other.name == router.name or lan not in other.lans:
                continue
            via = hop
            if via is None:
                via = next(p for p in ports[other.name] if p.lan == lan)
            for onward in other.lans:
                if onward not in first_hop and has_family(onward):
                    first_hop[onward] = via
                    queue.append((onward, via))
    routes: list[UnicastRoute] = []
    for lan_name, via in first_hop.items():
        if via is None:
            continue  # directly attached
        network = lans[lan_name].v4 if family == 4 else lans[lan_name].v6
        gateway = via.address(family)
        assert network is not None and gateway is not None
        routes.append(UnicastRoute(family, network, via=gateway.ip))
    return routes


def _host_routes(
    topology: Topology, ports: dict[str, tuple[Port, ...]], host: str
) -> list[UnicastRoute]:
    routes: list[UnicastRoute] = []
    mine = ports[host]
    for family in (4, 6):
        gateway: IPv4Address | IPv6Address | None = None
        for port in mine:
            if port.address(family) is None:
                continue
            for router in topology.routers:
                if port.lan in router.lans:
                    theirs = next(p for p in ports[router.name] if p.lan == port.lan)
                    address = theirs.address(family)
                    assert address is not None
                    gateway = address.ip
                    break
            if gateway is not None:
                break
        if gateway is not None:
            routes.append(UnicastRoute(family, None, via=gateway))
    multicast_port = next((p for p in mine if p.multicast and p.v4 is not None), None)
    if multicast_port is not None:
        routes.append(UnicastRoute(4, MULTICAST_V4, device=multicast_port.ifname))
    return routes


def _check_routers(topology: Topology, ports: dict[str, tuple[Port, ...]]) -> dict[str, Router]:
    """Whole-topology checks of pimd routers; returns routers with their RP filled in."""
    from dataclasses import replace

    default_rp = topology.default_rp()
    pimd_addresses = {
        port.v4.ip
        for router in topology.routers
        if router.kind == "pimd"
        for port in ports[router.name]
        if port.v4 is not None
    }
    resolved: dict[str, Router] = {}
    for router in topology.routers:
        if router.kind != "pimd":
            resolved[router.name] = router
            continue
        if not any(p.v4 is not None and p.multicast for p in ports[router.name]):
            raise TopologyError(
                f"router {router.name}: pimd needs at least one multicast LAN with IPv4"
            )
        rp = router.rp if router.rp is not None else default_rp
        if rp not in pimd_addresses:
            known = ", ".join(str(a) for a in sorted(pimd_addresses)) or "none"
            raise TopologyError(
                f"router {router.name}: rendezvous point {rp} is not an address of a pimd"
                f" router in this topology (they are: {known})"
            )
        resolved[router.name] = replace(router, rp=rp)
    return resolved


def make_plan(topology: Topology, run_id: str) -> Plan:
    """Resolve ``topology`` for run ``run_id``: see the module's docstring for the rules."""
    base = f"{topology.prefix}-{run_id}"
    numbers = _numbers(topology)
    lan_index = {lan.name: index for index, lan in enumerate(topology.lans, start=1)}
    lans = {lan.name: lan for lan in topology.lans}

    ports: dict[str, tuple[Port, ...]] = {}
    members = [(host.name, host.lans, False) for host in topology.hosts]
    members += [(router.name, router.lans, True) for router in topology.routers]
    for node, node_lans, is_router in members:
        ports[node] = tuple(
            _port(
                lans[lan],
                index=lan_index[lan],
                node=node,
                ifindex=i,
                number=numbers[(node, lan)],
                router=is_router,
            )
            for i, lan in enumerate(node_lans)
        )
    routers = _check_routers(topology, ports)

    lan_plans: dict[str, LanPlan] = {}
    for lan in topology.lans:
        on_lan = tuple(p for node_ports in ports.values() for p in node_ports if p.lan == lan.name)
        querier_v4 = None
        number = numbers.get((lan.name, lan.name), 0)
        if lan.querier and lan.v4 is not None:
            querier_v4 = IPv4Interface((lan.v4.network_address + number, lan.v4.prefixlen))
        lan_plans[lan.name] = LanPlan(
            lan=lan,
            index=lan_index[lan.name],
            namespace=f"{base}-{lan.name}",
            ports=on_lan,
            bridge_mac=_mac(lan_index[lan.name], number),
            querier_v4=querier_v4,
        )

    nodes: dict[str, NodePlan] = {}
    for host in topology.hosts:
        nodes[host.name] = NodePlan(
            name=host.name,
            role="host",
            namespace=f"{base}-{host.name}",
            ports=ports[host.name],
            routes=tuple(_host_routes(topology, ports, host.name)),
            neighbours=_neighbours(lan_plans, ports[host.name]),
        )
    for router in topology.routers:
        routes = _router_routes(topology, ports, router, 4) + _router_routes(
            topology, ports, router, 6
        )
        nodes[router.name] = NodePlan(
            name=router.name,
            role="router",
            namespace=f"{base}-{router.name}",
            ports=ports[router.name],
            routes=tuple(routes),
            neighbours=_neighbours(lan_plans, ports[router.name]),
            router=routers[router.name],
        )
    return Plan(prefix=topology.prefix, run_id=run_id, base=base, lans=lan_plans, nodes=nodes)


def _neighbours(lans: dict[str, LanPlan], mine: tuple[Port, ...]) -> tuple[Neighbour, ...]:
    # IPv6 neighbour discovery is multicast, so on a LAN without multicast
    # every IPv6 neighbour (global and link-local) is made permanent; IPv4's
    # ARP is broadcast and keeps working (TESTBED-FACTS).
    found: list[Neighbour] = []
    for port in mine:
        if port.multicast or port.v6 is None:
            continue
        for other in lans[port.lan].ports:
            if other is port or other.v6 is None:
                continue
            found.append(Neighbour(port.ifname, other.v6.ip, other.mac))
            found.append(Neighbour(port.ifname, link_local(other.mac), other.mac))
    return tuple(found)
