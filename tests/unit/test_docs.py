"""The documentation: the generated API reference and the README's claims against the code."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from chatmodel_operator import docs
from chatmodel_operator.api import parse_chatmodel
from chatmodel_operator.api.crd import build_crd
from chatmodel_operator.api.spec import ChatModelStatus

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
API_DOC = REPO / docs.API_DOC_PATH


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _headings(text: str) -> set[str]:
    return {docs.anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def _fields(node: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """(section path, field name) of every field under an object schema."""
    out: list[tuple[str, str]] = []
    for name, child in node.get("properties", {}).items():
        out.append((path, name))
        element = child.get("items", child) if child.get("type") == "array" else child
        suffix = "[]" if child.get("type") == "array" else ""
        out += _fields(element, f"{path}.{name}{suffix}")
    return out


# --- docs/api.md -----------------------------------------------------------------------------


def test_api_reference_is_committed_and_fresh() -> None:
    assert API_DOC.read_text(encoding="utf-8") == docs.render_api_reference(), (
        "docs/api.md is stale: run `make generate`"
    )


def test_api_reference_documents_every_field_in_its_section() -> None:
    text = docs.render_api_reference()
    sections = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^#{2,3} (\S+)\n(.*?)(?=^#{2,3} |\Z)", text, re.M | re.S)
    }
    schema = _schema()
    missing = []
    for top in ("spec", "status"):
        for section, name in _fields(schema["properties"][top], top):
            if f"- **`{name}`**" not in sections.get(section, ""):
                missing.append(f"{section}.{name}")
    assert missing == []


def test_api_reference_links_resolve() -> None:
    text = docs.render_api_reference()
    targets = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert targets
    assert targets <= _headings(text)


@pytest.mark.parametrize(
    ("section", "field", "facts"),
    [
        pytest.param(
            "spec.engine",
            "maxBatchSize",
            ["`<integer>`", "Default: `64`.", "Range: at least 1 and at most 4096."],
            id="integer with default and range",
        ),
        pytest.param("spec.model", "family", ["One of: `auto`, `sus-chat`"], id="enum"),
        pytest.param(
            "spec.model",
            "source",
            ["**(required)**", "Pattern: `^(hf://"],
            id="required with pattern",
        ),
        pytest.param(
            "spec.engine",
            "tensorParallelism",
            ["`<int-or-string>`", "Default: `auto`."],
            id="int-or-string",
        ),
        pytest.param(
            "spec.autoscaling", "target", ["Range: greater than 0"], id="exclusive minimum"
        ),
        pytest.param(
            "status",
            "conditions",
            ["[`<[]object>`](#statusconditions)", "keyed by `type`"],
            id="list map",
        ),
    ],
)
def test_api_reference_reads_like_kubectl_explain(
    section: str, field: str, facts: list[str]
) -> None:
    text = docs.render_api_reference()
    body = text.split(f" {section}\n", 1)[1]
    entry = body.split(f"- **`{field}`**", 1)[1].split("\n\n", 1)[0]
    for fact in facts:
        assert fact in entry, f"{section}.{field}: {fact!r} not in {entry!r}"


def test_api_reference_lists_the_cel_rules_with_their_messages() -> None:
    text = docs.render_api_reference()
    spec = _schema()["properties"]["spec"]
    rules = [
        r
        for node in [spec, *spec["properties"].values()]
        for r in node.get("x-kubernetes-validations", [])
    ]
    assert rules
    for rule in rules:
        assert rule["message"] in text


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("spec.engine", "specengine"),
        ("status.conditions[]", "statusconditions"),
        ("Troubleshooting by condition", "troubleshooting-by-condition"),
        ("`kubectl get chm`", "kubectl-get-chm"),
    ],
)
def test_anchor_matches_github(heading: str, expected: str) -> None:
    assert docs.anchor(heading) == expected


def test_generated_files_hook_writes_the_reference() -> None:
    assert docs.generated_files() == {"docs/api.md": docs.render_api_reference()}


# --- README ----------------------------------------------------------------------------------


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_quick_start_is_the_two_make_commands() -> None:
    quick = _readme().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(make \w+)\s*$", quick, flags=re.MULTILINE)
    assert commands == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    for command in commands:
        assert re.search(rf"^{command.split()[1]}:", makefile, flags=re.MULTILINE)


def test_readme_links_resolve() -> None:
    text = _readme()
    anchors = _headings(text)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        resolves = (REPO / path).exists() if path else fragment in anchors
        if not resolves:
            broken.append(target)
    assert broken == []


def test_readme_names_every_phase_and_condition() -> None:
    text = _readme()
    phases = get_args(ChatModelStatus.model_fields["phase"].annotation)
    assert phases
    for phase in phases:
        assert f"`{phase}`" in text, phase
    from chatmodel_operator.conditions import CONDITION_TYPES

    troubleshooting = text.split("## Troubleshooting by condition", 1)[1].split("\n## ", 1)[0]
    for condition in CONDITION_TYPES:
        assert f"`{condition}`" in troubleshooting, condition


def test_readme_chatmodels_are_valid() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", _readme(), flags=re.S)
    chatmodels = [
        d
        for b in blocks
        for d in yaml.safe_load_all(b)
        if isinstance(d, dict) and d.get("kind") == "ChatModel"
    ]
    assert chatmodels
    for doc in chatmodels:
        parse_chatmodel(doc)


def _set_value(text: str) -> Any:
    """A `helm --set` value: {a,b} lists, booleans and integers as Helm parses them."""
    text = text.strip("'\"")
    if text.startswith("{") and text.endswith("}"):
        return [item for item in text[1:-1].split(",") if item]
    if text in ("true", "false"):
        return text == "true"
    return int(text) if text.isdigit() else text


def _our_helm_installs() -> list[list[str]]:
    """Every `helm install|upgrade` of charts/chatmodel-operator in the README's sh blocks."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", _readme(), flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command)
            if words[:2] in (["helm", "install"], ["helm", "upgrade"]) and (
                "charts/chatmodel-operator" in words
            ):
                commands.append(words)
    return commands


def test_readme_helm_installs_pass_the_chart_schema_and_lint() -> None:
    import helm_python

    installs = _our_helm_installs()
    assert len(installs) >= 2
    for words in installs:
        values: dict[str, Any] = {}
        for flag, arg in itertools.pairwise(words):
            if flag != "--set":
                continue
            dotted, _, raw = arg.partition("=")
            node = values
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = _set_value(raw)
        report = helm_python.lint(REPO / "charts/chatmodel-operator", values, strict=True)
        assert report["errors"] == [] and report["messages"] == [], (words, report)
