"""PNG figures of one simulation run (the dict :func:`hamcast.sim.run.run` returns).

Figures are drawn on matplotlib's Agg canvas directly, without pyplot: no
display is needed or used, and no global backend state is touched. Three
figures, after the Scribe paper's (Castro et al., IEEE JSAC 2002, §4):

* ``rad_cdf.png``: cumulative distribution of the per-group delay penalty
  (RAD), and of RMD;
* ``link_stress.png``: how many links carried each number of copies, for
  Scribe, IP multicast and naive unicast (over all groups' probe messages);
* ``node_stress.png``: how many nodes sent each number of copies of a probe
  message (over all groups).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["PLOT_FILES", "write_plots"]

#: The files :func:`write_plots` writes, in order.
PLOT_FILES = ("rad_cdf.png", "link_stress.png", "node_stress.png")


def write_plots(result: dict[str, Any], directory: Path) -> list[Path]:
    """Write the figures of ``result`` into ``directory`` (which must exist); return the paths."""
    title = f"N={result['nodes']}, {result['groups']} groups, seed {result['seed']}"
    figures = (_delay_cdf(result, title), _link_stress(result, title), _node_stress(result, title))
    paths: list[Path] = []
    for name, figure in zip(PLOT_FILES, figures, strict=True):
        path = directory / name
        figure.savefig(path, format="png")  # a bare Figure renders with Agg
        paths.append(path)
    return paths


def _figure(size: tuple[float, float]) -> tuple[Figure, Axes]:
    """A figure of ``size`` inches (100 dpi) with one set of axes."""
    figure = Figure(figsize=size, dpi=100)
    return figure, figure.add_subplot()


def _delay_cdf(result: dict[str, Any], title: str) -> Figure:
    """Empirical CDFs of per-group RAD and RMD."""
    figure, axes = _figure((6.4, 4.2))
    plotted = False
    for key, label in (("rad", "RAD (mean delay / IP multicast)"), ("rmd", "RMD (max delay)")):
        values = sorted(
            float(group[key]) for group in result["per_group"] if not math.isnan(group[key])
        )
        if values:
            fractions = [(index + 1) / len(values) for index in range(len(values))]
            axes.step(values, fractions, where="post", label=label)
            plotted = True
    axes.set_xlabel("delay penalty (ratio to IP multicast)")
    axes.set_ylabel("fraction of groups")
    axes.set_ylim(0, 1.05)
    axes.set_title(f"Delay penalty per group — {title}")
    axes.grid(alpha=0.3)
    if plotted:
        axes.legend(loc="lower right")
    else:
        _no_data(axes)
    figure.tight_layout()
    return figure


def _link_stress(result: dict[str, Any], title: str) -> Figure:
    """Links per stress value: Scribe, IP multicast and unicast side by side."""
    histograms: dict[str, dict[str, int]] = result["distributions"]["link_stress"]
    series = (
        ("scribe", "Scribe"),
        ("ip_multicast", "IP multicast"),
        ("unicast", "unicast"),
    )
    stresses = sorted({int(key) for histogram in histograms.values() for key in histogram})
    figure, axes = _figure((7.2, 4.2))
    width = 0.8 / len(series)
    for offset, (key, label) in enumerate(series):
        histogram = histograms.get(key, {})
        positions = [index + (offset - 1) * width for index in range(len(stresses))]
        counts = [histogram.get(str(stress), 0) for stress in stresses]
        axes.bar(positions, counts, width=width, label=label)
    axes.set_xticks(range(len(stresses)), [str(stress) for stress in stresses])
    axes.set_xlabel("link stress (copies of a message on one router link)")
    axes.set_ylabel("links (summed over groups)")
    axes.set_title(f"Link stress — {title}")
    axes.grid(axis="y", alpha=0.3)
    axes.legend()
    if not stresses:
        _no_data(axes)
    figure.tight_layout()
    return figure


def _node_stress(result: dict[str, Any], title: str) -> Figure:
    """Nodes per number of copies sent of one message."""
    histogram: dict[str, int] = result["distributions"]["node_copies"]
    copies = sorted(int(key) for key in histogram)
    figure, axes = _figure((6.4, 4.2))
    axes.bar([str(count) for count in copies], [histogram[str(count)] for count in copies])
    axes.set_xlabel("copies of a message one node sent")
    axes.set_ylabel("sending nodes (summed over groups)")
    axes.set_title(f"Node stress — {title}")
    axes.grid(axis="y", alpha=0.3)
    if not copies:
        _no_data(axes)
    figure.tight_layout()
    return figure


def _no_data(axes: Axes) -> None:
    """Say so on an empty plot (a run without groups)."""
    axes.text(0.5, 0.5, "no groups measured", ha="center", va="center", transform=axes.transAxes)
