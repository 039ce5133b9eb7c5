"""``hamcast sim``: one overlay simulation run, summarised for people or as JSON.

The run is :func:`hamcast.sim.run.run` (docs/evaluation.md): everything in it
is decided by ``--seed``, so the same options give the same metrics; only
``resources`` (wall time, memory and per-phase progress on this machine)
differs. ``--out DIR``
also writes ``DIR/metrics.json`` and the PNG figures of
:mod:`hamcast.sim.plots`.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from hamcast.cli.render import Output
from hamcast.errors import UsageError
from hamcast.sim.engine import Simulator
from hamcast.sim.run import run
from hamcast.sim.topology import TopologyConfig

__all__ = ["json_ready", "sim_command"]


def json_ready(value: Any) -> Any:
    """``value`` with every NaN replaced by ``None``, so the JSON is standard (no ``NaN``)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def sim_command(args: argparse.Namespace, out: Output) -> int:
    """Run the simulation, print the summary or JSON, and write ``--out`` files."""
    if args.churn >= 1:
        raise UsageError(
            f"--churn {args.churn:g}: the churn rate is the fraction of nodes that crash;"
            " it must be below 1"
        )
    out_dir: Path | None = args.out
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    phases: dict[str, dict[str, float]] = {}

    def phase(name: str, sim: Simulator) -> None:
        phases[name] = {
            "wall_seconds": round(time.perf_counter() - started, 3),
            "cpu_seconds": round(_cpu_seconds() - cpu_started, 3),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "topology_cache_mb": round(sim.topology.cached_bytes / 2**20, 1),
            "virtual_seconds": round(sim.now, 3),
            "datagrams": sim.datagrams,
        }
        if args.verbose_phases:
            out.status(f"{name}: {phases[name]}")

    result = run(
        args.nodes,
        args.groups,
        args.seed,
        topology=TopologyConfig.preset(args.topology),
        profile=args.profile,
        sizes=args.sizes,
        churn=args.churn,
        on_phase=phase,
    )
    wall = time.perf_counter() - started
    before, after = phases["topology"], phases["overlay"]
    # Peak RSS grown while the nodes joined, less the shortest paths computed
    # meanwhile, per node: the cores' state and the simulator's bookkeeping.
    grown = after["peak_rss_mb"] - before["peak_rss_mb"] - after["topology_cache_mb"]
    resources = {
        "wall_seconds": round(wall, 3),
        # The machine is shared: CPU time is the figure to compare between runs.
        "cpu_seconds": round(_cpu_seconds() - cpu_started, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "kb_per_node": round(grown * 1024 / args.nodes, 2),
        "phases": phases,
    }
    document = json_ready(
        {
            **result,
            "churn_rate": args.churn,
            "topology_preset": args.topology,
            "group_size_distribution": args.sizes,
            "resources": resources,
        }
    )
    written: list[Path] = []
    if out_dir is not None:
        from hamcast.sim.plots import write_plots  # matplotlib only when asked for

        out_dir.mkdir(parents=True, exist_ok=True)
        metrics = out_dir / "metrics.json"
        metrics.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        written = [metrics, *write_plots(result, out_dir)]
    if out.json_mode:
        out.json_document(document)
    else:
        out.table(_summary_table(document))
    for path in written:
        out.status(f"wrote {path}")
    return 0


def _cpu_seconds() -> float:
    """User and system CPU time of this process so far, seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _number(value: object, digits: int = 2) -> str:
    """A metric for the table: ``-`` when missing, floats rounded to ``digits``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _summary_table(document: dict[str, Any]) -> Table:
    """The human summary: KBR hops, delay penalty, link and node stress, wall time."""
    hops = document["kbr_hops"]
    stress = document["link_stress"]
    links = document["links_used"]
    nodes = document["node_stress"]
    control = document["control_messages"]
    used = document["resources"]
    title = (
        f"hamcast sim: {document['joined']}/{document['nodes']} nodes joined,"
        f" {document['groups']} groups, seed {document['seed']}"
        f" ({document['topology']['routers']} routers, {document['topology']['links']} links)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value")
    table.add_column("reference", style="dim")
    rows = [
        (
            "KBR hops mean / max",
            f"{_number(hops['mean'])} / {hops['max']}",
            f"log16 N = {_number(hops['log16_n'])}",
        ),
        ("routes at true root", f"{hops['correct']}/{hops['routes']}", "all"),
        ("delivery ratio", f"{document['delivery_ratio']:.1%}", "100%"),
        (
            "RAD mean / max",
            f"{_number(document['rad']['mean'])} / {_number(document['rad']['max'])}",
            "IP multicast = 1",
        ),
        (
            "RMD mean / max",
            f"{_number(document['rmd']['mean'])} / {_number(document['rmd']['max'])}",
            "IP multicast = 1",
        ),
        (
            "link stress Scribe mean / max",
            f"{_number(stress['scribe_mean'])} / {stress['scribe_max']}",
            f"{links['scribe']} links used",
        ),
        ("link stress IP multicast max", str(stress["ip_max"]), f"{links['ip_multicast']} links"),
        (
            "link stress unicast mean / max",
            f"{_number(stress['unicast_mean'])} / {stress['unicast_max']}",
            f"{links['unicast']} links used",
        ),
        (
            "node stress: groups per node mean / max",
            f"{_number(nodes['groups_mean'])} / {nodes['groups_max']}",
            "tree state held",
        ),
        (
            "node stress: children per node mean / max",
            f"{_number(nodes['children_mean'])} / {nodes['children_max']}",
            f"mean {_number(nodes['children_mean_nonzero'])} over nodes with any",
        ),
        ("most copies one node sent", str(document["node_stress_max_copies"]), "per message"),
        (
            "control messages per join",
            _number(control["per_join"]),
            f"{control['total']} for {control['joins']} joins",
        ),
        ("KBR route delay / direct", _number(hops["delay_penalty"]), "unicast = 1"),
        ("datagrams", str(document["datagrams"]), f"{document['virtual_seconds']:.1f} s virtual"),
        (
            "wall / CPU time",
            f"{used['wall_seconds']:.2f} s / {used['cpu_seconds']:.2f} s",
            "CPU time: this process alone",
        ),
        (
            "peak memory",
            f"{used['peak_rss_mb']:.0f} MB",
            f"{used['kb_per_node']:.1f} KB per node",
        ),
    ]
    churn = document.get("churn")
    if churn is not None:
        repair = churn["repair_seconds"]
        rows += [
            (
                "churn: delivery ratio",
                f"{churn['delivery_ratio']:.1%}",
                f"{churn['failed']} crashed, {churn['joined']} joined,"
                f" {churn['messages']} messages",
            ),
            (
                "churn: repair time mean / max",
                f"{_number(repair['mean'])} s / {_number(repair['max'])} s",
                f"{churn['groups_repaired']}/{churn['monitored_groups']} groups repaired",
            ),
            (
                "churn: trees whole at the end",
                f"{churn['trees_whole_at_end']}/{churn['monitored_groups']}",
                f"routes at true root {churn['routes_correct_after']}",
            ),
        ]
    for metric, value, reference in rows:
        table.add_row(metric, Text(value), Text(reference))
    return table
