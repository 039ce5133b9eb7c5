"""The overlay simulator (hamcast.sim): topology, determinism and the Scribe paper's invariants."""

from __future__ import annotations

import json
import math
import random

import pytest

from hamcast.sim import Simulator, TopologyConfig, kbr_hops, run, transit_stub, tree_shape
from hamcast.sim.metrics import measure_delivery
from hamcast.sim.run import group_sizes


def test_topology_is_deterministic_connected_and_symmetric() -> None:
    config = TopologyConfig()
    topo = transit_stub(config, 7)
    again = transit_stub(config, 7)
    assert topo.links == again.links
    assert topo.links != transit_stub(config, 8).links
    expected = (
        config.transit_domains
        * config.routers_per_transit
        * (1 + config.stubs_per_transit_router * config.routers_per_stub)
    )
    assert topo.router_count == expected
    distance, parent = topo.shortest_paths(topo.stub_routers[0])
    assert all(math.isfinite(d) for d in distance)  # connected
    assert parent[topo.stub_routers[0]] == -1
    rng = random.Random(1)
    for _ in range(50):
        a, b, c = (rng.randrange(topo.router_count) for _ in range(3))
        assert topo.router_delay_ms(a, b) == pytest.approx(topo.router_delay_ms(b, a))
        assert (
            topo.router_delay_ms(a, c)
            <= topo.router_delay_ms(a, b) + topo.router_delay_ms(b, c) + 1e-9
        )
    assert topo.host_delay_ms(5, 5) == 2 * config.access_ms


def test_path_links_follow_the_shortest_path() -> None:
    topo = transit_stub(TopologyConfig(), 3)
    a, b = topo.stub_routers[0], topo.stub_routers[-1]
    links = topo.path_links(a, b)
    weight = {(min(x, y), max(x, y)): d for x in range(topo.router_count) for y, d in topo.links[x]}
    assert sum(weight[link] for link in links) == pytest.approx(topo.router_delay_ms(a, b))
    assert topo.path_links(a, a) == []


def test_a_run_is_a_pure_function_of_its_seed() -> None:
    first = run(50, 3, seed=11, probe_routes=50)
    second = run(50, 3, seed=11, probe_routes=50)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert json.dumps(run(50, 3, seed=12, probe_routes=50)) != json.dumps(first)


def test_eighty_nodes_reach_every_member_over_acyclic_trees_no_faster_than_ip() -> None:
    result = run(80, 6, seed=3)
    assert result["joined"] == 80
    assert result["delivery_ratio"] == 1.0
    for group in result["per_group"]:
        assert group["reached"] == group["members"] > 0
        assert group["duplicates"] == 0
        assert group["tree"]["acyclic"]
        assert group["tree"]["roots"] == 1
        assert group["rad"] >= 1.0
        assert group["rmd"] >= 1.0
        # Every copy crosses links of shortest paths: never fewer links than IP multicast's tree.
        assert group["links_used"] >= group["ip_links_used"]
        assert group["copies_sent"] >= group["members"]  # each receiver got a datagram
    hops = result["kbr_hops"]
    assert hops["delivered"] == hops["correct"] == hops["routes"]
    assert hops["mean"] <= hops["log16_n"] + 1


def test_the_simulator_drives_the_cores_step_by_step() -> None:
    sim = Simulator(transit_stub(TopologyConfig(transit_domains=2), 1), seed=4)
    sim.grow(30)
    sim.run_for(10.0)
    assert len(sim.joined()) == 30
    members = sim.hosts[:10]
    for host in members:
        sim.join(host, "ham:opaque:step")
    sim.run_for(3.0)
    shape = tree_shape(sim, "ham:opaque:step")
    assert shape.acyclic
    assert shape.roots == 1
    assert shape.nodes >= len(members)
    # A source off the tree routes to the root, which floods the tree.
    outsider = sim.hosts[-1]
    delivery = measure_delivery(sim, "ham:opaque:step", outsider, members)
    assert delivery.reached == delivery.members == 10
    assert delivery.rad >= 1.0
    hops = kbr_hops(sim, 30, random.Random(2))
    assert hops.correct == 30
    assert sim.datagrams == sum(h.datagrams_out for h in sim.hosts)


def test_paper_preset_has_the_papers_router_count() -> None:
    topo = transit_stub(TopologyConfig.paper(), 1)
    assert topo.router_count == 5050
    assert len(topo.stub_routers) == 5000
    order = topo.routers_by_delay(topo.stub_routers[7])
    assert order[0] == topo.stub_routers[7]
    delays = [topo.router_delay_ms(order[0], router) for router in order[:50]]
    assert delays == sorted(delays)


def test_zipf_group_sizes_follow_the_scribe_evaluation() -> None:
    sizes = group_sizes(100_000, 1500, "zipf", random.Random(0))
    assert sizes[0] == 100_000
    assert sizes[-1] == 11  # the paper's smallest group
    assert sizes == sorted(sizes, reverse=True)
    uniform = group_sizes(100, 5, "uniform", random.Random(0))
    assert all(10 <= size <= 50 for size in uniform)
    with pytest.raises(ValueError, match="distribution"):
        group_sizes(10, 1, "normal", random.Random(0))


def test_node_stress_and_control_messages_are_consistent() -> None:
    result = run(60, 4, seed=8, sizes="zipf", probe_routes=20)
    stress = result["node_stress"]
    assert stress["nodes"] == 60
    children = result["distributions"]["children_per_node"]
    groups = result["distributions"]["groups_per_node"]
    assert sum(children.values()) == sum(groups.values()) == 60
    edges = sum(int(entries) * nodes for entries, nodes in children.items())
    # Every node on a tree but its root is one child entry of its parent.
    on_trees = sum(group["tree"]["nodes"] for group in result["per_group"])
    assert edges == on_trees - len(result["per_group"])
    assert stress["children_mean"] == pytest.approx(edges / 60, abs=1e-6)
    assert sum(int(count) * nodes for count, nodes in groups.items()) == on_trees
    control = result["control_messages"]
    assert control["joins"] == result["group_sizes"]["members"]
    # A routed JOIN takes at least one hop unless the joiner is the root,
    # and every adopted child gets one ACCEPT.
    assert control["by_type"]["accept"] >= edges
    assert control["per_join"] >= 1.0


def test_a_crash_breaks_a_tree_and_scribe_repairs_it() -> None:
    sim = Simulator(transit_stub(TopologyConfig(transit_domains=2), 2), seed=6)
    sim.grow(40, nearby=True)
    sim.run_for(10.0)
    group = "ham:opaque:repair"
    members = sim.hosts[:15]
    for host in members:
        sim.join(host, group)
    sim.run_for(3.0)
    whole = tree_shape(sim, group)
    assert whole.acyclic and whole.roots == 1 and whole.members_attached == 15
    # Crash the node with the most children (with 40 nodes routes take one
    # hop, so that is the root: the next closest node must take over).
    inner = max(sim.hosts, key=lambda h: len(h.scribe.children(group)))
    sim.fail(inner)
    assert inner not in sim.joined()
    broken = tree_shape(sim, group)
    assert not broken.acyclic  # children of the crashed node point at a dead parent
    assert broken.members_attached < broken.members
    # A JOIN routed through the crashed node is lost until KBR finds it dead:
    # up to KbrConfig.routing_failure_timeout (38.5 s) for a routing-table entry.
    sim.run_for(60.0)
    repaired = tree_shape(sim, group)
    live = [h for h in members if h.alive]
    assert repaired.acyclic and repaired.roots == 1
    assert repaired.members == repaired.members_attached == len(live)
    source = next(h for h in live if not h.scribe.is_root(group))
    delivery = measure_delivery(sim, group, source, live)
    assert delivery.reached == delivery.members == len(live) - 1
    assert delivery.duplicates == 0
    assert delivery.rad >= 1.0


def test_churn_delivery_ratio_and_repair() -> None:
    first = run(60, 3, seed=4, churn=0.2, probe_routes=20)
    churn = first["churn"]
    assert churn["failed"] == churn["joined"] == 12
    assert 0.0 <= churn["delivery_ratio"] <= 1.0
    assert all(0.0 <= ratio <= 1.0 for ratio in churn["delivery_by_message"])
    # Every monitored tree is whole again, reaching every live member, and
    # every group delivered completely from some point on.
    assert churn["trees_whole_at_end"] == churn["monitored_groups"] == 3
    assert churn["groups_repaired"] == 3
    assert all(value is not None and value >= 0 for value in churn["repair_by_group"])
    assert churn["delivery_by_message"][-1] == 1.0
    assert churn["routes_correct_after"] == "100/100"
    again = run(60, 3, seed=4, churn=0.2, probe_routes=20)
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
