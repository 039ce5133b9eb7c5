"""Tests for hamcast.ipc.names: the daemon's bounded, pinning, LRU name table."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.errors import UsageError
from hamcast.ipc.names import NameTable
from hamcast.ipc.wire import NameKind

G, S = NameKind.GROUP, NameKind.SOURCE


def test_ids_count_from_one_and_repeat_for_the_same_name() -> None:
    table = NameTable(8)
    assert table.intern(G, "ham:opaque:a") == (1, True)
    assert table.intern(S, "10.0.0.1:5000") == (2, True)
    assert table.intern(G, "ham:opaque:a") == (1, False)
    assert table.text(1) == "ham:opaque:a"
    assert table.text(3) is None
    assert len(table) == 2


def test_kind_is_part_of_the_name() -> None:
    table = NameTable(8)
    assert table.intern(G, "x") == (1, True)
    assert table.intern(S, "x") == (2, True)


def test_capacity_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        NameTable(1)


def test_full_table_evicts_the_least_recently_used() -> None:
    table = NameTable(3)
    for text in "abc":
        table.intern(S, text)
    table.intern(S, "a")  # a is now the most recent; b the least
    assert table.intern(S, "d") == (2, True)
    assert table.text(2) == "d"
    assert len(table) == 3
    # b was forgotten: it comes back as a new name, evicting c (id 3).
    assert table.intern(S, "b") == (3, True)
    assert table.intern(S, "a") == (1, False)


def test_pinned_names_are_never_evicted() -> None:
    table = NameTable(3)
    a, _ = table.intern(G, "a")
    table.pin(a)
    for i in range(20):
        name_id, new = table.intern(S, f"src{i}")
        assert new
        assert name_id != a
    assert table.text(a) == "a"
    assert table.pinned(a)


def test_pins_are_counted() -> None:
    table = NameTable(2)
    a, _ = table.intern(G, "a")
    table.pin(a)
    table.pin(a)
    table.unpin(a)
    assert table.pinned(a)
    table.intern(S, "b")
    assert table.intern(S, "c") == (2, True)  # b evicted, a kept
    table.unpin(a)
    assert not table.pinned(a)
    # Unpinned, a is the most recently used: c goes first.
    assert table.intern(S, "d") == (2, True)
    assert table.intern(S, "e") == (1, True)
    assert table.text(1) == "e"


def test_all_pinned_refuses_new_names_and_changes_nothing() -> None:
    table = NameTable(2)
    for text in "ab":
        table.pin(table.intern(G, text)[0])
    with pytest.raises(UsageError, match="all 2 names"):
        table.intern(G, "c")
    assert (table.text(1), table.text(2), len(table)) == ("a", "b", 2)
    # Known names still resolve while the table is full of pins.
    assert table.intern(G, "a") == (1, False)
    table.unpin(2)
    assert table.intern(G, "c") == (2, True)


def test_pin_of_an_unknown_id_is_a_key_error() -> None:
    table = NameTable(4)
    with pytest.raises(KeyError):
        table.pin(1)


def test_unpin_of_an_unpinned_id_changes_nothing() -> None:
    table = NameTable(2)
    table.intern(S, "a")
    table.intern(S, "b")
    table.unpin(1)
    table.unpin(99)
    assert not table.pinned(1)
    assert table.intern(S, "c") == (1, True)


# --- model-based: the table against a plain reference --------------------------------


class Model:
    """What docs/ipc.md §9 says the table does, written as simply as possible."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids: dict[tuple[int, str], int] = {}
        self.names: dict[int, tuple[int, str]] = {}
        self.recency: list[int] = []  # unpinned ids, least recently used first
        self.pins: dict[int, int] = {}

    def intern(self, kind: int, text: str) -> tuple[int, bool] | None:
        key = (kind, text)
        if key in self.ids:
            name_id = self.ids[key]
            if name_id in self.recency:
                self.recency.remove(name_id)
                self.recency.append(name_id)
            return name_id, False
        if len(self.names) < self.capacity:
            name_id = len(self.names) + 1
        elif self.recency:
            name_id = self.recency.pop(0)
            del self.ids[self.names[name_id]]
        else:
            return None
        self.ids[key] = name_id
        self.names[name_id] = key
        self.recency.append(name_id)
        return name_id, True

    def pin(self, name_id: int) -> None:
        self.pins[name_id] = self.pins.get(name_id, 0) + 1
        if name_id in self.recency:
            self.recency.remove(name_id)

    def unpin(self, name_id: int) -> None:
        if name_id not in self.pins:
            return
        self.pins[name_id] -= 1
        if not self.pins[name_id]:
            del self.pins[name_id]
            self.recency.append(name_id)


op_st = st.one_of(
    st.tuples(st.just("intern"), st.sampled_from([G, S]), st.sampled_from("abcdefgh")),
    st.tuples(st.just("pin"), st.integers(1, 6)),
    st.tuples(st.just("unpin"), st.integers(0, 7)),
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(2, 6), ops=st.lists(op_st, max_size=60))
def test_table_matches_the_model(capacity: int, ops: list[tuple[Any, ...]]) -> None:
    table, model = NameTable(capacity), Model(capacity)
    for op in ops:
        if op[0] == "intern":
            expected = model.intern(op[1], op[2])
            if expected is None:
                with pytest.raises(UsageError):
                    table.intern(op[1], op[2])
            else:
                assert table.intern(op[1], op[2]) == expected
        elif op[0] == "pin":
            if op[1] in model.names:
                model.pin(op[1])
                table.pin(op[1])
            else:
                with pytest.raises(KeyError):
                    table.pin(op[1])
        else:
            model.unpin(op[1])
            table.unpin(op[1])
        # Invariants that hold whatever the sequence.
        assert len(table) == len(model.names) <= capacity
        for name_id, (_, text) in model.names.items():
            assert 1 <= name_id <= capacity
            assert table.text(name_id) == text
            assert table.pinned(name_id) == (name_id in model.pins)


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.integers(2, 8),
    pinned=st.integers(0, 7),
    texts=st.lists(st.text(max_size=3), max_size=80),
)
def test_pinned_names_survive_any_traffic(capacity: int, pinned: int, texts: list[str]) -> None:
    table = NameTable(capacity)
    pinned = min(pinned, capacity - 1)
    keep = {}
    for i in range(pinned):
        name_id, _ = table.intern(G, f"ham:opaque:{i}")
        table.pin(name_id)
        keep[name_id] = f"ham:opaque:{i}"
    for text in texts:
        name_id, _ = table.intern(S, text)
        assert 1 <= name_id <= capacity
        assert name_id not in keep
        assert table.text(name_id) == text
    for name_id, text in keep.items():
        assert table.text(name_id) == text
        assert table.intern(G, text) == (name_id, False)
