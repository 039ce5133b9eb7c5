"""``hamcast sim``: one overlay simulation run, summarised for people or as JSON.

The run is :func:`hamcast.sim.run.run` (docs/evaluation.md): everything in it
is decided by ``--seed``, so the same options give the same metrics; only
``wall_seconds`` (how long the run took on this machine) differs. ``--out DIR``
also writes ``DIR/metrics.json`` and the PNG figures of
:mod:`hamcast.sim.plots`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from hamcast.cli.render import Output
from hamcast.errors import UsageError
from hamcast.sim.run import run

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
    if args.churn != 0:
        raise UsageError(
            f"--churn {args.churn:g}: churn is not implemented in the simulator yet;"
            " only --churn 0 is accepted"
        )
    out_dir: Path | None = args.out
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    started = time.perf_counter()
    result = run(args.nodes, args.groups, args.seed)
    wall = time.perf_counter() - started
    document = json_ready({**result, "churn": args.churn, "wall_seconds": round(wall, 3)})
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
        ("node stress max (copies sent)", str(document["node_stress_max_copies"]), ""),
        ("datagrams", str(document["datagrams"]), f"{document['virtual_seconds']:.1f} s virtual"),
        ("wall time", f"{document['wall_seconds']:.2f} s", ""),
    ]
    for metric, value, reference in rows:
        table.add_row(metric, Text(value), Text(reference))
    return table
