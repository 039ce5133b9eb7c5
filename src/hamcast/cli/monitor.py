"""``hamcast monitor``: the live dashboard of hamcast daemons (docs/monitor.md).

Polls the daemons' monitoring endpoints (``hamcast daemon --monitor``),
merges their answers into one graph per group and serves a web page that
draws it, until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from hamcast.cli.render import Output
from hamcast.config import parse_monitor_listen
from hamcast.errors import UsageError

__all__ = ["monitor_command"]


def _daemon_url(text: str) -> str:
    """An endpoint as the collector polls it: ``http://ADDRESS:PORT`` or ``unix:PATH``.

    ``ADDRESS:PORT`` and ``PORT`` (loopback) become ``http://`` URLs.
    """
    if text.startswith(("http://", "https://")):
        return text.rstrip("/")
    if text.startswith("unix:"):
        if text == "unix:":
            raise UsageError("--daemon unix: needs a path")
        return text
    address, port = parse_monitor_listen(text)
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


def monitor_command(args: argparse.Namespace, out: Output) -> int:
    from hamcast.monitor.collector import Collector, CollectorConfig, find_cytoscape

    parse_monitor_listen(args.listen)
    if args.interval <= 0:
        raise UsageError("--interval must be more than 0 seconds")
    config = CollectorConfig(
        listen=args.listen,
        daemons=[_daemon_url(d) for d in args.daemon or []],
        interval_s=args.interval,
        follow_peers=not args.no_follow_peers,
        peer_port=args.peer_port,
        announcements=list(args.announcements or []),
        assets=args.assets,
    )
    if not config.daemons and not config.announcements and not args.quiet:
        out.note("no --daemon and no --announcements: the dashboard stays empty until told")
    if find_cytoscape(config.assets) is None:
        out.note("cytoscape.js is not installed (run `make setup`): the page cannot draw graphs")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def main() -> None:
        collector = Collector(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await collector.start()
        try:
            # Printed on stdout so scripts (and `make demo`) can read the address.
            print(f"hamcast monitor: dashboard at {collector.url}/", flush=True)
            await stop.wait()
        finally:
            await collector.stop()

    asyncio.run(main())
    return 0
