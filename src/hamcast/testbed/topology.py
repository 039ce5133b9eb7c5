"""What a test-bed consists of: LANs, hosts and routers, declared in Python or TOML.

A :class:`Topology` only describes; nothing touches the system until
:meth:`Topology.up` (or :meth:`Topology.start`) builds it. Every declaration is
checked when it is made, so a mistake is reported at the line that made it,
with a message that says what is wrong::

    topo = Topology()
    lan1 = topo.lan("lan1", v4="10.1.0.0/24", v6="fd00:1::/64")
    lan2 = topo.lan("lan2", v4="10.2.0.0/24", v6="fd00:2::/64")
    topo.host("h1", lan1)
    topo.host("h2", lan2)
    topo.router("r1", [lan1, lan2], kind="pimd")
    with topo.up() as net:
        net.run("h1", ["ip", "addr"])

Addresses are drawn from each LAN's prefixes: hosts count up from ``.1`` in the
order they were declared, routers count down from ``.254`` (the top of the
prefix); see :mod:`hamcast.testbed.plan`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import TYPE_CHECKING, Literal, get_args

from hamcast.testbed.errors import TopologyError

if TYPE_CHECKING:
    from hamcast.testbed.network import Network
    from hamcast.testbed.plan import Plan

__all__ = [
    "ALLOWED_V4",
    "ALLOWED_V6",
    "DEFAULT_PREFIX",
    "Host",
    "Lan",
    "Router",
    "RouterKind",
    "StaticRoute",
    "Topology",
    "route",
]

#: The prefix of every name a test-bed creates unless told otherwise. Other
#: tools on these machines use ``hcd-`` and ``hci-``; never reuse those.
DEFAULT_PREFIX = "hct"

#: Address ranges a topology may use. Traffic to them never leaves the test-bed's
#: namespaces, and refusing every other range means a typo cannot aim test
#: traffic at a real network (docs/testbed.md, "Safety").
ALLOWED_V4: tuple[IPv4Network, ...] = (IPv4Network("10.0.0.0/8"), IPv4Network("198.18.0.0/15"))
ALLOWED_V6: tuple[IPv6Network, ...] = (IPv6Network("fd00::/8"),)

RouterKind = Literal["pimd", "smcroute", "unicast"]
ROUTER_KINDS: tuple[str, ...] = get_args(RouterKind)

# Node and LAN names become parts of namespace names and bridge port names
# (IFNAMSIZ: 15 characters), so they are short and plain.
_NAME = re.compile(r"[a-z][a-z0-9]{0,9}")
_PREFIX = re.compile(r"[a-z][a-z0-9]{1,5}")
# A LAN's namespace holds the bridge "br0" and "lo"; a port named so would clash.
_RESERVED = frozenset({"lo", "br0"})


def check_prefix(prefix: str) -> str:
    """``prefix`` if it may start test-bed names, else :class:`TopologyError`."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise TopologyError(
            f"prefix {prefix!r} must be 2 to 6 lower-case letters or digits, starting with a letter"
        )
    return prefix


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TopologyError(
            f"{what} name {name!r} must be 1 to 10 lower-case letters or digits,"
            " starting with a letter"
        )
    if name in _RESERVED:
        raise TopologyError(f"{what} name {name!r} is reserved; choose another")
    return name


@dataclass(frozen=True)
class Lan:
    """One Ethernet segment: a bridge in a namespace of its own.

    ``multicast=False`` makes it a "no multicast island": its hosts' interfaces
    have multicast switched off and the bridge floods no multicast to any port,
    while unicast (IPv4 and IPv6) keeps working. ``querier=True`` makes the
    bridge itself send IGMPv3/MLDv2 general queries (from the address after the
    routers'), as a snooping switch with a querier does.
    """

    name: str
    v4: IPv4Network | None = None
    v6: IPv6Network | None = None
    multicast: bool = True
    querier: bool = False


@dataclass(frozen=True)
class Host:
    """A host: a namespace with one interface (``eth0``, ``eth1``, ...) per LAN, in order."""

    name: str
    lans: tuple[str, ...]


@dataclass(frozen=True)
class StaticRoute:
    """A static multicast route of an smcroute router.

    Traffic to ``group`` (one group, or a prefix of groups) arriving on the
    router's interface on ``from_lan`` — only from ``source`` when given (an
    (S,G) route), else from any source ((*,G)) — is forwarded to the
    interfaces on ``to_lans`` (empty: every other multicast LAN of the router).
    """

    group: IPv4Network | IPv6Network
    from_lan: str
    to_lans: tuple[str, ...] = ()
    source: IPv4Address | IPv6Address | None = None

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.group.version


def route(
    group: str,
    from_lan: str | Lan,
    to: Sequence[str | Lan] = (),
    source: str | None = None,
) -> StaticRoute:
    """A :class:`StaticRoute` from text: ``route("ff0e::/16", lan1, [lan2])``."""
    try:
        network = ip_network(group)
    except ValueError as exc:
        raise TopologyError(f"route group {group!r} is not an address or prefix: {exc}") from None
    if not network.is_multicast:
        raise TopologyError(f"route group {group!r} is not a multicast address or prefix")
    origin: IPv4Address | IPv6Address | None = None
    if source is not None:
        try:
            origin = ip_address(source)
        except ValueError:
            raise TopologyError(f"route source {source!r} is not an IP address") from None
        if origin.version != network.version:
            raise TopologyError(f"route source {source} and group {group} differ in family")
    return StaticRoute(
        group=network,
        from_lan=_lan_name(from_lan),
        to_lans=tuple(_lan_name(lan) for lan in to),
        source=origin,
    )


@dataclass(frozen=True)
class Router:
    """A multicast router: a namespace that forwards between its LANs.

    ``kind="pimd"`` runs pimd (PIM-SM, IPv4) with ``rp`` as the rendezvous
    point for 224.0.0.0/4 (default: the first address of the first pimd
    router, so all pimd routers agree) and SSM in 232.0.0.0/8; IPv6 ``routes``
    are served by an smcroute beside it. ``kind="smcroute"`` runs smcroute
    with the static ``routes`` of both families. ``kind="unicast"`` runs no
    multicast routing at all: multicast stays on each LAN (the only router a
    kernel without multicast routing can have). Every kind forwards unicast
    between all its LANs (static routes, computed).
    ``igmp_query_interval`` (seconds, pimd only) overrides pimd's default of 12.
    """

    name: str
    lans: tuple[str, ...]
    kind: RouterKind = "pimd"
    rp: IPv4Address | None = None
    routes: tuple[StaticRoute, ...] = ()
    igmp_query_interval: int | None = None


def _lan_name(lan: str | Lan) -> str:
    return lan.name if isinstance(lan, Lan) else lan


def _parse_network(
    text: str | IPv4Network | IPv6Network | None, version: int, lan: str
) -> IPv4Network | IPv6Network | None:
    if text is None:
        return None
    try:
        network = ip_network(text)  # strict: host bits must be zero
    except ValueError as exc:
        raise TopologyError(f"LAN {lan}: {text!r} is not an IPv{version} prefix: {exc}") from None
    if network.version != version:
        raise TopologyError(f"LAN {lan}: {text!r} is not an IPv{version} prefix")
    allowed: tuple[IPv4Network | IPv6Network, ...] = ALLOWED_V4 if version == 4 else ALLOWED_V6
    if not any(network.subnet_of(space) for space in allowed):  # type: ignore[arg-type]
        spaces = ", ".join(str(space) for space in allowed)
        raise TopologyError(
            f"LAN {lan}: {network} is outside the test-bed's address ranges ({spaces})"
        )
    # Hosts count up from 1 and routers down from the top: leave room for both.
    if network.num_addresses < 4:
        raise TopologyError(f"LAN {lan}: {network} is too small (a /30 or /126 at least)")
    return network


class Topology:
    """A declarative test-bed: LANs, hosts and routers, built by :meth:`up`.

    ``prefix`` starts every name the test-bed creates (namespaces
    ``PREFIX-RUNID-NAME``, its temporary folder, its state file), so
    ``hamcast testbed down --all`` can find what a crashed run left behind.
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = check_prefix(prefix)
        self._lans: dict[str, Lan] = {}
        self._hosts: dict[str, Host] = {}
        self._routers: dict[str, Router] = {}

    # --- declaring ---------------------------------------------------------------

    def lan(
        self,
        name: str,
        v4: str | IPv4Network | None = None,
        v6: str | IPv6Network | None = None,
        *,
        multicast: bool = True,
        querier: bool = False,
    ) -> Lan:
        """Declare a LAN with an IPv4 and/or an IPv6 prefix; returns it for :meth:`host`."""
        self._check_new(name, "LAN")
        net4 = _parse_network(v4, 4, name)
        net6 = _parse_network(v6, 6, name)
        if net4 is None and net6 is None:
            raise TopologyError(f"LAN {name} needs an IPv4 prefix (v4=), an IPv6 one (v6=) or both")
        for other in self._lans.values():
            for mine, theirs in ((net4, other.v4), (net6, other.v6)):
                if mine is not None and theirs is not None and mine.overlaps(theirs):
                    raise TopologyError(f"LAN {name}: {mine} overlaps {theirs} of LAN {other.name}")
        if querier and not multicast:
            raise TopologyError(f"LAN {name}: a LAN without multicast cannot have a querier")
        lan = Lan(
            name,
            net4,  # type: ignore[arg-type]
            net6,  # type: ignore[arg-type]
            multicast=bool(multicast),
            querier=bool(querier),
        )
        self._lans[name] = lan
        return lan

    def host(self, name: str, lans: str | Lan | Sequence[str | Lan]) -> Host:
        """Declare a host on one LAN or several (its interfaces follow their order)."""
        self._check_new(name, "host")
        host = Host(name, self._attachments(name, lans))
        self._hosts[name] = host
        return host

    def router(
        self,
        name: str,
        lans: Sequence[str | Lan],
        *,
        kind: str = "pimd",
        rp: str | IPv4Address | None = None,
        routes: Sequence[StaticRoute] = (),
        igmp_query_interval: int | None = None,
    ) -> Router:
        """Declare a router between LANs; see :class:`Router` for the kinds."""
        self._check_new(name, "router")
        attached = self._attachments(name, lans)
        if kind not in ROUTER_KINDS:
            raise TopologyError(
                f"router {name}: kind {kind!r} is not one of {', '.join(ROUTER_KINDS)}"
            )
        rp_address: IPv4Address | None = None
        if rp is not None:
            if kind != "pimd":
                raise TopologyError(f"router {name}: only pimd routers have a rendezvous point")
            try:
                rp_address = IPv4Address(str(rp))
            except ValueError:
                raise TopologyError(f"router {name}: rp {rp!r} is not an IPv4 address") from None
        if igmp_query_interval is not None and (
            kind != "pimd" or not 1 <= igmp_query_interval <= 3600
        ):
            raise TopologyError(
                f"router {name}: igmp_query_interval is for pimd routers, 1 to 3600 seconds"
            )
        for static in routes:
            self._check_route(name, kind, attached, static)
        router = Router(
            name,
            attached,
            kind=kind,  # type: ignore[arg-type]
            rp=rp_address,
            routes=tuple(routes),
            igmp_query_interval=igmp_query_interval,
        )
        self._routers[name] = router
        return router

    def _check_new(self, name: str, what: str) -> None:
        _check_name(name, what)
        if name in self._lans or name in self._hosts or name in self._routers:
            raise TopologyError(f"{what} name {name!r} is already taken in this topology")

    def _attachments(self, node: str, lans: str | Lan | Sequence[str | Lan]) -> tuple[str, ...]:
        items = [lans] if isinstance(lans, str | Lan) else list(lans)
        names = tuple(_lan_name(lan) for lan in items)
        if not names:
            raise TopologyError(f"{node} must be on at least one LAN")
        for lan in names:
            if lan not in self._lans:
                raise TopologyError(f"{node}: no LAN named {lan!r} (declare LANs first)")
        if len(set(names)) != len(names):
            raise TopologyError(f"{node} is on the same LAN twice: {', '.join(names)}")
        return names

    def _check_route(
        self, router: str, kind: str, lans: tuple[str, ...], static: StaticRoute
    ) -> None:
        if not isinstance(static, StaticRoute):
            raise TopologyError(f"router {router}: routes must be StaticRoute (see route())")
        if kind == "unicast":
            raise TopologyError(
                f"router {router}: a unicast router routes no multicast ({static.group});"
                " use kind='smcroute' for static multicast routes"
            )
        if kind == "pimd" and static.family == 4:
            raise TopologyError(
                f"router {router}: pimd routes IPv4 itself; static IPv4 route {static.group}"
                " needs kind='smcroute'"
            )
        for lan in (static.from_lan, *static.to_lans):
            if lan not in lans:
                raise TopologyError(
                    f"router {router}: route {static.group} uses LAN {lan!r},"
                    " which the router is not on"
                )
            family_net = self._lans[lan].v4 if static.family == 4 else self._lans[lan].v6
            if family_net is None:
                raise TopologyError(
                    f"router {router}: route {static.group} is IPv{static.family},"
                    f" but LAN {lan} has no IPv{static.family} prefix"
                )
        if static.from_lan in static.to_lans:
            raise TopologyError(
                f"router {router}: route {static.group} goes back to LAN {static.from_lan}"
            )

    # --- reading ---------------------------------------------------------------------

    @property
    def lans(self) -> tuple[Lan, ...]:
        """The LANs, in declaration order."""
        return tuple(self._lans.values())

    @property
    def hosts(self) -> tuple[Host, ...]:
        """The hosts, in declaration order."""
        return tuple(self._hosts.values())

    @property
    def routers(self) -> tuple[Router, ...]:
        """The routers, in declaration order."""
        return tuple(self._routers.values())

    def default_rp(self) -> IPv4Address | None:
        """The rendezvous point pimd routers use when not told: the first pimd router's
        first IPv4 address."""
        from hamcast.testbed.plan import router_addresses

        for router in self._routers.values():
            if router.kind == "pimd":
                addresses = router_addresses(self, router.name, 4)
                if addresses:
                    return addresses[0]  # type: ignore[return-value]
        return None

    # --- building --------------------------------------------------------------------

    def plan(self, run_id: str) -> Plan:
        """Every name, address and route of this topology for run ``run_id``; no I/O."""
        from hamcast.testbed.plan import make_plan

        return make_plan(self, run_id)

    def start(self, *, keep_workdir: bool = False) -> Network:
        """Build the test-bed and return it; the caller must :meth:`~Network.close` it.

        Prefer :meth:`up`, which also tears down on errors and on SIGTERM.
        """
        from hamcast.testbed.network import Network

        return Network.build(self, keep_workdir=keep_workdir)

    @contextmanager
    def up(self, *, keep_workdir: bool = False) -> Iterator[Network]:
        """Build the test-bed for a ``with`` block; everything is removed when it ends.

        It is removed on normal exit, on an exception (router logs are then
        kept and their folder logged), on Ctrl-C, and on SIGTERM/SIGHUP: while
        the test-bed is up these raise :class:`~hamcast.testbed.network.Terminated`
        (a :class:`KeyboardInterrupt`) in the main thread, unless the program
        installed handlers of its own.
        """
        from hamcast.testbed.network import Network, exit_on_termination

        with exit_on_termination():
            net = Network.build(self, keep_workdir=keep_workdir)
            try:
                yield net
            except KeyboardInterrupt:
                net.close()  # Ctrl-C and SIGTERM are the normal way to stop
                raise
            except BaseException:
                net.close(keep_workdir=True)
                raise
            net.close()
