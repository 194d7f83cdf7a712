"""NGC Triton releases and what their ``-trtllm-python-py3`` image carries (pure data).

One row per monthly release from 24.12 (the first whose images ship Triton's OpenAI frontend)
to the newest one NVIDIA documents. ``None`` in a row means the fact was looked for and not
found in NVIDIA's sources: the planner never guesses it. Sources, cited per row below:

* CM: triton-inference-server/server ``docs/introduction/compatibility.md`` (branch r26.08,
  commit 6fa22ae, 2026-08-20), the "trtllm-python-py3" table (TensorRT-LLM version) and the
  "vllm-python-py3" table (vLLM version).
* FE: ``python/openai/openai_frontend/main.py`` on the server's release branch r<YY.MM> (the
  flags its argument parser defines); ``build.py`` on the same branch copies ``python/openai``
  into the image and installs its requirements (from r24.12, v2.53.0).
* TB: triton-inference-server/tensorrtllm_backend. ``all_models/llmapi`` (NVIDIA's LLM-API
  Triton model) was added by commit dbae4e8 (#742, 2025-04-23), after branch r25.04 was cut,
  and is on r25.05; from r25.06 the model templates live in TensorRT-LLM's
  ``triton_backend/all_models`` (TB commit 6a749f5, #745), which keeps ``llmapi``. TB branch
  ``dockerfile/Dockerfile.triton.trt_llm_backend`` pins TENSORRTLLM_VER (1.2.1 on r26.04 to
  r26.07).
* RM: TensorRT-LLM removed ``trtllm-build``, the per-model ``convert_checkpoint.py`` and the C++
  ``tensorrtllm`` Triton backend from main in PRs #15763 (2026-06-30), #15767 (migration guide
  ``docs/source/legacy/tensorrt-backend-removal.md``), #15907 (2026-07-03) and #15918. Every
  release up to 26.07 ships TensorRT-LLM 1.2.1 or older (CM), versions cut before those PRs, so
  they carry the engine path; TB PR #853 (2026-04-16) moved the backend to the 1.2.1 tag.
* RN: docs.nvidia.com/deeplearning/triton-inference-server/release-notes/rel-26-08.html,
  rel-26-09.html and rel-26-10.html exist (CUDA 13.4.1, 13.4.1 and 13.4.3.001), but neither
  they (as far as the pages could be read) nor CM name the TensorRT-LLM version of 26.08 or
  later; CM on r26.08 adds a 26.08 row for the vLLM image only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FRONTEND_FLAGS_2412",
    "FRONTEND_FLAGS_2505",
    "FRONTEND_FLAGS_2508",
    "FRONTEND_FLAGS_2509",
    "FRONTEND_FLAGS_2604",
    "FRONTEND_FLAGS_2606",
    "FRONTEND_FLAGS_2607",
    "LLMAPI_MIN_TRTLLM",
    "RELEASES",
    "TritonRelease",
    "find_release",
    "newest_release",
    "release_text",
    "version_tuple",
]

Release = tuple[int, int]

# The flags of Triton's OpenAI frontend, per the first release branch (FE) that has them.
FRONTEND_FLAGS_2412 = frozenset(
    {
        "--model-repository",
        "--tokenizer",
        "--backend",
        "--host",
        "--openai-port",
        "--enable-kserve-frontends",
        "--kserve-http-port",
        "--kserve-grpc-port",
        "--tritonserver-log-verbose-level",
        "--uvicorn-log-level",
    }
)
FRONTEND_FLAGS_2505 = FRONTEND_FLAGS_2412 | {
    "--chat-template",
    "--lora-separator",
    "--tool-call-parser",
}
FRONTEND_FLAGS_2508 = FRONTEND_FLAGS_2505 | {"--default-max-tokens"}
FRONTEND_FLAGS_2509 = FRONTEND_FLAGS_2508 | {"--openai-restricted-api"}
FRONTEND_FLAGS_2604 = FRONTEND_FLAGS_2509 | {"--model-control-mode", "--load-model"}
FRONTEND_FLAGS_2606 = FRONTEND_FLAGS_2604 | {"--http-max-input-size"}
FRONTEND_FLAGS_2607 = FRONTEND_FLAGS_2606 | {"--max-tool-call-parse-bytes"}

# Our llmapi model writes the LLM() keyword arguments of TensorRT-LLM 1.x (cuda_graph_config,
# kv_cache_config, enable_chunked_prefill, max_seq_len: the 1.0.0 "Runtime Configuration
# Examples" page, nvidia.github.io/TensorRT-LLM/1.0.0/examples/llm_runtime.html). The 0.19-0.21
# PyTorch backend took a different set (PyTorchConfig), so llmapi mode needs 1.0 or newer.
LLMAPI_MIN_TRTLLM = (1, 0)


@dataclass(frozen=True)
class TritonRelease:
    """What one NGC release's images carry; None where NVIDIA's sources do not say."""

    release: Release
    server: str | None  # Triton server version (TRITON_VERSION on its branch)
    trtllm: str | None  # TensorRT-LLM in -trtllm-python-py3 (CM)
    engine_path: bool | None  # trtllm-build, convert_checkpoint.py and the C++ backend (RM)
    llmapi_model: bool | None  # NVIDIA's all_models/llmapi Triton model in its backend (TB)
    frontend_flags: frozenset[str] | None  # Triton's OpenAI frontend flags (FE); None: unknown
    vllm: str | None  # vLLM in -vllm-python-py3 (CM)
    note: str = ""

    @property
    def name(self) -> str:
        return release_text(self.release)

    @property
    def openai_frontend(self) -> bool | None:
        return None if self.frontend_flags is None else bool(self.frontend_flags)

    @property
    def llmapi_mode(self) -> bool | None:
        """Whether our llmapi mode (TensorRT-LLM 1.x LLM() arguments) runs on this image."""
        if self.trtllm is None:
            return None
        return version_tuple(self.trtllm) >= LLMAPI_MIN_TRTLLM

    def takes_flags(self, *flags: str) -> bool | None:
        if self.frontend_flags is None:
            return None
        return all(f in self.frontend_flags for f in flags)


def _row(
    release: Release,
    server: str | None,
    trtllm: str | None,
    flags: frozenset[str] | None,
    vllm: str | None,
    *,
    llmapi: bool | None,
    engine: bool | None = True,
    note: str = "",
) -> TritonRelease:
    return TritonRelease(release, server, trtllm, engine, llmapi, flags, vllm, note)


# Newest last. TensorRT-LLM and vLLM versions: CM. Flags: FE on branch r<release>. Engine path:
# RM. LLM-API model: TB (before 25.05 the backend had no all_models/llmapi).
RELEASES: tuple[TritonRelease, ...] = (
    # 24.12-25.04: CM; FE r24.12-r25.04 (no --chat-template yet); TB r25.02-r25.04 have no
    # all_models/llmapi (added 2025-04-23), and r24.12 and r25.01 were cut before that.
    _row((24, 12), "2.53.0", "0.16.0", FRONTEND_FLAGS_2412, "0.5.5", llmapi=False),
    _row((25, 1), "2.54.0", "0.17.0", FRONTEND_FLAGS_2412, "0.6.3.post1", llmapi=False),
    _row((25, 2), "2.55.0", "0.17.0.post1", FRONTEND_FLAGS_2412, "0.7.0", llmapi=False),
    _row((25, 3), "2.56.0", "0.18.0", FRONTEND_FLAGS_2412, "0.7.3", llmapi=False),
    _row((25, 4), "2.57.0", "0.18.2", FRONTEND_FLAGS_2412, "0.8.1", llmapi=False),
    # 25.05-25.07: FE r25.05 adds --chat-template, --lora-separator, --tool-call-parser; TB
    # r25.05 has all_models/llmapi. TensorRT-LLM 0.19-0.20 (CM): PyTorch backend, pre-1.0 API.
    _row((25, 5), "2.58.0", "0.19.0", FRONTEND_FLAGS_2505, "0.8.4", llmapi=True),
    _row((25, 6), "2.59.0", "0.20.0", FRONTEND_FLAGS_2505, "0.9.0rc1", llmapi=True),
    _row((25, 7), "2.59.1", "0.20.0", FRONTEND_FLAGS_2505, "0.9.0rc1", llmapi=True),
    # 25.08: FE r25.08 adds --default-max-tokens; TensorRT-LLM 0.21.0 (CM).
    _row((25, 8), "2.60.0", "0.21.0", FRONTEND_FLAGS_2508, "0.9.2", llmapi=True),
    # 25.09-26.03: FE r25.09 adds --openai-restricted-api; TensorRT-LLM 1.0-1.2.0 (CM; for 25.11
    # CM says 1.0.3.2510 while TB r25.11 pins 1.2.0rc2 for source builds: CM describes the image).
    _row((25, 9), "2.61.0", "1.0.0", FRONTEND_FLAGS_2509, "0.10.1.1", llmapi=True),
    _row((25, 10), "2.62.0", "1.0.0", FRONTEND_FLAGS_2509, "0.10.2", llmapi=True),
    _row((25, 11), "2.63.0", "1.0.3.2510", FRONTEND_FLAGS_2509, "0.11.0", llmapi=True),
    _row((25, 12), "2.64.0", "1.1.0", FRONTEND_FLAGS_2509, "0.11.1", llmapi=True),
    _row((26, 1), "2.65.0", "1.1.0", FRONTEND_FLAGS_2509, "0.13.0", llmapi=True),
    _row((26, 2), "2.66.0", "1.1.0", FRONTEND_FLAGS_2509, "0.15.1", llmapi=True),
    _row((26, 3), "2.67.0", "1.2.0", FRONTEND_FLAGS_2509, "0.17.1", llmapi=True),
    # 26.04-26.07: FE r26.04 adds --model-control-mode and --load-model, r26.06
    # --http-max-input-size, r26.07 --max-tool-call-parse-bytes; TB r26.04-r26.07 pin
    # TENSORRTLLM_VER=1.2.1 (CM agrees).
    _row((26, 4), "2.68.0", "1.2.1", FRONTEND_FLAGS_2604, "0.19.0", llmapi=True),
    _row((26, 5), "2.69.0", "1.2.1", FRONTEND_FLAGS_2604, "0.19.0", llmapi=True),
    _row((26, 6), "2.70.0", "1.2.1", FRONTEND_FLAGS_2606, "0.22.1", llmapi=True),
    _row((26, 7), "2.71.0", "1.2.1", FRONTEND_FLAGS_2607, "0.24.0", llmapi=True),
    # r26.08 exists (TRITON_VERSION 2.72.0, FE flags as 26.07); CM lists no trtllm row for it.
    _row(
        (26, 8),
        "2.72.0",
        None,
        FRONTEND_FLAGS_2607,
        "0.27.1",
        llmapi=None,
        engine=None,
        note="NVIDIA's compatibility matrix gives no TensorRT-LLM version for 26.08",
    ),
    # RN only: the release-notes pages exist; no branch, matrix row or flags were found. The
    # server's main branch was set to track 2.73.0 / 26.09 by commit e1db8a6 (#8931).
    _row(
        (26, 9),
        "2.73.0",
        None,
        None,
        None,
        llmapi=None,
        engine=None,
        note="only the release notes (CUDA 13.4.1) were found; TensorRT-LLM version unknown",
    ),
    _row(
        (26, 10),
        None,
        None,
        None,
        None,
        llmapi=None,
        engine=None,
        note="only the release notes (CUDA 13.4.3) were found; TensorRT-LLM version unknown",
    ),
)


def release_text(release: Release) -> str:
    return f"{release[0]:02d}.{release[1]:02d}"


def version_tuple(version: str) -> tuple[int, ...]:
    """Leading numeric parts of a version string: '1.0.3.2510' -> (1, 0, 3, 2510)."""
    out: list[int] = []
    for part in version.split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(out)


def find_release(release: Release) -> TritonRelease | None:
    return next((r for r in RELEASES if r.release == release), None)


def newest_release(*, known_trtllm: bool = True) -> TritonRelease:
    """The newest row; with ``known_trtllm`` the newest whose TensorRT-LLM version is known."""
    rows = [r for r in RELEASES if r.trtllm is not None] if known_trtllm else list(RELEASES)
    return rows[-1]
