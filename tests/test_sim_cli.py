"""``hamcast sim`` as a real process: JSON, the --out files, determinism, usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hamcast.sim.plots import PLOT_FILES

CLI = [sys.executable, "-m", "hamcast.cli"]
#: A small run: well under a second of simulation.
SMALL = ["sim", "--nodes", "40", "--groups", "3", "--seed", "5"]
#: Seconds one command may take before the test fails instead of hanging.
DEADLINE = 30.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def hamcast(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command to completion, text output."""
    env = dict(os.environ)
    env.pop("HAMCAST_SOCKET", None)
    env.pop("DISPLAY", None)  # plots must not need a display
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=env,
        cwd=cwd,
        check=False,
    )


def _metrics(document: dict[str, Any]) -> dict[str, Any]:
    """Everything decided by the seed: the document without wall time and memory."""
    return {key: value for key, value in document.items() if key != "resources"}


def test_json_and_out_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = hamcast(*SMALL, "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # one standard JSON document
    expected = {
        "seed",
        "nodes",
        "joined",
        "groups",
        "kbr_hops",
        "delivery_ratio",
        "rad",
        "rmd",
        "link_stress",
        "links_used",
        "node_stress_max_copies",
        "node_stress",
        "control_messages",
        "group_sizes",
        "per_group",
        "distributions",
        "churn_rate",
        "resources",
    }
    assert expected <= document.keys()
    assert (document["nodes"], document["groups"], document["seed"]) == (40, 3, 5)
    assert len(document["per_group"]) == 3
    assert document["delivery_ratio"] == 1.0
    assert document["rad"]["mean"] >= 1.0
    assert {"mean", "max", "log16_n"} <= document["kbr_hops"].keys()
    stress = document["distributions"]["link_stress"]
    assert sum(stress["scribe"].values()) == document["links_used"]["scribe"]
    assert stress["ip_multicast"] == {"1": document["links_used"]["ip_multicast"]}
    assert "churn" not in document  # no churn asked for
    resources = document["resources"]
    assert {"wall_seconds", "cpu_seconds", "peak_rss_mb", "kb_per_node"} <= resources.keys()
    assert list(resources["phases"]) == ["topology", "overlay", "routes", "groups", "multicast"]
    assert document["control_messages"]["per_join"] > 0
    assert document["node_stress"]["nodes"] == 40

    assert json.loads((out / "metrics.json").read_text()) == document
    for name in PLOT_FILES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 5_000, name
    assert "wrote" in result.stderr


def test_same_seed_gives_the_same_metrics() -> None:
    first = hamcast(*SMALL, "--json")
    second = hamcast(*SMALL, "--json")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert _metrics(json.loads(first.stdout)) == _metrics(json.loads(second.stdout))


def test_table_for_people() -> None:
    result = hamcast(*SMALL)
    assert result.returncode == 0, result.stderr
    for label in ("KBR hops", "log16 N", "RAD", "RMD", "Scribe", "IP multicast", "unicast"):
        assert label in result.stdout
    assert "wall / CPU time" in result.stdout


def test_churn_reports_delivery_and_repair(tmp_path: Path) -> None:
    out = tmp_path / "churn"
    result = hamcast(*SMALL, "--churn", "0.2", "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    churn = json.loads(result.stdout)["churn"]
    assert churn["failed"] == churn["joined"] == 8
    assert 0.0 <= churn["delivery_ratio"] <= 1.0
    assert churn["trees_whole_at_end"] == churn["monitored_groups"] == 3
    assert (out / "churn.png").read_bytes().startswith(PNG_SIGNATURE)


def test_paper_topology_and_zipf_sizes() -> None:
    result = hamcast(*SMALL, "--topology", "paper", "--sizes", "zipf", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["topology"]["routers"] == 5050
    assert document["group_sizes"]["largest"] == 40  # rank 1 has every node
    assert [group["members"] for group in document["per_group"]] == [39, 16, 9]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "1"], "node count"),
        (["--groups", "-1"], "group count"),
        (["--seed", "x"], "integer seed"),
        (["--churn", "-1"], "churn rate"),
        (["--churn", "1"], "must be below 1"),
        (["--topology", "huge"], "invalid choice"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str) -> None:
    result = hamcast("sim", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_out_must_be_a_directory(tmp_path: Path) -> None:
    taken = tmp_path / "file"
    taken.write_text("")
    result = hamcast(*SMALL, "--out", str(taken))
    assert result.returncode == 2
    assert result.stderr.startswith("hamcast: error: --out")
