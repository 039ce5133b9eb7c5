"""Domain announcements: the wire format, the sans-I/O table, its bounds and expiry."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from hamcast.technologies.ip.domain import (
    HOLD_FACTOR,
    MAX_DATAGRAM,
    MAX_MEMBERS,
    DomainAnnouncement,
    DomainTable,
    decode_domain,
    encode_domain,
)

A, B, C = b"\xaa" * 16, b"\xbb" * 16, b"\xcc" * 16


def announcement(
    daemon: bytes,
    listening: tuple[str, ...] = (),
    sending: tuple[str, ...] = (),
    gateway: bool = False,
    interval: int = 2,
) -> list[bytes]:
    return encode_domain(DomainAnnouncement(daemon, 1, interval, gateway, listening, sending))


def test_wire_format_is_pinned() -> None:
    [datagram] = announcement(A, ("ham:opaque:x",), (), gateway=True, interval=5)
    assert datagram[:8] == b"HCDA\x01\x01\x00\x05"
    assert datagram[8:24] == A
    assert datagram[24:28] == b"\x00\x00\x00\x01"
    assert datagram[28:] == b"\x00\x01\x00\x0cham:opaque:x\x00\x00"


def test_round_trip_and_splitting_into_datagrams() -> None:
    listening = tuple(f"ham:opaque:listen-{i:04d}-" + "x" * 40 for i in range(60))
    sending = tuple(f"ham:opaque:send-{i}" for i in range(10))
    datagrams = announcement(A, listening, sending, gateway=True)
    assert len(datagrams) > 1 and all(len(d) <= MAX_DATAGRAM for d in datagrams)
    decoded = [decode_domain(d) for d in datagrams]
    assert all(d is not None and d.gateway and d.daemon_id == A for d in decoded)
    assert tuple(n for d in decoded if d for n in d.listening) == listening
    assert tuple(n for d in decoded if d for n in d.sending) == sending


@given(st.binary(max_size=200))
def test_garbage_never_raises(data: bytes) -> None:
    decode_domain(data)
    decode_domain(b"HCDA\x01\x00\x00\x05" + A + b"\0\0\0\1" + data)


def test_lies_about_lengths_are_refused() -> None:
    [good] = announcement(A, ("ham:opaque:x",))
    head = good[:28]
    assert decode_domain(head + struct.pack("!HH", 1, 500) + b"short") is None
    assert decode_domain(good[:-1]) is None
    assert decode_domain(b"HCDA\x02" + good[5:]) is None, "unknown version"
    assert decode_domain(good + b"\0" * MAX_DATAGRAM) is None, "oversize"


def table() -> DomainTable:
    t = DomainTable(A, interval=2)
    t.set_links(["eth0/4"])
    return t


def test_view_merges_heard_names_with_our_own_and_lists_candidates() -> None:
    t = table()
    t.gateway = True
    for d in announcement(B, ("ham:opaque:x",), ("ham:opaque:y",), gateway=True):
        assert t.receive("eth0/4", d, 0.0)
    for d in announcement(C, ("ham:opaque:z",)):
        assert t.receive("eth0/4", d, 0.0)
    view = t.view("eth0/4", ["ham:opaque:mine"], [])
    assert view.gateways == (A, B)
    assert view.listening == {"ham:opaque:x", "ham:opaque:z", "ham:opaque:mine"}
    assert view.sending == {"ham:opaque:y"}
    assert view.daemons == 3
    for d in announcement(B, ("ham:opaque:x",), ("ham:opaque:y",), gateway=True):
        assert not t.receive("eth0/4", d, 1.0), "nothing new"
    assert not t.receive("other/4", announcement(B)[0], 1.0), "unknown link"
    assert not t.receive("eth0/4", announcement(A, ("ham:opaque:q",))[0], 1.0), "our own"


def test_silent_daemons_and_names_expire() -> None:
    t = table()
    for d in announcement(B, ("ham:opaque:x", "ham:opaque:y"), gateway=True):
        t.receive("eth0/4", d, 0.0)
    hold = HOLD_FACTOR * 2
    for d in announcement(B, ("ham:opaque:x",), gateway=True):
        t.receive("eth0/4", d, hold - 1)
    assert t.next_expiry() == hold
    assert t.expire(hold), "y was not mentioned again"
    assert t.view("eth0/4").listening == {"ham:opaque:x"}
    assert t.expire(2 * hold)
    assert t.view("eth0/4").gateways == ()
    assert t.next_expiry() is None


def test_members_per_link_are_bounded() -> None:
    t = table()
    for i in range(MAX_MEMBERS + 10):
        t.receive("eth0/4", announcement(i.to_bytes(16, "big"))[0], 0.0)
    assert t.view("eth0/4").daemons == MAX_MEMBERS + 1
