"""One simulation run end to end: topology, overlay, groups, measurements, a JSON-ready dict."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hamcast.overlay.kbr import KbrConfig
from hamcast.overlay.scribe import MessageReceived, ScribeConfig, ScribeEvent
from hamcast.sim.engine import Host, Simulator
from hamcast.sim.metrics import (
    ControlCounter,
    GroupDelivery,
    KbrHops,
    RoundStress,
    histogram,
    kbr_hops,
    multicast_round,
    node_stress,
    summary,
    tree_shapes,
)
from hamcast.sim.topology import TopologyConfig, transit_stub

__all__ = ["PROFILES", "Profile", "group_sizes", "run"]

#: Called after each phase of a run with its name and the simulator (for progress,
#: wall-time and memory accounting).
PhaseHook = Callable[[str, Simulator], None]


@dataclass(frozen=True, slots=True)
class Profile:
    """Timers and pacing of a run; every time is in virtual seconds.

    Attributes:
        name: What it is called on the command line.
        kbr: The KBR configuration of every node.
        scribe: The Scribe configuration of every node.
        join_spacing: Seconds between two nodes joining the overlay.
        join_rate: If set, nodes join faster as the overlay grows: at most
            this fraction of the joined nodes per second (see
            :meth:`~hamcast.sim.engine.Simulator.grow`).
        nearby_bootstrap: Each node joins through a joined node nearest to
            it in the network, as Pastry assumes (else a random one).
        settle: Seconds the overlay runs after the last node joined.
        group_join_window: Member joins are spread evenly over this long.
        group_settle: Seconds after the last member join before measuring.
        delivery_wait: Seconds a multicast is given to arrive.
        churn_window: Failures and joins of churn are spread over this long.
        churn_interval: Seconds between two messages of one monitored group.
        churn_horizon: Seconds messages go on after the last churn event.
        churn_groups: Most groups monitored under churn (a random sample).
    """

    name: str
    kbr: KbrConfig
    scribe: ScribeConfig
    join_spacing: float
    join_rate: float | None
    nearby_bootstrap: bool
    settle: float
    group_join_window: float
    group_settle: float
    delivery_wait: float
    churn_window: float
    churn_interval: float
    churn_horizon: float
    churn_groups: int


#: ``standard`` keeps the cores' own defaults (the timers a deployment uses):
#: right for up to a few thousand nodes and for churn. ``large`` stretches the
#: periodic timers (keep-alives 60 s, routing-table maintenance 10 min, Scribe
#: heartbeats 30 s) and lets 2 % of the overlay join per second once it has
#: 1,000 nodes (50 ms apart before): without churn the periodic traffic changes
#: no measured tree or route, but at 10^5 nodes it would cost more than
#: everything else (docs/evaluation.md, "Scale").
PROFILES: dict[str, Profile] = {
    "standard": Profile(
        name="standard",
        kbr=KbrConfig(),
        scribe=ScribeConfig(),
        join_spacing=0.05,
        join_rate=None,
        nearby_bootstrap=True,
        settle=20.0,
        group_join_window=2.0,
        group_settle=5.0,
        delivery_wait=2.0,
        churn_window=20.0,
        churn_interval=1.0,
        churn_horizon=60.0,
        churn_groups=20,
    ),
    "large": Profile(
        name="large",
        kbr=KbrConfig(
            keepalive_interval=60.0,
            routing_probe_interval=600.0,
            rt_maintenance_interval=600.0,
            failed_memory=600.0,
        ),
        scribe=ScribeConfig(heartbeat_interval=30.0, parent_timeout=95.0, child_timeout=95.0),
        join_spacing=0.05,
        join_rate=0.02,
        nearby_bootstrap=True,
        settle=120.0,
        group_join_window=10.0,
        group_settle=10.0,
        delivery_wait=3.0,
        churn_window=60.0,
        churn_interval=5.0,
        churn_horizon=300.0,
        churn_groups=20,
    ),
}

# ``proximity``: ``large``, plus 10 minutes of routing-table maintenance every
# 20 s before measuring. Our KBR join copies rows from the nodes on the JOIN's
# path but (unlike Pastry's join, §2.4) does not then ask its table entries for
# closer nodes; the maintenance rounds do that over time (docs/evaluation.md,
# "Proximity"). Costs about twice the CPU time of ``large``.
PROFILES["proximity"] = replace(
    PROFILES["large"],
    name="proximity",
    kbr=replace(PROFILES["large"].kbr, rt_maintenance_interval=20.0),
    settle=600.0,
)

#: Exponent of the Scribe evaluation's group sizes: rank ``r`` has ``N * r**-1.25`` members.
ZIPF_EXPONENT = 1.25


def group_sizes(nodes: int, groups: int, distribution: str, rng: random.Random) -> list[int]:
    """How many members each group gets.

    ``zipf``: the group of rank ``r`` (from 1) has ``floor(N * r**-1.25 + 0.5)``
    members, at least 2 — the Zipf-like sizes of the Scribe evaluation
    (1,500 groups of 100,000 nodes: from 100,000 down to 11). ``uniform``:
    uniformly random in ``[max(2, N // 10), max(2, N // 2)]``.
    """
    if distribution == "zipf":
        return [
            max(2, min(nodes, math.floor(nodes * rank**-ZIPF_EXPONENT + 0.5)))
            for rank in range(1, groups + 1)
        ]
    if distribution == "uniform":
        low, high = max(2, nodes // 10), max(2, nodes // 2)
        return [min(nodes, rng.randint(low, high)) for _ in range(groups)]
    raise ValueError(f"unknown group size distribution {distribution!r} (uniform or zipf)")


def run(
    nodes: int,
    groups: int,
    seed: int,
    *,
    topology: TopologyConfig | None = None,
    profile: Profile | str = "standard",
    sizes: str = "uniform",
    churn: float = 0.0,
    kbr_config: KbrConfig | None = None,
    scribe_config: ScribeConfig | None = None,
    join_spacing: float | None = None,
    settle: float | None = None,
    probe_routes: int = 200,
    on_phase: PhaseHook | None = None,
) -> dict[str, Any]:
    """Simulate ``nodes`` overlay nodes and ``groups`` groups; return the metrics.

    The steps, all in virtual time and all decided by ``seed``: build a
    transit-stub topology; join the nodes one by one at the profile's pace,
    each through a joined node near it (or a random one, per the profile);
    let the overlay settle; route ``probe_routes`` random keys
    (KBR hops); give each group its size (``sizes``: ``uniform`` or
    ``zipf``, :func:`group_sizes`) and random members, who join (counting
    control messages); then each group's first member multicasts one
    message, all groups at once, measured against IP multicast and unicast.
    With ``churn`` > 0, a fraction ``churn`` of the nodes then fails and as
    many new ones join (:func:`_churn`). ``on_phase(name, simulator)`` is
    called after each phase.
    """
    if nodes < 2 or groups < 0:
        raise ValueError("a simulation needs at least 2 nodes and a non-negative group count")
    if not 0 <= churn < 1:
        raise ValueError("churn is the fraction of nodes that fail: at least 0, below 1")
    chosen = PROFILES[profile] if isinstance(profile, str) else profile
    chosen = replace(
        chosen,
        kbr=kbr_config or chosen.kbr,
        scribe=scribe_config or chosen.scribe,
        join_spacing=chosen.join_spacing if join_spacing is None else join_spacing,
        settle=chosen.settle if settle is None else settle,
    )
    phase = on_phase or (lambda name, sim: None)
    rng = random.Random(seed)
    topo_config = topology or TopologyConfig()
    topo = transit_stub(topo_config, seed)
    sim = Simulator(topo, seed, kbr_config=chosen.kbr, scribe_config=chosen.scribe)
    # Events nobody measures are dropped, not kept per host: 10^5 nodes
    # joining 1,500 groups raise millions of them.
    sim.on_scribe_event = _ignore
    phase("topology", sim)
    sim.grow(
        nodes,
        spacing=chosen.join_spacing,
        rate=chosen.join_rate,
        nearby=chosen.nearby_bootstrap,
    )
    sim.run_for(chosen.settle)
    joined = sim.joined()
    phase("overlay", sim)
    hops = kbr_hops(sim, probe_routes, rng)
    phase("routes", sim)

    memberships: list[tuple[str, list[Host]]] = []
    for number, size in enumerate(group_sizes(nodes, groups, sizes, rng)):
        members = rng.sample(joined, min(len(joined), size))
        memberships.append((f"ham:opaque:sim-{number}", members))
    control = _join_groups(sim, memberships, chosen, rng)
    phase("groups", sim)

    names = [name for name, _ in memberships]
    shapes = tree_shapes(sim, names)
    stress = node_stress(sim)
    round_stress = RoundStress()
    plan = [(name, members[0], members) for name, members in memberships]
    deliveries = multicast_round(
        sim, plan, wait=chosen.delivery_wait, tag="m", stress=round_stress, shapes=shapes
    )
    phase("multicast", sim)
    result = _result(
        sim,
        seed=seed,
        nodes=nodes,
        groups=groups,
        profile=chosen,
        topo_config=topo_config,
        hops=hops,
        deliveries=deliveries,
    )
    result["group_sizes"] = {
        "distribution": sizes,
        "members": sum(len(members) for _, members in memberships),
        "largest": max((len(members) for _, members in memberships), default=0),
        "smallest": min((len(members) for _, members in memberships), default=0),
    }
    result["control_messages"] = control
    result["node_stress"] = stress.as_dict()
    result["distributions"] = {
        "link_stress": {
            "scribe": histogram(round_stress.scribe_links),
            "ip_multicast": {"1": round_stress.ip_links} if round_stress.ip_links else {},
            "unicast": histogram(round_stress.unicast_links),
        },
        "node_copies": histogram(round_stress.node_copies),
        "children_per_node": stress.children_histogram,
        "groups_per_node": stress.groups_histogram,
    }
    if churn > 0:
        result["churn"] = _churn(sim, memberships, chosen, churn, rng)
        phase("churn", sim)
    result["virtual_seconds"] = round(sim.now, 6)
    result["datagrams"] = sim.datagrams
    return result


def _ignore(host: Host, event: ScribeEvent, now: float) -> None:
    """Drop a Scribe event."""


def _join_groups(
    sim: Simulator, memberships: list[tuple[str, list[Host]]], profile: Profile, rng: random.Random
) -> dict[str, Any]:
    """Every member joins its group, spread over the profile's window; count control datagrams."""
    joins = [(name, host) for name, members in memberships for host in members]
    rng.shuffle(joins)
    counter = ControlCounter(sim)
    previous = sim.on_transmit
    sim.on_transmit = counter
    try:
        step = profile.group_join_window / max(1, len(joins))
        for name, host in joins:
            sim.join(host, name)
            sim.run_for(step)
        sim.run_for(profile.group_settle)
    finally:
        sim.on_transmit = previous
    return {
        "joins": len(joins),
        "total": counter.total,
        "per_join": round(counter.total / len(joins), 6) if joins else math.nan,
        "by_type": dict(sorted(counter.by_type.items())),
    }


def _result(
    sim: Simulator,
    *,
    seed: int,
    nodes: int,
    groups: int,
    profile: Profile,
    topo_config: TopologyConfig,
    hops: KbrHops,
    deliveries: list[GroupDelivery],
) -> dict[str, Any]:
    """The summary part of the result (everything but distributions and churn)."""
    topo = sim.topology
    rads = [d.rad for d in deliveries if not math.isnan(d.rad)]
    rmds = [d.rmd for d in deliveries if not math.isnan(d.rmd)]
    expected = sum(d.members for d in deliveries)
    reached = sum(d.reached for d in deliveries)
    return {
        "seed": seed,
        "nodes": nodes,
        "joined": len(sim.joined()),
        "groups": groups,
        "profile": profile.name,
        "topology": {
            "routers": topo.router_count,
            "links": topo.link_count,
            "stub_routers": len(topo.stub_routers),
            "transit_domains": topo_config.transit_domains,
        },
        "kbr_hops": hops.as_dict(),
        "delivery_ratio": reached / expected if expected else 1.0,
        "rad": summary(rads),
        "rmd": summary(rmds),
        "link_stress": {
            "scribe_mean": summary([d.mean_link_stress for d in deliveries])["mean"],
            "scribe_max": max((d.max_link_stress for d in deliveries), default=0),
            "unicast_mean": summary([d.unicast_mean_link_stress for d in deliveries])["mean"],
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
    }


# --- churn -------------------------------------------------------------------------

_CHURN_MARK = b"\x00hamcast-sim-churn:"


def _churn(
    sim: Simulator,
    memberships: list[tuple[str, list[Host]]],
    profile: Profile,
    rate: float,
    rng: random.Random,
) -> dict[str, Any]:
    """A fraction ``rate`` of the nodes crash and as many new ones join, while groups multicast.

    Over ``churn_window`` seconds, ``round(rate * N)`` random nodes (never a
    monitored source) crash at uniformly random times, and as many new nodes
    join the overlay at uniformly random times, each then joining the groups
    of one crashed node (group sizes stay as they were). Up to
    ``churn_groups`` groups (a random sample) each multicast one message
    every ``churn_interval`` seconds from the start of the window until
    ``churn_horizon`` seconds after the last churn event.

    A newcomer counts as a member from when its overlay node has joined and
    it has joined its groups. A message counts at a member that had joined
    the group when it was sent
    and did not crash within ``delivery_wait`` after; the delivery ratio is
    over all messages. A group's repair time is from the last churn event to
    the first message after which every message reached every member it
    counts at (``None``: not within the horizon). At the end the trees of
    the monitored groups are checked: every live member attached to the root.
    """
    start = sim.now
    joined = sim.joined()
    monitored = list(range(len(memberships)))
    if len(monitored) > profile.churn_groups:
        monitored = sorted(rng.sample(monitored, profile.churn_groups))
    sources = {memberships[index][1][0].index for index in monitored}
    candidates = [host for host in joined if host.index not in sources]
    victims = rng.sample(candidates, min(len(candidates), round(rate * len(joined))))
    window = profile.churn_window
    events: list[tuple[float, int, int]] = []  # (time, 0 fail / 1 join, which)
    events += [(start + rng.uniform(0, window), 0, i) for i in range(len(victims))]
    events += [(start + rng.uniform(0, window), 1, i) for i in range(len(victims))]
    last_event = max((at for at, _, _ in events), default=start)
    end = last_event + profile.churn_horizon
    interval = profile.churn_interval
    sends = [start + k * interval for k in range(int((end - start) / interval) + 1)]
    timeline = sorted(events + [(at, 2, k) for k, at in enumerate(sends)])

    members_of: dict[int, set[int]] = {
        index: {host.index for host in memberships[index][1]} for index in monitored
    }
    groups_of: dict[int, list[int]] = {}
    for index in monitored:
        for host_index in members_of[index]:
            groups_of.setdefault(host_index, []).append(index)
    all_groups_of: dict[int, list[str]] = {}
    for name, members in memberships:
        for host in members:
            all_groups_of.setdefault(host.index, []).append(name)
    failed_at: dict[int, float] = {}
    # (message number, group) -> (send time, members counted) and who got it.
    expected: dict[tuple[int, int], tuple[float, set[int]]] = {}
    reached: dict[tuple[int, int], set[int]] = {}
    previous = sim.on_scribe_event

    def record(host: Host, event: ScribeEvent, now: float) -> None:
        if isinstance(event, MessageReceived) and event.payload.startswith(_CHURN_MARK):
            number, group = event.payload[len(_CHURN_MARK) :].split(b":")
            reached.setdefault((int(number), int(group)), set()).add(host.index)
        elif previous is not None:
            previous(host, event, now)

    sim.on_scribe_event = record
    newcomers: list[Host] = []
    # New nodes join their groups once their overlay node has joined.
    waiting: list[tuple[Host, int]] = []  # (newcomer, crashed node it replaces)
    try:
        for at, kind, which in timeline:
            sim.run_until(at)
            if waiting:
                still = []
                for host, replaced in waiting:
                    if not host.kbr.joined:
                        still.append((host, replaced))
                        continue
                    for name in all_groups_of.get(replaced, ()):
                        sim.join(host, name)
                    for index in groups_of.get(replaced, ()):
                        members_of[index].add(host.index)
                waiting = still
            if kind == 0:
                victim = victims[which]
                sim.fail(victim)
                failed_at[victim.index] = sim.now
                for index in groups_of.get(victim.index, ()):
                    members_of[index].discard(victim.index)
            elif kind == 1:
                spares = [sim.random_joined() for _ in range(2)]
                host = sim.add_host(sim.random_joined(), spares=spares)
                newcomers.append(host)
                # It takes over the groups of one crashed node once it is joined.
                waiting.append((host, victims[which].index))
            else:
                for index in monitored:
                    name, members = memberships[index]
                    source = members[0]
                    payload = _CHURN_MARK + f"{which}:{index}".encode()
                    counted = set(members_of[index]) - {source.index}
                    expected[(which, index)] = (sim.now, counted)
                    sim.multicast(source, name, payload)
        sim.run_for(profile.delivery_wait)
    finally:
        sim.on_scribe_event = previous

    total_expected = 0
    total_reached = 0
    repair: list[float | None] = []
    per_message: list[float] = []
    wait = profile.delivery_wait
    for index in monitored:
        complete_from: float | None = None
        for number, sent in enumerate(sends):
            at, counted = expected[(number, index)]
            counted = {m for m in counted if failed_at.get(m, math.inf) > at + wait}
            got = reached.get((number, index), set()) & counted
            total_expected += len(counted)
            total_reached += len(got)
            if len(got) == len(counted):
                if complete_from is None:
                    complete_from = sent
            else:
                complete_from = None
        if complete_from is None:
            repair.append(None)
        else:
            repair.append(round(max(0.0, complete_from - last_event), 6))
    for number in range(len(sends)):
        counted_all = 0
        got_all = 0
        for index in monitored:
            at, counted = expected[(number, index)]
            counted = {m for m in counted if failed_at.get(m, math.inf) > at + wait}
            counted_all += len(counted)
            got_all += len(reached.get((number, index), set()) & counted)
        per_message.append(round(got_all / counted_all, 6) if counted_all else 1.0)

    names = [memberships[index][0] for index in monitored]
    shapes = tree_shapes(sim, names)
    live_members = {
        memberships[index][0]: sum(1 for m in members_of[index] if sim.hosts[m].alive)
        for index in monitored
    }
    repaired = [
        shapes[name].acyclic
        and shapes[name].roots == 1
        and shapes[name].members_attached == live_members[name]
        for name in names
    ]
    hops_after = kbr_hops(sim, 100, rng)
    done = [value for value in repair if value is not None]
    return {
        "rate": rate,
        "failed": len(victims),
        "joined": len(newcomers),
        "newcomers_in_overlay": sum(1 for host in newcomers if host.kbr.joined),
        "window_seconds": window,
        "monitored_groups": len(monitored),
        "messages": len(sends) * len(monitored),
        "delivery_ratio": round(total_reached / total_expected, 6) if total_expected else 1.0,
        "delivery_by_message": per_message,
        "message_interval_seconds": interval,
        "repair_seconds": summary(done),
        "repair_by_group": repair,
        "groups_repaired": sum(1 for value in repair if value is not None),
        "trees_whole_at_end": sum(repaired),
        "routes_correct_after": f"{hops_after.correct}/{hops_after.routes}",
    }
