"""One simulation run end to end: topology, overlay, groups, measurements, a JSON-ready dict."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from typing import Any

from hamcast.overlay.kbr import KbrConfig
from hamcast.overlay.scribe import ScribeConfig
from hamcast.sim.engine import Host, Simulator
from hamcast.sim.metrics import GroupDelivery, kbr_hops, measure_delivery
from hamcast.sim.topology import TopologyConfig, transit_stub

__all__ = ["run"]


def run(
    nodes: int,
    groups: int,
    seed: int,
    *,
    topology: TopologyConfig | None = None,
    kbr_config: KbrConfig | None = None,
    scribe_config: ScribeConfig | None = None,
    join_spacing: float = 0.05,
    settle: float = 20.0,
    probe_routes: int = 200,
) -> dict[str, Any]:
    """Simulate ``nodes`` overlay nodes and ``groups`` groups; return the metrics.

    The steps, all in virtual time and all decided by ``seed``: build a
    transit-stub topology; join the nodes one by one ``join_spacing``
    seconds apart, each through a random joined node; let the overlay
    ``settle`` seconds; route ``probe_routes`` random keys (KBR hops); give
    each group a uniformly random size between ``max(2, nodes // 10)`` and
    ``max(2, nodes // 2)`` with random members, who join; then each group's
    first member multicasts one message, measured against IP multicast.
    """
    if nodes < 2 or groups < 0:
        raise ValueError("a simulation needs at least 2 nodes and a non-negative group count")
    rng = random.Random(seed)
    topo = transit_stub(topology or TopologyConfig(), seed)
    sim = Simulator(topo, seed, kbr_config=kbr_config, scribe_config=scribe_config)
    sim.grow(nodes, spacing=join_spacing)
    sim.run_for(settle)
    joined = sim.joined()
    hops = kbr_hops(sim, probe_routes, rng)

    memberships: list[tuple[str, list[Host]]] = []
    low, high = max(2, nodes // 10), max(2, nodes // 2)
    for number in range(groups):
        name = f"ham:opaque:sim-{number}"
        members = rng.sample(joined, min(len(joined), rng.randint(low, high)))
        for host in members:
            sim.join(host, name)
        memberships.append((name, members))
    sim.run_for(5.0)

    # Histograms over (group, link) and (group, sending node): stress -> how often.
    scribe_links: Counter[int] = Counter()
    unicast_links: Counter[int] = Counter()
    ip_links = 0
    node_copies: Counter[int] = Counter()
    deliveries: list[GroupDelivery] = []
    for name, members in memberships:
        delivery, (per_link, per_node) = _observe(sim, name, members[0], members)
        deliveries.append(delivery)
        scribe_links.update(per_link.values())
        node_copies.update(per_node.values())
        unicast = Counter[tuple[int, int]]()
        for host in members[1:]:
            unicast.update(sim.topology.path_links(members[0].router, host.router))
        unicast_links.update(unicast.values())
        ip_links += len(unicast)
    rads = [d.rad for d in deliveries if not math.isnan(d.rad)]
    rmds = [d.rmd for d in deliveries if not math.isnan(d.rmd)]
    expected = sum(d.members for d in deliveries)
    reached = sum(d.reached for d in deliveries)
    return {
        "seed": seed,
        "nodes": nodes,
        "joined": len(joined),
        "groups": groups,
        "topology": {"routers": topo.router_count, "links": topo.link_count},
        "virtual_seconds": round(sim.now, 6),
        "datagrams": sim.datagrams,
        "kbr_hops": hops.as_dict(),
        "delivery_ratio": reached / expected if expected else 1.0,
        "rad": _summary(rads),
        "rmd": _summary(rmds),
        "link_stress": {
            "scribe_mean": _summary([d.mean_link_stress for d in deliveries])["mean"],
            "scribe_max": max((d.max_link_stress for d in deliveries), default=0),
            "unicast_mean": _summary([d.unicast_mean_link_stress for d in deliveries])["mean"],
            "unicast_max": max((d.unicast_max_link_stress for d in deliveries), default=0),
            "ip_max": 1 if deliveries else 0,
        },
        "links_used": {
            "scribe": sum(d.links_used for d in deliveries),
            "ip_multicast": sum(d.ip_links_used for d in deliveries),
            "unicast": sum(d.unicast_links_used for d in deliveries),
        },
        "node_stress_max_copies": max((d.max_node_copies for d in deliveries), default=0),
        "per_group": [d.as_dict() for d in deliveries],
        "distributions": {
            "link_stress": {
                "scribe": _histogram(scribe_links),
                "ip_multicast": {"1": ip_links} if ip_links else {},
                "unicast": _histogram(unicast_links),
            },
            "node_copies": _histogram(node_copies),
        },
    }


def _observe(
    sim: Simulator, group: str, source: Host, members: list[Host]
) -> tuple[GroupDelivery, tuple[Counter[tuple[int, int]], Counter[int]]]:
    """:func:`measure_delivery`, also counting the probe's copies per link and per sender.

    The probe is recognised by the payload prefix ``measure_delivery`` uses.
    """
    marker = f"probe {group} ".encode()
    links: Counter[tuple[int, int]] = Counter()
    senders: Counter[int] = Counter()
    previous = sim.on_transmit

    def transmitted(sender: Host, target: Host, data: bytes) -> None:
        if marker in data:
            senders[sender.index] += 1
            links.update(sim.topology.path_links(sender.router, target.router))
        if previous is not None:
            previous(sender, target, data)

    sim.on_transmit = transmitted
    try:
        delivery = measure_delivery(sim, group, source, members, wait=2.0)
    finally:
        sim.on_transmit = previous
    return delivery, (links, senders)


def _histogram(values: Counter[int]) -> dict[str, int]:
    """``{value: how often}`` with string keys in ascending order, for JSON."""
    return {str(value): values[value] for value in sorted(values)}


def _summary(values: list[float]) -> dict[str, float]:
    """Mean, median and maximum of ``values`` (NaN when empty), rounded."""
    if not values:
        return {"mean": math.nan, "median": math.nan, "max": math.nan}
    return {
        "mean": round(statistics.fmean(values), 6),
        "median": round(statistics.median(values), 6),
        "max": round(max(values), 6),
    }
