"""The `chatmodel` command line: plan/render/crd output and exit status 2 on bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from tests.conftest import EXAMPLES, REPO, run_cli

from chatmodel_operator.cli import build_parser, main
from chatmodel_operator.runtime.chat import unreachable_hint


def test_plan_json_is_the_status_plan_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(REPO / "examples/suschat.yaml"), "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] is True and out["gpusPerReplica"] == 1 and out["backend"] == "tensorrt-llm"


def test_plan_gpu_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["plan", str(REPO / "examples/suschat.yaml"), "--gpu-memory-gib", "24", "-o", "json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["gpusPerReplica"] == 4
    assert main(["plan", str(REPO / "examples/suschat.yaml"), "--gpu-product", "NVIDIA-L40S"]) == 0
    assert "2 x 48 GiB" in capsys.readouterr().out


def test_crd_command_prints_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert (
        capsys.readouterr().out == (REPO / "crds/chatmodels.serving.chatmodel.io.yaml").read_text()
    )


BAD = {
    "unknown-field": (
        "spec:\n  model: {source: hf://01-ai/Yi-34B-Chat}\n  enigne: {}\n",
        "spec.enigne",
    ),
    "wrong-type": (
        "spec:\n  model: {source: hf://01-ai/Yi-34B-Chat}\n  serving: {replicas: many}\n",
        "spec.serving.replicas",
    ),
    "bad-enum": (
        "spec:\n  model: {source: hf://01-ai/Yi-34B-Chat}\n  engine: {quantization: int3}\n",
        "spec.engine.quantization",
    ),
    "impossible": (
        "spec:\n  model: {source: hf://01-ai/Yi-34B-Chat}\n  resources: {gpu: {product: NVIDIA-A100-SXM4-80GB}}\n  engine: {quantization: fp8}\n",
        "fp8 needs compute capability",
    ),
    "unknown-model": (
        "spec:\n  model: {source: hf://nobody/nothing}\n  resources: {gpu: {memoryGiB: 80}}\n",
        "spec.model.source",
    ),
    "not-yaml": ("spec: [unclosed\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_message(case: str, tmp_path: Path) -> None:
    body, expected = BAD[case]
    head = (
        ""
        if case == "not-yaml"
        else "apiVersion: serving.chatmodel.io/v1alpha1\nkind: ChatModel\nmetadata: {name: bad}\n"
    )
    f = tmp_path / "bad.yaml"
    f.write_text(head + body)
    proc = run_cli("plan", str(f))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "fix" in proc.stderr
    ) or case == "not-yaml"


def test_missing_file_exits_2() -> None:
    proc = run_cli("plan", "/nonexistent.yaml")
    assert proc.returncode == 2 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "cannot read"), ("spec: [unclosed\n", "not valid YAML"), ("", "no ChatModel")],
    ids=["missing", "not-yaml", "empty"],
)
def test_serve_with_a_bad_file_exits_2_without_a_traceback(
    content: str | None, expected: str, tmp_path: Path
) -> None:
    f = tmp_path / "chatmodel.yaml"
    if content is not None:
        f.write_text(content)
    proc = run_cli("serve", str(f))
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("url", ["localhost:1", "http://localhost:1"])
def test_chat_with_no_server_there_says_what_to_fix(url: str) -> None:
    proc = run_cli("chat", url, "hi")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "UNAVAILABLE" in proc.stderr, proc.stderr
    assert "fix: start the server (chatmodel serve) or check that localhost:1 is" in proc.stderr


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("localhost:8001", "start the server"),
        ("grpc://10.0.0.5:9001", "check that 10.0.0.5:9001 is its gRPC port"),
        ("localhost:8000", "port 8000 is Triton's HTTP"),
        ("http://svc.ns:8002", "port 8002 is Triton's HTTP or metrics port"),
        ("https://svc.ns", "with its port"),
    ],
)
def test_the_unreachable_hint_fits_the_address(url: str, fix: str) -> None:
    assert fix in unreachable_hint(url)


def test_tiny_checkpoint_where_it_cannot_write_exits_2() -> None:
    proc = run_cli("tiny-checkpoint", "/proc/no-such-dir/x", "--family", "yi-chat")
    assert proc.returncode == 2 and "cannot write" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_operator_without_credentials_exits_2_at_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    env["KUBECONFIG"] = str(tmp_path / "no-kubeconfig")
    proc = run_cli("operator", timeout=60, env={**env, "HOME": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert "no Kubernetes credentials" in proc.stderr and "KUBECONFIG" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_nothing_fits_is_reported_not_raised(tmp_path: Path) -> None:
    f = tmp_path / "big.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "serving.chatmodel.io/v1alpha1",
                "kind": "ChatModel",
                "metadata": {"name": "big"},
                "spec": {
                    "model": {"source": "hf://01-ai/Yi-34B-Chat"},
                    "resources": {"gpu": {"memoryGiB": 40, "count": 1}},
                },
            }
        )
    )
    proc = run_cli("plan", str(f), "-o", "json")
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert out["fits"] is False and "needs 64.1 GiB of weights" in out["reason"]
    assert run_cli("render", str(f)).returncode == 2


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_plans(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(path)]) == 0
    assert "fits                yes" in capsys.readouterr().out


def test_load_failures_name_each_model_and_the_first_line_of_its_reason() -> None:
    from chatmodel_operator.runtime.server import load_failures

    log = "\n".join(
        [
            "I1122 04:29:20.1 1 model_lifecycle.cc:777] \"failed to load 'postprocessing'\"",
            "E1122 04:29:20.6 1 model_lifecycle.cc:642] \"failed to load 'preprocessing' version 1:"
            ' Internal: ValueError: no tokenizer \\n(1) a file\\n(2) more"',
            "E1122 04:29:22.5 1 model_lifecycle.cc:642] \"failed to load 'tensorrt_llm' version 1:"
            ' Internal: OSError: bad weights"',
            "error: creating server: Internal - failed to load all models",
        ]
    )
    assert load_failures(log) == [
        "preprocessing: Internal: ValueError: no tokenizer",
        "tensorrt_llm: Internal: OSError: bad weights",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["serve", "x.yaml", "--http-port", "70000"],
            "--http-port: 70000 must be within [1, 65535]",
        ),
        (["serve", "x.yaml", "--openai-port", "-1"], "--openai-port: -1 must be within [0, 65535]"),
        (["serve", "x.yaml", "--max-batch-size", "0"], "--max-batch-size: 0 must be within"),
        (["chat", "localhost:8001", "hi", "--max-tokens", "x"], "'x' is not an integer"),
        (["tiny-checkpoint", "out", "--family", "xverse", "--train-steps", "-3"], "at least 0"),
        (["operator", "--resync-seconds", "0"], "--resync-seconds: 0.0 must be at least 1"),
        (["plan", "x.yaml", "--gpu-memory-gib", "-80"], "--gpu-memory-gib: -80.0 must be"),
    ],
)
def test_numeric_flags_out_of_range_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_port_of_zero_turns_the_openai_front_off() -> None:
    args = build_parser().parse_args(["serve", "x.yaml", "--openai-port", "0"])
    assert args.openai_port == 0
