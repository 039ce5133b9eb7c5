"""The inspecting commands: ``map``, ``info``, ``interfaces``, ``groups`` and the RFC 7046
service calls (``neighbors``, ``children``, ``parents``, ``designated``); and the
network test-bed's ``testbed up|down|status``.

Each takes the parsed arguments and an :class:`~hamcast.cli.render.Output` and
returns the exit code; errors are raised as :class:`~hamcast.errors.HamcastError`
and turned into exit codes by :func:`hamcast.cli.main.main`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.table import Table
from rich.text import Text

from hamcast.cli.connect import open_socket, socket_path
from hamcast.cli.render import Output, group_info_json, interface_json, mapping_json
from hamcast.client.sync import MulticastSocket
from hamcast.errors import UnknownInterfaceError, UsageError
from hamcast.mapping import map_group
from hamcast.model import Interface
from hamcast.uri import URI

__all__ = [
    "children_command",
    "designated_command",
    "groups_command",
    "info_command",
    "interfaces_command",
    "map_command",
    "neighbors_command",
    "parents_command",
    "testbed_down_command",
    "testbed_status_command",
    "testbed_up_command",
]


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def map_command(args: argparse.Namespace, out: Output) -> int:
    """Parse a URI and show every address it maps to; needs no middleware."""
    uri = URI.parse(args.uri)
    mapping = map_group(uri)
    if out.json_mode:
        out.json_document(mapping_json(uri, mapping))
        return 0
    table = Table(title=str(uri), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("name", uri.name),
        ("namespace", uri.namespace),
        ("group", uri.group + ("  (wildcard: every group)" if uri.is_wildcard else "")),
        ("instantiation", _dash(uri.instantiation)),
        ("port", _dash(uri.port)),
        ("credentials", _dash(uri.credentials)),
        ("overlay key", f"{mapping.overlay_key:032x}"),
        ("IPv4 group", str(mapping.ipv4)),
        ("IPv6 group", str(mapping.ipv6)),
        ("UDP port", str(mapping.port) + ("" if uri.port is not None else "  (from the hash)")),
        ("SSM source", _dash(mapping.source)),
    ]
    for field, value in rows:
        table.add_row(field, Text(value))
    out.table(table)
    return 0


def info_command(args: argparse.Namespace, out: Output) -> int:
    """Which middleware answers, its version and technology modules."""
    with open_socket(args, out, "info") as sock:
        version, technologies = sock.daemon_info()
        mode = sock.mode
    path = socket_path(args) if mode == "daemon" else None
    if out.json_mode:
        out.json_document(
            {"mode": mode, "socket": path, "version": version, "technologies": technologies}
        )
        return 0
    table = Table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("middleware", Text("daemon" if mode == "daemon" else "embedded (no daemon)"))
    table.add_row("socket", Text(_dash(path)))
    table.add_row("version", Text(version))
    table.add_row("technologies", Text(", ".join(technologies)))
    out.table(table)
    return 0


def interfaces_command(args: argparse.Namespace, out: Output) -> int:
    """The middleware's interfaces."""
    with open_socket(args, out, "interfaces") as sock:
        interfaces = sock.interfaces()
        statuses = {i.index: sock.interface_status(i) for i in interfaces}
    if out.json_mode:
        out.json_document([interface_json(i, statuses[i.index]) for i in interfaces])
        return 0
    table = Table(title="interfaces", title_justify="left")
    for column in ("index", "name", "address", "technology", "multicast", "hamcast peers"):
        table.add_column(column, justify="right" if column == "index" else "left")
    for iface in interfaces:
        status = statuses[iface.index]
        verdict = status.get("discovery", {}).get("verdict", "-")
        peers = ", ".join(p["address"] for p in status.get("peers", [])) or "-"
        table.add_row(
            str(iface.index),
            Text(iface.name),
            Text(iface.address),
            iface.technology,
            verdict,
            Text(peers),
        )
    out.table(table)
    return 0


def groups_command(args: argparse.Namespace, out: Output) -> int:
    """The host's group table: every active group, its technology and local members."""
    with open_socket(args, out, "groups") as sock:
        groups = sock.groups()
    if out.json_mode:
        out.json_document([group_info_json(g) for g in groups])
        return 0
    if not groups:
        out.line("no active groups")
        return 0
    table = Table(title="groups", title_justify="left")
    table.add_column("group")
    table.add_column("technology")
    for column in ("interface", "listeners", "senders"):
        table.add_column(column, justify="right")
    table.add_column("messages in/out", justify="right")
    table.add_column("why")
    for info in groups:
        table.add_row(
            Text(str(info.group)),
            info.technology + (" (gateway)" if info.gateway else ""),
            str(info.interface),
            str(info.listeners),
            str(info.senders),
            f"{info.messages_in}/{info.messages_out}",
            Text(info.reason),
        )
    out.table(table)
    return 0


# --- the per-interface service calls --------------------------------------------------


def _selected(sock: MulticastSocket, index: int | None) -> list[Interface]:
    """Every interface, or only ``--interface``'s (which must exist)."""
    interfaces = sock.interfaces()
    if index is None:
        return interfaces
    for iface in interfaces:
        if iface.index == index:
            return [iface]
    raise UnknownInterfaceError(f"no interface with index {index}; `hamcast interfaces` lists them")


def _per_interface(
    args: argparse.Namespace,
    out: Output,
    *,
    command: str,
    call: Callable[[MulticastSocket, Interface], Any],
    describe: Callable[[Any], str],
    uri: URI | None = None,
) -> int:
    """Ask ``call`` on each selected interface; one row (or JSON object) per interface.

    The answer goes under the key ``command`` in JSON and in the table's last column.
    """
    with open_socket(args, out, command) as sock:
        results = [(iface, call(sock, iface)) for iface in _selected(sock, args.interface)]
    if out.json_mode:
        rows = []
        for iface, value in results:
            row: dict[str, Any] = {
                "interface": iface.index,
                "name": iface.name,
                "technology": iface.technology,
            }
            if uri is not None:
                row["group"] = str(uri)
            row[command] = value
            rows.append(row)
        out.json_document(rows)
        return 0
    table = Table(title=command if uri is None else f"{command} of {uri}", title_justify="left")
    table.add_column("interface", justify="right")
    table.add_column("technology")
    table.add_column(command)
    for iface, value in results:
        table.add_row(f"{iface.index} ({iface.name})", iface.technology, Text(describe(value)))
    out.table(table)
    return 0


def _addresses(value: list[str]) -> str:
    return "\n".join(value) if value else "none"


def neighbors_command(args: argparse.Namespace, out: Output) -> int:
    """The RFC 7046 neighborSet call: multicast neighbours on each interface."""
    return _per_interface(
        args,
        out,
        command="neighbors",
        call=lambda sock, iface: sock.neighbor_set(iface),
        describe=_addresses,
    )


def children_command(args: argparse.Namespace, out: Output) -> int:
    """The RFC 7046 childrenSet call: nodes below this host in the group's tree."""
    uri = URI.parse(args.uri)
    return _per_interface(
        args,
        out,
        command="children",
        call=lambda sock, iface: sock.children_set(iface, uri),
        describe=_addresses,
        uri=uri,
    )


def parents_command(args: argparse.Namespace, out: Output) -> int:
    """The RFC 7046 parentSet call: nodes above this host in the group's tree."""
    uri = URI.parse(args.uri)
    return _per_interface(
        args,
        out,
        command="parents",
        call=lambda sock, iface: sock.parent_set(iface, uri),
        describe=_addresses,
        uri=uri,
    )


def designated_command(args: argparse.Namespace, out: Output) -> int:
    """The RFC 7046 designatedHost call: is this host the group's forwarder here?"""
    uri = URI.parse(args.uri)
    return _per_interface(
        args,
        out,
        command="designated",
        call=lambda sock, iface: sock.designated_host(iface, uri),
        describe=lambda value: "yes" if value else "no",
        uri=uri,
    )


# --- the network test-bed (docs/testbed.md) ------------------------------------------
# hamcast.testbed is imported inside these functions: it is for root on a test
# machine, and the client commands should not pay for loading it.


def _testbed_table(description: dict[str, Any]) -> Table:
    run = description["run"]
    table = Table(title=f"test-bed {run}: namespaces {run}-NAME", title_justify="left")
    for column in ("node", "role", "interface", "LAN", "IPv4", "IPv6"):
        table.add_column(column)
    for name, node in description["nodes"].items():
        role = node["role"] if node["role"] == "host" else node["kind"]
        for index, iface in enumerate(node["interfaces"]):
            lan = iface["lan"] + ("" if iface["multicast"] else " (no multicast)")
            table.add_row(
                name if index == 0 else "",
                role if index == 0 else "",
                iface["name"],
                lan,
                _dash(iface["v4"]),
                _dash(iface["v6"]),
            )
    return table


def testbed_up_command(args: argparse.Namespace, out: Output) -> int:
    """Build a test-bed from a TOML file, show it, and keep it until a signal ends it."""
    import signal

    from hamcast.testbed import load_topology

    topology = load_topology(args.file)
    try:
        with topology.up() as net:
            if args.wait_ready:
                out.status("waiting for the routers to be ready ...")
                waited = net.wait_ready(args.ready_timeout)
                out.status(f"routers ready after {waited:.1f} s")
            description = net.describe()
            if out.json_mode:
                out.json_document(description)
            else:
                out.table(_testbed_table(description))
                for name, node in description["nodes"].items():
                    for daemon in node.get("daemons", []):
                        out.line(
                            f"{name}: {daemon['name']} pid {daemon['pid']}, log {daemon['log']}"
                        )
            out.status(f"test-bed {net.base} is up; Ctrl-C or SIGTERM tears it down")
            while True:
                signal.pause()
    except KeyboardInterrupt:
        # Ctrl-C, SIGTERM and SIGHUP (hamcast.testbed.Terminated) are how this
        # command is meant to end; the with block has torn everything down.
        out.status("test-bed torn down")
        return 0


def _down_report(out: Output, report: Any) -> None:
    if out.json_mode:
        out.json_document(report.to_json())
        return
    if not report.runs and not report.live:
        out.line("nothing to remove")
    for run in report.runs:
        out.line(f"removed {run}")
    if report.namespaces:
        out.line(f"namespaces deleted: {', '.join(report.namespaces)}")
    if report.processes:
        out.line(f"processes stopped: {', '.join(map(str, report.processes))}")
    for link in report.links:
        out.line(f"link deleted: {link}")
    for folder in report.folders:
        out.line(f"folder removed: {folder}")
    for run in report.live:
        out.note(f"left {run} alone: its process still runs (--force removes it anyway)")


def testbed_down_command(args: argparse.Namespace, out: Output) -> int:
    """Remove the given test-bed runs, or with --all everything left by dead runs."""
    from hamcast.testbed import DEFAULT_PREFIX, down, down_all
    from hamcast.testbed.netns import require_root

    if not args.all and not args.runs:
        raise UsageError("say which runs to remove, or --all (see `hamcast testbed status`)")
    if args.all and args.runs:
        raise UsageError("give run names or --all, not both")
    require_root()
    if args.all:
        report = down_all(args.prefix or [DEFAULT_PREFIX], force=args.force)
    else:
        try:
            report = down(args.runs, force=args.force)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    _down_report(out, report)
    return 0


def testbed_status_command(args: argparse.Namespace, out: Output) -> int:
    """List recorded test-bed runs and unrecorded leftovers."""
    from hamcast.testbed import DEFAULT_PREFIX, status

    runs = status(args.prefix or [DEFAULT_PREFIX])
    if out.json_mode:
        out.json_document([run.to_json() for run in runs])
        return 0
    if not runs:
        out.line("no test-bed runs")
        return 0
    table = Table(title="test-bed runs", title_justify="left")
    for column in ("run", "state", "owner", "namespaces", "processes"):
        table.add_column(column)
    for run in runs:
        if run.owner_pid is None:
            state = "leftover (no record)"
        else:
            state = "live" if run.live else "dead (down --all removes it)"
        processes = ", ".join(f"{p['role']}@{p['node']}:{p['pid']}" for p in run.processes)
        table.add_row(
            run.base,
            state,
            _dash(run.owner_pid),
            str(len(run.namespaces)),
            Text(processes or "-"),
        )
    out.table(table)
    return 0
