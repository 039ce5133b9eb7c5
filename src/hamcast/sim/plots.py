"""PNG figures of one simulation run (the dict :func:`hamcast.sim.run.run` returns).

Figures are drawn on matplotlib's Agg canvas directly, without pyplot: no
display is needed or used, and no global backend state is touched. Three
figures, after the Scribe paper's (Castro et al., IEEE JSAC 2002, §4):

* ``rad_cdf.png``: cumulative distribution of the per-group delay penalty
  (RAD), and of RMD;
* ``link_stress.png``: how many links carried each number of copies, for
  Scribe, IP multicast and naive unicast (over all groups' probe messages),
  on log scales (a large group's unicast puts thousands of copies on a link);
* ``node_stress.png``: the paper's node stress: how many nodes hold each
  number of children-table entries, and each number of groups (over all
  groups);
* ``churn.png`` (only for a run with churn): the delivery ratio of each
  round of messages while nodes crash and join, and after.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["PLOT_FILES", "write_plots"]

#: The files :func:`write_plots` writes, in order (``churn.png`` too for a run with churn).
PLOT_FILES = ("rad_cdf.png", "link_stress.png", "node_stress.png")
CHURN_PLOT = "churn.png"


def write_plots(result: dict[str, Any], directory: Path) -> list[Path]:
    """Write the figures of ``result`` into ``directory`` (which must exist); return the paths."""
    title = f"N={result['nodes']}, {result['groups']} groups, seed {result['seed']}"
    figures = [
        (PLOT_FILES[0], _delay_cdf(result, title)),
        (PLOT_FILES[1], _link_stress(result, title)),
        (PLOT_FILES[2], _node_stress(result, title)),
    ]
    if "churn" in result:
        figures.append((CHURN_PLOT, _churn(result, title)))
    paths: list[Path] = []
    for name, figure in figures:
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
    """Links per stress value, Scribe vs IP multicast vs unicast, log-log."""
    histograms: dict[str, dict[str, int]] = result["distributions"]["link_stress"]
    figure, axes = _figure((7.2, 4.2))
    plotted = False
    for key, label, marker in (
        ("scribe", "Scribe", "o"),
        ("ip_multicast", "IP multicast", "s"),
        ("unicast", "unicast", "^"),
    ):
        histogram = histograms.get(key, {})
        stresses = sorted(int(value) for value in histogram)
        if stresses:
            counts = [histogram[str(stress)] for stress in stresses]
            axes.plot(stresses, counts, marker=marker, linestyle="-", markersize=3, label=label)
            plotted = True
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("link stress (copies of a message on one router link)")
    axes.set_ylabel("links (summed over groups)")
    axes.set_title(f"Link stress — {title}")
    axes.grid(alpha=0.3, which="both")
    if plotted:
        axes.legend()
    else:
        _no_data(axes)
    figure.tight_layout()
    return figure


def _node_stress(result: dict[str, Any], title: str) -> Figure:
    """Nodes per number of children-table entries and per number of groups (log x)."""
    distributions = result["distributions"]
    figure = Figure(figsize=(9.6, 4.2), dpi=100)
    for position, (key, label) in enumerate(
        (
            ("children_per_node", "children-table entries per node"),
            ("groups_per_node", "groups with state per node"),
        ),
        start=1,
    ):
        axes = figure.add_subplot(1, 2, position)
        histogram: dict[str, int] = distributions.get(key, {})
        values = sorted(int(value) for value in histogram)
        counts = [histogram[str(value)] for value in values]
        if len(values) > 30:  # a long tail: points on a log axis, not bars
            axes.plot(values, counts, marker=".", linestyle="-")
            axes.set_xscale("symlog")
        elif values:
            axes.bar([str(value) for value in values], counts)
        if not values:
            _no_data(axes)
        axes.set_xlabel(label)
        axes.set_ylabel("nodes")
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle(f"Node stress — {title}")
    figure.tight_layout()
    return figure


def _churn(result: dict[str, Any], title: str) -> Figure:
    """Delivery ratio of each round of messages under churn."""
    churn = result["churn"]
    ratios: list[float] = churn["delivery_by_message"]
    interval = float(churn["message_interval_seconds"])
    figure, axes = _figure((7.2, 4.2))
    axes.plot([index * interval for index in range(len(ratios))], ratios, marker=".")
    axes.axvspan(0, float(churn["window_seconds"]), alpha=0.15, label="crashes and joins")
    axes.set_xlabel("seconds since churn began")
    axes.set_ylabel("delivery ratio of the round")
    axes.set_ylim(0, 1.05)
    axes.set_title(f"Churn {churn['rate']:g} — {title}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def _no_data(axes: Axes) -> None:
    """Say so on an empty plot (a run without groups)."""
    axes.text(0.5, 0.5, "no groups measured", ha="center", va="center", transform=axes.transAxes)
