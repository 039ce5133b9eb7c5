"""The gateway: bridges each group it is designated for between its native domain and the overlay.

A daemon with a native interface (one whose technology reports a
:class:`~hamcast.technologies.base.DomainView`, i.e. ``ip``) and the overlay is
a gateway candidate. For every group named in its domain's announcements, the
candidates agree on one designated gateway (highest random weight over the
candidates' ids, :meth:`DomainView.winner`). The designated gateway, per
(native interface, group):

* joins the group on the overlay when applications in the domain *listen* to
  it natively, and sends what the overlay delivers into the domain natively;
* joins the group natively when applications in the domain *send* to it
  natively, and multicasts what they send into the overlay tree.

Every other gateway in the domain bridges nothing for that group, so each
message crosses between the two once: receivers on either side get it exactly
once. The gateway's own copies coming back (native loopback, Scribe's delivery
to a member that sends) are dropped by an :class:`EchoFilter`. Memberships of
the gateway itself are left out of the domain announcements (its session is
*internal*), so bridging never keeps itself alive.

The gateway is a client of the core like an application — an internal
session with one socket per native interface and one on the overlay — and,
like the core, does no I/O: :meth:`refresh` runs whenever the core hears that
conditions changed (a domain announcement, a candidate expired, a binding
moved), and messages arrive through :meth:`deliver`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hamcast.errors import HamcastError, InvalidURIError
from hamcast.events import Event
from hamcast.gateway.echo import EchoFilter
from hamcast.uri import URI

if TYPE_CHECKING:
    from hamcast.core.middleware import Middleware, Session

__all__ = ["Bridge", "Gateway"]

logger = logging.getLogger(__name__)

_NATIVE, _OVERLAY = "native", "overlay"
#: Parsed group names kept (names come from peers: bounded).
_MAX_NAMES = 4096


@dataclass(frozen=True, slots=True)
class Bridge:
    """One group this gateway bridges on one native interface."""

    #: The native interface's index.
    native: int
    group: URI
    #: Overlay → native: applications in the domain listen to the group.
    to_native: bool
    #: Native → overlay: applications in the domain send to the group.
    to_overlay: bool


class Gateway:
    """The designated-gateway logic on top of a :class:`~hamcast.core.middleware.Middleware`.

    Contract: construct with the core and the overlay technology's name; call
    :meth:`refresh` after the core started and whenever conditions change;
    :meth:`close` before the core stops. It is the sink of its own internal
    session.
    """

    def __init__(self, core: Middleware, overlay: str, *, ttl: int, echo_entries: int) -> None:
        self._core = core
        self._overlay_name = overlay
        self._ttl = ttl
        self.echoes = EchoFilter(echo_entries)
        self._session: Session | None = None
        self._native_socks: dict[int, int] = {}
        self._overlay_sock: int | None = None
        self._bridges: dict[tuple[int, URI], Bridge] = {}
        #: The same bridges by group, for the data path (rebuilt when bridges change).
        self._by_group: dict[URI, tuple[Bridge, ...]] = {}
        self._uris: dict[str, URI | None] = {}
        #: Messages carried each way.
        self.to_native = 0
        self.to_overlay = 0
        self.failed = 0

    # --- the core's side ----------------------------------------------------------

    def refresh(self) -> None:
        """Bridge exactly the groups this daemon is now the designated gateway of."""
        overlay = self._overlay_index()
        wanted: dict[tuple[int, URI], Bridge] = {}
        if overlay is not None:
            for index, view in self._core.domains().items():
                if view.me not in view.gateways:
                    continue
                for name in view.listening | view.sending:
                    group = self._uri(name)
                    if group is None or not view.designated(name):
                        continue
                    wanted[(index, group)] = Bridge(
                        index, group, name in view.listening, name in view.sending
                    )
        for key, old in list(self._bridges.items()):
            new = wanted.get(key)
            if new != old:
                self._unbridge(old)
        for key, new in wanted.items():
            if self._bridges.get(key) != new:
                self._bridge(new, overlay)
        by_group: dict[URI, list[Bridge]] = {}
        for bridge in self._bridges.values():
            by_group.setdefault(bridge.group, []).append(bridge)
        self._by_group = {group: tuple(bridges) for group, bridges in by_group.items()}

    def bridges(self) -> list[Bridge]:
        return sorted(self._bridges.values(), key=lambda b: (b.group.name, b.native))

    def status(self) -> dict[str, Any]:
        """JSON-ready: what is bridged, and counters."""
        return {
            "bridges": [
                {
                    "group": b.group.name,
                    "interface": b.native,
                    "to_native": b.to_native,
                    "to_overlay": b.to_overlay,
                }
                for b in self.bridges()
            ],
            "to_native": self.to_native,
            "to_overlay": self.to_overlay,
            "echoes_dropped": self.echoes.dropped,
            "failed": self.failed,
        }

    def close(self) -> None:
        if self._session is not None:
            self._core.close_session(self._session)
        self._session = None
        self._native_socks.clear()
        self._overlay_sock = None
        self._bridges.clear()
        self._by_group.clear()

    # --- SessionSink: messages for the gateway's sockets ---------------------------

    def deliver(
        self, sock: int, group: URI, source: str, iface: int, payload: bytes | memoryview
    ) -> bool:
        if self._session is None:
            return True
        name = group.name
        if sock == self._overlay_sock:
            if self.echoes.echo(_OVERLAY, name, payload):
                return True
            for bridge in self._by_group.get(group, ()):
                if bridge.to_native:
                    self._send(self._native_socks[bridge.native], group, payload, _NATIVE, bridge)
            return True
        for bridge in self._by_group.get(group, ()):
            if self._native_socks.get(bridge.native) == sock:
                if self.echoes.echo(_NATIVE, name, payload):
                    return True
                if bridge.to_overlay and self._overlay_sock is not None:
                    self._send(self._overlay_sock, group, payload, _OVERLAY, bridge)
                return True
        return True

    def event(self, sock: int, event: Event) -> None:
        """The gateway's sockets have events off; nothing to do."""

    # --- internals ------------------------------------------------------------------

    def _send(
        self,
        sock: int,
        group: URI,
        payload: bytes | memoryview,
        side: str,
        bridge: Bridge,
    ) -> None:
        # Our copy comes back only where our own socket listens on that side.
        if (side == _OVERLAY and bridge.to_native) or (side == _NATIVE and bridge.to_overlay):
            self.echoes.sent(side, group.name, payload)
        assert self._session is not None
        try:
            self._core.send(self._session, sock, group, payload)
        except HamcastError as exc:
            self.failed += 1
            logger.debug("gateway: forwarding %s to the %s side failed: %s", group, side, exc)
            return
        if side == _OVERLAY:
            self.to_overlay += 1
        else:
            self.to_native += 1

    def _overlay_index(self) -> int | None:
        for iface in self._core.interfaces():
            if iface.technology == self._overlay_name:
                return iface.index
        return None

    def _uri(self, name: str) -> URI | None:
        if name not in self._uris:
            if len(self._uris) >= _MAX_NAMES:
                self._uris.clear()
            try:
                self._uris[name] = URI.parse(name)
            except InvalidURIError:
                self._uris[name] = None  # a peer announced garbage: never bridged
        return self._uris[name]

    def _own_session(self) -> Session:
        if self._session is None:
            self._session = self._core.open_session(self, name="gateway", internal=True)
        return self._session

    def _native_sock(self, session: Session, index: int) -> int:
        sock = self._native_socks.get(index)
        if sock is None:
            sock = self._native_socks[index] = self._core.create_socket(session, [index])
            self._core.set_ttl(session, sock, self._ttl)
        return sock

    def _bridge(self, bridge: Bridge, overlay: int | None) -> None:
        if overlay is None:
            return
        session = self._own_session()
        if self._overlay_sock is None:
            self._overlay_sock = self._core.create_socket(session, [overlay])
        native = self._native_sock(session, bridge.native)
        try:
            if bridge.to_native:
                self._core.join(session, self._overlay_sock, bridge.group)
            if bridge.to_overlay:
                self._core.join(session, native, bridge.group)
        except HamcastError as exc:
            logger.warning("gateway: cannot bridge %s: %s", bridge.group, exc)
            self._bridges[(bridge.native, bridge.group)] = bridge
            self._unbridge(bridge)
            return
        self._bridges[(bridge.native, bridge.group)] = bridge
        logger.info(
            "gateway: bridging %s on interface %d (to native: %s, to overlay: %s)",
            bridge.group,
            bridge.native,
            bridge.to_native,
            bridge.to_overlay,
        )

    def _unbridge(self, bridge: Bridge) -> None:
        self._bridges.pop((bridge.native, bridge.group), None)
        session = self._session
        if session is None:
            return
        still_to_native = any(
            b.to_native for (_, g), b in self._bridges.items() if g == bridge.group
        )
        socks = []
        if self._overlay_sock is not None and not still_to_native:
            socks.append(self._overlay_sock)
        if bridge.native in self._native_socks:
            socks.append(self._native_socks[bridge.native])
        for sock in socks:
            with contextlib.suppress(HamcastError):  # not joined on that side
                self._core.leave(session, sock, bridge.group)
        logger.info("gateway: no longer bridging %s on interface %d", bridge.group, bridge.native)
