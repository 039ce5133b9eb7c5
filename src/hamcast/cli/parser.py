"""The command line's grammar: every command, option and help text (docs/cli.md).

The global options (``--socket``, ``--embedded``, ``--daemon-only``,
``--json``, ``--quiet``) may come before or after the command name. They are
declared on the top-level parser and again on each command's parser with
``argparse.SUPPRESS`` defaults: a command's parser then sets only what was
actually given after the command name, without overwriting what was given
before it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from hamcast import __version__
from hamcast.cli import bench, commands, sim, streams
from hamcast.cli import monitor as monitor_cli
from hamcast.cli.daemon import LOG_LEVELS

__all__ = ["build_parser"]

_DESCRIPTION = """\
Transparent hybrid multicast (RFC 7046) from the shell: send to and receive
from ham: groups, inspect the middleware, and run the daemon.
Client commands use the daemon if one answers and an embedded middleware
otherwise; see docs/cli.md."""

_EPILOG = """\
exit codes: 0 success, 1 failure (no daemon, timeout, ...), 2 usage error
(bad option, bad URI, message too long, ...), 130 interrupted."""


def _number(
    kind: Callable[[str], float], what: str, minimum: float, maximum: float = float("inf")
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        # "not minimum <= value <= maximum" also refuses NaN.
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_positive_int = _number(int, "a positive integer", 1)
_size = _number(int, "a size in bytes (0 or more)", 0)
_ttl = _number(int, "a TTL (0 to 255)", 0, 255)
# Bounded because socket timeouts must fit a C timeval; 1e7 s is 115 days.
_seconds = _number(float, "a number of seconds (0 to 1e7)", 0, 1e7)
_rate = _number(float, "a positive number of messages per second", 1e-9)
_node_count = _number(int, "a node count (2 or more)", 2)
_group_count = _number(int, "a group count (0 or more)", 0)
_churn = _number(float, "a churn rate (0 or more)", 0)


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed") from None


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On command parsers, SUPPRESS leaves an option unset unless given there,
    # so the value given before the command name survives.
    default = None if top else argparse.SUPPRESS
    flag_default = False if top else argparse.SUPPRESS
    group = parser.add_argument_group("middleware and output options")
    group.add_argument(
        "--socket",
        metavar="PATH",
        default=default,
        help="the daemon's IPC socket (default: $HAMCAST_SOCKET, else the per-user default)",
    )
    mode = group.add_mutually_exclusive_group()
    mode.add_argument(
        "--embedded",
        dest="embedded",
        action="store_const",
        const=True,
        default=default,
        help="run the middleware inside this command instead of using a daemon",
    )
    mode.add_argument(
        "--daemon-only",
        dest="embedded",
        action="store_const",
        const=False,
        default=default,
        help="require a daemon; fail instead of falling back to an embedded middleware",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=flag_default,
        help="print JSON for programs instead of tables",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=flag_default,
        help="no notes or status lines on standard error, no send summary",
    )


def _command(
    commands_: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Callable[..., int],
    help_text: str,
) -> argparse.ArgumentParser:
    parser = commands_.add_parser(name, help=help_text, description=help_text)
    _add_global_options(parser, top=False)
    parser.set_defaults(run=run)
    return parser


def _interface_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interface",
        metavar="N",
        type=_positive_int,
        help="only the interface with index N (default: every interface)",
    )


def _uri_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="URI", help="a ham: group name, e.g. ham:opaque:news")


def _until_options(parser: argparse.ArgumentParser, noun: str) -> None:
    parser.add_argument(
        "--count", metavar="N", type=_positive_int, help=f"exit 0 after N {noun} (default: never)"
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        help=f"exit 1 if the {noun} have not all arrived SECONDS after the start",
    )


def build_parser(prog: str = "hamcast", daemon_prog: str | None = None) -> argparse.ArgumentParser:
    """The ``hamcast`` argument parser.

    ``command`` is the command's name; every client command also sets ``run``
    to its function, ``run(args, output) -> exit code``.

    ``daemon_prog`` names the daemon command in its usage line (``hamcastd``
    rather than ``hamcast daemon``).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    daemon = sub.add_parser(
        "daemon",
        prog=daemon_prog or f"{prog} daemon",
        help="run the hamcast daemon in the foreground (until SIGTERM or SIGINT)",
        description="Run the hamcast daemon in the foreground until SIGTERM or SIGINT."
        " Settings: defaults, then --config, then the other flags.",
    )
    daemon.add_argument(
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="IPC socket to listen on (default: $HAMCAST_SOCKET, else the config's, else the"
        " per-user default)",
    )
    daemon.add_argument("--config", metavar="FILE", help="a TOML config file (docs/cli.md)")
    daemon.add_argument(
        "--technologies",
        metavar="A,B",
        help="comma-separated technology modules to load (default: the config's, else local)",
    )
    daemon.add_argument(
        "--overlay-listen",
        metavar="ADDR:PORT",
        help="the overlay technology's UDP endpoint (sets [technology.overlay] listen)",
    )
    daemon.add_argument(
        "--overlay-bootstrap",
        metavar="ADDR:PORT",
        action="append",
        help="a node already in the overlay to join through (repeatable)",
    )
    daemon.add_argument(
        "--monitor",
        metavar="ADDR:PORT",
        help="serve the read-only HTTP JSON monitoring endpoint there (PORT alone: loopback;"
        " unix:PATH: a Unix socket; sets [monitor] listen; docs/monitor.md)",
    )
    daemon.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.lower,
        choices=LOG_LEVELS,
        default="info",
        help=f"log to standard error at this level: {', '.join(LOG_LEVELS)} (default: info)",
    )

    send = _command(sub, "send", streams.send_command, "send messages to a group")
    _uri_argument(send)
    send.add_argument(
        "message",
        metavar="MESSAGE",
        nargs="?",
        help="the message text (default: all of standard input, or --size padding)",
    )
    send.add_argument(
        "--count",
        metavar="N",
        type=_positive_int,
        help="send the message N times (with --lines: at most N lines); default 1",
    )
    send.add_argument(
        "--size",
        metavar="BYTES",
        type=_size,
        help="pad each message with '.' to BYTES (without MESSAGE: BYTES of '.')",
    )
    send.add_argument(
        "--rate",
        metavar="PER_SECOND",
        type=_rate,
        help="send at most PER_SECOND messages per second (default: as fast as possible)",
    )
    send.add_argument(
        "--ttl", metavar="N", type=_ttl, help="TTL / hop limit of the messages (0 to 255)"
    )
    send.add_argument(
        "--lines",
        action="store_true",
        help="send each line of standard input as one message (without its line ending)",
    )

    recv = _command(sub, "recv", streams.recv_command, "join a group and print what arrives")
    _uri_argument(recv)
    _until_options(recv, "messages")

    events = _command(
        sub, "events", streams.events_command, "print membership events (join, leave, new source)"
    )
    _until_options(events, "events")

    map_ = _command(
        sub, "map", commands.map_command, "show a URI's parts and the addresses it maps to"
    )
    _uri_argument(map_)

    _command(sub, "info", commands.info_command, "which middleware answers, version, technologies")
    _command(sub, "interfaces", commands.interfaces_command, "list the middleware's interfaces")
    _command(sub, "groups", commands.groups_command, "list active groups and their members")

    neighbors = _command(
        sub, "neighbors", commands.neighbors_command, "multicast neighbours (neighborSet)"
    )
    _interface_option(neighbors)
    for name, run, text in (
        ("children", commands.children_command, "the group's children in its tree (childrenSet)"),
        ("parents", commands.parents_command, "the group's parents in its tree (parentSet)"),
        (
            "designated",
            commands.designated_command,
            "whether this host is the group's designated host (designatedHost)",
        ),
    ):
        parser_ = _command(sub, name, run, text)
        _uri_argument(parser_)
        _interface_option(parser_)
    _add_testbed(sub)
    _add_sim(sub)
    _add_monitor(sub)
    _add_bench(sub)
    return parser


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``hamcast sim``: the overlay simulator against IP multicast (docs/evaluation.md)."""
    sim_ = _command(
        sub,
        "sim",
        sim.sim_command,
        "simulate the overlay (KBR + Scribe) and compare it with IP multicast",
    )
    sim_.add_argument(
        "--nodes", metavar="N", type=_node_count, default=200, help="overlay nodes (default: 200)"
    )
    sim_.add_argument(
        "--groups", metavar="G", type=_group_count, default=10, help="groups (default: 10)"
    )
    sim_.add_argument(
        "--seed", metavar="S", type=_seed, default=1, help="decides everything (default: 1)"
    )
    sim_.add_argument(
        "--churn",
        metavar="RATE",
        type=_churn,
        default=0.0,
        help="fraction of nodes that crash (and of new nodes that join) after the"
        " measurement, below 1; reports delivery ratio and repair time (default: 0)",
    )
    sim_.add_argument(
        "--topology",
        choices=("small", "paper"),
        default="small",
        help="router network: small (208 routers) or paper (5,050, as in the Pastry"
        " and Scribe evaluations) (default: small)",
    )
    sim_.add_argument(
        "--sizes",
        choices=("uniform", "zipf"),
        default="uniform",
        help="group sizes: uniform in [N/10, N/2], or zipf (rank r has N*r^-1.25"
        " members, as in the Scribe evaluation) (default: uniform)",
    )
    sim_.add_argument(
        "--profile",
        choices=("standard", "large", "proximity"),
        default="standard",
        help="timers and pacing: standard (the cores' defaults), large (stretched"
        " periodic timers, fast joins: for 10^4-10^5 nodes) or proximity (large plus"
        " 10 minutes of routing-table maintenance before measuring) (default: standard)",
    )
    sim_.add_argument(
        "--progress",
        dest="verbose_phases",
        action="store_true",
        help="report each phase (wall time, memory, datagrams) on standard error as it ends",
    )
    sim_.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="also write DIR/metrics.json and PNG plots (created if missing)",
    )


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``hamcast bench``: the data path against raw sockets (docs/performance.md)."""
    bench_ = _command(
        sub,
        "bench",
        bench.bench_command,
        "measure hamcast's data path against raw UDP sockets (two namespaces as root)",
    )
    bench_.add_argument(
        "--modes",
        metavar="LIST",
        type=bench.parse_list,
        help="comma-separated: raw-unicast, raw-multicast, raw-batched, hamcast-ip,"
        " hamcast-ip-batched, hamcast-ip-relayed, hamcast-overlay, hamcast-embedded,"
        " hamcast-local"
        " (default: all that fit the network but hamcast-local)",
    )
    bench_.add_argument(
        "--sizes",
        metavar="LIST",
        type=bench.parse_sizes,
        default=[64, 512, 1400, 8192],
        help="message sizes in bytes (default: 64,512,1400,8192)",
    )
    bench_.add_argument(
        "--duration",
        metavar="SECONDS",
        type=_number(float, "a duration in seconds (0.01 to 3600)", 0.01, 3600),
        default=2.0,
        help="seconds each sender sends (default: 2)",
    )
    bench_.add_argument(
        "--rate",
        metavar="BITS",
        type=bench.parse_rate,
        default=100e6,
        help="bit rate of the constant-bit-rate load, e.g. 100M (default: 100M)",
    )
    bench_.add_argument(
        "--load",
        metavar="LIST",
        type=bench.parse_list,
        default=["saturate", "cbr"],
        help="saturate, cbr or both (default: saturate,cbr)",
    )
    bench_.add_argument(
        "--rounds",
        metavar="N",
        type=_positive_int,
        default=1,
        help="repeat the interleaved sequence N times; medians are reported (default: 1)",
    )
    bench_.add_argument(
        "--net",
        choices=("auto", "netns", "loopback"),
        default="auto",
        help="two hosts in network namespaces (root) or loopback (default: auto)",
    )
    bench_.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="also write DIR/bench.json and PNG plots (created if missing)",
    )


def _add_monitor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``hamcast monitor``: a live dashboard of daemons' monitoring endpoints (docs/monitor.md)."""
    monitor = _command(
        sub,
        "monitor",
        monitor_cli.monitor_command,
        "serve a live web dashboard of the daemons' multicast trees (docs/monitor.md)",
    )
    monitor.add_argument(
        "--listen",
        metavar="ADDR:PORT",
        default="127.0.0.1:7049",
        help="where to serve the dashboard (PORT alone: loopback; default: 127.0.0.1:7049)",
    )
    monitor.add_argument(
        "--daemon",
        metavar="URL",
        action="append",
        help="a daemon's monitoring endpoint: http://ADDR:PORT, ADDR:PORT or unix:PATH"
        " (repeatable)",
    )
    monitor.add_argument(
        "--interval",
        metavar="SECONDS",
        type=_seconds,
        default=1.0,
        help="seconds between polls of every daemon (default: 1)",
    )
    monitor.add_argument(
        "--announcements",
        metavar="IFACE",
        action="append",
        help="also find daemons from hamcast announcements heard on IFACE (joins the"
        " link-local announcement group there; repeatable)",
    )
    monitor.add_argument(
        "--peer-port",
        metavar="PORT",
        type=_number(int, "a port (1 to 65535)", 1, 65535),
        default=7048,
        help="monitoring port assumed for daemons found as peers or by announcement"
        " (default: 7048)",
    )
    monitor.add_argument(
        "--no-follow-peers",
        action="store_true",
        help="poll only the given and announced daemons, not the peers they heard on their links",
    )
    monitor.add_argument(
        "--assets",
        metavar="DIR",
        type=Path,
        help="folder holding cytoscape.min.js (default: web/node_modules from `make setup`)",
    )


def _add_testbed(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``hamcast testbed up|down|status``: the network test-bed (docs/testbed.md)."""
    testbed = sub.add_parser(
        "testbed",
        help="build multicast test networks in network namespaces (root; docs/testbed.md)",
        description="Build hosts, LANs and multicast routers in Linux network namespaces,"
        " and remove them. Needs root. Everything created is named PREFIX-RUNID-NAME"
        " (prefix hct unless the topology says otherwise).",
    )
    actions = testbed.add_subparsers(dest="testbed_command", metavar="ACTION", required=True)
    up = _command(
        actions,
        "up",
        commands.testbed_up_command,
        "build the test-bed FILE describes, print it, and keep it until Ctrl-C or SIGTERM",
    )
    up.add_argument("file", metavar="FILE", help="a TOML topology (format: docs/testbed.md)")
    up.add_argument(
        "--wait-ready",
        action="store_true",
        help="print only once every router is fully ready (pimd: ~20 s, for any-source multicast)",
    )
    up.add_argument(
        "--ready-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=60.0,
        help="fail if --wait-ready waits longer than SECONDS (default: 60)",
    )
    down = _command(
        actions,
        "down",
        commands.testbed_down_command,
        "remove test-beds: the given runs, or with --all every run whose process is gone",
    )
    down.add_argument(
        "runs", metavar="RUN", nargs="*", help="runs to remove, named PREFIX-RUNID (see status)"
    )
    down.add_argument(
        "--all",
        action="store_true",
        help="every run whose building process is gone, and anything named like a run",
    )
    down.add_argument(
        "--force", action="store_true", help="also runs whose building process still runs"
    )
    down.add_argument(
        "--prefix",
        metavar="PREFIX",
        action="append",
        help="with --all: the name prefix of unrecorded leftovers (repeatable; default: hct)",
    )
    status = _command(
        actions, "status", commands.testbed_status_command, "list test-bed runs and leftovers"
    )
    status.add_argument(
        "--prefix",
        metavar="PREFIX",
        action="append",
        help="also list unrecorded namespaces with this prefix (repeatable; default: hct)",
    )
