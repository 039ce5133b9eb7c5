"""Technology selection (late binding) in the core: in-memory technologies, no I/O."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hamcast.config import CoreConfig
from hamcast.core.middleware import Middleware
from hamcast.errors import ResourceError, UsageError
from hamcast.events import BindingChanged, MemberJoined, MemberLeft
from hamcast.technologies.base import Assessment, Technology, TechnologyInterface
from hamcast.technologies.local import LocalTechnology
from hamcast.uri import URI
from tests.test_core_middleware import Sink

NEWS = URI.parse("ham:opaque:news")


class Switchable(Technology):
    """A network technology whose usefulness the test switches, recording calls."""

    def __init__(self, name: str, usable: bool, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.name = name  # type: ignore[misc]  # one class, several technology names
        self.usable = usable
        self.refuse_join = False
        self.calls: list[tuple[str, str]] = []

    def interfaces(self) -> list[TechnologyInterface]:
        return [TechnologyInterface(self.name, self.name, "addr")]

    def can_serve(self, iface: str, group: URI) -> bool:
        return True

    def assess(self, iface: str, group: URI) -> Assessment:
        return Assessment(self.usable, "seen" if self.usable else "not seen")

    def join(self, iface: str, group: URI) -> None:
        if self.refuse_join:
            raise ResourceError("refused")
        self.calls.append(("join", group.name))

    def leave(self, iface: str, group: URI) -> None:
        self.calls.append(("leave", group.name))

    def src_register(self, iface: str, group: URI) -> None:
        self.calls.append(("register", group.name))

    def src_deregister(self, iface: str, group: URI) -> None:
        self.calls.append(("deregister", group.name))

    def send(
        self, iface: str, group: URI, payload: bytes | memoryview, ttl: int, origin: str
    ) -> None:
        self.calls.append(("send", group.name))

    def max_msg_size(self, iface: str) -> int:
        return 1000


def stack(
    ip_usable: bool, overlay_usable: bool = True, preference: list[str] | None = None
) -> tuple[Middleware, Switchable, Switchable]:
    ip = Switchable("ip", ip_usable)
    overlay = Switchable("overlay", overlay_usable)
    config = CoreConfig() if preference is None else CoreConfig(preference=preference)
    # Enabled in the "wrong" order on purpose: preference, not index, decides.
    mw = Middleware([LocalTechnology(), overlay, ip], config)
    asyncio.run(mw.start())
    return mw, ip, overlay


def test_native_wins_where_the_link_offers_multicast() -> None:
    mw, ip, overlay = stack(ip_usable=True)
    s = mw.open_session(Sink())
    sock = mw.create_socket(s)
    mw.join(s, sock, NEWS)
    [row] = mw.groups()
    assert (row.technology, row.reason) == ("ip", "ip: seen")
    assert ip.calls == [("join", NEWS.name)] and overlay.calls == []


def test_overlay_where_the_link_shows_no_multicast_else_the_preferred_one() -> None:
    mw, _, _ = stack(ip_usable=False)
    s = mw.open_session(Sink())
    sock = mw.create_socket(s)
    mw.join(s, sock, NEWS)
    assert [(r.technology, r.reason) for r in mw.groups()] == [("overlay", "overlay: seen")]
    # Nothing usable: the preferred network technology, not host-local delivery,
    # which reaches nobody else either.
    mw2, _, _ = stack(ip_usable=False, overlay_usable=False)
    s2 = mw2.open_session(Sink())
    sock2 = mw2.create_socket(s2)
    mw2.join(s2, sock2, NEWS)
    assert [r.technology for r in mw2.groups()] == ["ip"]
    mw3, _, _ = stack(ip_usable=False, overlay_usable=False, preference=["local"])
    s3 = mw3.open_session(Sink())
    sock3 = mw3.create_socket(s3)
    mw3.join(s3, sock3, NEWS)
    assert [(r.technology, r.reason) for r in mw3.groups()] == [
        ("local", "local: this host only (no other technology is usable)")
    ]


def test_nothing_usable_falls_back_to_the_first_that_serves_and_says_so() -> None:
    ip = Switchable("ip", False)
    mw = Middleware([ip], CoreConfig())
    asyncio.run(mw.start())
    s = mw.open_session(Sink())
    sock = mw.create_socket(s)
    mw.join(s, sock, NEWS)
    [row] = mw.groups()
    assert row.technology == "ip"
    assert row.reason == "ip: not seen (no other technology is usable)"


def test_preference_order_is_configurable() -> None:
    mw, _, _ = stack(ip_usable=True, preference=["overlay", "ip", "local"])
    s = mw.open_session(Sink())
    sock = mw.create_socket(s)
    mw.join(s, sock, NEWS)
    assert [r.technology for r in mw.groups()] == ["overlay"]


def test_preference_must_name_technologies() -> None:
    with pytest.raises(UsageError, match="preference"):
        CoreConfig(preference=[1])  # type: ignore[list-item]


def test_binding_moves_when_conditions_change_and_the_socket_is_told() -> None:
    mw, ip, overlay = stack(ip_usable=False)
    sink = Sink()
    s = mw.open_session(sink)
    sock = mw.create_socket(s)
    mw.enable_events(s, sock)
    mw.join(s, sock, NEWS)
    assert mw.src_register(s, sock, NEWS) == [i for i in mw.get_interfaces(s, sock) if i != 2]
    sink.events.clear()
    ip.usable = True  # a router appeared
    mw.conditions_changed(ip)
    ip_index = next(i.index for i in mw.interfaces() if i.technology == "ip")
    overlay_index = next(i.index for i in mw.interfaces() if i.technology == "overlay")
    assert [(r.technology, r.listeners, r.senders) for r in mw.groups()] == [("ip", 1, 1)]
    # Joined on the new technology before leaving the old one: no gap on our side.
    assert ip.calls == [("join", NEWS.name), ("register", NEWS.name)]
    assert overlay.calls == [
        ("join", NEWS.name),
        ("register", NEWS.name),
        ("leave", NEWS.name),
        ("deregister", NEWS.name),
    ]
    assert (sock, BindingChanged(NEWS, ip_index, "ip: seen")) in sink.events
    assert (sock, MemberLeft(NEWS, overlay_index)) in sink.events
    mw.send(s, sock, NEWS, b"x")
    assert ip.calls[-1] == ("send", NEWS.name)
    # Nothing changes: nothing moves, no event.
    sink.events.clear()
    mw.conditions_changed(ip)
    assert sink.events == []


def test_a_send_only_binding_moves_too() -> None:
    mw, ip, overlay = stack(ip_usable=False)
    s = mw.open_session(Sink())
    sock = mw.create_socket(s)
    mw.send(s, sock, NEWS, b"a")
    ip.usable = True
    mw.conditions_changed(ip)
    mw.send(s, sock, NEWS, b"b")
    # Sending makes the socket a sender: registered with whichever technology carries it.
    assert overlay.calls == [
        ("register", NEWS.name),
        ("send", NEWS.name),
        ("deregister", NEWS.name),
    ]
    assert ip.calls == [("register", NEWS.name), ("send", NEWS.name)]
    assert [(r.technology, r.senders) for r in mw.groups()] == [("ip", 1)]


def test_a_refused_move_keeps_the_old_binding() -> None:
    mw, ip, _ = stack(ip_usable=False)
    sink = Sink()
    s = mw.open_session(sink)
    sock = mw.create_socket(s)
    mw.enable_events(s, sock)
    mw.join(s, sock, NEWS)
    ip.usable, ip.refuse_join = True, True
    mw.conditions_changed(ip)
    assert [r.technology for r in mw.groups()] == ["overlay"]
    assert not any(isinstance(e, BindingChanged) for _, e in sink.events)
    ip.refuse_join = False
    mw.conditions_changed(ip)
    assert [r.technology for r in mw.groups()] == ["ip"]


def test_two_sockets_of_the_host_share_one_technology_per_group() -> None:
    mw, ip, overlay = stack(ip_usable=False)
    s = mw.open_session(Sink())
    a, b = mw.create_socket(s), mw.create_socket(s)
    mw.join(s, a, NEWS)
    mw.join(s, b, NEWS)
    ip.usable = True
    mw.conditions_changed(ip)
    [row] = mw.groups()
    assert (row.technology, row.listeners) == ("ip", 2)
    assert ip.calls == [("join", NEWS.name)], "one join for both sockets"
    assert overlay.calls == [("join", NEWS.name), ("leave", NEWS.name)]


def test_membership_event_on_the_new_interface_after_a_move() -> None:
    mw, ip, _ = stack(ip_usable=False)
    sink = Sink()
    s = mw.open_session(sink)
    watcher = mw.create_socket(s)
    mw.enable_events(s, watcher)
    sock = mw.create_socket(s)
    mw.join(s, sock, NEWS)
    ip.usable = True
    mw.conditions_changed(ip)
    ip_index = next(i.index for i in mw.interfaces() if i.technology == "ip")
    overlay_index = next(i.index for i in mw.interfaces() if i.technology == "overlay")
    moves = [e for w, e in sink.events if w == watcher and e.group == NEWS]
    assert moves[-2:] == [MemberJoined(NEWS, ip_index), MemberLeft(NEWS, overlay_index)]
