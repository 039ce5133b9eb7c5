"""Many ScribeNodes on the oracle KBR: trees, delivery, pruning, fan-out, duplicates."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hamcast.overlay.scribe import (
    ChildAdded,
    ChildRemoved,
    MessageReceived,
    ParentChanged,
    ScribeConfig,
    canonical_group,
)
from tests.scribe_oracle import FAST, OracleNetwork, ScribeSim, check_tree

GROUPS = [f"ham:opaque:group-{i}" for i in range(8)]


def build(
    sim: ScribeSim, groups: list[str], rng: random.Random, low: int = 10, high: int = 40
) -> dict[str, set[int]]:
    members = {g: set(rng.sample(sim.ids, rng.randint(low, high))) for g in groups}
    for group in groups:
        for node_id in sorted(members[group]):
            sim.join(node_id, group)
    sim.run_for(3.0)
    return members


def send_round(
    sim: ScribeSim, group: str, senders: list[int], tag: str, gap: float = 0.0
) -> list[bytes]:
    payloads = []
    for k, sender in enumerate(senders):
        payload = f"{group}/{tag}/{k}".encode()
        sim.multicast(sender, group, payload)
        payloads.append(payload)
        if gap:
            sim.run_for(gap)
    return payloads


def assert_no_duplicates(sim: ScribeSim) -> None:
    for node_id in sim.nodes:
        ids = Counter((e.group, e.source.id, e.sequence) for e in sim.received(node_id))
        assert not [i for i, n in ids.items() if n > 1], node_id


def test_oracle_routes_like_pastry() -> None:
    net = OracleNetwork(seed=3)
    rng = random.Random(3)
    for _ in range(300):
        net.add_node(rng.getrandbits(128))
    lengths = []
    for _ in range(200):
        key = rng.getrandbits(128)
        at: int | None = rng.choice(net.live_ids)
        path = []
        while at is not None:
            path.append(at)
            at = net.next_hop(at, key)
            assert len(path) < 20
        assert path[-1] == net.root_of(key)
        lengths.append(len(path) - 1)
    assert max(lengths) <= 5 and 1.0 < sum(lengths) / len(lengths) < 3.5


def test_every_member_receives_every_message_exactly_once() -> None:
    rng = random.Random(7)
    sim = ScribeSim(300, seed=7)
    members = build(sim, GROUPS, rng)
    sent: dict[str, list[bytes]] = {g: [] for g in GROUPS}
    for group in GROUPS:
        _, key = canonical_group(group)
        root = check_tree(sim, group, members[group])
        # Without a fan-out limit or churn the tree is exactly the reverse KBR paths.
        for node_id, parent in sim.tree(group).items():
            assert parent == sim.net.next_hop(node_id, key) or node_id == root
        outsiders = [i for i in sim.ids if i not in members[group]]
        senders = [*rng.sample(sorted(members[group]), 3), *rng.sample(outsiders, 3)]
        sent[group] += send_round(sim, group, senders, "spaced", gap=0.05)
        sent[group] += send_round(sim, group, senders, "burst")  # all in flight at once
    sim.run_for(2.0)
    for node_id in sim.ids:
        for group in GROUPS:
            got = sim.payloads(node_id, group)
            if node_id in members[group]:
                assert sorted(got) == sorted(sent[group]), (node_id, group)
            else:
                assert got == []
    for node_id in sim.ids:
        for event in sim.received(node_id):
            own = event.source.id == node_id
            assert (event.hops == 0) == own
    assert_no_duplicates(sim)


def test_events_tell_the_same_story_as_the_service_calls() -> None:
    rng = random.Random(11)
    sim = ScribeSim(150, seed=11)
    members = build(sim, GROUPS[:3], rng)
    for group in GROUPS[:3]:
        for node_id in rng.sample(sorted(members[group]), len(members[group]) // 3):
            sim.leave(node_id, group)
            members[group].discard(node_id)
    sim.run_for(2.0)
    for node_id in sim.ids:
        children: dict[str, set[int]] = {g: set() for g in GROUPS}
        parents: dict[str, int | None] = dict.fromkeys(GROUPS)
        for event in sim.events[node_id]:
            if isinstance(event, ChildAdded):
                children[event.group].add(event.child.id)
            elif isinstance(event, ChildRemoved):
                children[event.group].remove(event.child.id)
            elif isinstance(event, ParentChanged):
                parents[event.group] = event.parent.id if event.parent else None
        node = sim.nodes[node_id]
        for group in GROUPS[:3]:
            assert children[group] == {c.id for c in node.children(group)}
            parent = node.parent(group)
            assert parents[group] == (parent.id if parent else None)


def test_leave_prunes_forwarders() -> None:
    rng = random.Random(5)
    sim = ScribeSim(200, seed=5)
    group = GROUPS[0]
    members = build(sim, [group], rng, 30, 30)[group]
    before = set(sim.tree(group))
    assert before > members  # some forwarders that are not members
    leaving = set(rng.sample(sorted(members), 20))
    for node_id in sorted(leaving):
        sim.leave(node_id, group)
    sim.run_for(1.0)
    staying = members - leaving
    check_tree(sim, group, staying)
    _, key = canonical_group(group)
    on_paths = set()
    for node_id in staying:
        at: int | None = node_id
        while at is not None:
            on_paths.add(at)
            at = sim.net.next_hop(at, key)
    assert set(sim.tree(group)) == on_paths
    for node_id in sorted(staying):
        sim.leave(node_id, group)
    sim.run_for(1.0)
    assert sim.tree(group) == {}
    assert all(sim.nodes[i].get_timer() is None for i in sim.ids)


def test_fan_out_is_bounded_by_pushing_joiners_down() -> None:
    rng = random.Random(13)
    config = ScribeConfig(
        heartbeat_interval=0.5,
        parent_timeout=1.6,
        child_timeout=1.6,
        join_timeout=0.5,
        join_backoff_max=4.0,
        max_children=3,
    )
    sim = ScribeSim(200, seed=13, config=config)
    group = GROUPS[1]
    members = build(sim, [group], rng, 120, 120)[group]
    sim.run_for(3.0)
    check_tree(sim, group, members)
    tree = sim.tree(group)
    assert max(len(sim.nodes[n].children(group)) for n in tree) <= 3
    assert sum(sim.nodes[n].stats.joins_redirected for n in sim.ids) > 0
    senders = [*rng.sample(sorted(members), 3), *rng.sample(sorted(set(sim.ids) - members), 2)]
    sent = send_round(sim, group, senders, "fanout")
    sim.run_for(2.0)
    for node_id in members:
        assert sorted(sim.payloads(node_id, group)) == sorted(sent)
    assert_no_duplicates(sim)


@pytest.mark.parametrize("seed", [21, 22])
def test_network_duplicates_never_deliver_twice(seed: int) -> None:
    rng = random.Random(seed)
    sim = ScribeSim(150, seed=seed, duplicate=0.3, jitter=0.02)
    members = build(sim, GROUPS[:3], rng)
    sent: dict[str, list[bytes]] = {}
    for group in GROUPS[:3]:
        check_tree(sim, group, members[group])
        senders = [*rng.sample(sorted(members[group]), 3), *rng.sample(sim.ids, 3)]
        sent[group] = send_round(sim, group, senders, "dup", gap=0.01)
    sim.run_for(2.0)
    for group in GROUPS[:3]:
        for node_id in members[group]:
            assert sorted(sim.payloads(node_id, group)) == sorted(sent[group])
    assert_no_duplicates(sim)
    assert sum(sim.nodes[n].stats.duplicates for n in sim.ids) > 0


def test_lossy_network_converges_once_loss_stops() -> None:
    rng = random.Random(31)
    sim = ScribeSim(150, seed=31, loss=0.05, jitter=0.01)
    members = build(sim, GROUPS[:2], rng)
    sim.run_for(5.0)
    sim.net.loss = 0.0
    sim.run_for(5.0)
    for group in GROUPS[:2]:
        check_tree(sim, group, members[group])
        sent = send_round(sim, group, rng.sample(sim.ids, 4), "after-loss")
        sim.run_for(1.0)
        for node_id in members[group]:
            got = [p for p in sim.payloads(node_id, group) if b"after-loss" in p]
            assert sorted(got) == sorted(sent)
    assert_no_duplicates(sim)


def test_many_groups_share_nodes_compactly() -> None:
    rng = random.Random(41)
    sim = ScribeSim(100, seed=41, config=FAST)
    groups = [f"ham:opaque:many-{i}" for i in range(40)]
    members = build(sim, groups, rng, 3, 8)
    for group in groups:
        check_tree(sim, group, members[group])
    sender = sim.ids[0]
    for group in groups:
        sim.multicast(sender, group, b"x")
    sim.run_for(1.0)
    for group in groups:
        for node_id in members[group]:
            assert len(sim.payloads(node_id, group)) == 1
    assert all(isinstance(e, MessageReceived) for e in sim.received(sender))
