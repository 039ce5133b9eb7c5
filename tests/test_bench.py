"""``hamcast bench`` runs and writes well-formed output (speed is never asserted here)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from hamcast.bench import ALL_MODES, BenchConfig, check
from hamcast.bench.runner import raw_group
from hamcast.cli.bench import parse_rate, parse_sizes
from hamcast.cli.main import main
from hamcast.errors import UsageError
from tests.testbed_fixtures import require_root

_NUMBERS = ("send_pps", "recv_pps", "send_mbps", "recv_mbps", "loss", "cpu_send", "cpu_recv")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["bench", "--json", "--duration", "0.2", *argv])
    return code, json.loads(capsys.readouterr().out)


def _check_records(document: dict[str, Any], modes: list[str], sizes: list[int]) -> None:
    assert document["failures"] == []
    records = document["records"]
    assert {(r["mode"], r["size"]) for r in records} == {(m, s) for m in modes for s in sizes}
    for record in records:
        for key in _NUMBERS:
            assert isinstance(record[key], float) and math.isfinite(record[key]), key
            assert record[key] >= 0, key
        assert record["loss"] <= 1
        assert set(record["cpu"]) == {"send_app", "send_daemon", "recv_app", "recv_daemon"}
        for key in ("latency_p50_us", "latency_p99_us"):
            assert record[key] is None or record[key] >= 0
        assert record["samples"] == 1


def test_rates_and_sizes_parse() -> None:
    assert parse_rate("100M") == 100e6
    assert parse_rate("1.5G") == 1.5e9
    assert parse_rate("64k") == 64e3
    assert parse_rate("2500") == 2500
    for bad in ("fast", "-1M", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_rate(bad)
    assert parse_sizes("64,1400") == [64, 1400]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_sizes("64,big")


def test_bad_configurations_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown mode"):
        check(BenchConfig(modes=["raw-telepathy"], net="loopback"))
    with pytest.raises(UsageError, match="need multicast"):
        check(BenchConfig(modes=["hamcast-ip"], net="loopback"))
    with pytest.raises(UsageError, match="sizes"):
        check(BenchConfig(modes=["raw-unicast"], sizes=[8], net="loopback"))
    with pytest.raises(UsageError, match="--load"):
        check(BenchConfig(modes=["raw-unicast"], loads=["burst"], net="loopback"))


@pytest.mark.integration
def test_loopback_run_writes_json_and_plots(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    modes = ["raw-unicast", "raw-batched", "hamcast-local"]
    code, document = _run(
        capsys,
        "--net",
        "loopback",
        "--modes",
        ",".join(modes),
        "--sizes",
        "64,1400",
        "--load",
        "saturate,cbr",
        "--rate",
        "20M",
        "--out",
        str(tmp_path),
    )
    assert code == 0
    assert document["net"] == "loopback"
    assert document["loads"] == ["saturate", "cbr"]
    # One record per load, mode and size.
    assert len(document["records"]) == 2 * 3 * 2
    for load in ("saturate", "cbr"):
        _check_records(
            {**document, "records": [r for r in document["records"] if r["load"] == load]},
            modes,
            [64, 1400],
        )
    reference = [r for r in document["records"] if r["mode"] == "raw-unicast"]
    assert all(r["send_ratio"] == pytest.approx(1.0) for r in reference)
    assert json.loads((tmp_path / "bench.json").read_text())["records"]
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(
        f"{load}-{name}.png"
        for load in ("saturate", "cbr")
        for name in ("data-rate", "packet-rate", "cpu-send", "cpu-recv")
    )
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in tmp_path.glob("*.png"))


@pytest.mark.integration
def test_two_namespaces_run_every_network_mode(capsys: pytest.CaptureFixture[str]) -> None:
    require_root()
    modes = [
        "raw-multicast",
        "hamcast-ip",
        "hamcast-ip-relayed",
        "hamcast-embedded",
        "hamcast-overlay",
    ]
    code, document = _run(
        capsys, "--net", "netns", "--modes", ",".join(modes), "--sizes", "512", "--load", "saturate"
    )
    assert code == 0
    assert document["net"] == "netns"
    _check_records(document, modes, [512])
    records = {r["mode"]: r for r in document["records"]}
    assert records["hamcast-ip"]["reference"] == "raw-multicast"
    # The relayed mode's daemons carry every message; on the direct path they only
    # watch (a daemon process is measured in both).
    relayed = records["hamcast-ip-relayed"]["cpu"]
    assert relayed["send_daemon"] > 0.05 and relayed["recv_daemon"] > 0.05
    direct = records["hamcast-ip"]["cpu"]
    assert direct["send_daemon"] < relayed["send_daemon"]
    assert direct["recv_daemon"] < relayed["recv_daemon"]


def test_loopback_never_multicasts() -> None:
    for mode in ALL_MODES:
        assert raw_group(mode, "loopback") == ""
    assert raw_group("raw-batched", "netns") == raw_group("raw-multicast", "netns") != ""
    assert raw_group("raw-unicast", "netns") == raw_group("hamcast-ip", "netns") == ""


def test_loopback_refuses_multicast_modes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--net", "loopback", "--modes", "raw-multicast"])
    assert code == 2
    assert "need multicast" in capsys.readouterr().err
