"""The multicast routing daemons a test-bed router runs: pimd and smcroute.

Each daemon is a small :class:`RouterDaemon`: the configuration file it is
given (generated here, pure), the command that runs it in the foreground, and
what its log says when it has started and when it is ready. The network runs
and watches them (:mod:`hamcast.testbed.network`).

* **pimd** 2.3.2 (Debian 12): PIM-SM for IPv4. Interfaces are named by address
  in ``phyint`` (pimd lower-cases interface names). It loads a static
  ``rp-address`` only about 20 s after it starts (a fixed delay in that
  version, fixed upstream in 2017), so any-source multicast needs that long;
  source-specific multicast works at once. Its readiness is read from the
  RP-set table that ``--debug=rp`` prints every 5 s.
* **smcroute** 2.5.6: static (S,G) and (*,G) routes, IPv4 and IPv6, no
  warm-up. Beside pimd (which holds the IPv4 multicast routing socket) it
  serves IPv6 from its own multicast routing table, selected by an
  ``ip -6 mrule``. Debian declares it in conflict with pimd, so
  scripts/install-system-packages unpacks it into ``.cache/debs/smcroute``.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import ClassVar

from hamcast.testbed.errors import MissingToolError, NoMulticastRoutingError
from hamcast.testbed.netns import find_program
from hamcast.testbed.plan import NodePlan
from hamcast.testbed.topology import StaticRoute

__all__ = [
    "SMCROUTE_V6_TABLE",
    "DaemonFiles",
    "Pimd",
    "RouterDaemon",
    "SmcRoute",
    "check_kernel",
    "daemons_for",
    "multicast_routing_missing",
    "smcroute_dirs",
]

#: The IPv6 multicast routing table of an smcroute running beside pimd.
SMCROUTE_V6_TABLE = 100
_SMCROUTE_HINT = (
    "run scripts/install-system-packages as root: it unpacks smcroute into .cache/debs/smcroute"
    " (set HAMCAST_SMCROUTE_DIR to use another unpacked copy)"
)


# The kernel lists its multicast routing interfaces here, in every network
# namespace, exactly when it was built with multicast routing: a look, with no
# side effect (an MRT_INIT probe would switch routing on where it succeeds).
_MROUTE_PROC: dict[int, tuple[Path, str]] = {
    4: (Path("/proc/net/ip_mr_vif"), "CONFIG_IP_MROUTE"),
    6: (Path("/proc/net/ip6_mr_vif"), "CONFIG_IPV6_MROUTE"),
}


def multicast_routing_missing(families: Iterable[int] = (4, 6)) -> str | None:
    """What this kernel lacks to route multicast of ``families``; ``None`` if nothing."""
    missing = [
        f"IPv{family} ({_MROUTE_PROC[family][1]} is not set)"
        for family in sorted(set(families))
        if not _MROUTE_PROC[family][0].exists()
    ]
    if not missing:
        return None
    return "this kernel has no multicast routing for " + " or ".join(missing)


@dataclass(frozen=True)
class DaemonFiles:
    """Where one daemon's configuration, log and control files live (the run's folder)."""

    config: Path
    log: Path
    socket: Path
    pidfile: Path

    @classmethod
    def in_folder(cls, folder: Path, node: str, daemon: str) -> DaemonFiles:
        stem = folder / f"{node}-{daemon}"
        return cls(
            config=stem.with_suffix(".conf"),
            log=stem.with_suffix(".log"),
            socket=stem.with_suffix(".sock"),
            pidfile=stem.with_suffix(".pid"),
        )


class RouterDaemon(ABC):
    """One routing daemon of one router node.

    Subclasses say what to write (:meth:`config`), what to run (:meth:`argv`),
    which ``ip`` commands prepare the namespace (:meth:`setup_commands`), and
    how to read the log: :meth:`started` (it serves; the network waits for it
    before :meth:`~hamcast.testbed.topology.Topology.up` returns),
    :meth:`ready` (it routes everything it will ever route), :meth:`failure`
    (a fatal complaint, although the process may live on).
    """

    #: The daemon's name in file names, logs and ``hamcast testbed status``.
    name: ClassVar[str]
    #: The address families whose multicast routing it asks of the kernel.
    families: frozenset[int] = frozenset({4, 6})

    def __init__(self, node: NodePlan, files: DaemonFiles) -> None:
        self.node = node
        self.files = files

    @abstractmethod
    def config(self) -> str:
        """The configuration file's text."""

    @abstractmethod
    def argv(self) -> list[str]:
        """The command that runs the daemon in the foreground, logging to stdout/stderr."""

    def setup_commands(self) -> list[list[str]]:
        """``ip`` commands to run in the router's namespace before the daemon starts."""
        return []

    def check_argv(self) -> list[str] | None:
        """A command that checks the configuration (exit 0 when good), if the daemon has one."""
        return None

    @abstractmethod
    def started(self, log: str) -> bool:
        """Whether ``log`` shows the daemon serving."""

    def ready(self, log: str) -> bool:
        """Whether ``log`` shows the daemon fully ready; by default, once started."""
        return self.started(log)

    def failure(self, log: str) -> str | None:
        """A fatal complaint in ``log``, if any."""
        del log
        return None


class Pimd(RouterDaemon):
    """pimd: PIM-SM for IPv4 with a static rendezvous point."""

    name = "pimd"
    families = frozenset({4})

    def __init__(self, node: NodePlan, files: DaemonFiles, rp: IPv4Address) -> None:
        super().__init__(node, files)
        self.rp = rp
        # Only interfaces that can do IPv4 multicast become PIM interfaces.
        self.ports = [p for p in node.ports if p.multicast and p.v4 is not None]

    def config(self) -> str:
        lines = [f"# pimd.conf of test-bed router {self.node.name}, generated by hamcast.testbed"]
        lines += [f"phyint {port.v4.ip} enable" for port in self.ports if port.v4 is not None]
        lines.append(f"rp-address {self.rp} 224.0.0.0/4")
        # Stay on the shared tree: the path of ASM traffic is then the same
        # every time, whatever the data rate.
        lines.append("spt-threshold infinity")
        router = self.node.router
        if router is not None and router.igmp_query_interval is not None:
            lines.append(f"igmp-query-interval {router.igmp_query_interval}")
        return "\n".join(lines) + "\n"

    def argv(self) -> list[str]:
        program = find_program("pimd")
        if program is None:
            raise MissingToolError(
                "pimd is not installed; run scripts/install-system-packages as root"
                " (or apt-get install pimd)"
            )
        # -N: no interface unless the config enables it. --debug=rp prints the
        # RP set every 5 s: the only sign pimd 2.3.2 gives of ASM readiness.
        return [program, "-f", "-N", "-c", str(self.files.config), "--debug=rp", "-s", "info"]

    def started(self, log: str) -> bool:
        return all(f"Interface {p.ifname} comes up" in log for p in self.ports)

    def ready(self, log: str) -> bool:
        # A row of the RP-set table: "10.1.0.254   2   224/4   1   65535".
        row = re.compile(rf"^{re.escape(str(self.rp))}\s+\d+\s+\d", re.MULTILINE)
        return self.started(log) and row.search(log) is not None


def smcroute_dirs() -> list[Path]:
    """Folders that may hold an unpacked smcroute's ``smcrouted``, best first."""
    found: list[Path] = []
    configured = os.environ.get("HAMCAST_SMCROUTE_DIR")
    if configured:
        found.append(Path(configured) / "usr" / "sbin")
    # The repository's .cache/debs/smcroute, found from this file (editable
    # installs) or from the working directory (a test run in the repository).
    for start in (Path(__file__).resolve().parent, Path.cwd()):
        for folder in (start, *start.parents):
            candidate = folder / ".cache" / "debs" / "smcroute" / "usr" / "sbin"
            if candidate.is_dir() and candidate not in found:
                found.append(candidate)
                break
    return found


class SmcRoute(RouterDaemon):
    """smcroute: static multicast routes; beside pimd, IPv6 only, in its own table."""

    name = "smcroute"

    def __init__(
        self,
        node: NodePlan,
        files: DaemonFiles,
        routes: tuple[StaticRoute, ...],
        *,
        table: int | None = None,
    ) -> None:
        super().__init__(node, files)
        self.routes = routes
        self.table = table
        self.ports = [p for p in node.ports if p.multicast]
        if table is not None:  # beside pimd: IPv6 only
            self.families = frozenset({6})

    def _program(self, name: str) -> str:
        program = find_program(name, smcroute_dirs())
        if program is None:
            raise MissingToolError(f"{name} (smcroute) is not installed; {_SMCROUTE_HINT}")
        return program

    def config(self) -> str:
        lines = [
            f"# smcroute.conf of test-bed router {self.node.name}, generated by hamcast.testbed"
        ]
        # Every phyint before any route that names it (smcroute.conf(5)).
        lines += [f"phyint {port.ifname} enable" for port in self.ports]
        for static in self.routes:
            inbound = self.node.port(static.from_lan).ifname
            targets = static.to_lans or tuple(
                p.lan for p in self.ports if p.lan != static.from_lan and p.address(static.family)
            )
            outbound = " ".join(self.node.port(lan).ifname for lan in targets)
            group = static.group
            text = (
                str(group.network_address) if group.prefixlen == group.max_prefixlen else str(group)
            )
            source = f" source {static.source}" if static.source is not None else ""
            lines.append(f"mroute from {inbound}{source} group {text} to {outbound}")
        return "\n".join(lines) + "\n"

    def setup_commands(self) -> list[list[str]]:
        if self.table is None:
            return []
        # Send all IPv6 multicast routing to smcroute's table; IPv4 stays in
        # the main table, which pimd holds.
        return [["-6", "mrule", "add", "pref", str(self.table), "lookup", str(self.table)]]

    def _options(self) -> list[str]:
        options = ["-N", "-f", str(self.files.config), "-i", self.files.config.stem]
        options += ["-u", str(self.files.socket), "-P", str(self.files.pidfile)]
        if self.table is not None:
            options += ["-t", str(self.table)]
        return options

    def argv(self) -> list[str]:
        # -n: foreground, log to stderr; -c 0: never flush learnt (*,G) routes,
        # which would drop a packet or two of a running stream every minute.
        return [self._program("smcrouted"), "-n", "-c", "0", "-l", "info", *self._options()]

    def check_argv(self) -> list[str] | None:
        return [self._program("smcrouted"), "-F", str(self.files.config), "-l", "info"]

    def started(self, log: str) -> bool:
        return "Ready, waiting for client request" in log

    def failure(self, log: str) -> str | None:
        for line in log.splitlines():
            # smcrouted keeps running after a bad line; a route silently
            # missing would be far harder to diagnose than a failed start.
            if "Parse error" in line or ("skipping" in line and " line " in line):
                return line.strip()
        return None


def daemons_for(node: NodePlan, folder: Path) -> list[RouterDaemon]:
    """The daemons router ``node`` runs, with their files in ``folder``."""
    router = node.router
    if router is None or router.kind == "unicast":
        return []
    if router.kind == "smcroute":
        return [SmcRoute(node, DaemonFiles.in_folder(folder, node.name, "smcroute"), router.routes)]
    assert router.rp is not None  # filled in by the plan
    daemons: list[RouterDaemon] = [
        Pimd(node, DaemonFiles.in_folder(folder, node.name, "pimd"), router.rp)
    ]
    if router.routes:  # IPv6 only: the topology refuses static IPv4 routes on pimd routers
        files = DaemonFiles.in_folder(folder, node.name, "smcroute")
        daemons.append(SmcRoute(node, files, router.routes, table=SMCROUTE_V6_TABLE))
    return daemons


def check_kernel(nodes: Iterable[NodePlan]) -> None:
    """Raise :class:`NoMulticastRoutingError` if a router daemon of ``nodes`` cannot run here."""
    for node in nodes:
        for daemon in daemons_for(node, Path(os.devnull)):
            missing = multicast_routing_missing(daemon.families)
            if missing is not None:
                raise NoMulticastRoutingError(
                    f"router {node.name} runs {daemon.name}, and {missing}: no multicast"
                    " router can run on this machine. Use kind='unicast' routers here"
                    " (unicast forwarding only), or a kernel with multicast routing"
                )
