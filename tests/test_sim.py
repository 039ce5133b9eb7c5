"""The overlay simulator (hamcast.sim): topology, determinism and the Scribe paper's invariants."""

from __future__ import annotations

import json
import math
import random

import pytest

from hamcast.sim import Simulator, TopologyConfig, kbr_hops, run, transit_stub, tree_shape
from hamcast.sim.metrics import measure_delivery


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
