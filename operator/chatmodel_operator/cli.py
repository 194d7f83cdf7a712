"""The `chatmodel` command: plan, render and crd here; serve, chat, tiny-checkpoint and
operator are added by their own modules' ``register_commands``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from chatmodel_operator.adapters.checkpoint import read_model_files
from chatmodel_operator.api import ChatModel, parse_chatmodel
from chatmodel_operator.api.crd import build_crd
from chatmodel_operator.cli_args import (
    EXIT_BAD_INPUT,
    CliError,
    bounded,
    load_documents,
)
from chatmodel_operator.errors import ChatModelError
from chatmodel_operator.plan import Plan, plan_model
from chatmodel_operator.render import render_children


def plan_document(
    doc: Any, *, gpu_memory_gib: float | None = None, gpu_product: str | None = None
) -> tuple[ChatModel, Any, Plan]:
    cm = parse_chatmodel(doc)
    config, tokenizer_config = read_model_files(cm.spec.model.source)
    model, plan = plan_model(
        cm.spec,
        config=config,
        tokenizer_config=tokenizer_config,
        gpu_memory_gib=gpu_memory_gib,
        gpu_product=gpu_product,
    )
    return cm, model, plan


def _plan_table(name: str, source: str, plan: Plan) -> str:
    st = plan.to_status()
    rows = [
        ("fits", "yes" if plan.fits else "NO"),
        ("backend", plan.backend + (f" ({plan.mode})" if plan.mode else "")),
        ("image", plan.image),
        ("family", st["family"] or "-"),
        ("precision", f"{plan.dtype}, weights {plan.quantization}, KV {plan.kv_cache_dtype}"),
        (
            "gpus per replica",
            f"{plan.gpus_per_replica} x {plan.gpu_memory_gib:g} GiB"
            + (f" ({plan.gpu_product})" if plan.gpu_product else ""),
        ),
        ("tensor parallelism", str(plan.tensor_parallelism)),
        ("weights", f"{plan.weights_gib} GiB ({plan.weights_per_gpu_gib} GiB per GPU)"),
        (
            "kv cache",
            f"{plan.kv_cache_bytes_per_token} B/token, {plan.kv_cache_tokens} tokens per replica",
        ),
        (
            "sequence",
            f"{plan.max_input_length} in + {plan.max_output_length} out, "
            f"{plan.max_concurrent_sequences} at once",
        ),
        ("engine key", plan.engine_key),
        (
            "openai frontend",
            ("yes" if plan.openai_frontend else "no") + f" ({plan.openai_frontend_reason})",
        ),
        ("reason", plan.reason),
    ]
    if plan.mode_reason:
        rows.insert(2, ("mode", plan.mode_reason))
    rows += [("warning", w) for w in plan.warnings]
    width = max(len(k) for k, _ in rows)
    lines = [f"{name} ({source})"] + [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)


def _build_repository(cm: ChatModel, model: Any, plan: Plan) -> dict[Any, str]:
    from chatmodel_operator.render.repository import build_repository_for

    return dict(build_repository_for(spec=cm.spec, plan=plan, model=model))


def cmd_plan(args: argparse.Namespace) -> int:
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    for doc in load_documents(args.file):
        cm, _, plan = plan_document(
            doc, gpu_memory_gib=args.gpu_memory_gib, gpu_product=args.gpu_product
        )
        out.append(plan.to_status())
        texts.append(_plan_table(cm.metadata.get("name", "?"), cm.spec.model.source, plan))
    if args.output == "json":
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        print("\n\n".join(texts))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    objects: list[dict[str, Any]] = []
    for doc in load_documents(args.file):
        cm, model, plan = plan_document(doc)
        if not plan.fits:
            raise CliError(f"{cm.metadata['name']}: does not fit: {plan.reason}")
        meta = cm.metadata
        children = render_children(
            name=meta["name"],
            namespace=meta.get("namespace") or args.namespace,
            uid=meta.get("uid", "00000000-0000-0000-0000-000000000000"),
            spec=cm.spec,
            plan=plan,
            repository=_build_repository(cm, model, plan),
        )
        objects += children.all()
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def cmd_releases(args: argparse.Namespace) -> int:
    """The table of NGC releases the planner judges images by (catalog.triton_releases)."""
    from chatmodel_operator.catalog.triton_releases import RELEASES
    from chatmodel_operator.plan.frontend import REQUIRED_FLAGS
    from chatmodel_operator.plan.image import default_release

    rows = [
        {
            "release": r.name,
            "server": r.server,
            "tensorrtLlm": r.trtllm,
            "enginePath": r.engine_path,
            "llmapiModel": r.llmapi_model,
            "llmapiMode": r.llmapi_mode,
            "openaiFrontend": r.openai_frontend,
            "frontendFlags": sorted(r.frontend_flags) if r.frontend_flags is not None else None,
            "vllm": r.vllm,
            "note": r.note or None,
        }
        for r in RELEASES
    ]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    head = (
        "release",
        "server",
        "TensorRT-LLM",
        "engine path",
        "LLM-API model",
        "llmapi mode",
        "OpenAI frontend",
        "vLLM",
    )
    table = [head] + [
        (
            r.name,
            r.server or "?",
            r.trtllm or "?",
            _yes_no(r.engine_path),
            _yes_no(r.llmapi_model),
            _yes_no(r.llmapi_mode),
            "?"
            if r.frontend_flags is None
            else ("with " + ", ".join(REQUIRED_FLAGS) if r.takes_flags(*REQUIRED_FLAGS) else "yes"),
            r.vllm or "?",
        )
        for r in RELEASES
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    default = default_release("tensorrt-llm/engine")
    print(
        f"\n? = not documented by NVIDIA. Default image: {default.name} (the newest release whose "
        "TensorRT-LLM is documented). `chatmodel releases -o json` lists every frontend flag."
    )
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    crd = build_crd()
    print(json.dumps(crd, indent=2) if args.output == "json" else crd_yaml(crd), end="")
    return 0


def crd_yaml(crd: dict[str, Any] | None = None) -> str:
    header = (
        "# Generated by `chatmodel crd` from the pydantic models in "
        "operator/chatmodel_operator/api; do not edit.\n"
    )
    return header + yaml.safe_dump(crd or build_crd(), sort_keys=False, width=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatmodel", description="Serve chat LLMs on Triton from one ChatModel resource."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="plan GPUs, parallelism and precision for a ChatModel file")
    p.add_argument("file", help="ChatModel YAML (or - for standard input)")
    p.add_argument(
        "--gpu-memory-gib",
        type=bounded(float, 1),
        help="memory of one GPU in GiB (overrides the spec)",
    )
    p.add_argument("--gpu-product", help="nvidia.com/gpu.product label (overrides the spec)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_plan)
    r = sub.add_parser("render", help="print every Kubernetes object the operator would create")
    r.add_argument("file")
    r.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    r.add_argument("-n", "--namespace", default="default")
    r.set_defaults(func=cmd_render)
    rel = sub.add_parser(
        "releases", help="list the NGC Triton releases and what their images carry"
    )
    rel.add_argument("-o", "--output", choices=["table", "json"], default="table")
    rel.set_defaults(func=cmd_releases)
    c = sub.add_parser("crd", help="print the ChatModel CustomResourceDefinition")
    c.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    c.set_defaults(func=cmd_crd)
    # Imported here rather than at the top so that `python -m chatmodel_operator.generate` and the
    # pure tests importing this module do not load kopf.
    from chatmodel_operator import runner
    from chatmodel_operator.runtime import commands

    commands.register_commands(sub)
    runner.register_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ChatModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
