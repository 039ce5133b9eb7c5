"""Tree repair on the oracle KBR: failed forwarders, failed roots, a new closer root, churn.

Resume times are virtual seconds from the crash to the first probe that every
surviving member receives. Probes go out every PROBE_STEP seconds, so a time is
exact to that step. With the FAST timers (heartbeat 0.5 s, parent timeout
1.6 s) and failures noticed by the oracle KBR after 0.5 s:

* NodeFailed reaching the children (``notify="all"``): the children join again
  at 0.5 s, so delivery resumes in about 0.5-0.7 s;
* heartbeats alone (``notify="none"``): a child needs parent_timeout plus up to
  one heartbeat interval to notice, so delivery resumes within about 2.3 s.
"""

from __future__ import annotations

import random

import pytest

from hamcast.overlay.scribe import BecameRoot, canonical_group
from tests.scribe_oracle import ScribeSim, check_tree
from tests.test_scribe_trees import assert_no_duplicates, build

GROUP = "ham:opaque:repair"
PROBE_STEP = 0.05
#: Resume-time bounds, seconds (see the module docstring).
NOTIFIED_BOUND = 1.0
HEARTBEAT_BOUND = 2.5


def probe(
    sim: ScribeSim, sender: int, members: set[int], start: float, window: float
) -> float | None:
    """Send probes for ``window`` seconds; when delivery to all ``members`` resumed."""
    sent_at: list[tuple[float, bytes]] = []
    k = 0
    while sim.net.now - start < window:
        payload = f"probe-{start}-{k}".encode()
        sent_at.append((sim.net.now, payload))
        sim.multicast(sender, GROUP, payload)
        sim.run_for(PROBE_STEP)
        k += 1
    sim.run_for(1.0)
    received = {m: set(sim.payloads(m, GROUP)) for m in members}
    for when, payload in sent_at:
        if all(payload in got for got in received.values()):
            # Once back, delivery must stay back: every later probe arrives too.
            later = [p for w, p in sent_at if w >= when]
            assert all(p in got for p in later for got in received.values())
            return when - start
    return None


def biggest_forwarder(sim: ScribeSim, root: int) -> int:
    """The non-root tree node with the largest subtree."""
    tree = sim.tree(GROUP)
    below = dict.fromkeys(tree, 0)
    for node_id in tree:
        up = tree[node_id]
        while up is not None:
            below[up] += 1
            up = tree[up]
    return max((n for n in tree if n != root), key=lambda n: below[n])


def setup(seed: int, notify: str, n: int = 200) -> tuple[ScribeSim, set[int], int, int]:
    rng = random.Random(seed)
    sim = ScribeSim(n, seed=seed, notify=notify)
    members = build(sim, [GROUP], rng, 50, 50)[GROUP]
    root = check_tree(sim, GROUP, members)
    outsiders = [i for i in sim.ids if i not in members and i != root]
    return sim, members, root, rng.choice(outsiders)


@pytest.mark.parametrize(("notify", "bound"), [("all", NOTIFIED_BOUND), ("none", HEARTBEAT_BOUND)])
def test_forwarder_failure_children_rejoin_and_delivery_resumes(notify: str, bound: float) -> None:
    sim, members, root, sender = setup(51, notify)
    victim = biggest_forwarder(sim, root)
    assert sim.nodes[victim].children(GROUP)
    start = sim.net.now
    sim.kill(victim)
    survivors = members - {victim}
    resumed = probe(sim, sender, survivors, start, 4.0)
    assert resumed is not None and resumed <= bound, resumed
    sim.run_for(3.0)
    check_tree(sim, GROUP, survivors)
    assert_no_duplicates(sim)


@pytest.mark.parametrize(("notify", "bound"), [("all", NOTIFIED_BOUND), ("none", HEARTBEAT_BOUND)])
def test_root_failure_next_closest_node_takes_over(notify: str, bound: float) -> None:
    sim, members, root, sender = setup(52, notify)
    start = sim.net.now
    sim.kill(root)
    survivors = members - {root}
    resumed = probe(sim, sender, survivors, start, 4.0)
    assert resumed is not None and resumed <= bound, resumed
    sim.run_for(3.0)
    new_root = check_tree(sim, GROUP, survivors)
    _, key = canonical_group(GROUP)
    assert new_root == sim.net.root_of(key) != root
    assert BecameRoot(GROUP) in sim.events[new_root]
    assert_no_duplicates(sim)


def test_member_sender_keeps_sending_through_a_root_failure() -> None:
    sim, members, root, _ = setup(53, "leafset")
    sender = next(m for m in sorted(members) if m != root)
    start = sim.net.now
    sim.kill(root)
    survivors = members - {root}
    resumed = probe(sim, sender, survivors, start, 4.0)
    assert resumed is not None and resumed <= HEARTBEAT_BOUND, resumed
    sim.run_for(3.0)
    check_tree(sim, GROUP, survivors)
    assert_no_duplicates(sim)


def test_new_node_closer_to_the_key_becomes_root() -> None:
    sim, members, old_root, sender = setup(54, "leafset")
    _, key = canonical_group(GROUP)
    newcomer = sim.add_node(key)  # as close as it gets
    start = sim.net.now
    resumed = probe(sim, sender, members, start, 3.0)
    sim.run_for(2.0)
    assert check_tree(sim, GROUP, members) == newcomer
    assert sim.nodes[old_root].parent(GROUP) is not None
    assert resumed is not None and resumed <= 1.0, resumed
    assert_no_duplicates(sim)


def test_churn_converges_to_one_tree_per_group() -> None:
    rng = random.Random(61)
    sim = ScribeSim(250, seed=61, loss=0.01, jitter=0.01)
    groups = [f"ham:opaque:churn-{i}" for i in range(4)]
    members = build(sim, groups, rng, 15, 40)
    everyone = set().union(*members.values())
    for _ in range(12):
        victim = rng.choice(sim.ids)
        sim.kill(victim)
        everyone.discard(victim)
        for group in groups:
            members[group].discard(victim)
        for group in groups:
            sim.multicast(rng.choice(sim.ids), group, b"during churn")
        sim.run_for(rng.uniform(0.1, 1.0))
    for _ in range(5):
        sim.add_node()
        sim.run_for(0.3)
    sim.net.loss = 0.0
    sim.run_for(8.0)
    for group in groups:
        check_tree(sim, group, members[group])
        sender = rng.choice(sim.ids)
        sim.multicast(sender, group, b"after churn")
    sim.run_for(1.0)
    for group in groups:
        for node_id in members[group]:
            assert sim.payloads(node_id, group).count(b"after churn") == 1
    assert_no_duplicates(sim)
