"""Every ScaledObject the operator can render, for each load signal, with and without scale to
zero behind an InferencePool, is accepted by the real API server under KEDA's own CRD (from its
module, as installed by the autoscaling tier) in a server-side dry run; KEDA's admission webhook
is not run."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from tests.autoscaling.stack import NS, Loop

from chatmodel_operator.api import parse_spec
from chatmodel_operator.api.spec import DEFAULT_TARGETS
from chatmodel_operator.catalog import resolve_model
from chatmodel_operator.plan import plan_spec
from chatmodel_operator.render import render_children

pytestmark = [pytest.mark.autoscaling, pytest.mark.timeout(600)]


def scaled_object(metric: str, to_zero: bool) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"source": "hf://01-ai/Yi-34B-Chat"},
        "resources": {"gpu": {"memoryGiB": 80}},
        "autoscaling": {"enabled": True, "engine": "keda", "metric": metric},
    }
    if to_zero:
        raw["routing"] = {"inferencePool": {}}
        raw["autoscaling"] |= {"minReplicas": 0, "cooldownSeconds": 60}
    spec = parse_spec(raw)
    children = render_children(
        name=f"so-{metric}-{int(to_zero)}",
        namespace=NS,
        uid="00000000-0000-0000-0000-000000000000",
        spec=spec,
        plan=plan_spec(spec, resolve_model(spec.model)),
        repository={},
    )
    obj = next(o for o in children.serving if o["kind"] == "ScaledObject")
    obj["metadata"].pop("ownerReferences", None)  # its owner does not exist in a dry run
    return obj


@pytest.mark.parametrize(
    ("metric", "to_zero"),
    list(itertools.product(sorted(DEFAULT_TARGETS), (False, True))),
    ids=lambda v: str(v),
)
def test_rendered_scaled_object_is_accepted_by_kedas_crd(
    loop: Loop, metric: str, to_zero: bool
) -> None:
    obj = scaled_object(metric, to_zero)
    got = loop.admin.request(
        "POST",
        f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects",
        obj,
        query={"dryRun": "All", "fieldValidation": "Strict"},
    )
    # What the API server would store: the rendered spec, nothing pruned or defaulted away.
    for key, value in obj["spec"].items():
        assert got["spec"][key] == value, key
    assert len(got["spec"]["triggers"]) == (2 if to_zero else 1)
