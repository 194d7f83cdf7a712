"""The chart installed by the real helm (v4) on the real API server: the README's install, its
upgrade with changed values (two replicas, namespaced-only), an upgrade that needs an API the
cluster lacks (refused early, naming the value and the CRD), and the README's uninstall. The
README's helm commands are run as it writes them (`readme.command`), with this test's release
and namespace. The session's operator runs from the same chart (conftest), so
the CRDs served in every other test are the chart's. The chart's own Deployment is left to
kwok: the operator image cannot be built on this machine."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from admin import CRDS, DEPLOYMENTS, Admin, Resource, wait_until

from chatmodel_operator import readme
from conftest import ROOT, ControlPlane

pytestmark = pytest.mark.cluster

CHART = ROOT / "charts" / "chatmodel-operator"
RELEASE = "second"
FULLNAME = f"{RELEASE}-chatmodel-operator"
ROLES: Resource = ("rbac.authorization.k8s.io", "v1", "roles")
SERVICE_ACCOUNTS: Resource = ("", "v1", "serviceaccounts")
PEERINGS: Resource = ("kopf.dev", "v1", "kopfpeerings")


def for_test(words: list[str], ns: str) -> list[str]:
    """A README helm command with this test's release, namespace (also as the one to watch)
    and the chart's absolute path; every value as the README writes it."""
    assert words[0] == "helm", words
    args = [*words[1:2], RELEASE, *words[3:]]
    args = [a.replace("chatmodel-system", ns).replace("{team-a,team-b}", f"{{{ns}}}") for a in args]
    return [str(CHART) if a == "charts/chatmodel-operator" else a for a in args]


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

    # The README's install, a second cluster-wide release beside the session's.
    install = readme.command(
        "helm install chatmodel-operator charts/chatmodel-operator --namespace chatmodel-system "
        "--create-namespace --set image.repository=registry.example.com/chatmodel-operator"
    )
    out = helm(*for_test(install, ns), "--wait", "--timeout=120s").stdout
    assert "STATUS: deployed" in out
    deployment = admin.get(DEPLOYMENTS, ns, FULLNAME)
    assert deployment is not None and deployment["status"].get("readyReplicas") == 1
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" in container["args"], container["args"]
    assert container["image"].startswith("registry.example.com/chatmodel-operator:")

    # The README's upgrade with changed values: namespaced-only, and two replicas that elect
    # one active operator through the namespace's KopfPeering (from the chart's CRDs).
    upgrade = readme.command(
        "helm upgrade chatmodel-operator charts/chatmodel-operator -n chatmodel-system "
        "--reuse-values --set replicas=2 --set 'watch.namespaces={team-a,team-b}'"
    )
    helm(*for_test(upgrade, ns), "--wait", "--timeout=120s")
    deployment = admin.get(DEPLOYMENTS, ns, FULLNAME)
    assert deployment is not None
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={ns}" in args and "--all-namespaces" not in args, args
    assert admin.get(ROLES, ns, FULLNAME) is not None
    assert admin.get(SERVICE_ACCOUNTS, ns, FULLNAME) is not None
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
    uninstall = readme.command("helm uninstall chatmodel-operator -n chatmodel-system")
    helm(*for_test(uninstall, ns), "--wait", "--timeout=120s")
    wait_until(
        lambda: (
            admin.get(DEPLOYMENTS, ns, FULLNAME) is None
            and admin.get(ROLES, ns, FULLNAME) is None
            and admin.get(SERVICE_ACCOUNTS, ns, FULLNAME) is None
        ),
        what="the release's objects to be deleted",
    )
    assert admin.get(CRDS, None, chart_crd["metadata"]["name"]) is not None
