"""``hamcast bench``: the data path against raw sockets, as a table, JSON and PNG plots.

The measuring is :func:`hamcast.bench.run_bench` (docs/performance.md); this
module parses the options, prints progress on standard error, the table or
the JSON document on standard output, and with ``--out DIR`` writes
``DIR/bench.json`` and the figures of :mod:`hamcast.bench.plots`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from hamcast.cli.render import Output
from hamcast.errors import UsageError

__all__ = ["bench_command", "parse_rate", "parse_sizes"]

_SUFFIXES = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9}


def parse_rate(text: str) -> float:
    """``100M``, ``1.5G``, ``64k`` or a plain number: bits per second."""
    body = text.strip().removesuffix("b/s").removesuffix("bps")
    suffix = body[-1:] if body[-1:] in _SUFFIXES and body[-1:] else ""
    try:
        value = float(body[: len(body) - len(suffix)]) * _SUFFIXES[suffix]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a bit rate (e.g. 100M)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive bit rate")
    return value


def parse_sizes(text: str) -> list[int]:
    """Comma-separated message sizes in bytes."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of sizes (64,1400)") from None
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size")
    return sizes


def parse_list(text: str) -> list[str]:
    """Comma-separated names."""
    return [part.strip() for part in text.split(",") if part.strip()]


def bench_command(args: argparse.Namespace, out: Output) -> int:
    """Run the benchmark; print the table or JSON; write ``--out`` files."""
    from hamcast.bench import BenchConfig, check, run_bench

    out_dir: Path | None = args.out
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    config = BenchConfig(
        modes=args.modes or (),
        sizes=args.sizes,
        duration=args.duration,
        rate_bps=args.rate,
        loads=args.load,
        rounds=args.rounds,
        net=args.net,
        progress=out.status,
    )
    check(config)
    document = run_bench(config)
    written: list[Path] = []
    if out_dir is not None:
        from hamcast.bench.plots import write_plots  # matplotlib only when asked for

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "bench.json"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        written = [path, *write_plots(document, out_dir)]
    if out.json_mode:
        out.json_document(document)
    else:
        if not out.console.is_terminal:
            # Piped into a file: rich would squeeze the 13 columns into 80.
            out.console.width = max(out.console.width, 160)
        out.table(_table(document))
        for failure in document["failures"]:
            out.note(f"{failure['load']} {failure['size']} B {failure['mode']}: {failure['error']}")
    for path in written:
        out.status(f"wrote {path}")
    return 1 if document["failures"] else 0


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _table(document: dict[str, Any]) -> Table:
    table = Table(
        title=f"hamcast bench — {document['net']}, {document['duration']:g} s per trial,"
        f" {document['rounds']} round(s), medians; ratios against raw-multicast"
        " (raw-unicast on loopback)",
        title_justify="left",
    )
    for column in (
        "load",
        "mode",
        "size",
        "send kpps",
        "recv kpps",
        "recv Mb/s",
        "loss",
        "p50 µs",
        "p99 µs",
        "CPU tx %",
        "CPU rx %",
        "send/raw",
        "recv/raw",
        "CPU µs/msg",
    ):
        if column == "mode":
            table.add_column(column, no_wrap=True, min_width=18)
        else:
            table.add_column(column, justify="left" if column == "load" else "right")
    for record in document["records"]:
        cpu = record["cpu"]
        table.add_row(
            record["load"],
            record["mode"],
            str(record["size"]),
            _fmt(record["send_pps"], 1e-3),
            _fmt(record["recv_pps"], 1e-3),
            _fmt(record["recv_mbps"]),
            f"{record['loss']:.1%}",
            _fmt(record["latency_p50_us"], digits=0),
            _fmt(record["latency_p99_us"], digits=0),
            f"{cpu['send_app'] * 100:.0f}+{cpu['send_daemon'] * 100:.0f}",
            f"{cpu['recv_app'] * 100:.0f}+{cpu['recv_daemon'] * 100:.0f}",
            _fmt(record["send_ratio"], digits=2),
            _fmt(record["recv_ratio"], digits=2),
            _fmt(record["cpu_us_per_msg"]),
        )
    return table
