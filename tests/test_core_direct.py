"""The direct data path in the core: grants, skipped deliveries, membership, revocation.

In-memory technologies (tests/test_core_selection.py) whose direct sockets are
stand-ins: the core only hands them out, sets their TTL and revokes them; it never
touches a socket (the daemon's session passes it on).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from hamcast.config import CoreConfig
from hamcast.core.middleware import MAX_DIRECT_RECEIVERS, Middleware
from hamcast.errors import NotJoinedError
from hamcast.events import SourceAppeared
from hamcast.technologies.base import DirectReceiver, DirectSender
from hamcast.technologies.local import LocalTechnology
from hamcast.uri import URI
from tests.test_core_middleware import Sink
from tests.test_core_selection import NEWS, Switchable


class _Receiver(DirectReceiver):
    def __init__(self) -> None:
        self.revoked = False

    @property
    def socket(self) -> socket.socket:
        raise AssertionError("the core never touches the socket")

    def revoke(self) -> None:
        assert not self.revoked, "revoked once"
        self.revoked = True


class _Sender(DirectSender):
    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.revoked = False

    @property
    def socket(self) -> socket.socket:
        raise AssertionError("the core never touches the socket")

    def destination(self, group: URI) -> tuple[str, int, int]:
        return "239.1.1.1", 5000, 0

    def set_ttl(self, ttl: int) -> None:
        self.ttl = ttl

    def revoke(self) -> None:
        assert not self.revoked, "revoked once"
        self.revoked = True


class Direct(Switchable):
    """A switchable technology that offers direct sockets and keeps what it handed out."""

    def __init__(self, name: str, usable: bool) -> None:
        super().__init__(name, usable)
        self.receivers: list[_Receiver] = []
        self.senders: list[_Sender] = []

    def direct_receiver(self, iface: str, group: URI) -> _Receiver:
        self.receivers.append(_Receiver())
        return self.receivers[-1]

    def direct_sender(self, iface: str, ttl: int) -> _Sender:
        self.senders.append(_Sender(ttl))
        return self.senders[-1]


def stack(direct: bool = True) -> tuple[Middleware, Direct, Direct]:
    ip = Direct("ip", True)
    overlay = Direct("overlay", True)
    mw = Middleware([LocalTechnology(), overlay, ip], CoreConfig(direct=direct))
    asyncio.run(mw.start())
    return mw, ip, overlay


def test_a_direct_listener_is_skipped_and_the_daemon_leaves_when_nobody_else_listens() -> None:
    mw, ip, _ = stack()
    sink = Sink()
    s = mw.open_session(sink)
    direct_sock, relayed_sock = mw.create_socket(s), mw.create_socket(s)
    mw.join(s, direct_sock, NEWS)
    mw.join(s, relayed_sock, NEWS)
    index, receiver = mw.receive_direct(s, direct_sock, NEWS)
    assert receiver is ip.receivers[0] and mw.interfaces()[index - 1].technology == "ip"
    assert mw.receive_direct(s, direct_sock, NEWS) == (index, receiver), "asked twice: same"
    mw.deliver(ip, "ip", NEWS, "10.0.0.1:9", b"m")
    assert [m[0] for m in sink.messages] == [relayed_sock], "only the relayed socket"
    assert ip.calls == [("join", NEWS.name)]
    mw.leave(s, relayed_sock, NEWS)  # the daemon has nobody left to deliver to
    assert ip.calls[-1] == ("leave", NEWS.name) and not receiver.revoked
    mw.direct_counts(s, direct_sock, NEWS, (0, 0), (3, 30))
    [row] = [r for r in mw.groups() if r.technology == "ip"]
    assert (row.listeners, row.messages_in, row.bytes_in) == (1, 4, 31)
    assert mw.stats(s, direct_sock).received == 3
    mw.leave(s, direct_sock, NEWS)
    assert receiver.revoked
    assert ip.calls.count(("leave", NEWS.name)) == 1


def test_events_keep_the_daemon_receiving_for_new_sources() -> None:
    mw, ip, _ = stack()
    sink = Sink()
    s = mw.open_session(sink)
    listener, watcher = mw.create_socket(s), mw.create_socket(s)
    mw.join(s, listener, NEWS)
    mw.receive_direct(s, listener, NEWS)
    assert ip.calls == [("join", NEWS.name), ("leave", NEWS.name)]
    mw.enable_events(s, watcher)
    assert ip.calls[-1] == ("join", NEWS.name)
    mw.deliver(ip, "ip", NEWS, "10.0.0.1:9", b"m")
    assert sink.messages == [], "the direct listener is not delivered to"
    assert [e for _, e in sink.events if isinstance(e, SourceAppeared)] == [
        SourceAppeared(NEWS, 3, "10.0.0.1:9")
    ]
    mw.disable_events(s, watcher)
    assert ip.calls[-1] == ("leave", NEWS.name)


def test_a_move_revokes_the_direct_sockets_and_the_daemon_delivers_again() -> None:
    mw, ip, overlay = stack()
    sink = Sink()
    s = mw.open_session(sink)
    sock = mw.create_socket(s)
    mw.join(s, sock, NEWS)
    mw.receive_direct(s, sock, NEWS)
    mw.prepare_direct(s, sock, NEWS)
    [receiver], [sender] = ip.receivers, ip.senders
    ip.usable = False
    mw.conditions_changed(ip)  # the group moves to the overlay
    assert receiver.revoked and sender.revoked
    mw.deliver(overlay, "overlay", NEWS, "node", b"m")
    assert [m[0] for m in sink.messages] == [sock]
    _, again = mw.receive_direct(s, sock, NEWS)
    assert again is overlay.receivers[0], "granted again where the group is now bound"


def test_one_sender_socket_per_interface_follows_the_ttl_and_goes_with_the_socket() -> None:
    mw, ip, _ = stack()
    s = mw.open_session(Sink())
    sock = mw.create_socket(s)
    limit, first, where = mw.prepare_direct(s, sock, NEWS)
    _, second, _ = mw.prepare_direct(s, sock, URI.parse("ham:opaque:other"))
    assert first is second is ip.senders[0] and where == ("239.1.1.1", 5000, 0)
    assert limit == 1000
    mw.set_ttl(s, sock, 7)
    assert ip.senders[0].ttl == 7
    mw.direct_counts(s, sock, NEWS, (5, 50), (0, 0))
    assert mw.stats(s, sock).sent == 5
    [row] = [r for r in mw.groups() if r.group == NEWS]
    assert (row.direct_senders, row.messages_out, row.bytes_out) == (1, 5, 50)
    mw.delete_socket(s, sock)
    assert ip.senders[0].revoked


def test_no_direct_path_when_switched_off_or_not_joined_or_at_the_bound() -> None:
    mw, ip, _ = stack(direct=False)
    s = mw.open_session(Sink())
    sock = mw.create_socket(s)
    with pytest.raises(NotJoinedError):
        mw.receive_direct(s, sock, NEWS)
    mw.join(s, sock, NEWS)
    assert mw.receive_direct(s, sock, NEWS)[1] is None
    assert mw.prepare_direct(s, sock, NEWS)[1:] == (None, None)
    assert ip.receivers == [] and ip.senders == []
    mw2, ip2, _ = stack()
    s2 = mw2.open_session(Sink())
    sock2 = mw2.create_socket(s2)
    for n in range(MAX_DIRECT_RECEIVERS + 1):
        group = URI.parse(f"ham:opaque:g{n}")
        mw2.join(s2, sock2, group)
        granted = mw2.receive_direct(s2, sock2, group)[1]
        assert (granted is not None) == (n < MAX_DIRECT_RECEIVERS)
    assert len(ip2.receivers) == MAX_DIRECT_RECEIVERS


def test_a_grant_the_application_never_got_is_withdrawn() -> None:
    mw, ip, _ = stack()
    sink = Sink()
    s = mw.open_session(sink)
    sock = mw.create_socket(s)
    mw.join(s, sock, NEWS)
    mw.receive_direct(s, sock, NEWS)
    mw.prepare_direct(s, sock, NEWS)
    assert ("leave", NEWS.name) in ip.calls
    mw.withdraw_direct(s, sock, NEWS)
    assert ip.receivers[0].revoked and ip.calls[-1] == ("join", NEWS.name)
    mw.deliver(ip, "ip", NEWS, "10.0.0.1:9", b"m")
    assert [m[0] for m in sink.messages] == [sock]
    [row] = [r for r in mw.groups() if r.group == NEWS]
    assert (row.direct_listeners, row.direct_senders) == (0, 0)
    assert mw.receive_direct(s, sock, NEWS, grant=False) == (row.interface, None)
