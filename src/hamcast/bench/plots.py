"""PNG figures of one ``hamcast bench`` run, in the style of the seed's evaluation.

For each load (``saturate``, ``cbr``) four figures, every mode one line
against the packet size: received data rate (Mb/s), received packet rate
(pkt/s), CPU on the send side and CPU on the receive side (application plus
daemon, percent of one core). Drawn on matplotlib's Agg canvas without
pyplot, like :mod:`hamcast.sim.plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

__all__ = ["write_plots"]

_FIGURES = (
    ("data-rate", "recv_mbps", "received data rate (Mb/s)", 1.0),
    ("packet-rate", "recv_pps", "received packet rate (kpkt/s)", 1e-3),
    ("cpu-send", "cpu_send", "CPU, send side: app + daemon (% of a core)", 100.0),
    ("cpu-recv", "cpu_recv", "CPU, receive side: app + daemon (% of a core)", 100.0),
)
_MARKERS = "os^vD<>p*"


def write_plots(document: dict[str, Any], directory: Path) -> list[Path]:
    """Write ``LOAD-FIGURE.png`` for every load in ``document`` into ``directory``."""
    paths: list[Path] = []
    for load in document["loads"]:
        records = [r for r in document["records"] if r["load"] == load]
        if not records:
            continue
        what = (
            "saturating"
            if load == "saturate"
            else f"constant bit rate {document['rate_bps'] / 1e6:g} Mb/s"
        )
        for name, key, label, scale in _FIGURES:
            figure = Figure(figsize=(6.4, 4.2), dpi=100)
            axes = figure.add_subplot()
            for index, mode in enumerate(document["modes"]):
                points = sorted((r["size"], r[key] * scale) for r in records if r["mode"] == mode)
                if points:
                    axes.plot(
                        [p[0] for p in points],
                        [p[1] for p in points],
                        marker=_MARKERS[index % len(_MARKERS)],
                        label=mode,
                    )
            axes.set_xscale("log", base=2)
            axes.set_xticks(sorted({r["size"] for r in records}))
            axes.get_xaxis().set_major_formatter("{x:g}")
            axes.set_xlabel("packet size (bytes)")
            axes.set_ylabel(label)
            axes.set_ylim(bottom=0)
            axes.set_title(f"{label.split(' (')[0]} — {what}, {document['net']}", fontsize=10)
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8)
            figure.tight_layout()
            path = directory / f"{load}-{name}.png"
            figure.savefig(path, format="png")
            paths.append(path)
    return paths
