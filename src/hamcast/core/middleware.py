"""The middleware core: sessions, abstract multicast sockets, the group table.

One :class:`Middleware` owns all multicast state of a host (DESIGN.md §2). It
is driven by plain method calls — one per RFC 7046 operation — from the
daemon's IPC sessions (or the embedded runtime) and by :class:`Upcalls` from
the technology modules; it calls back into each session only through its
:class:`SessionSink`. It does no I/O of its own and never blocks, so it runs
on the daemon's event loop and is tested with in-memory sinks.

Binding (late binding, docs/hybrid.md): a socket's operation on a group uses
the socket interface chosen by technology selection — the interfaces are
ranked by the configured technology preference (``[core] preference``,
default ip, overlay, local) and then by index, and the first one whose
technology can serve the group *and* says it is usable now
(:meth:`Technology.assess`) wins; when none is usable, the first that can
serve it. When a technology reports that conditions changed (a router
appeared, the overlay came up), every binding is chosen again and groups move
without the application doing anything but receiving a
:class:`~hamcast.events.BindingChanged` event. Each (interface, group) pair has
one entry in the group table; a technology is asked to join/leave only for
the first/last listener on that interface, and to register/deregister only
for the first/last sender.

Events: every join and leave of a socket on this host is a membership event
on its interface, as is every membership change a technology observes; a
message from a source not among a group's recently seen sources is a
new-source event. Sockets with events enabled receive the events of all
groups on their interfaces.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from hamcast.config import CoreConfig
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
from hamcast.events import BindingChanged, Event, MemberJoined, MemberLeft, SourceAppeared
from hamcast.gateway import Gateway
from hamcast.model import GroupRole, GroupSetEntry, Interface, SocketStats
from hamcast.technologies.base import DirectReceiver, DirectSender, DomainView, Technology
from hamcast.uri import URI

__all__ = [
    "MAX_DIRECT_RECEIVERS",
    "GroupInfo",
    "Middleware",
    "Session",
    "SessionSink",
    "SocketState",
]

logger = logging.getLogger(__name__)

#: Groups one socket may receive on sockets of its own (each is a descriptor in the
#: daemon and the application); beyond, the daemon delivers.
MAX_DIRECT_RECEIVERS = 256


class SessionSink(Protocol):
    """Where the core hands a session what is addressed to it."""

    def deliver(
        self, sock: int, group: URI, source: str, iface: int, payload: bytes | memoryview
    ) -> bool:
        """Queue a message for socket ``sock``; False if it had to be dropped."""

    def event(self, sock: int, event: Event) -> None:
        """Pass an event to socket ``sock``."""


@dataclass(eq=False, slots=True)
class SocketState:
    """One abstract multicast socket (RFC 7046 §5.1)."""

    id: int
    session: Session
    interfaces: list[int]
    ttl: dict[int, int]
    origin: str
    joined: dict[URI, int] = field(default_factory=dict)
    #: Groups the socket registered as a source of (RFC 7046 §5.1.5).
    registered: set[URI] = field(default_factory=set)
    #: Interface each group is sent on: the socket is one of that entry's senders,
    #: registered or not (a socket becomes a sender by sending).
    send_iface: dict[URI, int] = field(default_factory=dict)
    #: Created on all interfaces: interfaces that appear later are added too.
    every_interface: bool = False
    #: The direct data path: per interface a send socket the application holds a
    #: copy of, and the groups it was told to send on it (by interface).
    direct: dict[int, DirectSender] = field(default_factory=dict)
    direct_groups: dict[URI, int] = field(default_factory=dict)
    #: Joined groups the application receives on a socket of its own.
    direct_joined: dict[URI, DirectReceiver] = field(default_factory=dict)
    events: bool = False
    sent: int = 0
    received: int = 0
    dropped: int = 0
    send_failed: int = 0


@dataclass(eq=False, slots=True)
class Session:
    """One client of the middleware (an IPC connection or an embedded process)."""

    id: int
    pid: int
    name: str
    sink: SessionSink
    sockets: dict[int, SocketState] = field(default_factory=dict)
    closed: bool = False
    #: The daemon's own (the gateway's): left out of what is announced as this
    #: host's interest in groups.
    internal: bool = False


@dataclass(eq=False, slots=True)
class _GroupEntry:
    group: URI
    iface: int
    listeners: set[SocketState] = field(default_factory=set)
    senders: set[SocketState] = field(default_factory=set)
    #: Listeners that receive on a socket of their own: the daemon skips them.
    direct: set[SocketState] = field(default_factory=set)
    #: The technology joined the group for the daemon (it receives it itself).
    member: bool = False
    sources: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: Why selection chose this interface (``technology: observation``).
    reason: str = ""
    #: Traffic on this (interface, group): messages and bytes that arrived from the
    #: technology and were sent into it, and deliveries a full socket queue refused.
    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    drops: int = 0


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One row of the host's group table (``hamcast groups``): a group on one interface."""

    group: URI
    technology: str
    interface: int
    #: Application sockets listening to / sending to the group here (the gateway's not counted).
    listeners: int
    senders: int
    #: Why technology selection chose this interface.
    reason: str = ""
    #: The daemon's gateway listens or sends here: it bridges the group.
    gateway: bool = False
    #: Traffic since the entry exists: messages / bytes in from and out to the technology,
    #: and deliveries dropped because a socket's queue was full.
    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    drops: int = 0
    #: Of ``senders``, those that send on their own socket (the direct data path).
    direct_senders: int = 0
    #: Of ``listeners``, those that receive on their own socket.
    direct_listeners: int = 0


@dataclass(slots=True)
class _Iface:
    info: Interface
    technology: Technology
    key: str


class Middleware:
    """All multicast state of one host. See the module docstring for the rules."""

    def __init__(self, technologies: Iterable[Technology], config: CoreConfig | None = None):
        self.config = config or CoreConfig()
        self.technologies = list(technologies)
        names = [t.name for t in self.technologies]
        if len(set(names)) != len(names):
            raise UsageError(f"technology listed twice: {names}")
        self._ifaces: dict[int, _Iface] = {}
        self._index_of: dict[tuple[str, str], int] = {}
        self._next_iface = 1
        self._sessions: dict[int, Session] = {}
        self._next_session = 1
        self._next_socket = 1
        self._groups: dict[tuple[int, URI], _GroupEntry] = {}
        self._started = False
        self._rank = {name: i for i, name in enumerate(self.config.preference)}
        #: What this daemon offers other hosts' daemons, by kind (modules announce it).
        self._offered: dict[str, str] = {}
        self.gateway: Gateway | None = None
        if self.config.gateway and self.config.gateway_to in names:
            self.gateway = Gateway(
                self,
                self.config.gateway_to,
                ttl=self.config.gateway_ttl,
                echo_entries=self.config.gateway_echo_entries,
            )

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        for tech in self.technologies:
            await tech.start(self)
            self._sync_interfaces(tech)
        for tech in self.technologies:
            self._offered.update(tech.advertisement())
        if self.gateway is not None:
            self._offered["gateway"] = "yes"
        for tech in self.technologies:
            tech.advertise(dict(self._offered))
        self._started = True
        if self.gateway is not None:
            self.gateway.refresh()

    async def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.close()
        for session in list(self._sessions.values()):
            self.close_session(session)
        for tech in reversed(self.technologies):
            try:
                await tech.stop()
            except Exception:
                logger.exception("technology %s failed to stop cleanly", tech.name)
        self._started = False

    # --- interfaces ----------------------------------------------------------

    def _sync_interfaces(self, tech: Technology) -> None:
        current = {ti.key: ti for ti in tech.interfaces()}
        for key, ti in current.items():
            index = self._index_of.get((tech.name, key))
            if index is None:
                index = self._next_iface
                self._next_iface += 1
                self._index_of[(tech.name, key)] = index
            info = Interface(index, ti.name, ti.address, tech.name)
            if index not in self._ifaces:
                self._interface_appeared(index)
            self._ifaces[index] = _Iface(info, tech, key)
        for (name, key), index in list(self._index_of.items()):
            if name == tech.name and key not in current and index in self._ifaces:
                self._interface_vanished(index)

    def _interface_appeared(self, index: int) -> None:
        for session in self._sessions.values():
            for sock in session.sockets.values():
                if sock.every_interface and index not in sock.interfaces:
                    sock.interfaces = sorted([*sock.interfaces, index])
                    sock.ttl.setdefault(index, self.config.default_ttl)

    def _interface_vanished(self, index: int) -> None:
        """Forget an interface; its groups move to the next best one where there is one."""
        logger.warning("interface %s vanished", self._ifaces[index].info.name)
        for entry_key in [k for k in self._groups if k[0] == index]:
            del self._groups[entry_key]
        for session in self._sessions.values():
            for sock in session.sockets.values():
                self._revoke_direct(sock, index)
                for group in [g for g, i in sock.joined.items() if i == index]:
                    receiver = sock.direct_joined.pop(group, None)
                    if receiver is not None:
                        receiver.revoke()
                if index in sock.interfaces:
                    sock.interfaces.remove(index)
                    sock.ttl.pop(index, None)
        del self._ifaces[index]
        self._reselect()
        for session in self._sessions.values():
            for sock in session.sockets.values():
                for table in (sock.joined, sock.send_iface):
                    for group in [g for g, i in table.items() if i == index]:
                        del table[group]
                sock.registered &= set(sock.send_iface)

    def interfaces(self) -> list[Interface]:
        """All interfaces of the host, by index."""
        return [self._ifaces[i].info for i in sorted(self._ifaces)]

    def _iface(self, index: int) -> _Iface:
        try:
            return self._ifaces[index]
        except KeyError:
            raise UnknownInterfaceError(f"no interface with index {index}") from None

    # --- sessions and sockets -------------------------------------------------

    def open_session(
        self, sink: SessionSink, pid: int = 0, name: str = "", *, internal: bool = False
    ) -> Session:
        session = Session(self._next_session, pid, name, sink, internal=internal)
        self._next_session += 1
        self._sessions[session.id] = session
        return session

    def close_session(self, session: Session) -> None:
        """Release everything the session holds: every socket is deleted."""
        for sock_id in list(session.sockets):
            self.delete_socket(session, sock_id)
        session.closed = True
        self._sessions.pop(session.id, None)

    def _socket(self, session: Session, sock_id: int) -> SocketState:
        if session.closed:
            raise ClosedError("session is closed")
        try:
            return session.sockets[sock_id]
        except KeyError:
            raise UnknownSocketError(f"no multicast socket {sock_id} in this session") from None

    def create_socket(self, session: Session, ifaces: Iterable[int] = ()) -> int:
        """A new socket on ``ifaces`` (all interfaces when empty); returns its id."""
        if len(session.sockets) >= self.config.max_sockets_per_session:
            raise UsageError(f"session already has {len(session.sockets)} sockets, the maximum")
        every = not set(ifaces)
        chosen = sorted(set(ifaces)) or sorted(self._ifaces)
        for index in chosen:
            self._iface(index)
        sock_id = self._next_socket
        self._next_socket += 1
        sock = SocketState(
            id=sock_id,
            session=session,
            interfaces=chosen,
            ttl=dict.fromkeys(chosen, self.config.default_ttl),
            origin=f"local:{session.pid}/{sock_id}",
            every_interface=every,
        )
        session.sockets[sock_id] = sock
        return sock_id

    def delete_socket(self, session: Session, sock_id: int) -> None:
        sock = self._socket(session, sock_id)
        for group in list(sock.joined):
            self._leave(sock, group)
        for group in list(sock.send_iface):
            self._deregister(sock, group)
        for index in list(sock.direct):
            self._revoke_direct(sock, index)
        del session.sockets[sock_id]

    # --- binding -------------------------------------------------------------

    def _select(self, sock: SocketState, group: URI) -> tuple[int, str]:
        """Technology selection: the interface for ``group`` on ``sock``, and why."""
        last = len(self._rank)
        order = sorted(
            sock.interfaces,
            key=lambda i: (self._rank.get(self._ifaces[i].technology.name, last), i),
        )
        fallback: tuple[int, str] | None = None
        for index in order:
            iface = self._ifaces[index]
            tech = iface.technology
            if not tech.can_serve(iface.key, group):
                continue
            verdict = tech.assess(iface.key, group)
            if verdict.usable:
                return index, f"{tech.name}: {verdict.reason}"
            if fallback is None:
                fallback = index, f"{tech.name}: {verdict.reason} (no other technology is usable)"
        if fallback is not None:
            return fallback
        if not sock.interfaces:
            raise UnsupportedGroupError(f"socket {sock.id} has no interfaces left")
        raise UnsupportedGroupError(f"no technology on the socket's interfaces can serve {group}")

    def _reselect(self) -> None:
        """Choose every binding again; move the groups whose choice changed."""
        for session in list(self._sessions.values()):
            for sock in list(session.sockets.values()):
                bound = set(sock.joined) | set(sock.send_iface)
                for group in sorted(bound, key=lambda g: g.name):
                    try:
                        index, reason = self._select(sock, group)
                    except UnsupportedGroupError:
                        continue
                    if self._move(sock, group, index, reason) and sock.events:
                        session.sink.event(sock.id, BindingChanged(group, index, reason))

    def _move(self, sock: SocketState, group: URI, index: int, reason: str) -> bool:
        """Rebind ``group`` on ``sock`` to ``index``; False if nothing moved.

        The new interface is joined before the old one is left, so a listener
        misses as little as the networks allow; if the new technology refuses,
        the old binding stays.
        """
        moved = False
        old = sock.joined.get(group)
        if old is not None and old != index:
            try:
                self._attach_listener(sock, index, group, reason)
            except HamcastError as exc:
                name = self._ifaces[index].info.name
                logger.warning("moving %s to %s failed: %s", group, name, exc)
                return False
            self._release_listener(sock, old, group)
            moved = True
        old = sock.send_iface.get(group)
        if old is not None and old != index:
            try:
                self._attach_sender(sock, index, group, reason)
            except HamcastError as exc:
                name = self._ifaces[index].info.name
                logger.info("moving source %s to %s failed: %s", group, name, exc)
            else:
                self._release_sender(sock, old, group)
                moved = True
        return moved

    def _attach_listener(self, sock: SocketState, index: int, group: URI, reason: str) -> None:
        """Make ``sock`` a listener of ``group`` on ``index`` (the technology joins for the
        first); a refusal raises and leaves no state."""
        iface = self._ifaces[index]
        entry = self._entry(index, group)
        if not entry.member:
            try:
                iface.technology.join(iface.key, group)
            except HamcastError:
                self._drop_if_idle(entry)
                raise
            entry.member = True
        entry.listeners.add(sock)
        entry.reason = reason
        sock.joined[group] = index
        self._interest_changed(sock, index)
        self._broadcast(index, MemberJoined(group, index))

    def _attach_sender(self, sock: SocketState, index: int, group: URI, reason: str) -> None:
        """Make ``sock`` a sender of ``group`` on ``index`` (the technology registers the
        first); a refusal raises and leaves no state."""
        iface = self._ifaces[index]
        entry = self._entry(index, group)
        if not entry.senders:
            try:
                iface.technology.src_register(iface.key, group)
            except HamcastError:
                self._drop_if_idle(entry)
                raise
        entry.senders.add(sock)
        entry.reason = reason
        sock.send_iface[group] = index
        self._interest_changed(sock, index)

    def _sync_member(self, entry: _GroupEntry) -> None:
        """Keep the technology joined while the daemon must receive the group itself: for
        a listener it delivers to, or, while any socket wants events, for new sources."""
        want = len(entry.direct) < len(entry.listeners) or (
            bool(entry.direct) and any(s.events for s in self._all_sockets())
        )
        if want == entry.member:
            return
        iface = self._ifaces[entry.iface]
        try:
            if want:
                iface.technology.join(iface.key, entry.group)
            else:
                iface.technology.leave(iface.key, entry.group)
        except HamcastError as exc:
            logger.warning(
                "%s %s on %s failed: %s",
                "joining" if want else "leaving",
                entry.group,
                iface.info.name,
                exc,
            )
            return
        entry.member = want

    def _all_sockets(self) -> Iterator[SocketState]:
        for session in self._sessions.values():
            yield from session.sockets.values()

    def _group_limit(self, sock: SocketState) -> None:
        if len(sock.joined) + len(sock.send_iface) >= self.config.max_groups_per_socket:
            raise UsageError(
                f"socket {sock.id} reached its limit of {self.config.max_groups_per_socket} groups"
            )

    def _entry(self, index: int, group: URI) -> _GroupEntry:
        entry = self._groups.get((index, group))
        if entry is None:
            entry = self._groups[(index, group)] = _GroupEntry(group, index)
        return entry

    def _drop_if_idle(self, entry: _GroupEntry) -> None:
        if not entry.listeners and not entry.senders:
            self._groups.pop((entry.iface, entry.group), None)

    # --- group management (RFC 7046 §5.1) ---------------------------------------

    def join(self, session: Session, sock_id: int, group: URI) -> None:
        sock = self._socket(session, sock_id)
        group = group.without_credentials()
        if group in sock.joined:
            return
        self._group_limit(sock)
        index, reason = self._select(sock, group)
        self._attach_listener(sock, index, group, reason)

    def leave(self, session: Session, sock_id: int, group: URI) -> None:
        sock = self._socket(session, sock_id)
        group = group.without_credentials()
        if group not in sock.joined:
            raise NotJoinedError(f"socket {sock_id} has not joined {group}")
        self._leave(sock, group)

    def _leave(self, sock: SocketState, group: URI) -> None:
        index = sock.joined.pop(group)
        self._release_listener(sock, index, group)

    def _release_listener(self, sock: SocketState, index: int, group: URI) -> None:
        entry = self._groups.get((index, group))
        if entry is None:
            return
        entry.listeners.discard(sock)
        if sock in entry.direct:
            entry.direct.discard(sock)
            sock.direct_joined.pop(group).revoke()
        self._interest_changed(sock, index)
        self._sync_member(entry)
        self._drop_if_idle(entry)
        self._broadcast(index, MemberLeft(group, index))

    def src_register(self, session: Session, sock_id: int, group: URI) -> list[int]:
        """Register as a sender on the socket's interface chosen for the group.

        Returns the interfaces where the socket is not registered (RFC 7046
        §5.1.5: all others; all of them when the technology refused).
        """
        sock = self._socket(session, sock_id)
        group = group.without_credentials()
        if group in sock.registered:
            return []
        if group not in sock.send_iface:
            self._group_limit(sock)
        try:
            index = self._add_sender(sock, group)
        except HamcastError as exc:
            logger.info("source registration of %s failed: %s", group, exc)
            return sorted(sock.interfaces)
        sock.registered.add(group)
        return [i for i in sock.interfaces if i != index]

    def _add_sender(self, sock: SocketState, group: URI) -> int:
        """Bind ``group`` for sending on ``sock``; the socket joins the entry's senders."""
        index = sock.send_iface.get(group)
        if index is not None:
            return index
        self._group_limit(sock)
        index, reason = self._select(sock, group)
        self._attach_sender(sock, index, group, reason)
        return index

    def src_deregister(self, session: Session, sock_id: int, group: URI) -> list[int]:
        sock = self._socket(session, sock_id)
        group = group.without_credentials()
        if group not in sock.registered:
            raise NotJoinedError(f"socket {sock_id} has not registered as a source of {group}")
        return self._deregister(sock, group)

    def _deregister(self, sock: SocketState, group: URI) -> list[int]:
        """The socket stops being a sender of ``group`` (a later send binds it again)."""
        sock.registered.discard(group)
        index = sock.send_iface.pop(group, None)
        if index is None:
            return []
        return self._release_sender(sock, index, group)

    def _release_sender(self, sock: SocketState, index: int, group: URI) -> list[int]:
        if sock.direct_groups.get(group) == index:
            self._revoke_direct(sock, index)  # the application must not send there any more
        entry = self._groups.get((index, group))
        if entry is None:
            return []
        entry.senders.discard(sock)
        self._interest_changed(sock, index)
        failed: list[int] = []
        if not entry.senders:
            iface = self._ifaces[index]
            try:
                iface.technology.src_deregister(iface.key, group)
            except HamcastError as exc:
                logger.info("deregistering %s on %s failed: %s", group, index, exc)
                failed.append(index)
        self._drop_if_idle(entry)
        return failed

    # --- send (RFC 7046 §5.2) ---------------------------------------------------

    def prepare_send(self, session: Session, sock_id: int, group: URI) -> int:
        """Bind ``group`` for sending on the socket; returns its maximum message size."""
        sock = self._socket(session, sock_id)
        group = group.without_credentials()
        index = self._add_sender(sock, group)
        iface = self._ifaces[index]
        return iface.technology.max_msg_size(iface.key)

    def prepare_direct(
        self, session: Session, sock_id: int, group: URI, *, grant: bool = True
    ) -> tuple[int, DirectSender | None, tuple[str, int, int] | None]:
        """:meth:`prepare_send`, and where the bound technology offers one, a socket the
        application may send ``group``'s messages on itself, with their destination.

        One socket per (multicast socket, interface), shared by its groups there.
        It is revoked (its sends fail with EPIPE) when one of those groups stops
        being sent on that interface (moved, deregistered), the interface goes,
        or the socket is deleted; the application then asks again. ``grant``
        False is :meth:`prepare_send` alone.
        """
        limit = self.prepare_send(session, sock_id, group)
        if not (grant and self.config.direct):
            return limit, None, None
        sock = self._socket(session, sock_id)
        group = group.without_credentials()
        index = sock.send_iface[group]
        sender = sock.direct.get(index)
        if sender is None:
            iface = self._ifaces[index]
            sender = iface.technology.direct_sender(iface.key, sock.ttl[index])
            if sender is None:
                return limit, None, None
            sock.direct[index] = sender
        destination = sender.destination(group)
        sock.direct_groups[group] = index
        return limit, sender, destination

    def receive_direct(
        self, session: Session, sock_id: int, group: URI, *, grant: bool = True
    ) -> tuple[int, DirectReceiver | None]:
        """The interface ``group`` is joined on, and where the bound technology offers
        one, a socket joined to it that the application may receive on itself.

        From then on the daemon delivers the group to this socket no more (and
        leaves it, unless it still has other listeners or events to serve). The
        socket is revoked (leaves the group, reads see POLLHUP) when the socket
        stops listening there: leave, a move, the interface gone, deletion.
        ``grant`` False answers only the interface (and the socket granted earlier).
        """
        sock = self._socket(session, sock_id)
        group = group.without_credentials()
        index = sock.joined.get(group)
        if index is None:
            raise NotJoinedError(f"socket {sock_id} has not joined {group}")
        receiver = sock.direct_joined.get(group)
        if receiver is not None or not grant:
            return index, receiver
        if not self.config.direct or len(sock.direct_joined) >= MAX_DIRECT_RECEIVERS:
            return index, None
        iface = self._ifaces[index]
        receiver = iface.technology.direct_receiver(iface.key, group)
        if receiver is None:
            return index, None
        entry = self._groups[(index, group)]
        sock.direct_joined[group] = receiver
        entry.direct.add(sock)
        self._sync_member(entry)
        return index, receiver

    def withdraw_direct(self, session: Session, sock_id: int, group: URI) -> None:
        """Undo the grants of ``group`` on the socket: the application did not get the
        descriptors. The daemon delivers the group to the socket again."""
        sock = self._socket(session, sock_id)
        group = group.without_credentials()
        sock.direct_groups.pop(group, None)
        receiver = sock.direct_joined.pop(group, None)
        if receiver is None:
            return
        entry = self._groups.get((sock.joined[group], group))
        if entry is not None:
            entry.direct.discard(sock)
            self._sync_member(entry)  # joined again before the socket leaves
        receiver.revoke()

    def direct_counts(
        self,
        session: Session,
        sock_id: int,
        group: URI,
        sent: tuple[int, int],
        received: tuple[int, int],
    ) -> None:
        """Count what the application reports it sent and received on its direct sockets
        (messages, bytes). What a direct listener received counts as the group's
        arrivals only while the daemon does not receive the group itself."""
        sock = self._socket(session, sock_id)
        sock.sent += sent[0]
        sock.received += received[0]
        index = sock.send_iface.get(group)
        entry = self._groups.get((index, group)) if index is not None else None
        if entry is not None:
            entry.messages_out += sent[0]
            entry.bytes_out += sent[1]
        index = sock.joined.get(group)
        entry = self._groups.get((index, group)) if index is not None else None
        if entry is not None and not entry.member:
            entry.messages_in += received[0]
            entry.bytes_in += received[1]

    def _revoke_direct(self, sock: SocketState, index: int) -> None:
        sender = sock.direct.pop(index, None)
        if sender is not None:
            sender.revoke()
        for group in [g for g, i in sock.direct_groups.items() if i == index]:
            del sock.direct_groups[group]

    def send(self, session: Session, sock_id: int, group: URI, payload: bytes | memoryview) -> None:
        """Send one message; errors raise (and count as ``send_failed``)."""
        sock = self._socket(session, sock_id)
        index = sock.send_iface.get(group)
        try:
            if index is None:
                self.prepare_send(session, sock_id, group)
                group = group.without_credentials()
                index = sock.send_iface[group]
            iface = self._ifaces[index]
            limit = iface.technology.max_msg_size(iface.key)
            if len(payload) > limit:
                raise MessageTooLongError(len(payload), limit)
            iface.technology.send(iface.key, group, payload, sock.ttl[index], sock.origin)
        except HamcastError:
            sock.send_failed += 1
            raise
        sock.sent += 1
        entry = self._groups.get((index, group))
        if entry is not None:
            entry.messages_out += 1
            entry.bytes_out += len(payload)

    def send_many(
        self, session: Session, sock_id: int, group: URI, payloads: list[memoryview]
    ) -> None:
        """Send a run of messages to one group (one technology call, batched when it can)."""
        sock = self._socket(session, sock_id)
        index = sock.send_iface.get(group)
        if index is None:
            for payload in payloads:
                self.send(session, sock_id, group, payload)
            return
        iface = self._ifaces[index]
        technology = iface.technology
        limit = technology.max_msg_size(iface.key)
        if any(len(p) > limit for p in payloads):
            for payload in payloads:  # each one that fits goes; the others raise
                self.send(session, sock_id, group, payload)
            return
        try:
            technology.send_many(iface.key, group, payloads, sock.ttl[index], sock.origin)
        except HamcastError:
            sock.send_failed += len(payloads)
            raise
        sock.sent += len(payloads)
        entry = self._groups.get((index, group))
        if entry is not None:
            entry.messages_out += len(payloads)
            entry.bytes_out += sum(len(p) for p in payloads)

    # --- socket options (RFC 7046 §5.3) -------------------------------------------

    def get_interfaces(self, session: Session, sock_id: int) -> list[int]:
        return list(self._socket(session, sock_id).interfaces)

    def add_interface(self, session: Session, sock_id: int, index: int) -> None:
        sock = self._socket(session, sock_id)
        self._iface(index)
        if index not in sock.interfaces:
            sock.interfaces = sorted([*sock.interfaces, index])
            sock.ttl.setdefault(index, self.config.default_ttl)

    def del_interface(self, session: Session, sock_id: int, index: int) -> None:
        sock = self._socket(session, sock_id)
        if index not in sock.interfaces:
            raise UnknownInterfaceError(f"socket {sock_id} does not use interface {index}")
        for group in [g for g, i in sock.joined.items() if i == index]:
            self._leave(sock, group)
        for group in [g for g, i in sock.send_iface.items() if i == index]:
            self._deregister(sock, group)
        self._revoke_direct(sock, index)
        sock.interfaces.remove(index)
        sock.ttl.pop(index, None)

    def set_ttl(self, session: Session, sock_id: int, ttl: int, ifaces: Iterable[int] = ()) -> None:
        sock = self._socket(session, sock_id)
        if not 0 <= ttl <= 255:
            raise UsageError(f"TTL must be between 0 and 255, not {ttl}")
        targets = list(ifaces) or list(sock.interfaces)
        for index in targets:
            if index not in sock.interfaces:
                raise UnknownInterfaceError(f"socket {sock_id} does not use interface {index}")
        for index in targets:
            sock.ttl[index] = ttl
            direct = sock.direct.get(index)
            if direct is not None:
                direct.set_ttl(ttl)

    def get_ttl(self, session: Session, sock_id: int, index: int = 0) -> int:
        sock = self._socket(session, sock_id)
        if index == 0:
            if not sock.interfaces:
                return self.config.default_ttl
            index = sock.interfaces[0]
        if index not in sock.ttl:
            raise UnknownInterfaceError(f"socket {sock_id} does not use interface {index}")
        return sock.ttl[index]

    def atomic_msg_size(self, session: Session, sock_id: int) -> int:
        """The smallest atomic size over the socket's interfaces (bytes)."""
        sock = self._socket(session, sock_id)
        sizes = [self._size(i, atomic=True) for i in sock.interfaces]
        return min(sizes, default=0)

    def max_msg_size(self, session: Session, sock_id: int) -> int:
        """The smallest maximum message size over the socket's interfaces (bytes)."""
        sock = self._socket(session, sock_id)
        return min((self._size(i, atomic=False) for i in sock.interfaces), default=0)

    def _size(self, index: int, *, atomic: bool) -> int:
        iface = self._ifaces[index]
        tech = iface.technology
        return tech.atomic_msg_size(iface.key) if atomic else tech.max_msg_size(iface.key)

    def stats(self, session: Session, sock_id: int) -> SocketStats:
        sock = self._socket(session, sock_id)
        return SocketStats(sock.sent, sock.received, sock.dropped, sock.send_failed)

    # --- service calls (RFC 7046 §5.4) -----------------------------------------

    def group_set(self, index: int) -> list[GroupSetEntry]:
        """Groups on the interface: this host's own, merged with what the technology knows."""
        iface = self._iface(index)
        roles: dict[URI, GroupRole] = {}
        for (i, group), entry in self._groups.items():
            if i != index:
                continue
            role = GroupRole(0)
            if entry.listeners:
                role |= GroupRole.LISTENER
            if entry.senders:
                role |= GroupRole.SENDER
            if role:
                roles[group] = role
        for found in iface.technology.group_set(iface.key):
            roles[found.group] = roles.get(found.group, GroupRole(0)) | found.role
        return [GroupSetEntry(g, r) for g, r in sorted(roles.items(), key=lambda gr: str(gr[0]))]

    def neighbor_set(self, index: int) -> list[str]:
        iface = self._iface(index)
        return iface.technology.neighbor_set(iface.key)

    def children_set(self, index: int, group: URI) -> list[str]:
        iface = self._iface(index)
        return iface.technology.children_set(iface.key, group.without_credentials())

    def parent_set(self, index: int, group: URI) -> list[str]:
        iface = self._iface(index)
        return iface.technology.parent_set(iface.key, group.without_credentials())

    def designated_host(self, index: int, group: URI) -> bool:
        iface = self._iface(index)
        return iface.technology.designated_host(iface.key, group.without_credentials())

    def interface_status(self, index: int) -> dict[str, Any]:
        """What the interface's technology knows about its network (JSON-ready)."""
        iface = self._iface(index)
        return iface.technology.interface_status(iface.key)

    def enable_events(self, session: Session, sock_id: int) -> None:
        self._socket(session, sock_id).events = True
        self._sync_direct_members()

    def disable_events(self, session: Session, sock_id: int) -> None:
        self._socket(session, sock_id).events = False
        self._sync_direct_members()

    def _sync_direct_members(self) -> None:
        for entry in list(self._groups.values()):
            if entry.direct:
                self._sync_member(entry)

    def groups(self) -> list[GroupInfo]:
        """The host's group table, for monitoring."""
        rows = []
        for entry in self._groups.values():
            listeners = sum(not s.session.internal for s in entry.listeners)
            senders = sum(not s.session.internal for s in entry.senders)
            rows.append(
                GroupInfo(
                    entry.group,
                    self._ifaces[entry.iface].technology.name,
                    entry.iface,
                    listeners,
                    senders,
                    entry.reason,
                    listeners + senders < len(entry.listeners) + len(entry.senders),
                    entry.messages_in,
                    entry.bytes_in,
                    entry.messages_out,
                    entry.bytes_out,
                    entry.drops,
                    sum(s.direct_groups.get(entry.group) == entry.iface for s in entry.senders),
                    len(entry.direct),
                )
            )
        return sorted(rows, key=lambda r: (str(r.group), r.interface))

    def counters(self) -> dict[str, int]:
        """Host totals over the applications' sockets (the gateway's left out)."""
        sockets = [
            sock
            for session in self._sessions.values()
            if not session.internal
            for sock in session.sockets.values()
        ]
        entries = self._groups.values()
        return {
            "sockets": len(sockets),
            "messages_in": sum(s.received for s in sockets),
            "messages_out": sum(s.sent for s in sockets),
            "drops": sum(s.dropped for s in sockets),
            "send_failures": sum(s.send_failed for s in sockets),
            "bytes_in": sum(e.bytes_in for e in entries),
            "bytes_out": sum(e.bytes_out for e in entries),
        }

    # --- upcalls from technologies -----------------------------------------------

    def deliver(
        self,
        technology: Technology,
        iface: str,
        group: URI,
        source: str,
        payload: bytes | memoryview,
    ) -> None:
        index = self._index_of.get((technology.name, iface))
        if index is None:
            return
        entry = self._groups.get((index, group))
        if entry is None or not entry.listeners:
            return
        entry.messages_in += 1
        entry.bytes_in += len(payload)
        sources = entry.sources
        if source in sources:
            sources.move_to_end(source)
        else:
            sources[source] = None
            if len(sources) > self.config.sources_per_group:
                sources.popitem(last=False)
            self._broadcast(index, SourceAppeared(group, index, source))
        direct = entry.direct
        for sock in entry.listeners:
            if direct and sock in direct:
                continue  # it receives on its own socket
            if sock.session.sink.deliver(sock.id, group, source, index, payload):
                sock.received += 1
            else:
                sock.dropped += 1
                entry.drops += 1

    def notify(self, technology: Technology, iface: str, event: Event) -> None:
        index = self._index_of.get((technology.name, iface))
        if index is not None:
            # Modules do not know the core's interface numbering: fill it in.
            self._broadcast(index, dataclasses.replace(event, interface=index))

    def offer(self, kind: str, endpoint: str) -> None:
        """Offer another endpoint to other hosts' daemons (e.g. the daemon's monitoring
        endpoint, ``kind="monitor"``); modules that announce pass it on."""
        self._offered[kind] = endpoint
        for tech in self.technologies:
            tech.advertise(dict(self._offered))

    def interfaces_changed(self, technology: Technology) -> None:
        self._sync_interfaces(technology)
        self.conditions_changed(technology)

    def conditions_changed(self, technology: Technology) -> None:
        self._reselect()
        if self.gateway is not None and self._started:
            self.gateway.refresh()

    def interest(self, technology: Technology, iface: str) -> tuple[frozenset[str], frozenset[str]]:
        index = self._index_of.get((technology.name, iface))
        listening: set[str] = set()
        sending: set[str] = set()
        for (i, group), entry in self._groups.items():
            if i != index:
                continue
            if any(not s.session.internal for s in entry.listeners):
                listening.add(group.name)
            if any(not s.session.internal for s in entry.senders):
                sending.add(group.name)
        return frozenset(listening), frozenset(sending)

    def _interest_changed(self, sock: SocketState, index: int) -> None:
        if not sock.session.internal:
            iface = self._ifaces.get(index)
            if iface is not None:
                iface.technology.interest_changed(iface.key)
            # Our own applications are part of the domain: a daemon alone in its
            # domain hears no announcement that would make the gateway look again.
            if self.gateway is not None and self._started:
                self.gateway.refresh()

    def domains(self) -> dict[int, DomainView]:
        """The native multicast domain behind each interface that has one, by index."""
        found = {}
        for index, iface in sorted(self._ifaces.items()):
            view = iface.technology.domain(iface.key)
            if view is not None:
                found[index] = view
        return found

    def group_table(self) -> dict[str, Any]:
        """JSON-ready: :meth:`groups` with each binding's reason, and :meth:`gateway_status`."""
        return {
            "groups": [
                {**dataclasses.asdict(row), "group": row.group.name} for row in self.groups()
            ],
            "gateway": self.gateway_status(),
        }

    def gateway_status(self) -> dict[str, Any]:
        """JSON-ready: whether this daemon is a gateway candidate, and what it bridges."""
        if self.gateway is None:
            return {"candidate": False}
        return {"candidate": True, **self.gateway.status()}

    def peer_heard(self, technology: Technology, kind: str, endpoint: str) -> None:
        for other in self.technologies:
            if other is not technology:
                other.peer_learned(kind, endpoint)

    def _broadcast(self, index: int, event: Event) -> None:
        for session in self._sessions.values():
            for sock in session.sockets.values():
                if sock.events and index in sock.interfaces:
                    session.sink.event(sock.id, event)
