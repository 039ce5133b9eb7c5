"""What one daemon tells the monitor: the snapshot document and how it is built.

A snapshot is one JSON object (``SCHEMA``), everything a dashboard needs about
one host at one moment::

    {
      "schema": "hamcast.monitor.snapshot/1",
      "time": 1764038400.25,            # Unix seconds when it was taken
      "host": {
        "instance": "9f0c…",            # random per daemon run (hex); tells daemons apart
        "name": "h1",                    # [monitor] name, else the host name
        "pid": 4242, "version": "0.1.0",
        "technologies": ["ip", "overlay"],
        "uptime_s": 12.5
      },
      "interfaces": [{
        "index": 1, "name": "eth0", "address": "10.1.0.1", "technology": "ip",
        "status": {...},                 # Middleware.interface_status(index), verbatim
        "neighbors": ["10.1.0.254"],     # neighbor_set(index)
        "group_set": [{"group": "ham:…", "role": "listener"}]   # group_set(index)
      }],
      "groups": [{
        "group": "ham:opaque:news",      # canonical name, no credentials
        "interface": 3, "technology": "overlay",
        "listeners": 1, "senders": 0,    # this host's sockets on it
        "role": "listener",              # listener | sender | both | forwarder | gateway
        "selected": true,                # the core bound a socket's group here
        "reason": "ip: multicast router 10.62.0.254 on eth0",   # why selection chose it
        "parents": ["1a2b3c4d@10.9.0.2:7047"], "children": [],
        "designated": false,
        "gateway": false,                # or {"role": "bridging", "to_native": …, "to_overlay": …}
        "counters": {"messages_in": 10, "messages_out": 0,
                     "bytes_in": 1400, "bytes_out": 0, "drops": 0}
      }],
      "counters": {                      # host totals over the applications' sockets
        "sockets": 2, "messages_in": 10, "messages_out": 3, "drops": 0,
        "send_failures": 0, "bytes_in": 1400, "bytes_out": 42
      },
      "gateway": {"candidate": true, "bridges": [...], ...},   # Middleware.gateway_status()
      "missing": []                      # names of values a daemon could not report (null)
    }

``listeners`` and ``senders`` count the applications' sockets; a group the
gateway alone holds on an interface has the role ``gateway``. :func:`core_view`
builds the core's part from the middleware's public calls; a service call that
fails shows as empty, not as an error.

Everything here is plain data and plain calls: no I/O, no clock reads (the
caller passes ``now``), so it is tested with an in-memory middleware.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from hamcast.model import GroupRole
from hamcast.uri import URI

__all__ = [
    "COUNTER_NAMES",
    "SCHEMA",
    "HostInfo",
    "core_view",
    "empty_counters",
    "take_snapshot",
]

logger = logging.getLogger(__name__)

SCHEMA = "hamcast.monitor.snapshot/1"

#: Per-group (and per-technology, since a group entry is on one interface) counters.
COUNTER_NAMES = ("messages_in", "messages_out", "bytes_in", "bytes_out", "drops")


class HostInfo(Protocol):
    """Who the daemon is; filled by the endpoint, not by the core."""

    instance: str
    name: str
    pid: int
    version: str
    started: float


def empty_counters() -> dict[str, int | None]:
    """Counters nobody reported: every value ``None``."""
    return dict.fromkeys(COUNTER_NAMES)


def _role(role: GroupRole) -> str:
    if GroupRole.LISTENER in role and GroupRole.SENDER in role:
        return "both"
    if GroupRole.SENDER in role:
        return "sender"
    if GroupRole.LISTENER in role:
        return "listener"
    return "none"


def _safe(what: str, call: Any, default: Any) -> Any:
    """One service call; a technology's failure shows as ``default``, not as a 500."""
    try:
        return call()
    except Exception:
        logger.exception("monitor: %s failed", what)
        return default


def core_view(middleware: Any) -> dict[str, Any]:
    """The core part of a snapshot: interfaces, groups with counters, host totals, gateway.

    Built from the :class:`~hamcast.core.middleware.Middleware`'s public calls:
    ``groups()`` (application listeners and senders, the binding's reason,
    whether the gateway bridges the group, traffic counters), ``counters()``,
    ``gateway_status()`` and the RFC 7046 service calls.
    """
    interfaces = [_interface(middleware, info) for info in middleware.interfaces()]
    gateway: dict[str, Any] = _safe("gateway_status", middleware.gateway_status, {})
    bridges = {
        (b.get("group"), b.get("interface")): b
        for b in gateway.get("bridges", [])
        if isinstance(b, dict)
    }
    groups: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for row in middleware.groups():
        role = GroupRole(0)
        if row.listeners:
            role |= GroupRole.LISTENER
        if row.senders:
            role |= GroupRole.SENDER
        entry = _group(middleware, row.group, row.interface, row.technology)
        bridge = bridges.get((entry["group"], row.interface))
        entry.update(
            listeners=row.listeners,
            senders=row.senders,
            role=_role(role) if role else ("gateway" if row.gateway else "none"),
            selected=bool(row.listeners or row.senders),
            reason=row.reason or None,
            gateway=(
                {
                    "role": "bridging",
                    "to_native": bridge.get("to_native") if bridge else None,
                    "to_overlay": bridge.get("to_overlay") if bridge else None,
                }
                if row.gateway
                else False
            ),
            counters={name: getattr(row, name) for name in COUNTER_NAMES},
        )
        groups.append(entry)
        seen.add((row.interface, row.group.name))
    # Trees passing through this host without a local member (overlay forwarders).
    for iface in interfaces:
        for entry in iface["group_set"]:
            key = (iface["index"], entry["group"])
            if key in seen or iface["technology"] != "overlay":
                continue
            seen.add(key)
            try:
                uri = URI.parse(entry["group"])
            except Exception:
                continue
            forwarder = _group(middleware, uri, iface["index"], iface["technology"])
            forwarder["role"] = "forwarder"
            groups.append(forwarder)
    groups.sort(key=lambda g: (g["group"], g["interface"]))
    return {
        "interfaces": interfaces,
        "groups": groups,
        "counters": middleware.counters(),
        "gateway": gateway,
        "missing": [],
    }


def _interface(middleware: Any, info: Any) -> dict[str, Any]:
    index = info.index
    return {
        "index": index,
        "name": info.name,
        "address": info.address,
        "technology": info.technology,
        "status": _safe("interface_status", lambda: middleware.interface_status(index), {}),
        "neighbors": _safe("neighbor_set", lambda: middleware.neighbor_set(index), []),
        "group_set": [
            {"group": str(entry.group), "role": _role(entry.role)}
            for entry in _safe("group_set", lambda: middleware.group_set(index), [])
        ],
    }


def _group(middleware: Any, group: URI, index: int, technology: str) -> dict[str, Any]:
    plain = group.without_credentials()
    return {
        "group": plain.name,
        "interface": index,
        "technology": technology,
        "listeners": 0,
        "senders": 0,
        "role": "none",
        "selected": False,
        "reason": None,
        "parents": _safe("parent_set", lambda: middleware.parent_set(index, plain), []),
        "children": _safe("children_set", lambda: middleware.children_set(index, plain), []),
        "designated": _safe(
            "designated_host", lambda: middleware.designated_host(index, plain), False
        ),
        "gateway": None,
        "counters": empty_counters(),
    }


def take_snapshot(middleware: Any, host: HostInfo, now: float) -> dict[str, Any]:
    """The whole snapshot document of the daemon at ``now`` (Unix seconds)."""
    core = core_view(middleware)
    return {
        "schema": SCHEMA,
        "time": now,
        "host": {
            "instance": host.instance,
            "name": host.name,
            "pid": host.pid,
            "version": host.version,
            "technologies": [t.name for t in middleware.technologies],
            "uptime_s": round(max(0.0, now - host.started), 3),
        },
        **core,
    }
