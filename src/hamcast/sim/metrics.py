"""Measurements of a simulated overlay against IP multicast on the same topology.

Definitions follow the Scribe evaluation (Castro, Druschel, Kermarrec and
Rowstron, "SCRIBE: A large-scale and decentralized application-level
multicast infrastructure", IEEE JSAC 20(8), 2002, §4.1):

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
* **Node stress** here is per message: the most copies a single node sent
  (the paper's node stress counts table entries; ``TreeShape.max_children``
  is that per group).

KBR hops are the overlay hops a plain route for a uniformly random key
takes; Pastry expects at most about ``ceil(log_16 N)`` (Rowstron and
Druschel, Middleware 2001, §2.3).
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from hamcast.overlay.api import Delivered
from hamcast.overlay.ids import ID_SPACE, ring_distance
from hamcast.overlay.scribe import MessageReceived, ScribeEvent
from hamcast.sim.engine import Host, Simulator

__all__ = [
    "GroupDelivery",
    "KbrHops",
    "TreeShape",
    "kbr_hops",
    "measure_delivery",
    "tree_shape",
]


@dataclass(frozen=True, slots=True)
class TreeShape:
    """The shape of one group's Scribe tree, from every node's parent pointer.

    Attributes:
        nodes: Hosts holding state for the group (members and forwarders).
        roots: Hosts that consider themselves the group's root (1 when healthy).
        acyclic: Whether following parents from every node ends at a root
            without revisiting a node.
        depth: The longest parent chain to a root (edges).
        max_children: The most children any node has (Scribe's node stress
            on the tree).
    """

    nodes: int
    roots: int
    acyclic: bool
    depth: int
    max_children: int


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
        max_node_copies: The most copies one node sent (node stress).
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
    """

    routes: int
    delivered: int
    correct: int
    mean: float
    max: int
    log16_n: float

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values."""
        return asdict(self)


def tree_shape(sim: Simulator, group: str) -> TreeShape:
    """Walk the parent pointers of ``group``'s tree across every host."""
    on_tree = [host for host in sim.hosts if host.scribe.info(group) is not None]
    roots = sum(1 for host in on_tree if host.scribe.is_root(group))
    acyclic = True
    depth = 0
    for host in on_tree:
        seen = {host.index}
        current = host
        length = 0
        while (parent := current.scribe.parent(group)) is not None:
            upper = sim.by_id.get(parent.id)
            if upper is None or upper.index in seen:
                acyclic = False
                break
            seen.add(upper.index)
            current = upper
            length += 1
        else:
            if not current.scribe.is_root(group):
                acyclic = False  # a detached node: the chain ends short of the root
        depth = max(depth, length)
    max_children = max((len(host.scribe.children(group)) for host in on_tree), default=0)
    return TreeShape(len(on_tree), roots, acyclic, depth, max_children)


def measure_delivery(
    sim: Simulator, group: str, source: Host, members: list[Host], *, wait: float = 5.0
) -> GroupDelivery:
    """Multicast one message from ``source`` to ``group`` and measure it at ``members``.

    ``wait`` is the virtual time (seconds) allowed for delivery.
    """
    tree = tree_shape(sim, group)
    payload = f"probe {group} {sim.now!r}".encode()
    sent_at = sim.now
    arrivals: dict[int, list[tuple[float, int]]] = {}
    previous = sim.on_scribe_event
    previous_transmit = sim.on_transmit
    link_copies: Counter[tuple[int, int]] = Counter()
    node_copies: Counter[int] = Counter()
    topology = sim.topology

    def transmitted(sender: Host, target: Host, data: bytes) -> None:
        if payload in data:
            node_copies[sender.index] += 1
            link_copies.update(topology.path_links(sender.router, target.router))
        if previous_transmit is not None:
            previous_transmit(sender, target, data)

    def record(host: Host, event: ScribeEvent, now: float) -> None:
        if isinstance(event, MessageReceived) and event.payload == payload:
            arrivals.setdefault(host.index, []).append((now, event.hops))
        elif previous is not None:
            previous(host, event, now)

    sim.on_scribe_event = record
    sim.on_transmit = transmitted
    try:
        sim.call(source, lambda now: source.scribe.multicast(group, payload, now))
        sim.run_for(wait)
    finally:
        sim.on_scribe_event = previous
        sim.on_transmit = previous_transmit
    receivers = [host for host in members if host is not source]
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
        ip_delays.append(sim.topology.host_delay_ms(source.router, host.router))
        hops = max(hops, *(h for _, h in copies))
    ip_links: set[tuple[int, int]] = set()
    unicast: Counter[tuple[int, int]] = Counter()
    for host in receivers:
        path = topology.path_links(source.router, host.router)
        ip_links.update(path)
        unicast.update(path)
    mean = statistics.fmean(delays) if delays else math.nan
    ip_mean = statistics.fmean(ip_delays) if ip_delays else math.nan
    worst = max(delays, default=math.nan)
    ip_worst = max(ip_delays, default=math.nan)
    return GroupDelivery(
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
        ip_links_used=len(ip_links),
        unicast_links_used=len(unicast),
        unicast_max_link_stress=max(unicast.values(), default=0),
        unicast_mean_link_stress=_mean_stress(unicast),
        tree=tree,
    )


def _mean_stress(copies: Counter[tuple[int, int]]) -> float:
    """Mean copies per link that carried any (0 when none did)."""
    return round(statistics.fmean(copies.values()), 6) if copies else 0.0


def kbr_hops(sim: Simulator, routes: int, rng: random.Random, *, wait: float = 5.0) -> KbrHops:
    """Route ``routes`` plain messages for random keys from random joined hosts."""
    joined = sim.joined()
    ids = sorted(host.handle.id for host in joined)
    deliveries: list[tuple[int, Delivered]] = []
    previous = sim.on_delivered

    def record(host: Host, event: Delivered, now: float) -> None:
        deliveries.append((host.handle.id, event))

    sim.on_delivered = record
    try:
        for _ in range(routes):
            sim.route_probe(rng.choice(joined), rng.randrange(ID_SPACE))
        sim.run_for(wait)
    finally:
        sim.on_delivered = previous
    correct = sum(1 for node, event in deliveries if node == _closest(ids, event.key))
    counts = [event.hops for _, event in deliveries]
    return KbrHops(
        routes=routes,
        delivered=len(deliveries),
        correct=correct,
        mean=round(statistics.fmean(counts), 6) if counts else math.nan,
        max=max(counts, default=0),
        log16_n=round(math.log(len(joined), 16), 6) if joined else 0.0,
    )


def _closest(ids: list[int], key: int) -> int:
    """The id in sorted ``ids`` numerically closest to ``key`` (ties: the lower id)."""
    index = bisect.bisect_left(ids, key)
    around = {ids[(index - 1) % len(ids)], ids[index % len(ids)]}
    return min(around, key=lambda node: (ring_distance(node, key), node))
