"""Merge daemons' snapshots into one graph per group (the collector's core; no I/O).

Input: one :class:`Source` per monitoring endpoint (its last snapshot, or
None and an error). Output: for every group any daemon knows, a graph whose
elements are ready for cytoscape.js (``{"data": {...}}``)::

    {"group": "ham:opaque:news",
     "nodes": [{"data": {"id": "host:9f0c…", "kind": "host", "label": "h1", ...}}, ...],
     "edges": [{"data": {"id": "...", "source": ..., "target": ..., "kind": "overlay"}}, ...]}

Node kinds:

``host``
    a daemon that answered (or answered before: ``stale``). Data: ``label``,
    ``technologies`` (of its entries for this group), ``role``
    (listener/sender/both/forwarder), ``root`` (overlay rendezvous),
    ``designated`` (designated host on a native link), ``gateway``,
    ``reachable``, ``source`` (the endpoint URL).
``link``
    a native multicast link: the ``ip`` interfaces that hear each other's
    hamcast announcements (peers), joined transitively; ``verdict`` is the
    discovery verdict of its members (the best one heard).
``router``
    a multicast router (PIM neighbour) on a link, from discovery.
``peer``
    a member of the group that no monitored daemon is: an overlay node
    named in a parent/children set, or a plain host that reported the group
    with IGMP/MLD on a link.

Edge kinds (every edge carries ``technology``):

``overlay``
    Scribe parent → child, directed down the tree.
``native``
    host ↔ link for a group served by ``ip`` there (directed host → link for
    a sender only, link → host for a listener only), router → link.
``gateway``
    host ↔ link where the host bridges the group between that link and
    another technology: the core says it is the gateway (``gateway`` in its
    snapshot's group entries, ``false`` meaning it is not), or — where the
    core does not report the role (``null``) — the host has the group on
    ``ip`` and on ``overlay`` at once, which the core allows a gateway only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

__all__ = ["Source", "daemon_summaries", "group_names", "merge"]

_VERDICT_RANK = {"routed": 3, "link-local": 2, "link_local": 2, "none": 1, "unknown": 0}


@dataclass(slots=True)
class Source:
    """One monitoring endpoint as the collector last saw it."""

    url: str
    snapshot: dict[str, Any] | None = None
    #: Why the last poll failed; None when it succeeded.
    error: str | None = None
    #: Whether the last poll succeeded (a failed one keeps the older snapshot, stale).
    reachable: bool = False


def _host_id(snapshot: dict[str, Any]) -> str:
    return "host:" + str(snapshot.get("host", {}).get("instance", "?"))


def _address_key(text: str) -> tuple[int, int, str]:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return (9, 0, text)
    return (address.version, int(address), text)


def _unique_sources(sources: list[Source]) -> list[Source]:
    """One source per daemon instance (a daemon found under two URLs counts once)."""
    best: dict[str, Source] = {}
    for source in sources:
        if source.snapshot is None:
            continue
        key = _host_id(source.snapshot)
        old = best.get(key)
        if old is None or (source.reachable, source.snapshot.get("time", 0)) > (
            old.reachable,
            old.snapshot.get("time", 0) if old.snapshot else 0,
        ):
            best[key] = source
    return sorted(best.values(), key=lambda s: _host_id(s.snapshot or {}))


class _Links:
    """Native links: union-find over the addresses of ip interfaces and their peers."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self.verdict: dict[str, str] = {}
        self.routers: dict[str, set[str]] = {}

    def find(self, address: str) -> str:
        self._parent.setdefault(address, address)
        root = address
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[address] != root:
            self._parent[address], address = root, self._parent[address]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = sorted((ra, rb), key=_address_key)
            self._parent[high] = low

    def link_id(self, address: str) -> str:
        return "link:" + self.find(address)

    def members(self, link: str) -> list[str]:
        root = link.removeprefix("link:")
        return sorted((a for a in self._parent if self.find(a) == root), key=_address_key)


def _index(sources: list[Source]) -> tuple[dict[str, str], dict[str, str], _Links]:
    """Overlay node names → host id, ip addresses → host id, and the native links."""
    overlay_nodes: dict[str, str] = {}
    ip_hosts: dict[str, str] = {}
    links = _Links()
    for source in sources:
        snap = source.snapshot or {}
        host = _host_id(snap)
        for iface in snap.get("interfaces", []):
            status = iface.get("status") or {}
            if iface.get("technology") == "overlay":
                for name in (status.get("node"), iface.get("address")):
                    if name:
                        overlay_nodes[str(name)] = host
            elif iface.get("technology") == "ip":
                address = str(status.get("address") or iface.get("address") or "")
                if not address:
                    continue
                ip_hosts[address] = host
                links.find(address)
                for peer in status.get("peers", []):
                    if peer.get("address"):
                        links.union(address, str(peer["address"]))
    # Verdicts and routers are facts of the link, gathered once the links are known.
    for source in sources:
        for iface in (source.snapshot or {}).get("interfaces", []):
            status = iface.get("status") or {}
            address = str(status.get("address") or iface.get("address") or "")
            if iface.get("technology") != "ip" or not address:
                continue
            link = links.link_id(address)
            discovery = status.get("discovery") or {}
            verdict = str(discovery.get("verdict") or "unknown")
            old = links.verdict.get(link, "unknown")
            if _VERDICT_RANK.get(verdict, 0) >= _VERDICT_RANK.get(old, 0):
                links.verdict[link] = verdict
            evidence = discovery.get("evidence") or {}
            routers = links.routers.setdefault(link, set())
            for neighbour in evidence.get("neighbours") or []:
                if neighbour.get("address"):
                    routers.add(str(neighbour["address"]))
    return overlay_nodes, ip_hosts, links


def group_names(sources: list[Source]) -> list[str]:
    """Every group any daemon has an entry for, sorted."""
    names: set[str] = set()
    for source in sources:
        snap = source.snapshot or {}
        for entry in snap.get("groups", []):
            names.add(str(entry.get("group")))
        for iface in snap.get("interfaces", []):
            names.update((iface.get("status") or {}).get("groups", {}) or {})
    return sorted(names)


class _Builder:
    def __init__(self, group: str) -> None:
        self.group = group
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[str, dict[str, Any]] = {}

    def node(self, node_id: str, **data: Any) -> dict[str, Any]:
        found = self.nodes.get(node_id)
        if found is None:
            found = self.nodes[node_id] = {"id": node_id, **data}
        return found

    def edge(self, source: str, target: str, kind: str, technology: str, **data: Any) -> None:
        edge_id = f"{kind}:{source}->{target}"
        if edge_id not in self.edges:
            self.edges[edge_id] = {
                "id": edge_id,
                "source": source,
                "target": target,
                "kind": kind,
                "technology": technology,
                **data,
            }

    def result(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "nodes": [{"data": self.nodes[k]} for k in sorted(self.nodes)],
            "edges": [{"data": self.edges[k]} for k in sorted(self.edges)],
        }


def _host_node(b: _Builder, source: Source, snap: dict[str, Any]) -> dict[str, Any]:
    host = snap.get("host", {})
    return b.node(
        _host_id(snap),
        kind="host",
        label=str(host.get("name", "?")),
        source=source.url,
        reachable=source.reachable,
        stale=not source.reachable,
        technologies=[],
        role="none",
        root=False,
        designated=False,
        gateway=False,
        listeners=0,
        senders=0,
    )


def _merge_role(old: str, new: str) -> str:
    order = ["none", "forwarder", "gateway", "listener", "sender", "both"]
    if {old, new} == {"listener", "sender"}:
        return "both"
    return max(old, new, key=order.index)


def _overlay_entry_links(
    b: _Builder, host_id: str, entry: dict[str, Any], overlay_nodes: dict[str, str]
) -> None:
    def resolve(name: str) -> str:
        found = overlay_nodes.get(name)
        if found is not None:
            return found
        peer = "peer:" + name
        b.node(peer, kind="peer", label=name, technology="overlay")
        return peer

    for parent in entry.get("parents") or []:
        b.edge(resolve(str(parent)), host_id, "overlay", "overlay")
    for child in entry.get("children") or []:
        b.edge(host_id, resolve(str(child)), "overlay", "overlay")


def merge(sources: list[Source]) -> dict[str, dict[str, Any]]:
    """One graph per group, keyed by group name (see the module docstring)."""
    unique = _unique_sources(sources)
    overlay_nodes, ip_hosts, links = _index(unique)
    graphs: dict[str, dict[str, Any]] = {}
    for group in group_names(unique):
        b = _Builder(group)
        native: list[tuple[str, str, str]] = []  # (host id, link id, role)
        for source in unique:
            snap = source.snapshot or {}
            entries = [e for e in snap.get("groups", []) if e.get("group") == group]
            by_index = {i.get("index"): i for i in snap.get("interfaces", [])}
            # An overlay tree through this host that the group table does not list.
            for iface in snap.get("interfaces", []):
                tree = ((iface.get("status") or {}).get("groups") or {}).get(group)
                if tree is None or any(e.get("interface") == iface.get("index") for e in entries):
                    continue
                entries.append(
                    {
                        "group": group,
                        "interface": iface.get("index"),
                        "technology": iface.get("technology"),
                        "role": "listener" if tree.get("member") else "forwarder",
                        "parents": [tree["parent"]] if tree.get("parent") else [],
                        "children": list(tree.get("children") or []),
                        "designated": bool(tree.get("root")),
                        "gateway": None,
                    }
                )
            if not entries:
                continue
            node = _host_node(b, source, snap)
            host_id = node["id"]
            techs = sorted({str(e.get("technology")) for e in entries})
            node["technologies"] = techs
            if any(e.get("gateway") is not None for e in entries):
                # The core reports the role: believe it.
                node["gateway"] = any(e.get("gateway") for e in entries)
                node["gateway_inferred"] = False
            else:
                node["gateway"] = {"ip", "overlay"} <= set(techs)
                node["gateway_inferred"] = node["gateway"]
            for entry in entries:
                tech = str(entry.get("technology"))
                role = str(entry.get("role") or "none")
                node["role"] = _merge_role(node["role"], role)
                node["listeners"] += int(entry.get("listeners") or 0)
                node["senders"] += int(entry.get("senders") or 0)
                if tech == "overlay":
                    node["root"] = node["root"] or bool(entry.get("designated"))
                    _overlay_entry_links(b, host_id, entry, overlay_nodes)
                elif tech == "ip":
                    iface = by_index.get(entry.get("interface")) or {}
                    status = iface.get("status") or {}
                    address = str(status.get("address") or iface.get("address") or "")
                    if not address:
                        continue
                    node["designated"] = node["designated"] or bool(entry.get("designated"))
                    link = links.link_id(address)
                    native.append((host_id, link, role))
                    for child in entry.get("children") or []:
                        reporter = str(child)
                        if reporter in ip_hosts or reporter in ("0.0.0.0", "::"):
                            continue
                        peer = "peer:" + reporter
                        b.node(peer, kind="peer", label=reporter, technology="ip")
                        native.append((peer, link, "listener"))
        for host_id, link, role in native:
            members = links.members(link)
            b.node(
                link,
                kind="link",
                label=f"link {members[0]}" if members else link,
                verdict=links.verdict.get(link, "unknown"),
                addresses=members,
            )
            host = b.nodes[host_id]
            kind = "gateway" if host.get("gateway") else "native"
            if role == "sender":
                b.edge(host_id, link, kind, "ip")
            elif role in ("listener", "forwarder"):
                b.edge(link, host_id, kind, "ip")
            else:
                b.edge(host_id, link, kind, "ip", both=True)
            for router in sorted(links.routers.get(link, ()), key=_address_key):
                router_id = "router:" + router
                b.node(router_id, kind="router", label=f"router {router}")
                b.edge(router_id, link, "native", "ip")
        graphs[group] = b.result()
    return graphs


def daemon_summaries(sources: list[Source]) -> list[dict[str, Any]]:
    """Every endpoint the collector polls, with what a node's details panel shows."""
    rows = []
    for source in sorted(sources, key=lambda s: s.url):
        snap = source.snapshot
        row: dict[str, Any] = {
            "url": source.url,
            "reachable": source.reachable,
            "error": source.error,
            "id": _host_id(snap) if snap else None,
        }
        if snap is not None:
            row.update(
                name=snap.get("host", {}).get("name"),
                host=snap.get("host"),
                time=snap.get("time"),
                counters=snap.get("counters"),
                interfaces=[
                    {
                        "index": i.get("index"),
                        "name": i.get("name"),
                        "address": i.get("address"),
                        "technology": i.get("technology"),
                        "verdict": ((i.get("status") or {}).get("discovery") or {}).get("verdict"),
                        "peers": len((i.get("status") or {}).get("peers") or []),
                        "leaf_set": len((i.get("status") or {}).get("leaf_set") or []),
                        "neighbors": i.get("neighbors"),
                    }
                    for i in snap.get("interfaces", [])
                ],
                groups=snap.get("groups"),
                missing=snap.get("missing"),
            )
        rows.append(row)
    return rows
