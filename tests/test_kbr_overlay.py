"""Whole overlays of KBR cores on the fake network: delivery, hops, repair, leave, loss, bounds.

Everything runs on a virtual clock (tests/overlay_sim.py); the figures each
test prints (run with ``-s``) are recorded in docs/technologies/overlay-kbr.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
from collections.abc import Iterator

import pytest

from hamcast.overlay.api import Delivered, NeighborsChanged, NodeFailed, RouteStep
from hamcast.overlay.ids import digit, ring_distance, shared_prefix_length
from hamcast.overlay.kbr import KbrConfig
from tests.overlay_sim import FakeNetwork, KbrOverlay, SimHost, random_key

CONFIG = KbrConfig()


def build(
    count: int,
    seed: int,
    config: KbrConfig = CONFIG,
    settle: float = 20.0,
    **network: float,
) -> tuple[FakeNetwork, KbrOverlay]:
    """``count`` nodes joining 0.1 s apart through random members, then ``settle`` seconds."""
    net = FakeNetwork(seed=seed, **network)
    overlay = KbrOverlay(net, config, seed=seed + 1)
    overlay.grow(count, spacing=0.1)
    net.run_for(settle)
    return net, overlay


def keys_to_try(overlay: KbrOverlay, rng: random.Random, count: int) -> list[int]:
    """Random keys, plus node ids themselves and points exactly between two neighbours."""
    ids = overlay.live_ids()
    keys = [random_key(rng) for _ in range(count)]
    for index in rng.sample(range(len(ids)), min(20, len(ids))):
        low, high = ids[index - 1], ids[index]
        keys.append(ids[index])
        keys.append((low + (high - low) % (1 << 128) // 2) % (1 << 128))
    return keys


def route_all(
    overlay: KbrOverlay, keys: list[int], rng: random.Random, wait: float = 2.0
) -> dict[int, tuple[SimHost, Delivered]]:
    """Route every key from a random live member; the Delivered events by key index."""
    start = len(overlay.events)
    hosts = overlay.joined()
    for index, key in enumerate(keys):
        overlay.route(rng.choice(hosts), key, index.to_bytes(4, "big"))
    overlay.net.run_for(wait)
    delivered: dict[int, tuple[SimHost, Delivered]] = {}
    for host, event in overlay.events[start:]:
        if isinstance(event, Delivered):
            index = int.from_bytes(event.payload, "big")
            assert index not in delivered, "delivered twice"
            delivered[index] = (host, event)
    return delivered


def assert_delivered_at_closest(
    overlay: KbrOverlay, keys: list[int], rng: random.Random
) -> list[int]:
    ids = overlay.live_ids()
    delivered = route_all(overlay, keys, rng)
    assert len(delivered) == len(keys)
    for index, key in enumerate(keys):
        host, event = delivered[index]
        assert event.key == key
        assert overlay.kbr(host).handle.id == KbrOverlay.closest(ids, key), f"key {key:032x}"
    return [event.hops for _, event in delivered.values()]


def dead_references(overlay: KbrOverlay) -> int:
    dead = {overlay.kbr(h).handle.id for h in overlay.hosts if not h.alive}
    return sum(1 for h in overlay.joined() for n in overlay.kbr(h).neighbors() if n.id in dead)


def assert_tables_bounded(overlay: KbrOverlay) -> dict[str, int]:
    """Every table of every live node within its bound and consistent with its id."""
    config = overlay.config
    biggest: dict[str, int] = {}
    for host in overlay.joined():
        node = overlay.kbr(host)
        sizes = node.table_sizes()
        for name, size in sizes.items():
            biggest[name] = max(biggest.get(name, 0), size)
        me = node.handle.id
        left, right = node.leaf_set_sides()
        assert len(left) <= config.leaf_set_size // 2 and len(right) <= config.leaf_set_size // 2
        entries = node.routing_table_entries()
        assert len(entries) <= config.rows * (config.columns - 1)
        for row, column, entry in entries:
            assert shared_prefix_length(me, entry.id, config.b) == row
            assert digit(entry.id, row, config.b) == column
        assert sizes["peers"] <= config.leaf_set_size + len(entries)
        assert sizes["candidates"] <= config.max_pending_probes
        assert sizes["requests"] <= config.max_pending_requests
        assert sizes["failed"] <= config.max_failed_remembered
        assert sizes["events"] <= config.max_events
        # Live timers: one round, one maintenance, one per probe, candidate
        # and request; stale ones expire within a probe timeout or so.
        assert sizes["timers"] <= 4 * (sizes["peers"] + config.max_pending_probes) + 8
    return biggest


@pytest.fixture(scope="module", params=[50, 300])
def stable(request: pytest.FixtureRequest) -> Iterator[tuple[FakeNetwork, KbrOverlay]]:
    yield build(request.param, seed=request.param)


# --- (a), (b): delivery and hop counts -----------------------------------------------------


def test_every_key_is_delivered_at_the_numerically_closest_node(
    stable: tuple[FakeNetwork, KbrOverlay],
) -> None:
    _, overlay = stable
    count = len(overlay.joined())
    assert count == len(overlay.hosts)
    assert overlay.leaf_set_errors() == []
    rng = random.Random(7)
    hops = assert_delivered_at_closest(overlay, keys_to_try(overlay, rng, 400), rng)
    mean, worst = statistics.mean(hops), max(hops)
    bound = math.log(count, 16)
    print(f"\nN={count}: mean hops {mean:.2f}, max {worst}, log16(N) = {bound:.2f}")
    assert mean <= bound + 1
    assert worst <= math.ceil(bound) + 2


def test_every_hop_is_strictly_closer_so_routes_cannot_loop(
    stable: tuple[FakeNetwork, KbrOverlay],
) -> None:
    _, overlay = stable
    rng = random.Random(8)
    ids = overlay.live_ids()
    hosts = overlay.joined()
    for key in keys_to_try(overlay, rng, 300):
        path = overlay.walk(rng.choice(hosts), key)
        for here, there in itertools.pairwise(path):
            assert (ring_distance(there, key), there) < (ring_distance(here, key), here)
        assert len(set(path)) == len(path)
        assert path[-1] == KbrOverlay.closest(ids, key)


# --- (c): intercepted routes ---------------------------------------------------------------


def test_intercepted_routes_surface_at_every_hop(stable: tuple[FakeNetwork, KbrOverlay]) -> None:
    net, overlay = stable
    steps: dict[bytes, list[tuple[SimHost, RouteStep]]] = {}

    def upper_layer(host: SimHost, event: object) -> None:
        if isinstance(event, RouteStep):
            steps.setdefault(event.payload, []).append((host, event))
            if event.next_hop is not None:
                overlay.kbr(host).forward(
                    event.key, event.payload, event.next_hop, net.now, step=event
                )

    overlay.on_event = upper_layer
    rng = random.Random(9)
    ids = overlay.live_ids()
    hosts = overlay.joined()
    keys = keys_to_try(overlay, rng, 100)
    origins = []
    try:
        for index, key in enumerate(keys):
            origin = rng.choice(hosts)
            origins.append(origin)
            overlay.route(origin, key, index.to_bytes(4, "big"), intercept=True)
        net.run_for(2)
    finally:
        overlay.on_event = None
    assert len(steps) == len(keys)
    for index, key in enumerate(keys):
        chain = steps[index.to_bytes(4, "big")]
        origin_handle = overlay.kbr(origins[index]).handle
        assert chain[0][0] is origins[index] and chain[0][1].previous is None
        for hop, (host, step) in enumerate(chain):
            assert (step.key, step.origin, step.hops) == (key, origin_handle, hop)
            if hop:
                previous_host = chain[hop - 1][0]
                assert step.previous == overlay.kbr(previous_host).handle
                assert chain[hop - 1][1].next_hop == overlay.kbr(host).handle
        last_host, last = chain[-1]
        assert last.next_hop is None
        assert overlay.kbr(last_host).handle.id == KbrOverlay.closest(ids, key)


# --- (d): failures ---------------------------------------------------------------------------


def test_killed_nodes_are_detected_and_everything_is_repaired() -> None:
    net, overlay = build(200, seed=21)
    rng = random.Random(22)
    victims = rng.sample(overlay.joined(), 30)  # 15 %
    for victim in victims:
        overlay.kill(victim)
    start = len(overlay.events)
    config = overlay.config
    net.run_for(config.failure_timeout + 2 * config.keepalive_interval)
    leaf_errors = len(overlay.leaf_set_errors())
    net.run_for(config.routing_failure_timeout)
    print(
        f"\n200 nodes, 30 killed: leaf sets wrong after {config.failure_timeout + 10:.0f} s: "
        f"{leaf_errors}; dead references left after "
        f"{2 * config.failure_timeout + config.routing_failure_timeout:.0f} s: "
        f"{dead_references(overlay)}"
    )
    assert leaf_errors == 0
    assert overlay.leaf_set_errors() == []
    assert dead_references(overlay) == 0
    failed = {e.node.id for _, e in overlay.events[start:] if isinstance(e, NodeFailed)}
    assert failed == {overlay.kbr(v).handle.id for v in victims}
    assert any(isinstance(e, NeighborsChanged) for _, e in overlay.events[start:])
    assert_delivered_at_closest(overlay, keys_to_try(overlay, rng, 300), rng)
    assert_tables_bounded(overlay)


def test_partitioned_halves_each_repair_into_a_ring() -> None:
    net, overlay = build(100, seed=31)
    hosts = overlay.joined()
    random.Random(32).shuffle(hosts)
    halves = hosts[:50], hosts[50:]
    net.partition(*halves)
    net.run_for(overlay.config.routing_failure_timeout + 2 * overlay.config.failure_timeout)
    for half in halves:
        ids = sorted(overlay.kbr(h).handle.id for h in half)
        for host in half:
            node = overlay.kbr(host)
            left, right = KbrOverlay.true_leaf_sides(ids, node.handle.id, 8)
            assert [h.id for h in node.leaf_set_sides()[0]] == left
            assert [h.id for h in node.leaf_set_sides()[1]] == right
            assert all(n.id in ids for n in node.neighbors())


# --- (e): graceful leave -------------------------------------------------------------------------


def test_graceful_leave_is_repaired_at_once() -> None:
    net, overlay = build(100, seed=41)
    rng = random.Random(42)
    leavers = rng.sample(overlay.joined(), 10)
    start = len(overlay.events)
    for host in leavers:
        overlay.leave(host)
    net.run_for(1.0)  # a few round trips, far below any failure timeout
    assert overlay.leaf_set_errors() == []
    departed = {overlay.kbr(h).handle.id for h in leavers}
    told = {e.node.id for _, e in overlay.events[start:] if isinstance(e, NodeFailed)}
    assert told == departed
    print(f"\n100 nodes, 10 left: references left after 1 s: {dead_references(overlay)}")
    net.run_for(overlay.config.routing_failure_timeout)
    assert dead_references(overlay) == 0
    assert_delivered_at_closest(overlay, keys_to_try(overlay, rng, 200), rng)


# --- (f): loss, duplication, reordering -------------------------------------------------------


def test_joins_converge_despite_loss_duplication_and_reordering() -> None:
    net, overlay = build(100, seed=51, settle=30.0, loss=0.05, duplicate=0.05, jitter=0.03)
    assert len(overlay.joined()) == 100  # every join got through, retried where needed
    assert net.counters.lost > 0 and net.counters.duplicated > 0
    net.loss = net.duplicate = 0.0
    net.run_for(overlay.config.routing_failure_timeout)
    assert overlay.leaf_set_errors() == []
    rng = random.Random(52)
    assert_delivered_at_closest(overlay, keys_to_try(overlay, rng, 200), rng)
    assert_tables_bounded(overlay)


# --- (h): bounds, and proximity ------------------------------------------------------------------


def test_tables_stay_bounded_in_a_churning_overlay() -> None:
    config = dataclasses.replace(CONFIG, max_pending_probes=8, max_pending_requests=2)
    net, overlay = build(120, seed=61, config=config)
    rng = random.Random(62)
    for _ in range(4):
        for victim in rng.sample(overlay.joined(), 6):
            overlay.kill(victim)
        overlay.grow(6, spacing=0.5)
        assert_tables_bounded(overlay)
    net.run_for(config.routing_failure_timeout + config.failure_timeout)
    biggest = assert_tables_bounded(overlay)
    print(f"\nlargest tables over 120 churning nodes: {biggest}")
    assert overlay.leaf_set_errors() == []


def test_routing_table_prefers_nearby_nodes() -> None:
    config = dataclasses.replace(CONFIG, rt_maintenance_interval=10.0)
    net, overlay = build(150, seed=71, config=config, settle=120.0)
    hosts = overlay.joined()
    chosen: list[float] = []
    eligible: list[float] = []
    for host in hosts:
        node = overlay.kbr(host)
        me = node.handle.id
        for row, column, entry in node.routing_table_entries():
            if row > 0:
                continue  # row 0 has the most candidates per slot
            pool = [
                other
                for other in hosts
                if shared_prefix_length(me, overlay.kbr(other).handle.id) == row
                and digit(overlay.kbr(other).handle.id, row) == column
            ]
            chosen.append(net.latency(host, overlay.by_id[entry.id]))
            eligible.append(statistics.mean(net.latency(host, other) for other in pool))
    ratio = statistics.mean(chosen) / statistics.mean(eligible)
    print(f"\nrow 0 entries: mean latency {ratio:.2f} x that of a random eligible node")
    assert ratio < 0.8
