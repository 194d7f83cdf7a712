"""The documentation: the generated API reference, the README's and docs/ claims against the code,
and every README command run by `make demo` or a test."""

from __future__ import annotations

import ast
import itertools
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from chatmodel_operator import docs, readme
from chatmodel_operator.api import parse_chatmodel
from chatmodel_operator.api.crd import build_crd
from chatmodel_operator.api.spec import ChatModelStatus

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
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


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page: Path) -> None:
    """Every relative link of the README and of docs/*.md names a file that exists and, with
    a #fragment, a heading of that file (of the page itself without a path)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # code, such as regular expressions, is no link
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        resolves = file.exists()
        if resolves and fragment:
            resolves = file.suffix == ".md" and fragment in _headings(file.read_text("utf-8"))
        if not resolves:
            broken.append(target)
    assert broken == []


def test_readme_names_every_phase_and_condition() -> None:
    """A user sees every phase in `kubectl get chm` and every condition in `describe`: the
    README names each phase, and its troubleshooting each condition."""
    text = _readme()
    phases = get_args(ChatModelStatus.model_fields["phase"].annotation)
    assert phases
    for phase in phases:
        assert f"`{phase}`" in text, phase
    from chatmodel_operator.conditions import CONDITION_TYPES

    troubleshooting = text.split("## Troubleshooting by condition", 1)[1].split("\n## ", 1)[0]
    for condition in CONDITION_TYPES:
        assert f"`{condition}`" in troubleshooting, condition


def test_conditions_page_has_every_condition_in_every_phase() -> None:
    """docs/conditions.md: each phase in its table with what to look at, each condition in the
    per-phase table, and a troubleshooting entry for each condition."""
    text = (REPO / "docs" / "conditions.md").read_text(encoding="utf-8")
    phases = get_args(ChatModelStatus.model_fields["phase"].annotation)
    for phase in phases:
        assert f"| `{phase}` |" in text, phase
    from chatmodel_operator.conditions import CONDITION_TYPES

    per_phase = text.split("| Condition | `BuildingEngine` |", 1)[1].split("\n\n", 1)[0]
    troubleshooting = text.split("## Troubleshooting by condition", 1)[1]
    for condition in CONDITION_TYPES:
        assert f"`{condition}`" in troubleshooting, condition
        if condition != "InferencePoolReady":  # only with a pool; its own list above the table
            assert f"| `{condition}` |" in per_phase, condition


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
    """Every `helm install|upgrade` of charts/chatmodel-operator in the sh blocks of the README
    and docs/."""
    commands = []
    for page in [README, *DOCS]:
        for words in readme.commands(page.read_text(encoding="utf-8")):
            if words[:2] in (["helm", "install"], ["helm", "upgrade"]) and (
                "charts/chatmodel-operator" in words
            ):
                commands.append(words)
    return commands


def test_helm_installs_in_the_docs_pass_the_chart_schema_and_lint() -> None:
    import helm_python

    installs = _our_helm_installs()
    assert len(installs) >= 3
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


# --- every README command is run ------------------------------------------------------------

# This module asks for a command the README lacks on purpose, so it is no runner.
RUNNERS = [REPO / "operator/chatmodel_operator/demo.py"]
RUNNERS += [p for p in sorted((REPO / "tests").rglob("*.py")) if p != Path(__file__).resolve()]


@cache
def _asked_for() -> dict[tuple[str, ...], list[str]]:
    """The commands `make demo` and the tests run through `readme.command("...")`, with where."""
    asked: dict[tuple[str, ...], list[str]] = {}
    for path in RUNNERS:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "command"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "readme"
            ):
                arg = node.args[0]
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                    f"{path.relative_to(REPO)}:{node.lineno}: readme.command takes the literal text"
                )
                key = tuple(shlex.split(arg.value))
                asked.setdefault(key, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return asked


def _make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+):", makefile, flags=re.MULTILINE))


def _not_run(text: str) -> list[str]:
    asked, targets = _asked_for(), _make_targets()
    return [
        shlex.join(words)
        for words in readme.commands(text)
        if tuple(words) not in asked
        and not (words[0] == "make" and len(words) == 2 and words[1] in targets)
    ]


def test_every_readme_command_is_run_by_make_demo_or_a_test() -> None:
    """Each command in the README's sh blocks is run as written by `make demo` (demo.py) or a
    test, which ask for it with `readme.command`; `make <target>` needs only the target."""
    assert len(readme.commands(_readme())) >= 10
    assert _not_run(_readme()) == []


def test_a_command_nobody_runs_fails_the_check() -> None:
    bogus = _readme() + "\n```sh\nkubectl delete chm suschat\n```\n"
    assert _not_run(bogus) == ["kubectl delete chm suschat"]


def test_what_the_runners_ask_for_is_in_the_readme() -> None:
    """The other way round, ahead of the runs themselves: readme.command fails on a command the
    README does not have, so demo and tests never run a command the README dropped."""
    asked = _asked_for()
    assert asked
    commands = [tuple(c) for c in readme.commands(_readme())]
    assert {c: where for c, where in asked.items() if c not in commands} == {}
    with pytest.raises(LookupError, match="no command"):
        readme.command("kubectl delete chm suschat")


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        pytest.param("a b\nc d\n", [["a", "b"], ["c", "d"]], id="one a line"),
        pytest.param("a \\\n  b\n", [["a", "b"]], id="continued"),
        pytest.param("a  # why\n# only\n", [["a"]], id="comments"),
        pytest.param("a && b c\n", [["a"], ["b", "c"]], id="and"),
        pytest.param("a '{x y}' \"z\"\n", [["a", "{x y}", "z"]], id="quotes"),
    ],
)
def test_readme_commands_are_split_as_the_shell_splits_them(
    block: str, expected: list[list[str]]
) -> None:
    assert readme.commands(f"```sh\n{block}```\n```yaml\nnot: run\n```\n") == expected
