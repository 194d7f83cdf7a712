"""What the serving image can run, from the table of NGC releases (pure).

An NGC tag (``.../tritonserver:YY.MM-<flavour>``) is looked up in
``catalog.triton_releases``: engine mode needs a release that ships TensorRT-LLM's engine tools
(trtllm-build, convert_checkpoint.py, the C++ backend), llmapi mode one whose TensorRT-LLM takes
our LLM() arguments (1.0 or newer). A fact the table does not have is never assumed: engine
mode is not planned on a release whose TensorRT-LLM is undocumented. Any other image is a
custom build, trusted to carry what ``spec.engine.mode`` says.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from chatmodel_operator.catalog.triton_releases import (
    RELEASES,
    TritonRelease,
    release_text,
)

__all__ = [
    "NGC_REPOSITORY",
    "ImageFacts",
    "RouteCheck",
    "check_route",
    "default_image",
    "default_release",
    "image_facts",
    "ngc_image",
]

NGC_REPOSITORY = "nvcr.io/nvidia/tritonserver"
TRTLLM_FLAVOUR = "trtllm-python-py3"
VLLM_FLAVOUR = "vllm-python-py3"
FLAVOUR_BY_ROUTE = {
    "tensorrt-llm/engine": TRTLLM_FLAVOUR,
    "tensorrt-llm/llmapi": TRTLLM_FLAVOUR,
    "vllm": VLLM_FLAVOUR,
    # Our transformers engine needs torch and transformers, which both LLM images carry.
    "python": TRTLLM_FLAVOUR,
}
_MODE_NAME = {"tensorrt-llm/engine": "engine mode", "tensorrt-llm/llmapi": "llmapi mode"}
# NGC release tags: YY.MM, then the flavour (-py3, -trtllm-python-py3, -vllm-python-py3 ...).
_RELEASE_TAG = re.compile(r"^(\d{2})\.(\d{2})(?:-([A-Za-z0-9._-]+))?$")


@dataclass(frozen=True)
class ImageFacts:
    image: str
    release: tuple[int, int] | None  # None: not an NGC tritonserver release tag
    flavour: str | None  # the tag's suffix: trtllm-python-py3, vllm-python-py3, py3 ...
    row: TritonRelease | None  # the table's row for the release, when it has one
    before_table: bool = False  # an NGC release older than the table's first row

    @property
    def ngc(self) -> bool:
        return self.release is not None

    @property
    def name(self) -> str:
        return release_text(self.release) if self.release else self.image


@dataclass(frozen=True)
class RouteCheck:
    """Whether a route runs on an image: True, False, or None when nobody documents it."""

    ok: bool | None
    reason: str


def image_facts(image: str, releases: Sequence[TritonRelease] = RELEASES) -> ImageFacts:
    """Parse an image reference (any registry or mirror, digest allowed) against the table."""
    reference = image.split("@", 1)[0]
    name, colon, tag = reference.rpartition(":")
    # No tag (the colon, if any, was a registry's port), or another repository: a custom build.
    if not colon or "/" in tag or name.rsplit("/", 1)[-1] != "tritonserver":
        return ImageFacts(image, None, None, None)
    m = _RELEASE_TAG.match(tag)
    if not m:
        return ImageFacts(image, None, None, None)
    release = (int(m.group(1)), int(m.group(2)))
    row = next((r for r in releases if r.release == release), None)
    return ImageFacts(image, release, m.group(3), row, before_table=release < releases[0].release)


def ngc_image(release: tuple[int, int], flavour: str) -> str:
    return f"{NGC_REPOSITORY}:{release_text(release)}-{flavour}"


def default_release(route: str, releases: Sequence[TritonRelease] = RELEASES) -> TritonRelease:
    """The newest release whose TensorRT-LLM is documented and that runs ``route``."""
    known = [r for r in releases if r.trtllm is not None]
    if route == "tensorrt-llm/engine":
        known = [r for r in known if r.engine_path]
    elif route == "tensorrt-llm/llmapi":
        known = [r for r in known if r.llmapi_mode]
    return known[-1]


def default_image(route: str, releases: Sequence[TritonRelease] = RELEASES) -> str:
    return ngc_image(default_release(route, releases).release, FLAVOUR_BY_ROUTE[route])


def _trtllm_text(row: TritonRelease) -> str:
    return f"TensorRT-LLM {row.trtllm}" if row.trtllm else "an undocumented TensorRT-LLM"


def check_route(route: str, facts: ImageFacts) -> RouteCheck:
    """Can ``route`` run on the image? Custom images are trusted (ok None, reason says so)."""
    if not facts.ngc:
        return RouteCheck(None, f"{facts.image} is not an NGC tritonserver release tag")
    want = FLAVOUR_BY_ROUTE[route]
    backend = route.split("/")[0]
    if route == "python":
        if facts.flavour in (TRTLLM_FLAVOUR, VLLM_FLAVOUR):
            return RouteCheck(True, f"{facts.image} has torch and transformers")
        return RouteCheck(
            False, f"{facts.image} is not an LLM image, so it has no torch or transformers"
        )
    if facts.flavour != want:
        return RouteCheck(False, f"{facts.image} is not the {want} image, so it has no {backend}")
    if route == "vllm":
        return RouteCheck(True, f"{facts.name}'s {VLLM_FLAVOUR} image ships vLLM")
    mode = _MODE_NAME[route]
    if facts.before_table:
        # The compatibility matrix's rows before 24.12 ship TensorRT-LLM 0.9-0.15: the engine
        # path only (the PyTorch backend came with 0.17).
        if route == "tensorrt-llm/engine":
            return RouteCheck(True, f"{facts.name} ships TensorRT-LLM 0.15 or older")
        return RouteCheck(
            False, f"{facts.name} ships TensorRT-LLM 0.15 or older, without the PyTorch backend"
        )
    row = facts.row
    if row is None or row.trtllm is None:
        what = (
            f"no TensorRT-LLM version is documented for {facts.name}"
            if row is not None
            else f"{facts.name} is newer than the newest release documented"
        )
        if route == "tensorrt-llm/engine":
            return RouteCheck(
                False,
                f"{what}, and TensorRT-LLM removed its engine path in July 2026, so {mode} "
                "cannot be assumed there",
            )
        return RouteCheck(None, f"{what}; TensorRT-LLM's PyTorch backend is its surviving path")
    if route == "tensorrt-llm/engine":
        if row.engine_path:
            return RouteCheck(
                True,
                f"{facts.name} ships {_trtllm_text(row)} with trtllm-build and its C++ backend",
            )
        return RouteCheck(False, f"{facts.name} ships {_trtllm_text(row)} without the engine path")
    if row.llmapi_mode:
        return RouteCheck(True, f"{facts.name} ships {_trtllm_text(row)} with the 1.x LLM API")
    return RouteCheck(
        False,
        f"{facts.name} ships {_trtllm_text(row)}, whose LLM API predates the 1.x arguments "
        "llmapi mode writes",
    )
