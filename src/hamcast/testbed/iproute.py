"""How a :class:`~hamcast.testbed.plan.Plan` becomes iproute2 commands and sysctls.

Pure: :func:`build_steps` returns the steps in the order they must run, and
:mod:`hamcast.testbed.network` runs them. Keeping the translation apart means
it is unit-tested without root, and every step can be shown as the shell
command a person would type to reproduce or debug a test-bed.

Every link is created inside a namespace the run made: a veth pair is created
in the LAN's namespace with its other end straight in the node's namespace
(``ip -n LAN link add NODE type veth peer name eth0 netns NODE``), so nothing
is ever created in the namespace the program runs in, and deleting the run's
namespaces deletes every link it made.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from hamcast.testbed.plan import LanPlan, NodePlan, Plan, Port

__all__ = ["Command", "Step", "Sysctl", "build_steps", "describe_step"]


@dataclass(frozen=True)
class Command:
    """A program to run (an ``ip`` or ``bridge`` command); it must exit 0."""

    argv: tuple[str, ...]


@dataclass(frozen=True)
class Sysctl:
    """A ``/proc/sys/net`` setting inside one namespace (``key`` in dotted form)."""

    namespace: str
    key: str
    value: str


Step = Command | Sysctl


def describe_step(step: Step) -> str:
    """The step as a shell command line."""
    if isinstance(step, Command):
        return shlex.join(step.argv)
    return shlex.join(
        ["ip", "netns", "exec", step.namespace, "sysctl", "-qw", f"{step.key}={step.value}"]
    )


def _ip(namespace: str, *args: str) -> Command:
    return Command(("ip", "-n", namespace, *args))


def _bridge(namespace: str, *args: str) -> Command:
    return Command(("bridge", "-n", namespace, *args))


def _early_sysctls(plan: Plan) -> list[Step]:
    steps: list[Step] = []
    for namespace in plan.namespaces():
        # Duplicate-address detection would hold every new IPv6 address
        # (link-local ones too, which MLD reports need) tentative for ~1 s.
        steps.append(Sysctl(namespace, "net.ipv6.conf.all.accept_dad", "0"))
        steps.append(Sysctl(namespace, "net.ipv6.conf.default.accept_dad", "0"))
    for node in plan.nodes.values():
        # New namespaces inherit IPv4 settings from the machine's own, which
        # may filter by reverse path; multicast from remote sources on a
        # multi-homed host, and routing (pimd's README), need it off.
        # Interfaces made later take the "default" value.
        # Likewise a forced IGMP version (0: IGMPv3, which SSM needs).
        for key in ("rp_filter", "force_igmp_version"):
            steps.append(Sysctl(node.namespace, f"net.ipv4.conf.all.{key}", "0"))
            steps.append(Sysctl(node.namespace, f"net.ipv4.conf.default.{key}", "0"))
    for lan in plan.lans.values():
        # The bridge and its ports are plumbing: without IPv6 they send no
        # MLD reports or router solicitations that hosts would mistake for a
        # neighbour. A querier bridge gets IPv6 back on br0 (below).
        steps.append(Sysctl(lan.namespace, "net.ipv6.conf.default.disable_ipv6", "1"))
    return steps


def _bridge_steps(lan: LanPlan) -> list[Step]:
    ns = lan.namespace
    querier = "1" if lan.lan.querier else "0"
    steps: list[Step] = [
        # Snooping on, as in real switches; as a querier the bridge must speak
        # IGMPv3/MLDv2, or hosts drop to v2/v1 and SSM breaks (TESTBED-FACTS).
        _ip(
            ns, "link", "add", "name", "br0", "address", lan.bridge_mac, "type", "bridge",
            "mcast_snooping", "1", "mcast_querier", querier,
            "mcast_igmp_version", "3", "mcast_mld_version", "2",
            # Queries from the bridge's own address, every 12 s like pimd's
            # (the kernel's default is 125 s), after two at start 3 s apart.
            "mcast_query_use_ifaddr", "1", "mcast_query_interval", "1200",
            "mcast_startup_query_interval", "300",
        ),
    ]  # fmt: skip
    if lan.lan.querier:
        steps.append(Sysctl(ns, "net.ipv6.conf.br0.disable_ipv6", "0"))
        if lan.querier_v4 is not None:
            steps.append(_ip(ns, "addr", "add", str(lan.querier_v4), "dev", "br0"))
    return steps


def _port_steps(lan: LanPlan, node: NodePlan, port: Port) -> list[Step]:
    sw, ns = lan.namespace, node.namespace
    steps: list[Step] = [
        _ip(sw, "link", "add", "name", port.bridge_port, "type", "veth",
            "peer", "name", port.ifname, "address", port.mac, "netns", ns),
        _ip(sw, "link", "set", "dev", port.bridge_port, "master", "br0", "up"),
    ]  # fmt: skip
    if not port.multicast:
        # Both halves are needed: with only the host's flag off it still
        # receives flooded multicast (TESTBED-FACTS).
        steps.append(_bridge(sw, "link", "set", "dev", port.bridge_port, "mcast_flood", "off"))
        steps.append(_ip(ns, "link", "set", "dev", port.ifname, "multicast", "off"))
    elif port.router:
        # A permanent multicast-router port gets all multicast, as switches
        # treat router ports, so static routes need no joins on the LAN.
        steps.append(_bridge(sw, "link", "set", "dev", port.bridge_port, "mcast_router", "2"))
    if port.v4 is not None:
        steps.append(_ip(ns, "addr", "add", str(port.v4), "dev", port.ifname))
    if port.v6 is not None:
        steps.append(_ip(ns, "addr", "add", str(port.v6), "dev", port.ifname, "nodad"))
    steps.append(_ip(ns, "link", "set", "dev", port.ifname, "up"))
    return steps


def _node_late_steps(node: NodePlan) -> list[Step]:
    ns = node.namespace
    steps: list[Step] = []
    if node.role == "router":
        # After the interfaces exist: "all.forwarding" applies to existing ones.
        steps += [
            Sysctl(ns, "net.ipv4.ip_forward", "1"),
            Sysctl(ns, "net.ipv6.conf.all.forwarding", "1"),
        ]
    for route in node.routes:
        args = ["route", "add", "default" if route.destination is None else str(route.destination)]
        if route.via is not None:
            args += ["via", str(route.via)]
        if route.device is not None:
            args += ["dev", route.device]
        steps.append(_ip(ns, f"-{route.family}", *args))
    for neighbour in node.neighbours:
        steps.append(
            _ip(ns, "neigh", "replace", str(neighbour.address), "lladdr", neighbour.mac,
                "dev", neighbour.ifname, "nud", "permanent")
        )  # fmt: skip
    return steps


def build_steps(plan: Plan) -> list[Step]:
    """Every step that builds ``plan``'s links, addresses and routes, in order.

    The namespaces themselves are made before these run (by the caller, which
    records each one first so a crash cannot leave an unrecorded namespace).
    """
    steps: list[Step] = _early_sysctls(plan)
    steps += [_ip(ns, "link", "set", "dev", "lo", "up") for ns in plan.namespaces()]
    for lan in plan.lans.values():
        steps += _bridge_steps(lan)
    for lan in plan.lans.values():
        for port in lan.ports:
            steps += _port_steps(lan, plan.nodes[port.node], port)
        # Up only once every port is on it: a querier bridge sends its first
        # query when it comes up, and it should reach every host at once.
        steps.append(_ip(lan.namespace, "link", "set", "dev", "br0", "up"))
    for node in plan.nodes.values():
        steps += _node_late_steps(node)
    return steps
