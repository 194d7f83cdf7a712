"""Checkov over every object the operator renders (tests/renders.py: each example, layout and
pod option) and over the Helm chart with each toggle on: no finding but those in skips.yaml,
and no entry in skips.yaml that matches nothing.

Checkov lives in its own virtualenv (`make checkov` builds .venv-checkov; CHECKOV names another
binary). Without it the tier is skipped, saying how to get it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.renders import configurations

REPO = Path(__file__).resolve().parents[2]
SKIPS = yaml.safe_load((Path(__file__).parent / "skips.yaml").read_text())
# The chart's toggles (tests/unit/test_chart.py): defaults, each one on alone, all on.
CHART_TOGGLES: dict[str, Any] = {
    "rbac-off": {"rbac": {"create": False}},
    "serviceaccount-off": {"serviceAccount": {"create": False}},
    "namespaced": {"watch": {"namespaces": ["team-a", "team-b"]}},
    "replicas": {"replicas": 3},
    "servicemonitor": {"metrics": {"serviceMonitor": {"enabled": True}}},
    "prometheusrule": {"metrics": {"prometheusRule": {"enabled": True}}},
    "dashboards": {"metrics": {"dashboards": {"enabled": True}}},
}

pytestmark = pytest.mark.checkov


def checkov_binary() -> str | None:
    candidates = [os.environ.get("CHECKOV"), str(REPO / ".venv-checkov/bin/checkov")]
    for c in candidates:
        if c and Path(c).is_file():
            return c
    return shutil.which("checkov")


def _chart_values() -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {"defaults": None}
    out.update(CHART_TOGGLES)
    merged: dict[str, Any] = {}
    for values in CHART_TOGGLES.values():
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    out["all"] = merged
    return out


def write_inputs(directory: Path) -> int:
    """One YAML file per workload configuration and chart rendering; returns the number of
    Kubernetes objects written."""
    import helm_python

    count = 0
    for r in configurations():
        (directory / f"workload-{r.id}.yaml").write_text(yaml.safe_dump_all(r.objects))
        count += len(r.objects)
    chart = helm_python.Chart.load(REPO / "charts/chatmodel-operator")
    for label, values in _chart_values().items():
        values = values or {}
        offline = {**values, "metrics": {"checkAPIs": False, **values.get("metrics", {})}}
        rendered = chart.render(offline, name="cmo", namespace="chatmodel-system", is_install=True)
        docs = [
            d
            for path, text in sorted(rendered.items())
            if path.endswith(".yaml")
            for d in yaml.safe_load_all(text)
            if d
        ]
        (directory / f"chart-{label}.yaml").write_text(yaml.safe_dump_all(docs))
        count += len(docs)
    return count


def scan(binary: str, directory: Path) -> dict[str, Any]:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    proc = subprocess.run(
        [
            binary,
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: there are findings
    report = json.loads(proc.stdout)
    return report[0] if isinstance(report, list) else report


def _skip_for(check: str, file_name: str) -> dict[str, Any] | None:
    for entry in SKIPS:
        if entry["check"] == check and re.search(entry["files"], file_name):
            return entry
    return None


def test_skip_list_entries_say_why() -> None:
    assert len(SKIPS) <= 12, "keep the skip list short"
    for entry in SKIPS:
        assert re.fullmatch(r"CKV2?_K8S_\d+", entry["check"]), entry
        assert len(entry["reason"]) > 60, entry["check"]
        re.compile(entry["files"])


def test_no_finding_outside_the_skip_list(tmp_path: Path) -> None:
    binary = checkov_binary()
    if binary is None:
        pytest.skip("checkov not installed: `make checkov` builds .venv-checkov")
    objects = write_inputs(tmp_path)
    report = scan(binary, tmp_path)
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 10 * len(configurations())
    # Checkov counts the kinds it has checks for: every workload and chart object but the
    # custom resources (ScaledObject, ServiceMonitor, PrometheusRule).
    assert summary["resource_count"] > objects // 2
    failed = report["results"]["failed_checks"]
    used: set[int] = set()
    unexpected = []
    for f in failed:
        name = Path(f["file_path"]).name
        entry = _skip_for(f["check_id"], name)
        if entry is None:
            unexpected.append(f"{name}: {f['check_id']} {f['check_name']} ({f['resource']})")
        else:
            used.add(id(entry))
    assert unexpected == [], "\n".join(unexpected)
    stale = [e["check"] for e in SKIPS if id(e) not in used]
    assert stale == [], f"skip entries that match no finding any more: remove {stale}"
