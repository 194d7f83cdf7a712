"""The Helm chart and the operator image: generated pieces, helm lint, rendered objects, RBAC."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from chatmodel_operator import __version__, chart, handlers, rbac
from chatmodel_operator.api import parse_chatmodel
from chatmodel_operator.api.crd import CRD_PATH
from chatmodel_operator.cli import build_parser, crd_yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / chart.CHART_DIR
RELEASE = "cmo"
NAMESPACE = "chatmodel-system"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.28", "1.33")

# Every switch the chart has: each combination must lint clean and render valid objects.
TOGGLES: dict[str, tuple[Any, Any]] = {
    "rbac.create": (True, False),
    "serviceAccount.create": (True, False),
    "watch.namespaces": ([], ["team-a", "team-b"]),
    "replicas": (1, 3),
    "metrics.serviceMonitor.enabled": (False, True),
    "metrics.prometheusRule.enabled": (False, True),
    "metrics.dashboards.enabled": (False, True),
}


def _values(settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in settings.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def _combinations() -> Iterator[Any]:
    names = list(TOGGLES)
    for picks in itertools.product((0, 1), repeat=len(names)):
        settings = {name: TOGGLES[name][pick] for name, pick in zip(names, picks, strict=True)}
        label = (
            ",".join(
                name.split(".")[-2 if name.endswith("enabled") else -1]
                for name, pick in zip(names, picks, strict=True)
                if pick
            )
            or "defaults"
        )
        yield pytest.param(_values(settings), id=label)


COMBINATIONS = list(_combinations())


@cache
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


def offline(values: dict[str, Any] | None) -> dict[str, Any]:
    """The values as `helm template` without a cluster needs them: no cluster serves the
    monitoring CRDs there, so the API check is off (the cluster tier installs with it on)."""
    values = dict(values or {})
    values["metrics"] = {"checkAPIs": False, **values.get("metrics", {})}
    return values


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce for an install."""
    return _chart().render(offline(values), name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render(values).items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# --- generated files ---------------------------------------------------------------------


def test_chart_crd_is_the_top_level_crd() -> None:
    chart_crd = (CHART / CRD_PATH).read_text(encoding="utf-8")
    assert chart_crd == (REPO / CRD_PATH).read_text(encoding="utf-8")
    assert chart_crd == crd_yaml()


@pytest.mark.parametrize("rel", sorted(chart.generated_files()))
def test_generated_file_is_committed_and_fresh(rel: str) -> None:
    path = REPO / rel
    assert path.exists(), f"{rel} is missing: run `make generate`"
    assert path.read_text(encoding="utf-8") == chart.generated_files()[rel], (
        f"{rel} is stale: run `make generate`"
    )


def test_monitoring_copies_match_monitoring_dir() -> None:
    assert (CHART / "files/prometheus-rules.yaml").read_text() == (
        REPO / "monitoring/rules.yaml"
    ).read_text()
    boards = sorted(p.name for p in (CHART / "files/dashboards").glob("*.json"))
    assert boards == sorted(p.name for p in (REPO / "monitoring/dashboards").glob("*.json"))
    for name in boards:
        assert (CHART / "files/dashboards" / name).read_text() == (
            REPO / "monitoring/dashboards" / name
        ).read_text()


def test_adapter_snippet_serves_every_recorded_signal() -> None:
    from chatmodel_operator.signals import SIGNALS

    snippet = yaml.safe_load((CHART / "files/prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"] for rule in snippet["rules"]["custom"]}
    assert served == {signal.hpa_metric for signal in SIGNALS.values()}


# --- helm lint ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", COMBINATIONS)
def test_helm_lint_strict_is_clean(values: dict[str, Any]) -> None:
    report = helm_python.lint(
        CHART,
        offline(values),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSIONS[0]}.0",
    )
    assert report["errors"] == []
    # Clean means no finding at all, not even an INFO one.
    assert report["messages"] == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({"replica": 2}, "additional properties 'replica'", id="misspelt key"),
        pytest.param({"replicas": "two"}, "want integer", id="wrong type"),
        pytest.param({"watch": {"namespaces": ["Team_A"]}}, "does not match", id="bad namespace"),
        pytest.param({"image": {"pullPolicy": "Sometimes"}}, "must be one of", id="bad enum"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], expected: str) -> None:
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert any(expected in error for error in report["errors"]), report


@pytest.mark.parametrize("kind", ["prometheusRule", "serviceMonitor"])
def test_a_monitoring_object_without_its_api_fails_naming_the_value_and_the_fix(kind: str) -> None:
    values = {"metrics": {kind: {"enabled": True}}}
    with pytest.raises(helm_python.HelmRenderError) as failed:
        _chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    message = str(failed.value)
    crd_kind = kind[0].upper() + kind[1:]
    assert f"metrics.{kind}.enabled=true needs the API monitoring.coreos.com/v1" in message
    assert f"(kind {crd_kind})" in message
    assert f"--api-versions monitoring.coreos.com/v1/{crd_kind}" in message
    assert "metrics.checkAPIs=false" in message


# --- rendered objects are valid ------------------------------------------------------------

# ServiceMonitor is a prometheus-operator CRD, which kubernetes-validate does not know: this is
# the part of monitoring.coreos.com/v1 the chart writes, strict, field names as in its CRD.
_SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h))+)$"},
                            "scrapeTimeout": {
                                "type": "string",
                                "pattern": "^(0|([0-9]+(ms|s|m|h))+)$",
                            },
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
_PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"groups": {"type": "array", "minItems": 1}},
        },
    },
}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _peering_schema(kind: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all((REPO / chart.PEERING_CRD_PATH).read_text()):
        if doc["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD for {kind} in {chart.PEERING_CRD_PATH}")


def validate(obj: dict[str, Any], kube_version: str) -> None:
    """Raise unless the object is valid for its kind (built-in kinds: strict OpenAPI schemas)."""
    meta = obj["metadata"]
    assert _NAME.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
    kind = obj["kind"]
    if kind == "ServiceMonitor":
        jsonschema.validate(obj, _SERVICE_MONITOR)
    elif kind == "PrometheusRule":
        jsonschema.validate(obj, _PROMETHEUS_RULE)
    elif obj["apiVersion"] == "kopf.dev/v1":
        jsonschema.validate(obj, _peering_schema(kind))
    else:
        kubernetes_validate.validate(obj, kube_version, strict=True)


@cache
def _validated(text: str, kube_version: str) -> None:
    validate(json.loads(text), kube_version)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", COMBINATIONS)
def test_every_rendered_object_validates(values: dict[str, Any], kube_version: str) -> None:
    objs = objects(values)
    assert objs
    for obj in objs:
        # Most objects repeat across combinations: validate each distinct one once.
        _validated(json.dumps(obj, sort_keys=True), kube_version)
    # Namespaced objects carry a namespace (`kubectl apply` of `helm template` output too).
    cluster_kinds = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    for obj in objs:
        assert ("namespace" in obj["metadata"]) == (obj["kind"] not in cluster_kinds), obj["kind"]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_chart_crds_validate(kube_version: str) -> None:
    crds = [
        d
        for p in sorted((CHART / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
    ]
    assert {c["metadata"]["name"] for c in crds} == {
        "chatmodels.serving.chatmodel.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    for crd in crds:
        kubernetes_validate.validate(crd, kube_version, strict=True)


def test_no_object_names_collide() -> None:
    values = _values({k: v[1] for k, v in TOGGLES.items() if k != "rbac.create"})
    seen = [
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects(values)
    ]
    assert len(seen) == len(set(seen))


# --- the operator Deployment ---------------------------------------------------------------


def test_deployment_is_hardened_and_probed_on_the_metrics_port() -> None:
    objs = objects()
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "metrics"
    assert "--metrics-port=8080" in c["args"]
    assert c["image"] == f"chatmodel-operator:{__version__}"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # The read-only root needs one writable place: /tmp, where HOME and HF_HOME point.
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HOME"] == "/tmp" and env["HF_HOME"].startswith("/tmp/")


def test_metrics_service_selects_the_operator_pods() -> None:
    objs = objects({"metrics": {"serviceMonitor": {"enabled": True}}})
    deployment = one(objs, "Deployment")
    service = one(objs, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = one(objs, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_image_tag_and_runas_user_can_be_overridden() -> None:
    objs = objects(
        {
            "image": {"repository": "r.example/cmo", "tag": "dev"},
            "securityContext": {"runAsUser": None},
        }
    )
    assert container(objs)["image"] == "r.example/cmo:dev"
    assert "runAsUser" not in one(objs, "Deployment")["spec"]["template"]["spec"]["securityContext"]


# The four ways the operator can be started: (values, scope arguments, peering kind).
MODES = [
    pytest.param({}, ["--all-namespaces"], None, id="all namespaces, standalone"),
    pytest.param(
        {"replicas": 2}, ["--all-namespaces"], "ClusterKopfPeering", id="all namespaces, peering"
    ),
    pytest.param(
        {"watch": {"namespaces": ["a", "b"]}},
        ["--namespace=a", "--namespace=b"],
        None,
        id="namespaced, standalone",
    ),
    pytest.param(
        {"replicas": 2, "watch": {"namespaces": ["a", "b"]}},
        ["--namespace=a", "--namespace=b"],
        "KopfPeering",
        id="namespaced, peering",
    ),
]


@pytest.mark.parametrize(("values", "scope_args", "peering"), MODES)
def test_scope_and_peering(
    values: dict[str, Any], scope_args: list[str], peering: str | None
) -> None:
    objs = objects(values)
    args = container(objs)["args"]
    assert [a for a in args if a.startswith(("--namespace", "--all-namespaces"))] == scope_args
    deployment = one(objs, "Deployment")
    peerings = [o for o in objs if o["apiVersion"] == "kopf.dev/v1"]
    if peering is None:
        assert not peerings
        # A lone operator must never overlap with its successor during an upgrade.
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
    else:
        assert {p["kind"] for p in peerings} == {peering}
        # The operator joins the object of this name (handlers.py); any other would be ignored.
        assert {p["metadata"]["name"] for p in peerings} == {handlers.PEERING_NAME}
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        if peering == "KopfPeering":
            assert sorted(p["metadata"]["namespace"] for p in peerings) == ["a", "b"]


@pytest.mark.parametrize(("values", "scope_args", "peering"), MODES)
def test_operator_arguments_parse(
    values: dict[str, Any], scope_args: list[str], peering: str | None
) -> None:
    args = container(objects(values))["args"]
    assert set(scope_args) <= set(args)
    try:
        parsed = build_parser().parse_args(["operator", *args])
    except SystemExit as exc:
        pytest.fail(f"`chatmodel operator {shlex.join(args)}` is rejected (exit {exc.code})")
    assert parsed.command == "operator"


# --- RBAC ----------------------------------------------------------------------------------


POOL_RULES = {("inference.networking.k8s.io", "inferencepools")}


def test_cluster_wide_role_is_the_declared_list() -> None:
    objs = objects({"rbac": {"inferencePools": "always"}})
    role = one(objs, "ClusterRole")
    assert triples(role["rules"]) == triples(rbac.rules())
    binding = one(objs, "ClusterRoleBinding")
    account = one(objs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert not of_kind(objs, "Role")
    deployment = one(objs, "Deployment")
    assert (
        deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    )


def test_namespaced_install_splits_the_declared_list_by_scope() -> None:
    namespaces = ["team-a", "team-b"]
    objs = objects({"watch": {"namespaces": namespaces}, "rbac": {"inferencePools": "always"}})
    cluster_role = one(objs, "ClusterRole")
    roles = of_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == namespaces
    declared = triples(rbac.rules())
    namespaced = {(u.kind.group, u.resource) for u in rbac.API_USES if u.kind.namespaced}
    for role in roles:
        assert triples(role["rules"]) == {t for t in declared if t[:2] in namespaced}
        assert triples(role["rules"]) | triples(cluster_role["rules"]) == declared
    # Nothing namespaced is granted cluster-wide in this mode.
    assert not {t[:2] for t in triples(cluster_role["rules"])} & namespaced
    bindings = of_kind(objs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == namespaces
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == NAMESPACE


@pytest.mark.parametrize(
    ("mode", "granted"),
    [
        pytest.param("always", True, id="always"),
        pytest.param("never", False, id="never"),
        # helm template knows no CRDs: auto sees no InferencePool API, as on a bare cluster.
        pytest.param("auto", False, id="auto-without-the-api"),
    ],
)
@pytest.mark.parametrize("namespaces", [[], ["team-a"]], ids=["cluster", "namespaced"])
def test_inference_pool_rules_follow_their_value(
    mode: str, granted: bool, namespaces: list[str]
) -> None:
    objs = objects({"rbac": {"inferencePools": mode}, "watch": {"namespaces": namespaces}})
    roles = of_kind(objs, "Role") if namespaces else of_kind(objs, "ClusterRole")
    assert roles
    declared = triples(rbac.rules())
    pools = {t for t in declared if t[:2] in POOL_RULES}
    assert pools and {t[2] for t in pools} >= {"list", "watch", "patch", "create", "delete"}
    for role in roles:
        got = triples(role["rules"])
        assert (pools <= got) is granted
        assert not (got & pools) or granted
        if not namespaces:
            assert got == (declared if granted else declared - pools)


def test_inference_pool_value_is_checked() -> None:
    with pytest.raises(Exception, match="inferencePools"):
        render({"rbac": {"inferencePools": "sometimes"}})


def test_rbac_and_service_account_can_be_left_to_the_platform() -> None:
    objs = objects(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops-sa"}}
    )
    kinds = {o["kind"] for o in objs}
    assert not kinds & {
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"


def test_merged_rules_agree_with_the_declared_merge() -> None:
    assert chart.merged_rules(rbac.API_USES) == rbac.rules()
    gated = [u for u in rbac.API_USES if u.gate is not None]
    # rbac.yaml adds gated rules to each namespaced Role: a cluster-scoped one would be lost.
    assert gated and all(u.kind.namespaced for u in gated)


# --- monitoring toggles --------------------------------------------------------------------


def test_monitoring_objects_only_when_enabled() -> None:
    kinds = {o["kind"] for o in objects()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    assert "Service" in kinds  # the metrics Service is always there


def test_prometheus_rule_carries_the_generated_groups() -> None:
    from chatmodel_operator.observability import rule_groups

    rule = one(
        objects({"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}}),
        "PrometheusRule",
    )
    assert rule["spec"]["groups"] == rule_groups()
    assert rule["metadata"]["labels"]["release"] == "kps"


def test_dashboards_are_configmaps_for_the_grafana_sidecar() -> None:
    from chatmodel_operator.observability import dashboards

    maps = of_kind(
        objects({"metrics": {"dashboards": {"enabled": True, "namespace": "grafana"}}}), "ConfigMap"
    )
    assert len(maps) == len(dashboards())
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "grafana"
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == dashboards()[name]


# --- values.yaml and NOTES -----------------------------------------------------------------


def _mismatches(values: dict[str, Any], schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys in values.yaml without a schema property, and schema properties without a value."""
    props = schema.get("properties", {})
    out = [f"{path}{k}: not in the schema" for k in values if k not in props]
    out += [f"{path}{k}: not in values.yaml" for k in props if k not in values and k != "global"]
    for key, child in props.items():
        # Free-form maps (labels, resources) have no properties: nothing fixed below them.
        if "properties" in child and isinstance(values.get(key), dict):
            out += _mismatches(values[key], child, f"{path}{key}.")
    return out


def test_every_value_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):")
    missing = []
    for i, line in enumerate(lines):
        match = key.match(line)
        if match and not lines[i - 1].strip().startswith("#") and "#" not in line:
            missing.append(f"line {i + 1}: {match.group(2)}")
    assert missing == []


def test_schema_describes_every_value_and_nothing_else() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    assert _mismatches(values, schema) == []


def test_notes_say_how_to_apply_and_watch_the_first_chatmodel() -> None:
    notes = render({"watch": {"namespaces": ["team-a"]}})["chatmodel-operator/templates/NOTES.txt"]
    assert "kubectl -n team-a get chm -w" in notes
    assert "kubectl -n team-a describe chm suschat" in notes
    assert "examples/suschat.yaml" in notes
    # The ChatModel the notes paste is valid, field for field.
    block = notes.split("<<'YAML'", 1)[1].split("\n", 1)[1].split("YAML", 1)[0]
    doc = yaml.safe_load("\n".join(line[5:] for line in block.splitlines()))
    assert parse_chatmodel(doc).metadata["name"] == "suschat"


def test_chart_version_follows_the_package() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["appVersion"] == __version__
    assert meta["name"] == "chatmodel-operator"


# --- the operator image --------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_is_slim_non_root_and_runs_the_operator() -> None:
    steps = _dockerfile()
    bases = [rest for ins, rest in steps if ins == "FROM"]
    assert len(bases) == 1 and re.match(r"^python:3\.1[1-9]-slim", bases[0])
    users = [rest for ins, rest in steps if ins == "USER"]
    assert users and re.match(r"^[1-9][0-9]*(:[1-9][0-9]*)?$", users[-1]), "numeric non-root user"
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["chatmodel", "operator"]
    # What it copies exists, and .dockerignore lets it through.
    copied = [p for ins, rest in steps if ins == "COPY" for p in rest.split()[:-1]]
    assert copied and all((REPO / p).exists() for p in copied)
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for path in copied:
        assert f"!{path.rstrip('/')}" in [i.rstrip("/") for i in ignore], path
    # The entrypoint's default arguments are ones `chatmodel operator` accepts.
    cmd = json.loads(dict(steps)["CMD"])
    assert build_parser().parse_args(["operator", *cmd]).command == "operator"
