"""Topologies from TOML files (``hamcast testbed up FILE``); docs/testbed.md has the format.

::

    prefix = "hct"                      # optional

    [lans.lan1]
    v4 = "10.1.0.0/24"
    v6 = "fd00:1::/64"
    multicast = true                    # optional (default true)
    querier = false                     # optional (default false)

    [hosts.h1]
    lans = ["lan1"]                     # or lans = "lan1"

    [routers.r1]
    kind = "pimd"                       # or "smcroute", or "unicast" (no multicast)
    lans = ["lan1", "lan2"]
    rp = "10.1.0.254"                   # optional, pimd only

    [[routers.r1.routes]]               # static routes: smcroute, or IPv6 beside pimd
    group = "ff0e::/16"
    from = "lan1"
    to = ["lan2"]                       # optional (default: every other LAN)
    source = "fd00:1::1"                # optional: an (S,G) route

Tables are read in file order, which fixes the numbering of addresses. Every
mistake is a :class:`~hamcast.testbed.errors.TopologyError` naming the file
and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hamcast.testbed.errors import TopologyError
from hamcast.testbed.topology import DEFAULT_PREFIX, StaticRoute, Topology, route

__all__ = ["load_topology", "topology_from_dict"]

_TOP_KEYS = {"prefix", "lans", "hosts", "routers"}
_LAN_KEYS = {"v4", "v6", "multicast", "querier"}
_HOST_KEYS = {"lans"}
_ROUTER_KEYS = {"kind", "lans", "rp", "routes", "igmp_query_interval"}
_ROUTE_KEYS = {"group", "from", "to", "source"}


class _Reader:
    """Typed access to one TOML table, with errors that name the file and the key."""

    def __init__(self, source: str, where: str, table: object, allowed: set[str]) -> None:
        self.source = source
        self.where = where
        if not isinstance(table, Mapping):
            raise self.error(f"{where} must be a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.error(
                f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
            )
        self.table: Mapping[str, Any] = table

    def error(self, message: str) -> TopologyError:
        return TopologyError(f"{self.source}: {message}")

    def _get(self, key: str, kind: type | tuple[type, ...], what: str, default: Any) -> Any:
        value = self.table.get(key, default)
        # bool is an int in Python; TOML keeps them apart, so do we.
        if value is default or (
            isinstance(value, kind) and not (isinstance(value, bool) and kind is int)
        ):
            return value
        raise self.error(f"{self.where}.{key} must be {what}, not {value!r}")

    def text(self, key: str, default: str | None = None) -> str | None:
        value: str | None = self._get(key, str, "a string", default)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value: bool = self._get(key, bool, "true or false", default)
        return value

    def integer(self, key: str) -> int | None:
        value: int | None = self._get(key, int, "an integer", None)
        return value

    def names(self, key: str, *, required: bool) -> list[str]:
        value = self.table.get(key)
        if value is None:
            if required:
                raise self.error(f"{self.where} needs {key} = [...]")
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        raise self.error(f"{self.where}.{key} must be a name or a list of names, not {value!r}")


def _located(source: str, where: str, exc: TopologyError) -> TopologyError:
    return TopologyError(f"{source}: {where}: {exc}")


def topology_from_dict(data: Mapping[str, Any], source: str = "<topology>") -> Topology:
    """The topology a parsed TOML document describes; ``source`` names it in errors."""
    top = _Reader(source, "the file", data, _TOP_KEYS)
    prefix = top.text("prefix", DEFAULT_PREFIX)
    assert prefix is not None
    try:
        topology = Topology(prefix=prefix)
    except TopologyError as exc:
        raise _located(source, "prefix", exc) from None

    lans = top.table.get("lans", {})
    _Reader(source, "lans", lans, set(lans) if isinstance(lans, Mapping) else set())
    if not lans:
        raise top.error("a topology needs at least one [lans.NAME] table")
    for name, table in lans.items():
        where = f"lans.{name}"
        lan = _Reader(source, where, table, _LAN_KEYS)
        try:
            topology.lan(
                name,
                v4=lan.text("v4"),
                v6=lan.text("v6"),
                multicast=lan.flag("multicast", True),
                querier=lan.flag("querier", False),
            )
        except TopologyError as exc:
            raise _located(source, where, exc) from None

    hosts = top.table.get("hosts", {})
    _Reader(source, "hosts", hosts, set(hosts) if isinstance(hosts, Mapping) else set())
    for name, table in hosts.items():
        where = f"hosts.{name}"
        host = _Reader(source, where, table, _HOST_KEYS)
        try:
            topology.host(name, host.names("lans", required=True))
        except TopologyError as exc:
            raise _located(source, where, exc) from None

    routers = top.table.get("routers", {})
    _Reader(source, "routers", routers, set(routers) if isinstance(routers, Mapping) else set())
    for name, table in routers.items():
        where = f"routers.{name}"
        router = _Reader(source, where, table, _ROUTER_KEYS)
        try:
            topology.router(
                name,
                router.names("lans", required=True),
                kind=router.text("kind", "pimd") or "pimd",
                rp=router.text("rp"),
                routes=_routes(source, where, router.table.get("routes", [])),
                igmp_query_interval=router.integer("igmp_query_interval"),
            )
        except TopologyError as exc:
            if exc.args and str(exc.args[0]).startswith(f"{source}:"):
                raise
            raise _located(source, where, exc) from None
    return topology


def _routes(source: str, where: str, items: object) -> list[StaticRoute]:
    if not isinstance(items, list):
        raise TopologyError(f"{source}: {where}.routes must be an array of tables ([[...routes]])")
    found = []
    for index, table in enumerate(items):
        here = f"{where}.routes[{index}]"
        entry = _Reader(source, here, table, _ROUTE_KEYS)
        group = entry.text("group")
        origin = entry.text("from")
        if group is None or origin is None:
            raise entry.error(f'{here} needs group = "..." and from = "LAN"')
        try:
            found.append(
                route(group, origin, entry.names("to", required=False), entry.text("source"))
            )
        except TopologyError as exc:
            raise _located(source, here, exc) from None
    return found


def load_topology(path: str | Path) -> Topology:
    """The topology described by the TOML file ``path``."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise TopologyError(f"{source}: no such file") from None
    except OSError as exc:
        raise TopologyError(f"{source}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{source}: not valid TOML: {exc}") from None
    return topology_from_dict(data, source)
