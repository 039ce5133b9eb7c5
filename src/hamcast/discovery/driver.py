"""The asyncio driver of discovery: capture sockets in, cores fed, events out.

It only moves data (STYLE.md item 3): read each link's capture socket until
empty, feed the packets to that link's :class:`LinkDiscovery`, pass the core's
events to ``on_event``, and keep one ``loop.call_at`` timer per core armed at
the core's :meth:`~LinkDiscovery.get_timer`.

Usage from a technology module::

    driver = DiscoveryDriver([(2, "eth0")], on_event, DiscoveryConfig())
    await driver.start()
    verdict, evidence = driver.snapshot(2, 4)
    ...
    await driver.stop()

A link whose socket cannot be opened (no ``CAP_NET_RAW``, interface gone)
stays at :attr:`Verdict.UNKNOWN` with the reason in ``Evidence.unavailable``;
nothing raises.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hamcast.discovery.capture import CaptureError, open_capture
from hamcast.discovery.config import DiscoveryConfig
from hamcast.discovery.events import DiscoveryEvent, VerdictChanged
from hamcast.discovery.model import Evidence, Verdict
from hamcast.discovery.state import LinkDiscovery, normalize_family
from hamcast.errors import UnknownInterfaceError

__all__ = ["DiscoveryDriver", "Opener"]

logger = logging.getLogger(__name__)

#: Opens the capture socket of one link: (interface name, index, family 4/6,
#: config) -> a non-blocking socket whose reads each return one IP packet.
#: Tests substitute a socketpair; the default is :func:`open_capture`.
Opener = Callable[[str, int, int, DiscoveryConfig], socket.socket]

# Packets read per wake-up before yielding to the loop: discovery traffic is
# a few packets a second, so this only matters under a flood.
_READ_BUDGET = 64


def _open_default(name: str, ifindex: int, family: int, config: DiscoveryConfig) -> socket.socket:
    return open_capture(name, ifindex, family, allmulti=config.allmulti)


@dataclass(eq=False, slots=True)
class _Link:
    ifindex: int
    name: str
    family: int
    core: LinkDiscovery | None = None
    sock: socket.socket | None = None
    fd: int = -1
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    unavailable: str | None = None


def _exists(ifindex: int) -> bool:
    try:
        socket.if_indextoname(ifindex)
    except OSError:
        return False
    return True


class DiscoveryDriver:
    """Passive discovery on a set of interfaces, in IPv4 and/or IPv6.

    ``interfaces`` are ``(ifindex, name)`` pairs; ``families`` which address
    families to watch on each (4 and 6 by default). ``on_event`` is called on
    the event-loop thread with every :data:`DiscoveryEvent`; an exception it
    raises is logged and does not stop discovery.
    """

    def __init__(
        self,
        interfaces: Iterable[tuple[int, str]],
        on_event: Callable[[DiscoveryEvent], None],
        config: DiscoveryConfig | None = None,
        *,
        families: Iterable[int] = (4, 6),
        opener: Opener | None = None,
    ) -> None:
        self.config = config or DiscoveryConfig()
        self._on_event = on_event
        self._families = tuple(sorted({normalize_family(f) for f in families}))
        self._opener = opener or _open_default
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[tuple[int, int], _Link] = {}
        for ifindex, name in interfaces:
            self._add(ifindex, name)

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open every link's capture socket and start listening; never raises for a link."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        for link in list(self._links.values()):
            self._open(link)

    async def stop(self) -> None:
        """Close every socket and cancel every timer; snapshots then say "discovery stopped"."""
        for link in self._links.values():
            self._close(link)
            link.unavailable = link.unavailable or "discovery stopped"
        self._loop = None

    # --- interfaces ------------------------------------------------------------

    def set_interfaces(self, interfaces: Iterable[tuple[int, str]]) -> None:
        """Watch exactly ``interfaces`` from now on: new ones start, vanished ones stop."""
        wanted = dict(interfaces)
        for key, link in list(self._links.items()):
            if wanted.get(link.ifindex) != link.name:
                self._close(link)
                del self._links[key]
        for ifindex, name in wanted.items():
            for link in self._add(ifindex, name):
                if self._loop is not None:
                    self._open(link)

    def links(self) -> list[tuple[int, int]]:
        """The watched ``(ifindex, family)`` pairs."""
        return sorted(self._links)

    def snapshot(self, ifindex: int, family: int) -> tuple[Verdict, Evidence]:
        """The verdict and evidence of one link now (``family`` 4/6 or AF_INET/AF_INET6)."""
        key = (ifindex, normalize_family(family))
        link = self._links.get(key)
        if link is None:
            raise UnknownInterfaceError(
                f"discovery does not watch interface {ifindex} in IPv{key[1]}"
            )
        if link.core is None:
            reason = link.unavailable or "discovery not started"
            return Verdict.UNKNOWN, Evidence(
                ifindex, key[1], None, (), (), (), 0.0, settled=False, unavailable=reason
            )
        evidence = link.core.evidence
        if link.unavailable is not None:
            return Verdict.UNKNOWN, dataclasses.replace(evidence, unavailable=link.unavailable)
        return link.core.verdict, evidence

    # --- internals ---------------------------------------------------------------

    def _add(self, ifindex: int, name: str) -> list[_Link]:
        added = []
        for family in self._families:
            if (ifindex, family) not in self._links:
                link = _Link(ifindex, name, family)
                self._links[(ifindex, family)] = link
                added.append(link)
        return added

    def _open(self, link: _Link) -> None:
        loop = self._loop
        assert loop is not None
        link.core = LinkDiscovery(link.ifindex, link.family, self.config, now=loop.time())
        link.unavailable = None
        try:
            link.sock = self._opener(link.name, link.ifindex, link.family, self.config)
        except OSError as exc:
            # CaptureError carries an explanation; anything else (a custom
            # opener's error) is shown as the OSError it is.
            explained = exc.strerror if isinstance(exc, CaptureError) else None
            self._fail(link, explained or str(exc))
            return
        link.fd = link.sock.fileno()
        loop.add_reader(link.fd, self._readable, link)
        self._rearm(link)
        logger.debug("discovery on %s (IPv%d) started", link.name, link.family)

    def _fail(self, link: _Link, reason: str) -> None:
        """Stop a link and say why; its verdict becomes UNKNOWN."""
        old = Verdict.UNKNOWN if link.core is None else link.core.verdict
        self._close(link)
        link.unavailable = reason
        logger.warning(
            "discovery on %s (IPv%d) unavailable, verdict unknown: %s",
            link.name,
            link.family,
            reason,
        )
        if old is not Verdict.UNKNOWN:
            _, evidence = self.snapshot(link.ifindex, link.family)
            self._deliver(VerdictChanged(link.ifindex, link.family, old, Verdict.UNKNOWN, evidence))

    def _close(self, link: _Link) -> None:
        if link.timer is not None:
            link.timer.cancel()
        link.timer = link.timer_at = None
        if link.sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(link.fd)
            link.sock.close()
            link.sock = None
            link.fd = -1

    def _readable(self, link: _Link) -> None:
        sock, core, loop = link.sock, link.core, self._loop
        if sock is None or core is None or loop is None:
            return
        # One byte more than the limit: a read that fills it was oversized.
        size = self.config.max_packet_size + 1
        for _ in range(_READ_BUDGET):
            try:
                data = sock.recv(size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENETDOWN and _exists(link.ifindex):
                    # One-shot notice that the interface went down; the
                    # socket resumes by itself when it comes back up.
                    logger.info("%s (IPv%d): interface down", link.name, link.family)
                    continue
                if exc.errno == errno.ENETDOWN:
                    # Unregistered: the socket will never hear anything again.
                    self._fail(link, f"interface {link.name} (index {link.ifindex}) vanished")
                    return
                self._fail(link, f"reading {link.name} failed: {exc.strerror or exc}")
                return
            core.receive_packet(data, loop.time())
        self._drain(link)
        self._rearm(link)

    def _fire(self, link: _Link, when: float) -> None:
        link.timer = link.timer_at = None
        if link.core is None or self._loop is None:
            return
        # asyncio may run a timer up to one clock tick early; the core must
        # see a time at or after the deadline it asked for.
        link.core.handle_timer(max(self._loop.time(), when))
        self._drain(link)
        self._rearm(link)

    def _rearm(self, link: _Link) -> None:
        if link.core is None or self._loop is None:
            return
        when = link.core.get_timer()
        if when == link.timer_at and link.timer is not None:
            return
        if link.timer is not None:
            link.timer.cancel()
        link.timer_at = when
        link.timer = None if when is None else self._loop.call_at(when, self._fire, link, when)

    def _drain(self, link: _Link) -> None:
        core = link.core
        while core is not None and (event := core.next_event()) is not None:
            self._deliver(event)

    def _deliver(self, event: DiscoveryEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            # A broken consumer must not stop discovery for every link.
            logger.exception("discovery event handler failed on %r", event)
