"""The gateway on the core, with in-memory native and overlay technologies: no I/O.

The fake native technology loops every message it sends back to this host (as
IP multicast loopback does) and reports a domain view the test sets; the fake
overlay loops back to a member that sends (as Scribe does).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hamcast.config import CoreConfig
from hamcast.core.middleware import Middleware
from hamcast.gateway import EchoFilter
from hamcast.technologies.base import (
    Assessment,
    DomainView,
    Technology,
    TechnologyInterface,
)
from hamcast.uri import URI
from tests.test_core_middleware import Sink

NEWS = URI.parse("ham:opaque:news")
ME = b"\x01" * 16


class Net(Technology):
    """One interface; records sends and loops them back to listeners, as the network would."""

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.name = name  # type: ignore[misc]
        self.sent: list[tuple[str, bytes, int]] = []
        self.joined: set[str] = set()
        self.view: DomainView | None = None
        self.interest_calls = 0

    def interfaces(self) -> list[TechnologyInterface]:
        return [TechnologyInterface(self.name, self.name, "addr")]

    def can_serve(self, iface: str, group: URI) -> bool:
        return True

    def assess(self, iface: str, group: URI) -> Assessment:
        return Assessment(True, "up")

    def join(self, iface: str, group: URI) -> None:
        self.joined.add(group.name)

    def leave(self, iface: str, group: URI) -> None:
        self.joined.discard(group.name)

    def send(
        self, iface: str, group: URI, payload: bytes | memoryview, ttl: int, origin: str
    ) -> None:
        self.sent.append((group.name, bytes(payload), ttl))
        if group.name in self.joined:
            self.upcalls.deliver(self, self.name, group, "me", bytes(payload))

    def arrive(self, group: URI, payload: bytes, source: str = "other") -> None:
        """A message from another host."""
        self.upcalls.deliver(self, self.name, group, source, payload)

    def max_msg_size(self, iface: str) -> int:
        return 60000

    def domain(self, iface: str) -> DomainView | None:
        if self.view is None or self.name != "ip":
            return None
        listening, sending = self.upcalls.interest(self, iface)
        return DomainView(
            self.view.me,
            self.view.gateways,
            self.view.listening | listening,
            self.view.sending | sending,
        )

    def interest_changed(self, iface: str) -> None:
        self.interest_calls += 1


def gateway_host(
    *, listening: frozenset[str] = frozenset(), sending: frozenset[str] = frozenset()
) -> tuple[Middleware, Net, Net]:
    ip, overlay = Net("ip"), Net("overlay")
    ip.view = DomainView(ME, (ME,), listening, sending)
    mw = Middleware([ip, overlay], CoreConfig(gateway_ttl=7))
    asyncio.run(mw.start())
    return mw, ip, overlay


def test_overlay_messages_reach_native_listeners_of_the_domain_once() -> None:
    mw, ip, overlay = gateway_host(listening=frozenset({NEWS.name}))
    assert overlay.joined == {NEWS.name}, "the gateway joins the overlay tree for the domain"
    assert ip.joined == set(), "no native sender in the domain: nothing to pick up natively"
    overlay.arrive(NEWS, b"from afar")
    assert ip.sent == [(NEWS.name, b"from afar", 7)]
    assert overlay.sent == [], "not sent back"
    assert mw.gateway_status()["to_native"] == 1


def test_native_messages_go_into_the_overlay_once_and_echoes_stop_there() -> None:
    _mw, ip, overlay = gateway_host(sending=frozenset({NEWS.name}))
    assert ip.joined == {NEWS.name}
    ip.arrive(NEWS, b"island news")
    assert overlay.sent == [(NEWS.name, b"island news", 1)]
    assert ip.sent == []


def test_both_ways_without_loops() -> None:
    mw, ip, overlay = gateway_host(listening=frozenset({NEWS.name}), sending=frozenset({NEWS.name}))
    overlay.arrive(NEWS, b"a")  # -> native; its loopback copy must not return to the overlay
    ip.arrive(NEWS, b"b")  # -> overlay; Scribe's copy to us must not return to native
    assert ip.sent == [(NEWS.name, b"a", 7)]
    assert overlay.sent == [(NEWS.name, b"b", 1)]
    assert mw.gateway_status()["echoes_dropped"] == 2
    # The same bytes again are new messages, not echoes.
    ip.arrive(NEWS, b"a")
    assert overlay.sent[-1] == (NEWS.name, b"a", 1)


def test_local_applications_get_bridged_messages_natively_exactly_once() -> None:
    mw, _ip, overlay = gateway_host()
    sink = Sink()
    s = mw.open_session(sink)
    sock = mw.create_socket(s)
    # Bound to ip (preferred): now the domain listens. The join alone is enough,
    # as in a domain of one daemon, where no announcement arrives to say so.
    mw.join(s, sock, NEWS)
    assert overlay.joined == {NEWS.name}
    overlay.arrive(NEWS, b"x")
    assert [m[4] for m in sink.messages] == [b"x"], "via native loopback, once"


def test_the_gateways_own_memberships_are_not_announced_as_interest() -> None:
    mw, ip, _ = gateway_host(sending=frozenset({NEWS.name}))
    assert ip.joined == {NEWS.name}, "the gateway listens natively"
    assert mw.interest(ip, "ip") == (frozenset(), frozenset())
    s = mw.open_session(Sink())
    sock = mw.create_socket(s)
    calls = ip.interest_calls
    mw.join(s, sock, NEWS)
    assert mw.interest(ip, "ip") == (frozenset({NEWS.name}), frozenset())
    assert ip.interest_calls > calls, "the technology hears that the interest changed"


def test_another_designated_gateway_takes_the_group_and_this_one_lets_go() -> None:
    mw, ip, overlay = gateway_host(listening=frozenset({NEWS.name}))
    assert overlay.joined == {NEWS.name}
    others = [bytes([i]) * 16 for i in range(2, 40)]
    winner = DomainView(ME, (ME, *others), frozenset({NEWS.name}), frozenset()).winner(NEWS.name)
    assert winner != ME, "with 39 candidates, this one is unlikely to win (fixed ids)"
    ip.view = DomainView(ME, (ME, *others), frozenset({NEWS.name}), frozenset())
    mw.conditions_changed(ip)
    assert overlay.joined == set()
    assert mw.gateway_status()["bridges"] == []
    overlay.arrive(NEWS, b"not ours")
    assert ip.sent == []
    # The winner goes quiet (expired): the group comes back.
    ip.view = DomainView(ME, (ME,), frozenset({NEWS.name}), frozenset())
    mw.conditions_changed(ip)
    assert overlay.joined == {NEWS.name}


def test_not_a_candidate_bridges_nothing() -> None:
    ip, overlay = Net("ip"), Net("overlay")
    ip.view = DomainView(ME, (ME,), frozenset({NEWS.name}), frozenset({NEWS.name}))
    mw = Middleware([ip, overlay], CoreConfig(gateway=False))
    asyncio.run(mw.start())
    assert mw.gateway is None and mw.gateway_status() == {"candidate": False}
    assert ip.joined == set() and overlay.joined == set()


def test_garbage_names_from_peers_are_never_bridged() -> None:
    mw, _ip, overlay = gateway_host(listening=frozenset({"not a uri", NEWS.name}))
    assert overlay.joined == {NEWS.name}
    assert [b["group"] for b in mw.gateway_status()["bridges"]] == [NEWS.name]


def test_highest_random_weight_is_the_same_everywhere_and_spreads_groups() -> None:
    ids = tuple(bytes([i]) * 16 for i in range(1, 5))
    views = [DomainView(me, ids, frozenset(), frozenset()) for me in ids]
    names = [f"ham:opaque:g{i}" for i in range(200)]
    for name in names:
        assert sum(v.designated(name) for v in views) == 1
    load = [sum(v.designated(n) for n in names) for v in views]
    assert min(load) > 25, load
    assert DomainView(ids[0], (), frozenset(), frozenset()).winner("ham:opaque:x") is None


def test_echo_filter_counts_and_is_bounded() -> None:
    echoes = EchoFilter(capacity=2)
    echoes.sent("native", "g", b"a")
    echoes.sent("native", "g", b"a")
    assert echoes.echo("native", "g", b"a") and echoes.echo("native", "g", b"a")
    assert not echoes.echo("native", "g", b"a"), "two sent, two echoes, no more"
    assert not echoes.echo("overlay", "g", b"a") and not echoes.echo("native", "h", b"a")
    for i in range(5):
        echoes.sent("native", "g", bytes([i]))
    assert len(echoes) == 2 and echoes.evicted == 3
