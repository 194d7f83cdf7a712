"""Every configuration whose rendered objects the security tests check: each example in each
layout (engine, llmapi, vllm, python) it can be served in, and each option that touches a pod
(sources, credentials, user and group, read-only root, network policy, autoscaling, an engine
switch). Shared by the Pod Security test and the Checkov tier."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath
from typing import Any

from tests.conftest import EXAMPLES, load_example

from chatmodel_operator.api import parse_chatmodel, parse_spec
from chatmodel_operator.catalog import KNOWN_MODELS, resolve_model
from chatmodel_operator.errors import ChatModelError
from chatmodel_operator.plan import plan_spec
from chatmodel_operator.render import render_children

NAMESPACE = "models"  # not `default`: the namespace is the user's, scanners flag that one
REPOSITORY = {
    PurePosixPath("ensemble/config.pbtxt"): 'name: "ensemble"\n',
    PurePosixPath("preprocessing/1/model.py"): "# model\n",
}
LAYOUTS: dict[str, dict[str, Any]] = {
    "engine": {"backend": "tensorrt-llm", "mode": "engine"},
    "llmapi": {"backend": "tensorrt-llm", "mode": "llmapi"},
    "vllm": {"backend": "vllm"},
    "python": {"backend": "python"},
}
YI = "01-ai/yi-34b-chat"
# Options that change a pod, each applied to one base spec (Yi-34B-Chat on one 80 GiB GPU).
OPTIONS: dict[str, dict[str, Any]] = {
    "credentials": {"model": {"source": "hf://01-ai/Yi-34B-Chat", "credentialsSecret": "hf"}},
    "s3": {"model": {"source": "s3://bucket/yi", "family": "yi-chat"}},
    "gs": {"model": {"source": "gs://bucket/yi", "family": "yi-chat"}},
    "pvc": {"model": {"source": "pvc://models/yi", "family": "yi-chat"}},
    "custom-user": {
        "serving": {"securityContext": {"runAsUser": 20001, "runAsGroup": 0, "fsGroup": 20001}}
    },
    "writable-root": {"serving": {"securityContext": {"readOnlyRootFilesystem": False}}},
    "level-restricted": {"serving": {"securityContext": {"podSecurityLevel": "restricted"}}},
    "network-policy": {
        "serving": {
            "networkPolicy": {
                "enabled": True,
                "fromNamespaces": ["apps"],
                "fromPodLabels": {"app": "chat-ui"},
            }
        }
    },
    "all-serving-toggles": {
        "serving": {"serviceMonitor": True, "openai": "Disabled", "replicas": 2},
        "autoscaling": {"enabled": True, "engine": "keda"},
        "cache": {"deletePolicy": "Delete", "accessMode": "ReadWriteOnce"},
    },
    "tensor-parallel-4": {"engine": {"tensorParallelism": 4}},
}
BASE: dict[str, Any] = {
    "model": {"source": "hf://01-ai/Yi-34B-Chat"},
    "resources": {"gpu": {"memoryGiB": 80}},
}


@dataclass(frozen=True)
class Rendered:
    id: str
    objects: tuple[dict[str, Any], ...]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _render(name: str, spec_dict: dict[str, Any], *, switch: bool = False) -> Rendered | None:
    """The children of one spec, or None where the layout cannot serve the model."""
    spec = parse_spec(spec_dict)
    config = None if spec.model.source.startswith("hf://") else KNOWN_MODELS[YI].config
    try:
        plan = plan_spec(spec, resolve_model(spec.model, config=config))
    except ChatModelError:
        return None
    if not plan.fits:
        return None
    extra: dict[str, Any] = {}
    if switch:  # the pods still serve an older engine while the planned one builds
        old = plan_spec(
            parse_spec(_merge(spec_dict, {"engine": {"maxBatchSize": 8}})),
            resolve_model(spec.model, config=config),
        )
        extra = {
            "serving_key": old.engine_key,
            "serving_plan": old,
            "serving_repository": REPOSITORY,
        }
    children = render_children(
        name=name,
        namespace=NAMESPACE,
        uid="uid-1",
        spec=spec,
        plan=plan,
        repository=REPOSITORY,
        **extra,
    )
    return Rendered(name, tuple(children.all()))


@cache
def configurations() -> tuple[Rendered, ...]:
    out: list[Rendered] = []
    for path in EXAMPLES:
        cm = parse_chatmodel(load_example(path))
        spec = cm.spec.model_dump(by_alias=True, exclude_none=True)
        as_is = _render(cm.metadata["name"], spec)
        assert as_is is not None, f"{path.name} must render as written"
        out.append(Rendered(f"{path.stem}", as_is.objects))
        for layout, engine in LAYOUTS.items():
            spec_l = _merge(spec, {"engine": {**engine, "quantization": "auto"}})
            spec_l["engine"].pop("tensorParallelism", None)
            rendered = _render(cm.metadata["name"], spec_l)
            if rendered is not None:
                out.append(Rendered(f"{path.stem}-{layout}", rendered.objects))
    for option, over in OPTIONS.items():
        rendered = _render("m", _merge(BASE, over))
        assert rendered is not None, f"option {option} must render"
        out.append(Rendered(f"option-{option}", rendered.objects))
    switching = _render("m", BASE, switch=True)
    assert switching is not None
    out.append(Rendered("option-engine-switch", switching.objects))
    return tuple(out)


def layouts_covered() -> set[str]:
    return {r.id.rsplit("-", 1)[-1] for r in configurations()} & set(LAYOUTS)


def pods() -> Iterator[tuple[str, dict[str, Any]]]:
    """(configuration/kind/name, object) of every object that has a pod template."""
    for r in configurations():
        for obj in r.objects:
            if obj["kind"] in ("Deployment", "Job"):
                yield f"{r.id}/{obj['kind']}/{obj['metadata']['name']}", obj


def containers(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every container of a pod spec: containers, initContainers, ephemeralContainers."""
    for key in ("containers", "initContainers", "ephemeralContainers"):
        yield from pod.get(key) or ()


def pod_templates(obj: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The pod spec of a Deployment, Job or anything with a template; nothing for other kinds."""
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, Mapping) and "spec" in template:
        yield template["spec"]
