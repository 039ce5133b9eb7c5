"""``python -m hamcast.demo`` (what ``make demo`` runs): hamcast's main job, shown.

* As root: the hybrid demo (:mod:`hamcast.demo.hybrid`) — one group across two
  multicast islands joined by pimd, an island reachable by unicast only and two
  hosts without multicast, in network namespaces built and removed by the demo;
  two senders, five receivers, every message exactly once, the designated
  gateways and the hybrid tree drawn as text. About 45 s (pimd takes 20 s to
  route any-source multicast).
* Not root: it says why, and runs the loopback variant — four daemons on this
  host joined only by the overlay.
* ``--tour``: the short tour of the API with one daemon and the ``local``
  technology (:mod:`hamcast.demo.tour`).
* ``--loopback``: the loopback variant even as root.

Exit code 0 when every step worked, 1 (with the reason) otherwise, 130 on Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from hamcast.demo import tour
from hamcast.demo.hybrid import DemoError, run_hybrid, run_loopback
from hamcast.errors import HamcastError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    unknown = [a for a in args if a not in ("--tour", "--loopback")]
    if unknown:
        sys.stderr.write("usage: python -m hamcast.demo [--tour | --loopback]\n")
        return 2
    if "--tour" in args:
        return tour.main()
    console = Console(highlight=False)
    root = os.geteuid() == 0
    try:
        if root and "--loopback" not in args:
            console.print(
                "[bold]hamcast demo[/]: one group over native multicast islands and hosts"
                " without multicast, bridged by gateways through the overlay"
            )
            run_hybrid(console)
        else:
            if not root:
                console.print(
                    "[bold yellow]not root[/]: the hybrid demo builds network namespaces"
                    " with multicast routers and needs root (sudo make demo). Running the"
                    " loopback variant instead: daemons on this host, joined by the overlay."
                )
            run_loopback(console)
    except (DemoError, HamcastError, OSError, subprocess.SubprocessError) as exc:
        console.print(Text(f"demo failed: {exc}", style="bold red"))
        return 1
    except KeyboardInterrupt:
        return 130
    console.print("[bold green]demo finished[/]: every receiver got every message exactly once")
    return 0
