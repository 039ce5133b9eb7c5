"""Watch links and print what discovery concludes: ``python -m hamcast.discovery IFNAME...``.

A diagnostic for operators (is there a querier here? a PIM router?) and the
probe the network-namespace tests run inside a namespace. Needs root or
CAP_NET_RAW. ``--json`` prints one JSON object per line: ``started`` once,
then every event (``VerdictChanged``, ``MemberReported``, ...), a ``snapshot``
per link on SIGUSR1, and a last ``snapshot`` per link when it stops (after
``--duration`` or on SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import signal
import socket
import sys
from typing import Any

from hamcast.discovery.config import DiscoveryConfig
from hamcast.discovery.driver import DiscoveryDriver
from hamcast.discovery.events import DiscoveryEvent


def jsonable(value: Any) -> Any:
    """``value`` with dataclasses as dicts, enums as their values and tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [jsonable(item) for item in value]
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hamcast.discovery",
        description="Listen passively for IGMP/MLD queriers, PIM routers and group members.",
    )
    parser.add_argument("interfaces", nargs="+", metavar="IFNAME")
    parser.add_argument("--family", type=int, choices=(4, 6), action="append", dest="families")
    parser.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--settle", type=float, default=None, help="settle time, seconds")
    parser.add_argument("--query-interval", type=float, default=125.0)
    parser.add_argument("--response-interval", type=float, default=10.0)
    parser.add_argument("--robustness", type=int, default=2)
    parser.add_argument("--last-member-interval", type=float, default=1.0)
    parser.add_argument(
        "--no-learn", action="store_true", help="ignore QRV/QQIC carried by queries"
    )
    parser.add_argument("--link-local-groups", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


class _Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, kind: str, body: dict[str, Any]) -> None:
        if self.as_json:
            line = json.dumps({"event": kind, **body}, sort_keys=True)
        else:
            fields = " ".join(f"{k}={v}" for k, v in body.items() if k != "evidence")
            line = f"{kind} {fields}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def event(self, event: DiscoveryEvent) -> None:
        self.emit(type(event).__name__, jsonable(event))


async def _run(args: argparse.Namespace) -> int:
    try:
        interfaces = [(socket.if_nametoindex(name), name) for name in args.interfaces]
    except OSError as exc:
        sys.stderr.write(f"unknown interface: {exc}\n")
        return 2
    config = DiscoveryConfig(
        robustness=args.robustness,
        query_interval=args.query_interval,
        query_response_interval=args.response_interval,
        last_member_query_interval=args.last_member_interval,
        learn_query_parameters=not args.no_learn,
        settle_time=args.settle,
        track_link_local_groups=args.link_local_groups,
    )
    printer = _Printer(args.json)
    driver = DiscoveryDriver(interfaces, printer.event, config, families=args.families or (4, 6))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await driver.start()
    links = []
    for ifindex, family in driver.links():
        verdict, evidence = driver.snapshot(ifindex, family)
        links.append(
            {
                "interface": ifindex,
                "family": family,
                "verdict": verdict.value,
                "unavailable": evidence.unavailable,
            }
        )
    printer.emit("started", {"links": links})

    def dump() -> None:
        for ifindex, family in driver.links():
            verdict, evidence = driver.snapshot(ifindex, family)
            body = {"interface": ifindex, "family": family, "verdict": verdict.value}
            printer.emit("snapshot", {**body, "evidence": jsonable(evidence)})

    # SIGUSR1 prints the current state without stopping.
    loop.add_signal_handler(signal.SIGUSR1, dump)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.duration)
    dump()
    await driver.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
