"""The middleware core with in-memory sinks and technologies: no I/O, no sleeps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from hamcast.config import CoreConfig
from hamcast.core.middleware import Middleware, Session
from hamcast.errors import (
    ClosedError,
    HamcastError,
    MessageTooLongError,
    NotJoinedError,
    UnknownInterfaceError,
    UnknownSocketError,
    UnsupportedGroupError,
    UsageError,
)
from hamcast.events import BindingChanged, MemberJoined, MemberLeft, MembershipEvent, SourceAppeared
from hamcast.model import GroupRole, GroupSetEntry
from hamcast.technologies.base import Technology, TechnologyInterface
from hamcast.technologies.local import LocalTechnology
from hamcast.uri import URI

NEWS = URI.parse("ham:opaque:news")
SPORT = URI.parse("ham:opaque:sport")
IPG = URI.parse("ham:ip:239.1.2.3:5000")


@dataclass
class Sink:
    """Records what the core hands a session; can refuse (a full queue)."""

    accept: bool = True
    messages: list[tuple[int, URI, str, int, bytes]] = field(default_factory=list)
    events: list[tuple[int, MembershipEvent]] = field(default_factory=list)

    def deliver(
        self, sock: int, group: URI, source: str, iface: int, payload: bytes | memoryview
    ) -> bool:
        if self.accept:
            self.messages.append((sock, group, source, iface, bytes(payload)))
        return self.accept

    def event(self, sock: int, event: MembershipEvent) -> None:
        self.events.append((sock, event))


class IpLike(Technology):
    """A fake network technology: serves only ip groups, records what it is asked."""

    name = "fake-ip"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.calls: list[tuple[str, ...]] = []
        self.ifaces = [TechnologyInterface("eth0", "eth0", "10.0.0.1")]
        self.fail_register = False

    def interfaces(self) -> list[TechnologyInterface]:
        return list(self.ifaces)

    def can_serve(self, iface: str, group: URI) -> bool:
        return group.is_ip

    def join(self, iface: str, group: URI) -> None:
        self.calls.append(("join", iface, str(group)))

    def leave(self, iface: str, group: URI) -> None:
        self.calls.append(("leave", iface, str(group)))

    def src_register(self, iface: str, group: URI) -> None:
        if self.fail_register:
            raise UnsupportedGroupError("no route")
        self.calls.append(("register", iface, str(group)))

    def src_deregister(self, iface: str, group: URI) -> None:
        self.calls.append(("deregister", iface, str(group)))

    def send(
        self, iface: str, group: URI, payload: bytes | memoryview, ttl: int, origin: str
    ) -> None:
        self.calls.append(("send", iface, str(group), str(ttl)))

    def max_msg_size(self, iface: str) -> int:
        return 1472

    def neighbor_set(self, iface: str) -> list[str]:
        return ["10.0.0.254"]


def started(*techs: Technology, config: CoreConfig | None = None) -> Middleware:
    mw = Middleware(techs, config)
    asyncio.run(mw.start())
    return mw


#: Selection prefers the fake network technology, as it would ``ip``.
FAKE_FIRST = CoreConfig(preference=["fake-ip", "local"])


@pytest.fixture
def mw() -> Middleware:
    return started(IpLike(), LocalTechnology(), config=FAKE_FIRST)


def session(mw: Middleware, sink: Sink | None = None, pid: int = 7) -> tuple[Session, Sink]:
    sink = sink or Sink()
    return mw.open_session(sink, pid=pid, name="test"), sink


def test_interfaces_are_indexed_from_one_in_technology_order(mw: Middleware) -> None:
    ifaces = mw.interfaces()
    assert [(i.index, i.name, i.technology) for i in ifaces] == [
        (1, "eth0", "fake-ip"),
        (2, "local", "local"),
    ]


def test_message_reaches_every_joined_socket_once_with_sender_identity(mw: Middleware) -> None:
    s1, sink1 = session(mw, pid=11)
    s2, sink2 = session(mw, pid=22)
    a = mw.create_socket(s1)
    b = mw.create_socket(s2)
    c = mw.create_socket(s2)
    mw.join(s1, a, NEWS)
    mw.join(s2, b, NEWS)
    mw.send(s2, c, NEWS, b"hi")
    assert sink1.messages == [(a, NEWS, f"local:22/{c}", 2, b"hi")]
    assert sink2.messages == [(b, NEWS, f"local:22/{c}", 2, b"hi")]
    assert mw.stats(s2, c).sent == 1
    assert mw.stats(s1, a).received == 1


def test_groups_are_bound_to_the_first_interface_that_serves_them(mw: Middleware) -> None:
    fake = mw.technologies[0]
    assert isinstance(fake, IpLike)
    s, _ = session(mw)
    sock = mw.create_socket(s)
    mw.join(s, sock, IPG)
    mw.join(s, sock, NEWS)
    rows = {(str(g.group), g.technology) for g in mw.groups()}
    assert rows == {(str(IPG), "fake-ip"), (str(NEWS), "local")}
    assert fake.calls == [("join", "eth0", str(IPG))]


def test_technology_joins_and_leaves_only_for_first_and_last_listener(mw: Middleware) -> None:
    fake = mw.technologies[0]
    assert isinstance(fake, IpLike)
    s, _ = session(mw)
    a, b = mw.create_socket(s), mw.create_socket(s)
    mw.join(s, a, IPG)
    mw.join(s, b, IPG)
    mw.leave(s, a, IPG)
    assert fake.calls == [("join", "eth0", str(IPG))]
    mw.leave(s, b, IPG)
    assert fake.calls[-1] == ("leave", "eth0", str(IPG))
    assert mw.groups() == []


def test_join_is_idempotent_and_leave_of_unjoined_group_is_an_error(mw: Middleware) -> None:
    s, _ = session(mw)
    sock = mw.create_socket(s)
    mw.join(s, sock, NEWS)
    mw.join(s, sock, NEWS)
    assert [g.listeners for g in mw.groups()] == [1]
    with pytest.raises(NotJoinedError):
        mw.leave(s, sock, SPORT)


def test_credentials_are_not_part_of_the_group(mw: Middleware) -> None:
    s, sink = session(mw)
    sock = mw.create_socket(s)
    mw.join(s, sock, URI.parse("ham:opaque:news/sha1;abc"))
    mw.send(s, sock, NEWS, b"x")
    assert [m[1] for m in sink.messages] == [NEWS]


def test_socket_restricted_to_interfaces_cannot_serve_other_groups(mw: Middleware) -> None:
    s, _ = session(mw)
    sock = mw.create_socket(s, [1])
    with pytest.raises(UnsupportedGroupError, match="no technology"):
        mw.join(s, sock, NEWS)
    with pytest.raises(UnknownInterfaceError):
        mw.create_socket(s, [9])


def test_oversize_send_raises_emsgsize_and_counts_as_failed(mw: Middleware) -> None:
    s, _ = session(mw)
    sock = mw.create_socket(s)
    assert mw.prepare_send(s, sock, IPG) == 1472
    with pytest.raises(MessageTooLongError) as info:
        mw.send(s, sock, IPG, b"x" * 1473)
    assert info.value.errno is not None
    assert mw.stats(s, sock).send_failed == 1


def test_message_sizes_are_the_smallest_over_the_sockets_interfaces(mw: Middleware) -> None:
    s, _ = session(mw)
    both = mw.create_socket(s)
    local = mw.create_socket(s, [2])
    assert mw.max_msg_size(s, both) == 1472
    assert mw.max_msg_size(s, local) == 65507
    assert mw.atomic_msg_size(s, local) == 65507


def test_ttl_per_interface(mw: Middleware) -> None:
    fake = mw.technologies[0]
    assert isinstance(fake, IpLike)
    s, _ = session(mw)
    sock = mw.create_socket(s)
    assert mw.get_ttl(s, sock) == 1
    mw.set_ttl(s, sock, 9, [1])
    assert (mw.get_ttl(s, sock, 1), mw.get_ttl(s, sock, 2)) == (9, 1)
    mw.send(s, sock, IPG, b"x")
    assert fake.calls[-1] == ("send", "eth0", str(IPG), "9")
    with pytest.raises(UsageError):
        mw.set_ttl(s, sock, 256)


def test_interfaces_can_be_added_and_removed(mw: Middleware) -> None:
    s, _ = session(mw)
    sock = mw.create_socket(s, [1])
    mw.add_interface(s, sock, 2)
    assert mw.get_interfaces(s, sock) == [1, 2]
    mw.join(s, sock, NEWS)
    mw.del_interface(s, sock, 2)
    assert mw.get_interfaces(s, sock) == [1]
    assert mw.groups() == []
    with pytest.raises(UnknownInterfaceError):
        mw.del_interface(s, sock, 2)


def test_src_register_reports_failed_interfaces(mw: Middleware) -> None:
    fake = mw.technologies[0]
    assert isinstance(fake, IpLike)
    s, _ = session(mw)
    sock = mw.create_socket(s)
    # Bound to eth0; the local interface is not used for this group.
    assert mw.src_register(s, sock, IPG) == [2]
    assert mw.group_set(1) == [GroupSetEntry(IPG, GroupRole.SENDER)]
    assert mw.src_deregister(s, sock, IPG) == []
    assert fake.calls[-1] == ("deregister", "eth0", str(IPG))
    fake.fail_register = True
    assert mw.src_register(s, sock, IPG) == [1, 2]


def test_group_set_merges_roles(mw: Middleware) -> None:
    s, _ = session(mw)
    sock = mw.create_socket(s)
    mw.join(s, sock, NEWS)
    mw.src_register(s, sock, NEWS)
    mw.join(s, sock, SPORT)
    assert mw.group_set(2) == [
        GroupSetEntry(NEWS, GroupRole.BOTH),
        GroupSetEntry(SPORT, GroupRole.LISTENER),
    ]
    assert mw.group_set(1) == []


def test_service_calls_come_from_the_technology(mw: Middleware) -> None:
    assert mw.neighbor_set(1) == ["10.0.0.254"]
    assert mw.neighbor_set(2) == []
    assert mw.children_set(2, NEWS) == []
    assert mw.parent_set(2, NEWS) == []
    assert mw.designated_host(2, NEWS) is True
    with pytest.raises(UnknownInterfaceError):
        mw.neighbor_set(3)


def test_events_reach_sockets_that_enabled_them_on_that_interface(mw: Middleware) -> None:
    s1, sink1 = session(mw)
    s2, sink2 = session(mw)
    watcher = mw.create_socket(s1)
    blind = mw.create_socket(s1, [1])
    mw.enable_events(s1, watcher)
    mw.enable_events(s1, blind)
    member = mw.create_socket(s2)
    mw.join(s2, member, NEWS)
    mw.send(s2, member, NEWS, b"a")
    mw.send(s2, member, NEWS, b"b")
    mw.leave(s2, member, NEWS)
    origin = f"local:7/{member}"
    assert sink1.events == [
        (watcher, MemberJoined(NEWS, 2)),
        (watcher, SourceAppeared(NEWS, 2, origin)),
        (watcher, MemberLeft(NEWS, 2)),
    ]
    mw.disable_events(s1, watcher)
    mw.join(s2, member, NEWS)
    assert len(sink1.events) == 3
    assert sink2.events == []


def test_new_source_memory_is_bounded(mw: Middleware) -> None:
    small = started(LocalTechnology(), config=CoreConfig(sources_per_group=2))
    s, sink = session(small)
    sock = small.create_socket(s)
    small.enable_events(s, sock)
    small.join(s, sock, NEWS)
    local = small.technologies[0]
    for source in ["a", "b", "c", "a"]:
        small.deliver(local, "local", NEWS, source, b"x")
    appeared = [e.source for _, e in sink.events if isinstance(e, SourceAppeared)]
    # "a" was forgotten when "c" came (capacity 2), so it is new again.
    assert appeared == ["a", "b", "c", "a"]


def test_full_queue_counts_drops(mw: Middleware) -> None:
    s1, _ = session(mw, Sink(accept=False))
    s2, _ = session(mw)
    rx = mw.create_socket(s1)
    tx = mw.create_socket(s2)
    mw.join(s1, rx, NEWS)
    for _ in range(3):
        mw.send(s2, tx, NEWS, b"x")
    assert mw.stats(s1, rx).dropped == 3
    assert mw.stats(s1, rx).received == 0


def test_closing_a_session_releases_everything(mw: Middleware) -> None:
    fake = mw.technologies[0]
    assert isinstance(fake, IpLike)
    s, _ = session(mw)
    sock = mw.create_socket(s)
    mw.join(s, sock, IPG)
    mw.src_register(s, sock, IPG)
    mw.close_session(s)
    assert fake.calls[-2:] == [("leave", "eth0", str(IPG)), ("deregister", "eth0", str(IPG))]
    assert mw.groups() == []
    with pytest.raises(ClosedError):
        mw.join(s, sock, NEWS)


def test_unknown_socket_and_foreign_socket_are_errors(mw: Middleware) -> None:
    s1, _ = session(mw)
    s2, _ = session(mw)
    sock = mw.create_socket(s1)
    with pytest.raises(UnknownSocketError):
        mw.join(s2, sock, NEWS)
    mw.delete_socket(s1, sock)
    with pytest.raises(UnknownSocketError):
        mw.delete_socket(s1, sock)


def test_socket_and_group_limits(mw: Middleware) -> None:
    small = started(
        LocalTechnology(), config=CoreConfig(max_sockets_per_session=2, max_groups_per_socket=2)
    )
    s, _ = session(small)
    sock = small.create_socket(s)
    small.create_socket(s)
    with pytest.raises(UsageError, match="maximum"):
        small.create_socket(s)
    small.join(s, sock, NEWS)
    small.join(s, sock, SPORT)
    with pytest.raises(UsageError, match="limit"):
        small.join(s, sock, URI.parse("ham:opaque:third"))


def test_vanished_interface_moves_its_groups_and_returns_to_every_interface_sockets(
    mw: Middleware,
) -> None:
    fake = mw.technologies[0]
    assert isinstance(fake, IpLike)
    s, sink = session(mw)
    sock = mw.create_socket(s)
    mw.enable_events(s, sock)
    mw.join(s, sock, IPG)
    fake.ifaces = []
    mw.interfaces_changed(fake)
    assert [i.index for i in mw.interfaces()] == [2]
    assert mw.get_interfaces(s, sock) == [2]
    assert [(g.group, g.technology) for g in mw.groups()] == [(IPG, "local")]
    assert (
        sock,
        BindingChanged(IPG, 2, "local: this host only (no other technology is usable)"),
    ) in (sink.events)
    fake.ifaces = [TechnologyInterface("eth0", "eth0", "10.0.0.1")]
    mw.interfaces_changed(fake)
    assert [i.index for i in mw.interfaces()] == [1, 2], "an interface keeps its index"
    assert mw.get_interfaces(s, sock) == [1, 2], "a socket on all interfaces gets it back"
    assert [(g.group, g.technology) for g in mw.groups()] == [(IPG, "fake-ip")]
    assert fake.calls[-1] == ("join", "eth0", str(IPG))


def test_vanished_interface_of_a_socket_restricted_to_it_drops_its_groups(
    mw: Middleware,
) -> None:
    fake = mw.technologies[0]
    assert isinstance(fake, IpLike)
    s, _ = session(mw)
    sock = mw.create_socket(s, [1])
    mw.join(s, sock, IPG)
    fake.ifaces = []
    mw.interfaces_changed(fake)
    assert mw.get_interfaces(s, sock) == []
    assert mw.groups() == []
    with pytest.raises(NotJoinedError):
        mw.leave(s, sock, IPG)


def test_failed_technology_join_leaves_no_state(mw: Middleware) -> None:
    class Refusing(IpLike):
        name = "refusing"

        def join(self, iface: str, group: URI) -> None:
            raise UnsupportedGroupError("refused")

    refusing = started(Refusing())
    s, _ = session(refusing)
    sock = refusing.create_socket(s)
    with pytest.raises(HamcastError, match="refused"):
        refusing.join(s, sock, IPG)
    assert refusing.groups() == []
    with pytest.raises(NotJoinedError):
        refusing.leave(s, sock, IPG)


def test_technology_names_must_be_unique() -> None:
    with pytest.raises(UsageError, match="twice"):
        Middleware([LocalTechnology(), LocalTechnology()])
