"""The sans-I/O peer table: announcements, expiry, answers and the designated-host rule."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.technologies.ip.peers import (
    HOLD_FACTOR,
    MAX_PEERS_PER_LINK,
    Announcement,
    PeerTable,
    decode_announcement,
    encode_announcement,
)

A = ipaddress.IPv4Address("10.0.0.1")
B = ipaddress.IPv4Address("10.0.0.2")
C = ipaddress.IPv4Address("10.0.0.3")


def table(own: ipaddress.IPv4Address, ident: int, interval: int = 10) -> PeerTable:
    t = PeerTable(bytes([ident]) * 16, f"host{ident}", ("ip", "local"), interval)
    t.set_links({"eth0/4": own})
    return t


def test_announcement_round_trip() -> None:
    a = Announcement(b"\x07" * 16, 42, 10, "héllo", ("ip", "overlay"), "10.0.0.1:7047")
    assert decode_announcement(encode_announcement(a)) == a
    b = Announcement(b"\x07" * 16, 43, 10, "h", ("ip",), "", monitor="10.0.0.1:7048")
    assert decode_announcement(encode_announcement(b)) == b


def test_an_older_daemons_announcement_without_the_monitor_field_is_understood() -> None:
    a = Announcement(b"\x07" * 16, 42, 10, "h", ("ip", "overlay"), "10.0.0.1:7047")
    older = encode_announcement(a)[:-1]  # version 1 before the monitor field: ends at overlay
    assert decode_announcement(older) == a


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_is_never_an_announcement_and_never_raises(data: bytes) -> None:
    assert decode_announcement(data) is None or data.startswith(b"HCPA")


def test_truncated_announcements_are_rejected() -> None:
    raw = encode_announcement(Announcement(b"\x01" * 16, 1, 10, "h", ("ip",), "", "a:1"))
    complete = {len(raw), len(raw) - 4}  # with the monitor field, and without it (older)
    for cut in range(len(raw)):
        assert (decode_announcement(raw[:cut]) is None) == (cut not in complete), cut
    assert decode_announcement(raw + b"\0" * 600) is None, "oversize datagrams are dropped"


def test_two_daemons_learn_each_other_and_agree_on_the_designated_host() -> None:
    a, b = table(A, 1), table(B, 2)
    assert a.designated("eth0/4") and b.designated("eth0/4"), "alone, each is designated"
    assert b.receive("eth0/4", a.announcement(), A, now=0.0) is True
    assert a.receive("eth0/4", b.announcement(), B, now=0.0) is True
    assert [p.address for p in b.peers("eth0/4")] == [A]
    assert a.designated("eth0/4") is True
    assert b.designated("eth0/4") is False
    assert b.receive("eth0/4", a.announcement(), A, now=1.0) is False, "known already"


def test_own_announcements_and_unknown_links_are_ignored() -> None:
    a = table(A, 1)
    assert a.receive("eth0/4", a.announcement(), A, now=0.0) is False
    assert a.receive("eth9/4", table(B, 2).announcement(), B, now=0.0) is False
    assert a.peers("eth0/4") == []


def test_peers_expire_after_hold_time() -> None:
    a, b = table(A, 1), table(B, 2, interval=4)
    a.receive("eth0/4", b.announcement(), B, now=100.0)
    assert a.next_expiry() == 100.0 + HOLD_FACTOR * 4
    assert a.expire(113.9) == []
    assert [p.address for p in a.expire(114.0)] == [B]
    assert a.peers("eth0/4") == []
    assert a.next_expiry() is None


def test_a_new_peer_is_answered_at_most_once_a_second() -> None:
    a = table(A, 1)
    a.announced(now=0.0)
    assert a.next_announce() == 10.0
    a.receive("eth0/4", table(B, 2).announcement(), B, now=2.0)
    assert a.next_announce() == 2.0
    a.announced(now=2.0)
    a.receive("eth0/4", table(C, 3).announcement(), C, now=2.5)
    assert a.next_announce() == 3.0, "the next answer waits a second after the last"


def test_peer_table_is_bounded() -> None:
    a = table(A, 1)
    for i in range(MAX_PEERS_PER_LINK + 10):
        other = PeerTable(i.to_bytes(16, "big"), "x", ("ip",))
        a.receive("eth0/4", other.announcement(), ipaddress.IPv4Address(0x0A000100 + i), 0.0)
    assert len(a.peers("eth0/4")) == MAX_PEERS_PER_LINK


def test_links_follow_the_interfaces() -> None:
    a = table(A, 1)
    a.receive("eth0/4", table(B, 2).announcement(), B, now=0.0)
    a.set_links({"eth1/4": C})
    assert a.peers("eth0/4") == []
    assert a.designated("eth0/4") is False
    assert a.designated("eth1/4") is True
