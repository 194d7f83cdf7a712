"""The chart installed by the real helm (v4) on the real API server: install, an upgrade with a
changed value, an upgrade that needs an API the cluster lacks (refused early, naming the value
and the CRD), and uninstall. The session's operator runs from the same chart (conftest), so
the CRDs served in every other test are the chart's. The chart's own Deployment is left to
kwok: the operator image cannot be built on this machine."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from admin import CRDS, DEPLOYMENTS, Admin, Resource, wait_until

from conftest import ROOT, ControlPlane

pytestmark = pytest.mark.cluster

CHART = ROOT / "charts" / "chatmodel-operator"
RELEASE = "second"
FULLNAME = f"{RELEASE}-chatmodel-operator"
ROLES: Resource = ("rbac.authorization.k8s.io", "v1", "roles")
SERVICE_ACCOUNTS: Resource = ("", "v1", "serviceaccounts")
PEERINGS: Resource = ("kopf.dev", "v1", "kopfpeerings")


def history(control_plane: ControlPlane, ns: str) -> list[dict[str, Any]]:
    out = control_plane.cluster.helm("history", RELEASE, "-n", ns, "-o", "json").stdout
    return list(json.loads(out))


def test_install_upgrade_and_uninstall(control_plane: ControlPlane, admin: Admin, ns: str) -> None:
    helm = control_plane.cluster.helm
    chart_crd = yaml.safe_load(
        (CHART / "crds" / "chatmodels.serving.chatmodel.io.yaml").read_text()
    )
    served = admin.get(CRDS, None, chart_crd["metadata"]["name"])
    assert served is not None and served["spec"]["versions"] == chart_crd["spec"]["versions"]

    # A second, namespaced install beside the session's cluster-wide one.
    out = helm(
        "install", RELEASE, str(CHART), "-n", ns, f"--set=watch.namespaces={{{ns}}}",
        "--wait", "--timeout=120s",
    ).stdout  # fmt: skip
    assert "STATUS: deployed" in out
    deployment = admin.get(DEPLOYMENTS, ns, FULLNAME)
    assert deployment is not None and deployment["status"].get("readyReplicas") == 1
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={ns}" in args and "--all-namespaces" not in args, args
    assert admin.get(ROLES, ns, FULLNAME) is not None
    assert admin.get(SERVICE_ACCOUNTS, ns, FULLNAME) is not None

    # An upgrade with a changed value: two replicas elect one active operator through the
    # namespace's KopfPeering (from the chart's CRDs).
    helm(
        "upgrade", RELEASE, str(CHART), "-n", ns, "--reuse-values", "--set=replicas=2",
        "--wait", "--timeout=120s",
    )  # fmt: skip
    wait_until(
        lambda: (
            (admin.get(DEPLOYMENTS, ns, FULLNAME) or {}).get("status", {}).get("readyReplicas") == 2
        ),
        what="the upgraded Deployment's 2 replicas",
    )
    assert admin.items(PEERINGS, ns), "the chart makes the KopfPeering for replicas > 1"
    assert [(r["revision"], r["status"]) for r in history(control_plane, ns)] == [
        (1, "superseded"),
        (2, "deployed"),
    ]

    # A value whose API this cluster lacks fails before anything is applied, naming the value,
    # the API and the fix, instead of Helm's bare "no matches for kind PrometheusRule".
    with pytest.raises(RuntimeError) as failed:
        helm(
            "upgrade", RELEASE, str(CHART), "-n", ns, "--reuse-values",
            "--set=metrics.prometheusRule.enabled=true",
        )  # fmt: skip
    message = str(failed.value)
    assert "metrics.prometheusRule.enabled=true needs the API monitoring.coreos.com/v1" in message
    assert "(kind PrometheusRule)" in message and "no matches for kind" not in message
    assert history(control_plane, ns)[-1]["revision"] == 2  # nothing was applied
    assert history(control_plane, ns)[-1]["status"] == "deployed"

    # Uninstall removes what the release made; the CRDs stay (Helm never deletes crds/), so
    # ChatModels of other releases and namespaces keep their API.
    helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout=120s")
    wait_until(
        lambda: (
            admin.get(DEPLOYMENTS, ns, FULLNAME) is None
            and admin.get(ROLES, ns, FULLNAME) is None
            and admin.get(SERVICE_ACCOUNTS, ns, FULLNAME) is None
        ),
        what="the release's objects to be deleted",
    )
    assert admin.get(CRDS, None, chart_crd["metadata"]["name"]) is not None
