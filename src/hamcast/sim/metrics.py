"""Measurements of a simulated overlay against IP multicast on the same topology.

Definitions follow the Scribe evaluation (Castro, Druschel, Kermarrec and
Rowstron, "SCRIBE: A large-scale and decentralized application-level
multicast infrastructure", IEEE JSAC 20(8), 2002, §4):

* **RAD** (relative average delay): for one group and one message, the mean
  delay to the members via the Scribe tree divided by the mean delay with
  IP multicast, whose delay to a member is the shortest router path from
  the source's router (a shortest-path tree from the source);
* **RMD** (relative maximum delay): the same ratio of the maximum delays.

Both are at least 1 here: every overlay hop is itself a shortest path, so
an overlay path cannot beat the direct one (triangle inequality).

* **Link stress** (§4.3): copies of the message that cross each physical
  (router-to-router) link. IP multicast sends one copy over each link of the
  shortest-path tree; naive unicast sends one copy per member from the source.
  Access links are not counted.
* **Node stress** (§4.2): per node, over all groups, the number of groups
  it keeps tree state for and the number of entries in its children tables
  (:class:`NodeStress`). Also per message: the most copies one node sent.

KBR hops are the overlay hops a plain route for a uniformly random key
takes; Pastry expects at most about ``ceil(log_16 N)`` (Rowstron and
Druschel, Middleware 2001, §2.3). The same routes give the delay penalty of
routing: the route's delay over the direct unicast delay to the root.

Every multicast of a measurement round goes out at the same virtual instant
(:func:`multicast_round`): the simulator models no queueing, so messages do
not disturb each other, and one round costs one wait however many groups it
measures.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from hamcast.overlay.api import Delivered
from hamcast.overlay.ids import ID_SPACE, ring_distance
from hamcast.overlay.kbr.messages import MessageType as KbrType
from hamcast.overlay.kbr.messages import WireCodec
from hamcast.overlay.scribe import MessageReceived, Role, ScribeEvent, canonical_group
from hamcast.overlay.scribe import messages as scribe_messages
from hamcast.sim.engine import Host, Simulator

__all__ = [
    "ControlCounter",
    "GroupDelivery",
    "KbrHops",
    "NodeStress",
    "RoundStress",
    "TreeShape",
    "histogram",
    "kbr_hops",
    "measure_delivery",
    "multicast_round",
    "node_stress",
    "summary",
    "tree_shape",
    "tree_shapes",
]

# Probe payloads: this marker, a round tag, ':', the group's index, ';'.
_MARK = b"\x00hamcast-sim-probe:"


@dataclass(frozen=True, slots=True)
class TreeShape:
    """The shape of one group's Scribe tree, from every node's parent pointer.

    Attributes:
        nodes: Live hosts holding state for the group (members and forwarders).
        roots: Hosts that consider themselves the group's root (1 when healthy).
        acyclic: Whether following parents from every node ends at a root
            without revisiting a node.
        depth: The longest parent chain to a root (edges).
        max_children: The most children any node has.
        members: Live hosts that are members of the group.
        members_attached: Members whose parent chain ends at a root: when
            ``roots`` is 1, the members a message from the root reaches.
    """

    nodes: int
    roots: int
    acyclic: bool
    depth: int
    max_children: int
    members: int = 0
    members_attached: int = 0


@dataclass(frozen=True, slots=True)
class GroupDelivery:
    """One multicast to one group, measured at every member but the source.

    Delays are milliseconds from ``multicast`` at the source to
    ``MessageReceived`` at the member.

    Attributes:
        group: The group name.
        members: Members other than the source.
        reached: How many of them received the message (exactly once or not).
        duplicates: Extra copies received beyond the first.
        mean_delay_ms: Mean Scribe delay over the reached members.
        max_delay_ms: Maximum Scribe delay over the reached members.
        ip_mean_delay_ms: Mean IP multicast delay over the same members.
        ip_max_delay_ms: Maximum IP multicast delay over the same members.
        rad: ``mean_delay_ms / ip_mean_delay_ms``.
        rmd: ``max_delay_ms / ip_max_delay_ms``.
        max_hops: Most overlay hops a copy took.
        copies_sent: Datagrams of this message sent by Scribe (all nodes).
        max_node_copies: The most copies one node sent (node stress per message).
        links_used: Router links crossed by at least one copy (Scribe).
        max_link_stress: The most copies crossing one link (Scribe).
        mean_link_stress: Mean copies per used link (Scribe).
        ip_links_used: Links of IP multicast's shortest-path tree to the members
            (each carries one copy).
        unicast_links_used: Links crossed when the source unicasts to each member.
        unicast_max_link_stress: The most copies crossing one link with unicast.
        unicast_mean_link_stress: Mean copies per used link with unicast.
        tree: The tree's shape at the time of the multicast.
    """

    group: str
    members: int
    reached: int
    duplicates: int
    mean_delay_ms: float
    max_delay_ms: float
    ip_mean_delay_ms: float
    ip_max_delay_ms: float
    rad: float
    rmd: float
    max_hops: int
    copies_sent: int
    max_node_copies: int
    links_used: int
    max_link_stress: int
    mean_link_stress: float
    ip_links_used: int
    unicast_links_used: int
    unicast_max_link_stress: int
    unicast_mean_link_stress: float
    tree: TreeShape

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values."""
        return asdict(self)


@dataclass(slots=True)
class RoundStress:
    """Histograms of one measurement round over all its groups (for the plots).

    Attributes:
        scribe_links: ``{copies: (group, link) pairs}`` for Scribe's copies.
        unicast_links: The same for naive unicast from the source.
        ip_links: (group, link) pairs of IP multicast's trees (one copy each).
        node_copies: ``{copies: (group, node) pairs}`` over sending nodes.
    """

    scribe_links: Counter[int] = field(default_factory=Counter)
    unicast_links: Counter[int] = field(default_factory=Counter)
    ip_links: int = 0
    node_copies: Counter[int] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class KbrHops:
    """Plain routes for random keys: overlay hops and whether the right root got them.

    Attributes:
        routes: Routes sent.
        delivered: Routes delivered somewhere.
        correct: Routes delivered at the live node numerically closest to the key.
        mean: Mean hops of delivered routes.
        max: Most hops of a delivered route.
        log16_n: ``log_16`` of the number of joined nodes, Pastry's expectation.
        delay_penalty: Mean over delivered routes of at least one hop of the
            route's delay divided by the direct unicast delay from the source
            to the root (Pastry's "relative distance").
        histogram: ``{hops: routes}``.
    """

    routes: int
    delivered: int
    correct: int
    mean: float
    max: int
    log16_n: float
    delay_penalty: float = math.nan
    histogram: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class NodeStress:
    """Scribe's node stress (Castro et al. 2002, §4.2) over all live hosts.

    Attributes:
        nodes: Live hosts counted.
        groups_mean: Mean number of groups a host keeps tree state for.
        groups_max: The most groups one host keeps state for.
        children_mean: Mean number of children-table entries per host (all groups).
        children_max: The most children-table entries one host has.
        children_mean_nonzero: The mean over hosts with at least one entry.
        groups_histogram: ``{groups: hosts}``.
        children_histogram: ``{entries: hosts}``.
    """

    nodes: int
    groups_mean: float
    groups_max: int
    children_mean: float
    children_max: int
    children_mean_nonzero: float
    groups_histogram: dict[str, int]
    children_histogram: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values."""
        return asdict(self)


# --- trees and node stress ---------------------------------------------------


def tree_shapes(sim: Simulator, groups: Iterable[str]) -> dict[str, TreeShape]:
    """The shape of every group's tree, from one pass over the live hosts."""
    wanted = {canonical_group(name)[0]: name for name in groups}
    parents: dict[str, dict[int, int | None]] = {name: {} for name in wanted}
    roots: Counter[str] = Counter()
    widest: Counter[str] = Counter()
    members: dict[str, list[int]] = {name: [] for name in wanted}
    by_id = sim.by_id
    for host in sim.hosts:
        if not host.alive:
            continue
        scribe = host.scribe
        for name, role in scribe.groups().items():
            if name not in wanted:
                continue
            info = scribe.info(name)
            assert info is not None
            if info.parent is None:
                upper = None
            else:
                parent = by_id.get(info.parent.id)
                upper = -1 if parent is None or not parent.alive else parent.index
            parents[name][host.index] = upper
            if Role.ROOT in role:
                roots[name] += 1
            widest[name] = max(widest[name], len(info.children))
            if Role.MEMBER in role:
                members[name].append(host.index)
    shapes = {}
    for canonical, name in wanted.items():
        chain = parents[canonical]
        acyclic, depth, attached = _walk(sim, canonical, chain)
        shapes[name] = TreeShape(
            nodes=len(chain),
            roots=roots[canonical],
            acyclic=acyclic,
            depth=depth,
            max_children=widest[canonical],
            members=len(members[canonical]),
            members_attached=sum(1 for index in members[canonical] if attached.get(index)),
        )
    return shapes


def _walk(
    sim: Simulator, name: str, parents: dict[int, int | None]
) -> tuple[bool, int, dict[int, bool]]:
    """Follow every parent chain once: (acyclic, deepest chain, host -> chain ends at a root)."""
    depth_of: dict[int, int] = {}  # host -> edges to its root, for chains ending at a root
    rooted: dict[int, bool] = {}
    acyclic = True
    hosts = sim.hosts
    for start in parents:
        if start in rooted:
            continue
        path: list[int] = []
        on_path: set[int] = set()
        current: int | None = start
        ends_at_root = False
        base = 0
        while True:
            assert current is not None
            if current in rooted:
                ends_at_root = rooted[current]
                base = depth_of.get(current, 0)
                break
            if current in on_path:
                acyclic = False  # a loop
                break
            path.append(current)
            on_path.add(current)
            upper = parents.get(current, -1)
            if upper is None:
                ends_at_root = hosts[current].scribe.is_root(name)
                if not ends_at_root:
                    acyclic = False  # a detached node: the chain ends short of the root
                base = -1
                break
            if upper == -1:
                acyclic = False  # its parent is dead or holds no state for the group
                break
            current = upper
        for distance, host in enumerate(reversed(path)):
            rooted[host] = ends_at_root
            if ends_at_root:
                depth_of[host] = base + 1 + distance
    depth = max(depth_of.values(), default=0)
    return acyclic, depth, rooted


def tree_shape(sim: Simulator, group: str) -> TreeShape:
    """Walk the parent pointers of ``group``'s tree across every live host."""
    return tree_shapes(sim, [group])[group]


def node_stress(sim: Simulator) -> NodeStress:
    """Groups and children-table entries per live host, over all groups."""
    groups: list[int] = []
    children: list[int] = []
    for host in sim.hosts:
        if not host.alive:
            continue
        scribe = host.scribe
        held = scribe.groups()
        groups.append(len(held))
        children.append(sum(len(scribe.children(name)) for name in held))
    nonzero = [count for count in children if count]
    return NodeStress(
        nodes=len(groups),
        groups_mean=round(statistics.fmean(groups), 6) if groups else math.nan,
        groups_max=max(groups, default=0),
        children_mean=round(statistics.fmean(children), 6) if children else math.nan,
        children_max=max(children, default=0),
        children_mean_nonzero=round(statistics.fmean(nonzero), 6) if nonzero else math.nan,
        groups_histogram=histogram(Counter(groups)),
        children_histogram=histogram(Counter(children)),
    )


# --- multicast measurements --------------------------------------------------


def multicast_round(
    sim: Simulator,
    plan: list[tuple[str, Host, list[Host]]],
    *,
    wait: float = 5.0,
    tag: str = "m",
    stress: RoundStress | None = None,
    shapes: dict[str, TreeShape] | None = None,
) -> list[GroupDelivery]:
    """Each ``(group, source, members)`` of ``plan`` multicasts one message now; measure all.

    ``wait`` is the virtual time (seconds) allowed for delivery. ``stress``,
    if given, collects the round's link and node histograms; ``shapes`` are
    the trees' shapes if the caller has them (else they are taken now).
    """
    if shapes is None:
        shapes = tree_shapes(sim, [name for name, _, _ in plan])
    topology = sim.topology
    prefix = _MARK + tag.encode() + b":"
    link_copies: list[Counter[tuple[int, int]]] = [Counter() for _ in plan]
    node_copies: list[Counter[int]] = [Counter() for _ in plan]
    arrivals: list[dict[int, list[tuple[float, int]]]] = [{} for _ in plan]
    previous_event = sim.on_scribe_event
    previous_transmit = sim.on_transmit

    def which(data: bytes) -> int:
        start = data.find(prefix)
        if start < 0:
            return -1
        start += len(prefix)
        return int(data[start : data.index(b";", start)])

    def transmitted(sender: Host, target: Host, data: bytes) -> None:
        index = which(data)
        if index >= 0:
            node_copies[index][sender.index] += 1
            link_copies[index].update(topology.path_links(sender.router, target.router))
        if previous_transmit is not None:
            previous_transmit(sender, target, data)

    def record(host: Host, event: ScribeEvent, now: float) -> None:
        if isinstance(event, MessageReceived) and event.payload.startswith(prefix):
            index = which(event.payload)
            arrivals[index].setdefault(host.index, []).append((now, event.hops))
        elif previous_event is not None:
            previous_event(host, event, now)

    sent_at = sim.now
    sim.on_scribe_event = record
    sim.on_transmit = transmitted
    try:
        for index, (name, source, _) in enumerate(plan):
            payload = prefix + str(index).encode() + b";"
            sim.multicast(source, name, payload)
        sim.run_for(wait)
    finally:
        sim.on_scribe_event = previous_event
        sim.on_transmit = previous_transmit
    results = []
    for index, (name, source, members) in enumerate(plan):
        delivery, unicast = _delivery(
            sim,
            name,
            source,
            members,
            sent_at=sent_at,
            arrivals=arrivals[index],
            link_copies=link_copies[index],
            node_copies=node_copies[index],
            tree=shapes[name],
        )
        results.append(delivery)
        if stress is not None:
            stress.scribe_links.update(link_copies[index].values())
            stress.node_copies.update(node_copies[index].values())
            stress.unicast_links.update(unicast.values())
            stress.ip_links += len(unicast)
    return results


def _delivery(
    sim: Simulator,
    group: str,
    source: Host,
    members: list[Host],
    *,
    sent_at: float,
    arrivals: dict[int, list[tuple[float, int]]],
    link_copies: Counter[tuple[int, int]],
    node_copies: Counter[int],
    tree: TreeShape,
) -> tuple[GroupDelivery, Counter[tuple[int, int]]]:
    """One group's :class:`GroupDelivery` and its unicast link counts."""
    topology = sim.topology
    receivers = [host for host in members if host is not source and host.alive]
    delays: list[float] = []
    ip_delays: list[float] = []
    hops = 0
    duplicates = 0
    for host in receivers:
        copies = arrivals.get(host.index)
        if not copies:
            continue
        duplicates += len(copies) - 1
        delays.append((copies[0][0] - sent_at) * 1000.0)
        ip_delays.append(topology.host_delay_ms(source.router, host.router))
        hops = max(hops, *(h for _, h in copies))
    unicast: Counter[tuple[int, int]] = Counter()
    for host in receivers:
        unicast.update(topology.path_links(source.router, host.router))
    mean = statistics.fmean(delays) if delays else math.nan
    ip_mean = statistics.fmean(ip_delays) if ip_delays else math.nan
    worst = max(delays, default=math.nan)
    ip_worst = max(ip_delays, default=math.nan)
    delivery = GroupDelivery(
        group=group,
        members=len(receivers),
        reached=len(delays),
        duplicates=duplicates,
        mean_delay_ms=round(mean, 6),
        max_delay_ms=round(worst, 6),
        ip_mean_delay_ms=round(ip_mean, 6),
        ip_max_delay_ms=round(ip_worst, 6),
        rad=round(mean / ip_mean, 6) if delays else math.nan,
        rmd=round(worst / ip_worst, 6) if delays else math.nan,
        max_hops=hops,
        copies_sent=sum(node_copies.values()),
        max_node_copies=max(node_copies.values(), default=0),
        links_used=len(link_copies),
        max_link_stress=max(link_copies.values(), default=0),
        mean_link_stress=_mean_stress(link_copies),
        ip_links_used=len(unicast),
        unicast_links_used=len(unicast),
        unicast_max_link_stress=max(unicast.values(), default=0),
        unicast_mean_link_stress=_mean_stress(unicast),
        tree=tree,
    )
    return delivery, unicast


def measure_delivery(
    sim: Simulator, group: str, source: Host, members: list[Host], *, wait: float = 5.0
) -> GroupDelivery:
    """Multicast one message from ``source`` to ``group`` and measure it at ``members``.

    ``wait`` is the virtual time (seconds) allowed for delivery.
    """
    return multicast_round(sim, [(group, source, members)], wait=wait)[0]


def _mean_stress(copies: Counter[tuple[int, int]]) -> float:
    """Mean copies per link that carried any (0 when none did)."""
    return round(statistics.fmean(copies.values()), 6) if copies else 0.0


# --- routing -------------------------------------------------------------------


def kbr_hops(sim: Simulator, routes: int, rng: random.Random, *, wait: float = 5.0) -> KbrHops:
    """Route ``routes`` plain messages for random keys from random joined hosts."""
    joined = sim.joined()
    ids = sorted(host.handle.id for host in joined)
    deliveries: list[tuple[Host, Delivered, float]] = []
    previous = sim.on_delivered
    sent: dict[int, tuple[Host, float]] = {}

    def record(host: Host, event: Delivered, now: float) -> None:
        deliveries.append((host, event, now))

    sim.on_delivered = record
    try:
        for _ in range(routes):
            source = rng.choice(joined)
            key = rng.randrange(ID_SPACE)
            sent[key] = (source, sim.now)
            sim.route_probe(source, key)
        sim.run_for(wait)
    finally:
        sim.on_delivered = previous
    correct = sum(1 for host, event, _ in deliveries if host.handle.id == _closest(ids, event.key))
    counts = [event.hops for _, event, _ in deliveries]
    penalties = []
    for host, event, now in deliveries:
        source, at = sent[event.key]
        if event.hops:
            direct = sim.topology.host_delay_ms(source.router, host.router)
            penalties.append((now - at) * 1000.0 / direct)
    return KbrHops(
        routes=routes,
        delivered=len(deliveries),
        correct=correct,
        mean=round(statistics.fmean(counts), 6) if counts else math.nan,
        max=max(counts, default=0),
        log16_n=round(math.log(len(joined), 16), 6) if joined else 0.0,
        delay_penalty=round(statistics.fmean(penalties), 6) if penalties else math.nan,
        histogram=histogram(Counter(counts)),
    )


def _closest(ids: list[int], key: int) -> int:
    """The id in sorted ``ids`` numerically closest to ``key`` (ties: the lower id)."""
    index = bisect.bisect_left(ids, key)
    around = {ids[(index - 1) % len(ids)], ids[index % len(ids)]}
    return min(around, key=lambda node: (ring_distance(node, key), node))


# --- control traffic -------------------------------------------------------------


class ControlCounter:
    """Counts Scribe's tree-building datagrams while installed as ``on_transmit``.

    Each datagram of KBR type ROUTE or DIRECT carries one Scribe message;
    JOIN (each overlay hop of a routed JOIN is one datagram), ACCEPT,
    REDIRECT and LEAVE are counted by type. Heartbeats, refreshes and data
    are not control messages of a join.
    """

    _COUNTED = frozenset(
        {
            scribe_messages.MessageType.JOIN,
            scribe_messages.MessageType.ACCEPT,
            scribe_messages.MessageType.REDIRECT,
            scribe_messages.MessageType.LEAVE,
        }
    )

    def __init__(self, sim: Simulator) -> None:
        config = sim.kbr_config
        self._codec = WireCodec(
            rows=config.rows,
            columns=config.columns,
            leaf_set_size=config.leaf_set_size,
            max_payload=config.max_payload,
            max_hops=config.max_hops,
            max_rows_per_message=config.max_rows_per_message,
        )
        self.by_type: Counter[str] = Counter()

    def __call__(self, sender: Host, target: Host, data: bytes) -> None:
        if data[1] not in (KbrType.ROUTE, KbrType.DIRECT):
            return
        payload = getattr(self._codec.decode(data).message, "payload", b"")
        if len(payload) < scribe_messages.HEADER_SIZE or payload[0] != scribe_messages.MAGIC:
            return
        kind = payload[2]
        if kind in self._COUNTED:
            self.by_type[scribe_messages.MessageType(kind).name.lower()] += 1

    @property
    def total(self) -> int:
        """Control datagrams counted."""
        return sum(self.by_type.values())


# --- summaries -------------------------------------------------------------------


def histogram(values: Counter[int]) -> dict[str, int]:
    """``{value: how often}`` with string keys in ascending order, for JSON."""
    return {str(value): values[value] for value in sorted(values)}


def summary(values: list[float]) -> dict[str, float]:
    """Mean, median, 90th percentile and maximum of ``values`` (NaN when empty), rounded."""
    if not values:
        return {"mean": math.nan, "median": math.nan, "p90": math.nan, "max": math.nan}
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 6),
        "median": round(statistics.median(ordered), 6),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 6),
        "max": round(ordered[-1], 6),
    }
