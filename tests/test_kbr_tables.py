"""Leaf set and routing table against brute force; the configuration's checks."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.errors import UsageError
from hamcast.overlay.ids import ID_SPACE, digit, ring_distance, shared_prefix_length
from hamcast.overlay.kbr import KbrConfig
from hamcast.overlay.kbr.leaf_set import LeafSet
from hamcast.overlay.kbr.routing_table import RoutingTable

ids = st.integers(min_value=0, max_value=ID_SPACE - 1)


def truth(me: int, present: set[int], half: int) -> tuple[list[int], list[int]]:
    others = present - {me}
    right = sorted(others, key=lambda x: (x - me) % ID_SPACE)[:half]
    left = sorted(others, key=lambda x: (me - x) % ID_SPACE)[:half]
    return left, right


@settings(max_examples=200, deadline=None)
@given(
    me=ids,
    half=st.integers(1, 8),
    operations=st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=120),
    pool=st.lists(ids, min_size=41, max_size=41, unique=True),
)
def test_leaf_set_keeps_the_nearest_on_each_side(
    me: int, half: int, operations: list[tuple[bool, int]], pool: list[int]
) -> None:
    """Adds in any order keep the nearest; a removal leaves the nearest of what remains known."""
    leaf = LeafSet(me, 2 * half)
    known: set[int] = set()
    for add, index in operations:
        node = pool[index]
        if node == me:
            continue
        if add:
            fits = leaf.fits(node)
            changed, gone = leaf.add(node)
            assert changed == fits
            assert not set(gone) & (set(leaf.left) | set(leaf.right))
            known.add(node)
        else:
            was_member = node in leaf
            assert leaf.remove(node) == was_member
            assert node not in leaf
            known.discard(node)
        # What the leaf set holds is always the nearest among the nodes it
        # was told about and still holds or could hold: check it is sorted,
        # bounded, and that nothing it holds is farther than something
        # known that fits.
        assert len(leaf.left) <= half and len(leaf.right) <= half
        assert leaf.right == sorted(leaf.right, key=lambda x: (x - me) % ID_SPACE)
        assert leaf.left == sorted(leaf.left, key=lambda x: (me - x) % ID_SPACE)
        assert set(leaf.left) | set(leaf.right) <= known


@settings(max_examples=200, deadline=None)
@given(me=ids, half=st.integers(1, 8), nodes=st.lists(ids, max_size=40, unique=True))
def test_leaf_set_after_only_adds_is_exactly_the_truth(
    me: int, half: int, nodes: list[int]
) -> None:
    leaf = LeafSet(me, 2 * half)
    for node in nodes:
        leaf.add(node)
    left, right = truth(me, set(nodes), half)
    assert (leaf.left, leaf.right) == (left, right)
    others = set(nodes) - {me}
    # Complete exactly when the two halves together are every other node
    # and overlap (or there is nobody).
    assert leaf.complete == (not others or bool(set(left) & set(right)))


@settings(max_examples=200, deadline=None)
@given(me=ids, nodes=st.lists(ids, min_size=1, max_size=30, unique=True), key=ids)
def test_closest_and_covers(me: int, nodes: list[int], key: int) -> None:
    leaf = LeafSet(me, 16)
    for node in nodes:
        leaf.add(node)
    members = {me, *leaf.left, *leaf.right}
    best = min(members, key=lambda x: (ring_distance(x, key), x))
    assert leaf.closest(key) == best
    if leaf.complete:
        assert leaf.covers(key)
    if leaf.covers(key) and not leaf.complete:
        # Within range: the key lies between the farthest leaves.
        assert (key - me) % ID_SPACE <= (leaf.right[-1] - me) % ID_SPACE or (
            me - key
        ) % ID_SPACE <= (me - leaf.left[-1]) % ID_SPACE


def test_small_ring_puts_nodes_on_both_sides() -> None:
    leaf = LeafSet(100, 8)
    for node in (50, 150, 200):
        leaf.add(node)
    assert leaf.right == [150, 200, 50]
    assert leaf.left == [50, 200, 150]
    assert leaf.complete and leaf.covers(ID_SPACE // 2)
    assert leaf.members() == [150, 200, 50]
    assert len(leaf) == 3


def test_removal_reopens_room() -> None:
    leaf = LeafSet(0, 2)
    for node in (10, 20, ID_SPACE - 10, ID_SPACE - 20):
        leaf.add(node)
    assert (leaf.left, leaf.right) == ([ID_SPACE - 10], [10])
    assert not leaf.complete
    assert leaf.remove(10)
    assert leaf.right == [] and leaf.fits(20)
    assert not leaf.remove(10)


@settings(max_examples=200, deadline=None)
@given(me=ids, nodes=st.lists(ids, max_size=60, unique=True), b=st.sampled_from([1, 2, 4, 8]))
def test_routing_table_slots_follow_the_ids(me: int, nodes: list[int], b: int) -> None:
    table = RoutingTable(me, b)
    placed: dict[tuple[int, int], int] = {}
    for node in nodes:
        if node == me:
            continue
        row, column = table.slot(node)
        assert row == shared_prefix_length(me, node, b)
        assert column == digit(node, row, b)
        assert column != digit(me, row, b)
        table.put(node)
        placed[row, column] = node
    assert len(table) == len(placed)
    assert {(r, c): n for r, c, n in table.entries()} == placed
    assert len(table) <= (128 // b) * ((1 << b) - 1)
    for (row, column), node in placed.items():
        assert table.get(row, column) == node and table.contains(node)
        assert table.lookup(node) == node
        assert table.remove(node) == (row, column)
        assert not table.contains(node)
    assert len(table) == 0 and table.nonempty_rows() == []


def test_routing_table_keeps_id_zero() -> None:
    table = RoutingTable(ID_SPACE - 1, 4)
    table.put(0)
    assert table.row(0) == [0]
    assert table.remove(0) == (0, 0)
    assert table.nonempty_rows() == []


def test_config_defaults_and_derived_values() -> None:
    config = KbrConfig()
    assert (config.b, config.leaf_set_size, config.rows, config.columns) == (4, 16, 32, 16)
    assert config.max_payload == 65536
    assert config.failure_timeout == pytest.approx(2 * 5.5 + 3)
    assert config.routing_failure_timeout == pytest.approx(30 + 5.5 + 3)
    assert config.max_datagram_size >= 65536 + 60


@pytest.mark.parametrize(
    "change",
    [
        {"b": 3},
        {"leaf_set_size": 15},
        {"leaf_set_size": 0},
        {"leaf_set_size": 130},
        {"keepalive_interval": 0},
        {"probe_timeout": float("nan")},
        {"keepalive_jitter": 1.0},
        {"rt_maintenance_interval": -1},
        {"failed_memory": -1},
        {"max_hops": 256},
        {"max_payload": 0},
        {"max_rows_per_message": 33},
        {"probe_count": 0},
        {"max_events": 0},
    ],
)
def test_config_refuses_nonsense(change: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        dataclasses.replace(KbrConfig(), **change)


def test_random_tables_stay_bounded() -> None:
    rng = random.Random(3)
    me = rng.getrandbits(128)
    table = RoutingTable(me, 4)
    for _ in range(5000):
        table.put(rng.getrandbits(128))
    assert len(table) <= 32 * 15
    for row in table.nonempty_rows():
        assert len(table.row(row)) <= 15


def test_a_node_in_one_half_still_fits_the_other_when_that_half_has_room() -> None:
    """Found by Hypothesis: fits() said no where add() went on to insert."""
    leaf = LeafSet(100, 4)
    assert leaf.add(110) == (True, [])  # into both halves: the overlay is small
    leaf.left.remove(110)  # the state a sequence of adds and removals can leave
    assert leaf.fits(110), "the left half has room for it"
    assert leaf.add(110) == (True, [])
    assert 110 in leaf.left and 110 in leaf.right
    assert not leaf.fits(110)
