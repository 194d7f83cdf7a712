"""What a user's kubectl prints, on the real API server with the real operator: `apply` of the
README's example (validation on), `get chm` and `get chm -w`, `describe chm`, `explain` and
`scale`. The README's kubectl commands are run as it writes them (`readme.command`), in the
test's namespace, and every claim about their output is asserted here (README: "Your first
ChatModel", "What kubectl shows", "Autoscaling"; docs/conditions.md)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from admin import DEPLOYMENTS, Admin, wait_until

from chatmodel_operator import readme
from conftest import SMALL_SPEC, ControlPlane, Models, Operator

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["NAME", "PHASE", "MODEL", "GPUS", "REPLICAS", "READY", "AGE"]
# README ("What kubectl shows"): the condition types, in order.
CONDITION_ORDER = ["Validated", "Planned", "EngineBuilding", "EngineReady", "EngineBuildFailed"]
CONDITION_ORDER += ["Available", "Ready"]


def example_in(example: str, ns: str) -> str:
    """An example file as the user has it, moved to the test's namespace."""
    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    doc["metadata"]["namespace"] = ns
    return yaml.safe_dump(doc, sort_keys=False)


def kubectl_args(words: list[str], ns: str) -> tuple[list[str], str | None]:
    """A README kubectl command's arguments in the test's namespace, and the stdin it needs: an
    example file is given on stdin, moved to that namespace."""
    assert words[0] == "kubectl", words
    args = [*words[1:], "-n", ns]
    if "-f" in args and args[args.index("-f") + 1].startswith("examples/"):
        at = args.index("-f") + 1
        example, args[at] = Path(args[at]).name, "-"
        return args, example_in(example, ns)
    return args, None


def run_readme(admin: Admin, ns: str, words: list[str]) -> subprocess.CompletedProcess[str]:
    args, stdin = kubectl_args(words, ns)
    return admin.kubectl(*args, input=stdin)


class Watch:
    """`kubectl get chm -w` in the background, its lines kept."""

    def __init__(self, admin: Admin, ns: str) -> None:
        args, _ = kubectl_args(readme.command("kubectl get chm -w"), ns)
        self.proc = subprocess.Popen(
            [str(admin.kubectl_bin), "--kubeconfig", str(admin.kubeconfig), *args],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def phases(self, name: str) -> list[str]:
        """The Phase column of each row about `name` ("" while there is no status yet: the
        row then goes from the name straight to the model)."""
        out = []
        for line in self.lines[1:]:
            words = line.split()
            if words[:1] == [name]:
                out.append("" if words[1].startswith("hf://") else words[1])
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.reader.join(10)


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def describe_block(text: str | list[str], heading: str, indent: int = 0) -> list[str]:
    """The lines under one `describe` heading (e.g. "Events:", or "Engine:" at indent 2),
    up to the next line indented as much as the heading or less."""
    lines = text.splitlines() if isinstance(text, str) else text
    start = lines.index(" " * indent + heading)
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) <= indent
        ),
        len(lines),
    )
    return lines[start + 1 : end]


def fields(lines: list[str]) -> dict[str, str]:
    """`Key:  value` lines as a dict."""
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def test_the_first_chatmodel_as_the_readme_tells_it(
    admin: Admin, ns: str, models: Models, operator: Operator, control_plane: ControlPlane
) -> None:
    control_plane.cluster.set_builds(hold=[ns])
    watch = Watch(admin, ns)
    try:
        # `kubectl apply -f examples/suschat.yaml`, with the API server's validation on.
        applied = run_readme(admin, ns, readme.command("kubectl apply -f examples/suschat.yaml"))
        assert applied.stdout.strip() == "chatmodel.serving.chatmodel.io/suschat created"
        assert applied.stderr == ""  # no warning: no unknown or deprecated field

        status = models.wait_phase("suschat", "BuildingEngine")
        key = status["engine"]["key"]
        rows = table(admin.kubectl("get", "chm", "-n", ns).stdout)
        assert rows[0] == COLUMNS
        building = ["suschat", "BuildingEngine", "hf://SUSTech/SUS-Chat-34B", "0", "0", "0"]
        assert rows[1][:6] == building
        # docs/conditions.md: while the engine builds, describe shows the Engine block and the
        # Event.
        described = run_readme(admin, ns, readme.command("kubectl describe chm suschat")).stdout
        status = describe_block(described, "Status:")
        engine = fields(describe_block(status, "Engine:", 2))
        assert engine["Job"] == f"chatmodel-build-{key}"
        assert engine["Key"] == key and engine["Ready"] == "false"
        assert engine["Attempts"] == "1"
        assert fields([line for line in status if line.startswith("  Phase:")]) == {
            "Phase": "BuildingEngine"
        }
        events = table("\n".join(describe_block(described, "Events:")))
        assert events[0] == ["Type", "Reason", "Age", "From", "Message"]
        assert events[2][:2] == ["Normal", "BuildingEngine"], events
        assert "chatmodel-operator" in events[2] and "New -> BuildingEngine" in " ".join(events[2])
    finally:
        control_plane.cluster.set_builds()
    # The held pod is let go: kwok completes it once nudged.
    admin.kubectl("annotate", "pods", "-n", ns, "-l", f"job-name=chatmodel-build-{key}", "t/n=1")
    try:
        models.wait_phase("suschat", "Ready")
        wait_until(lambda: "Ready" in watch.phases("suschat"), what="the watch to print Ready")
    finally:
        watch.stop()

    # `kubectl get chm -w`: from an empty phase through BuildingEngine to Ready (Deploying
    # shows unless the pods were ready within the settle time), never backwards.
    assert watch.lines[0].split() == COLUMNS
    seen = [p for i, p in enumerate(watch.phases("suschat")) if i == 0 or p != ""]
    order = ["", "BuildingEngine", "Deploying", "Ready"]
    distinct = [p for i, p in enumerate(seen) if i == 0 or p != seen[i - 1]]
    assert distinct[0] == "" and distinct[-1] == "Ready", watch.lines
    assert "BuildingEngine" in distinct, watch.lines
    assert [order.index(p) for p in distinct] == sorted(order.index(p) for p in distinct)
    row = table(admin.kubectl("get", "chm", "suschat", "-n", ns).stdout)[1]
    assert row[:6] == ["suschat", "Ready", "hf://SUSTech/SUS-Chat-34B", "1", "1", "1"]

    # `kubectl describe chm`: each condition as a block in the README's order, then the plan,
    # the engine and Events from chatmodel-operator for every phase change.
    described = run_readme(admin, ns, readme.command("kubectl describe chm suschat")).stdout
    types = [
        line.split(":", 1)[1].strip()
        for line in described.splitlines()
        if line.strip().startswith("Type:")
    ]
    assert types == [t for t in CONDITION_ORDER if t in types]
    assert {"Validated", "Planned", "EngineReady", "Available", "Ready"} <= set(types)
    # Then the other status fields, in kubectl's order (alphabetical), the plan and the
    # engine among them, then the Events.
    status_fields = [
        line.strip().rstrip(":").split(":")[0]
        for line in describe_block(described, "Status:")
        if line.startswith("  ") and line[2] != " "
    ]
    assert status_fields[0] == "Conditions" and {"Engine", "Plan"} <= set(status_fields)
    assert status_fields[1:] == sorted(status_fields[1:], key=str.lower), status_fields
    assert described.index("Status:") < described.index("Events:")
    events = table("\n".join(describe_block(described, "Events:")))
    reasons = [e[1] for e in events[2:]]
    # kubectl orders the table by timestamp, and Event timestamps have one-second resolution:
    # two Events of the same second come in either order. Their order is the API's.
    assert {"BuildingEngine", "Ready"} <= set(reasons), events
    in_order = [e["reason"] for e in models.events("suschat")]
    assert in_order[0] == "BuildingEngine" and in_order[-1] == "Ready", in_order
    assert all("chatmodel-operator" in e for e in events[2:]), events

    # README: one line per condition with the jsonpath it gives.
    command = readme.command(
        'kubectl get chm suschat -o jsonpath=\'{range .status.conditions[*]}{.type}{"\\t"}'
        '{.status}{"\\t"}{.reason}{"\\t"}{.message}{"\\n"}{end}\''
    )
    lines = run_readme(admin, ns, command).stdout
    per_type = {line.split("\t")[0]: line.split("\t") for line in lines.strip().splitlines()}
    assert set(per_type) == set(types)
    assert per_type["Ready"][1] == "True" and all(len(v) == 4 for v in per_type.values())
    endpoint = admin.kubectl(
        "get", "chm", "suschat", "-n", ns, "-o", "jsonpath={.status.endpoint}"
    ).stdout
    assert endpoint == f"http://suschat.{ns}.svc:8000"


def test_every_example_applies_as_it_is_with_validation_on(admin: Admin, ns: str) -> None:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(examples) >= 6
    for example in examples:
        out = admin.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=example_in(example.name, ns)
        )
        name = yaml.safe_load(example.read_text())["metadata"]["name"]
        assert (
            out.stdout.strip() == f"chatmodel.serving.chatmodel.io/{name} created (server dry run)"
        )
        assert out.stderr == "", (example.name, out.stderr)


def test_explain_shows_the_fields_descriptions(admin: Admin) -> None:
    out = admin.kubectl("explain", "chatmodel.spec.model").stdout
    assert "GROUP:      serving.chatmodel.io" in out and "KIND:       ChatModel" in out
    assert "FIELD: model <Object>" in out
    listed = describe_block(out, "FIELDS:")
    names = {line.split()[0] for line in listed if line.startswith("  ") and line[2] != " "}
    assert {"source", "credentialsSecret", "trustRemoteCode"} <= names, names
    # Each field has its description (pydantic's), e.g. the source's schemes.
    at = next(i for i, line in enumerate(listed) if line.split()[:1] == ["source"])
    assert "hf://" in " ".join(listed[at : at + 8]), listed[at : at + 8]


def test_scale_goes_through_the_scale_subresource(
    admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    models.create("suschat", {**SMALL_SPEC, "serving": {"replicas": 1}})
    models.wait_phase("suschat", "Ready")
    out = run_readme(admin, ns, readme.command("kubectl scale chm suschat --replicas 2"))
    assert out.stdout.strip() == "chatmodel.serving.chatmodel.io/suschat scaled"

    def row() -> list[str]:
        return table(admin.kubectl("get", "chm", "suschat", "-n", ns).stdout)[1]

    wait_until(lambda: row()[3:6] == ["2", "2", "2"], what=f"2 replicas (row {row()})")
    deployment: dict[str, Any] = admin.get(DEPLOYMENTS, ns, "suschat-triton") or {}
    assert deployment["spec"]["replicas"] == 2
    # kubectl refuses a negative count itself; through the scale subresource the API server
    # does, with the CRD's scale path.
    refused = admin.kubectl(
        "patch", "chm", "suschat", "-n", ns, "--subresource=scale", "--type=merge",
        "-p", '{"spec": {"replicas": -1}}', check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "non-negative" in refused.stderr, refused.stderr
    assert models.get("suschat")["spec"]["serving"]["replicas"] == 2


@pytest.mark.namespace_labels(**{"pod-security.kubernetes.io/enforce": "restricted"})
def test_every_example_becomes_ready_where_restricted_is_enforced(
    admin: Admin, ns: str, models: Models, operator: Operator
) -> None:
    """Each example as the user has it, applied in a namespace that enforces Pod Security
    restricted: its build Job's pod and its serving pods are admitted and it becomes Ready.
    The scale-to-zero example idles at 0 replicas behind a router, with KEDA's ScaledObject:
    without KEDA's API here it waits for it, which test_cluster_says covers."""
    examples = [
        e for e in sorted((ROOT / "examples").glob("*.yaml")) if "scale-to-zero" not in e.name
    ]
    names = []
    for example in examples:
        admin.kubectl("apply", "-f", "-", input=example_in(example.name, ns))
        names.append(yaml.safe_load(example.read_text())["metadata"]["name"])
    for name in names:
        models.wait_phase(name, "Ready", timeout=180)
    pods = admin.items(("", "v1", "pods"), ns)
    for name in names:
        serving = [
            p
            for p in pods
            if p["metadata"]["labels"].get("app.kubernetes.io/instance") == name
            and "job-name" not in p["metadata"]["labels"]
        ]
        assert serving, f"{name} has no serving pod"
        for pod in serving:
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    builds = [p for p in pods if "job-name" in p["metadata"]["labels"]]
    assert builds and all(p["status"]["phase"] == "Succeeded" for p in builds)
