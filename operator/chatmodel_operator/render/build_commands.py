"""The engine-build Job's shell scripts, as data (pure).

Engine mode follows TensorRT-LLM 1.2's documented two-step flow: ``convert_checkpoint.py``
(or ModelOpt's ``quantize.py`` for AWQ/FP8 calibration) then ``trtllm-build``. Every step
writes into a temporary directory that is renamed into place with a ``.complete`` marker,
so an interrupted or retried Job never serves half an engine.
"""

from __future__ import annotations

import shlex

from chatmodel_operator.catalog.source import Source
from chatmodel_operator.plan.image import default_release
from chatmodel_operator.render.paths import CachePaths

# Named when an image turns out to lack the engine tools.
_LAST_ENGINE_RELEASE = default_release("tensorrt-llm/engine").name
# Where the Triton TensorRT-LLM image keeps TensorRT-LLM's examples; overridable by env.
DEFAULT_EXAMPLES_DIR = "/app/examples"

# Downloads with retries and a timeout per attempt (unbounded, silent downloads are a top
# complaint about other operators). Written to a temp dir and renamed when complete.
FETCH_HF = """\
import os, sys, time
from huggingface_hub import snapshot_download
repo, rev, dest = sys.argv[1], (sys.argv[2] or None), sys.argv[3]
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "60")
for attempt in range(1, 6):
    try:
        snapshot_download(repo, revision=rev, local_dir=dest + ".tmp",
                          token=os.environ.get("HF_TOKEN") or None)
        break
    except Exception as exc:  # network errors differ by hub version
        print(f"download attempt {attempt} of {repo} failed: {exc}", flush=True)
        if attempt == 5:
            raise
        time.sleep(min(60, 5 * 2 ** attempt))
"""


def _q(*parts: object) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


def fetch_script(source: Source, uri: str, paths: CachePaths) -> str:
    """Shell that makes the checkpoint available at paths.checkpoint."""
    dest = paths.checkpoint
    lines = [
        "set -eu",
        f"if [ -f {_q(dest + '/.complete')} ]; then echo 'checkpoint cached'; exit 0; fi",
    ]
    lines.append(f"rm -rf {_q(dest + '.tmp')}")
    if source.scheme == "hf":
        lines.append(_q("python3", "-c", FETCH_HF, source.location, source.revision or "", dest))
    elif source.scheme == "s3":
        lines.append(_q("aws", "s3", "sync", "--only-show-errors", uri, dest + ".tmp"))
    elif source.scheme == "gs":
        lines.append(_q("gsutil", "-m", "rsync", "-r", uri, dest + ".tmp"))
    else:  # pvc:// and file:// are read in place
        return "true"
    lines += [f"rm -rf {_q(dest)}", _q("mv", dest + ".tmp", dest), _q("touch", dest + "/.complete")]
    return "\n".join(lines)


def _convert_flags(quant: str, kv_dtype: str) -> list[str]:
    flags: list[str] = []
    if quant in ("int8-weight-only", "int4-weight-only"):
        flags += ["--use_weight_only", "--weight_only_precision", quant.split("-")[0]]
    elif quant == "smoothquant":
        flags += ["--smoothquant", "0.5", "--per_token", "--per_channel"]
    elif quant == "int4-gptq":
        flags += ["--use_weight_only", "--weight_only_precision", "int4_gptq", "--per_group"]
    if kv_dtype == "int8":
        flags.append("--int8_kv_cache")
    return flags


def engine_build_script(
    *,
    paths: CachePaths,
    quantization: str,
    dtype: str,
    kv_cache_dtype: str,
    tensor_parallelism: int,
    max_batch_size: int,
    max_input_length: int,
    max_sequence_length: int,
    max_num_tokens: int,
    prequantized: bool,
) -> str:
    """convert (or quantize) then trtllm-build, with the documented TensorRT-LLM 1.2 flags."""
    ck, eng, tmp = paths.checkpoint, paths.engine_root, paths.engine_root + ".tmp"
    tp = str(tensor_parallelism)
    calibrate = quantization in ("fp8",) or (quantization == "int4-awq" and not prequantized)
    lines = [
        "set -eu",
        f"if [ -f {_q(eng + '/.complete')} ]; then echo 'engine cached'; exit 0; fi",
        f"EXAMPLES=${{TRTLLM_EXAMPLES_DIR:-{DEFAULT_EXAMPLES_DIR}}}",
        'CONVERT=""',
        'for d in "$EXAMPLES/models/core/llama" "$EXAMPLES/llama"; do '
        '[ -f "$d/convert_checkpoint.py" ] && CONVERT="$d/convert_checkpoint.py" && break; done',
        '[ -n "$CONVERT" ] || { echo "convert_checkpoint.py not found under $EXAMPLES: '
        "this image has no TensorRT-LLM engine tools "
        f"({_LAST_ENGINE_RELEASE} is the newest Triton release documented with them: "
        'chatmodel releases)"; '
        "exit 3; }",
        f"rm -rf {_q(tmp)} && mkdir -p {_q(tmp)}",
    ]
    if calibrate:
        qformat = "fp8" if quantization == "fp8" else "int4_awq"
        cmd = [
            "python3",
            "$EXAMPLES/quantization/quantize.py",
            "--model_dir",
            ck,
            "--dtype",
            dtype,
            "--qformat",
            qformat,
            "--output_dir",
            f"{tmp}/trtllm-checkpoint",
            "--tp_size",
            tp,
        ]
        if qformat == "int4_awq":
            cmd += ["--awq_block_size", "128", "--calib_size", "32"]
        else:
            cmd += ["--calib_size", "512"]
        if kv_cache_dtype in ("fp8", "int8"):
            cmd += ["--kv_cache_dtype", kv_cache_dtype]
    else:
        cmd = [
            "python3",
            "$CONVERT",
            "--model_dir",
            ck,
            "--output_dir",
            f"{tmp}/trtllm-checkpoint",
            "--dtype",
            dtype,
            "--tp_size",
            tp,
            *_convert_flags(quantization, kv_cache_dtype),
        ]
        if quantization == "int4-gptq":
            cmd += ["--quant_ckpt_path", ck]
    lines.append(" ".join(c if c.startswith("$") else shlex.quote(c) for c in cmd))
    build = [
        "trtllm-build",
        "--checkpoint_dir",
        f"{tmp}/trtllm-checkpoint",
        "--output_dir",
        f"{tmp}/engine",
        "--gemm_plugin",
        "auto",
        "--kv_cache_type",
        "paged",
        "--use_paged_context_fmha",
        "enable",
        "--remove_input_padding",
        "enable",
        "--max_batch_size",
        str(max_batch_size),
        "--max_input_len",
        str(max_input_length),
        "--max_seq_len",
        str(max_sequence_length),
        "--max_num_tokens",
        str(max_num_tokens),
        "--workers",
        tp,
    ]
    if kv_cache_dtype == "fp8" and quantization == "fp8":
        build += ["--use_fp8_context_fmha", "enable"]
    lines.append(_q(*build))
    lines += [
        f"rm -rf {_q(tmp + '/trtllm-checkpoint')}",
        f"rm -rf {_q(eng)}",
        _q("mv", tmp, eng),
        _q("touch", eng + "/.complete"),
    ]
    return "\n".join(lines)


# What the LLM API will load, checked before the key is marked complete: a Hugging Face
# checkpoint (config.json with "architectures"; a TensorRT-LLM checkpoint has "architecture"),
# weights, the tokenizer, and for quantized weights the quantization config the LLM API reads
# (quantization_config in config.json, or ModelOpt's hf_quant_config.json).
VERIFY_CHECKPOINT = """\
import glob, json, os, sys
d, want_quant, want_tokenizer = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
problems = []
path = os.path.join(d, "config.json")
if not os.path.isfile(path):
    problems.append("no config.json")
else:
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    if "architectures" not in cfg:
        problems.append("config.json names no architectures (not a Hugging Face checkpoint)")
    quant = "quantization_config" in cfg or os.path.isfile(os.path.join(d, "hf_quant_config.json"))
    if want_quant and not quant:
        problems.append("no quantization_config in config.json and no hf_quant_config.json")
if not (glob.glob(os.path.join(d, "*.safetensors")) or glob.glob(os.path.join(d, "*.bin"))):
    problems.append("no weights (*.safetensors or *.bin)")
names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
if want_tokenizer and not any(os.path.isfile(os.path.join(d, n)) for n in names):
    problems.append("no tokenizer files")
if problems:
    print(f"checkpoint {d} cannot be served: " + "; ".join(problems), flush=True)
    sys.exit(4)
print(f"checkpoint {d} verified", flush=True)
"""


def verify_script(checkpoint: str, *, quantized: bool, tokenizer: bool) -> str:
    """One shell line that fails the Job (exit 4) when ``checkpoint`` cannot be served."""
    return _q("python3", "-c", VERIFY_CHECKPOINT, checkpoint, int(quantized), int(tokenizer))


def llmapi_prepare_script(
    *, paths: CachePaths, quantization: str, dtype: str, prequantized: bool
) -> str:
    """llmapi mode loads the checkpoint directly; only an FP8 request without an FP8 checkpoint
    needs ModelOpt to write a quantized Hugging Face checkpoint first. Whatever the pods will
    load is verified before the key is marked complete."""
    eng = paths.engine_root
    lines = ["set -eu", f"mkdir -p {_q(eng)}"]
    if quantization == "fp8" and not prequantized:
        lines += [
            f"if [ ! -f {_q(paths.quantized + '/.complete')} ]; then",
            f"  rm -rf {_q(paths.quantized + '.tmp')}",
            "  EXAMPLES=${TRTLLM_EXAMPLES_DIR:-" + DEFAULT_EXAMPLES_DIR + "}",
            "  python3 $EXAMPLES/quantization/quantize.py "
            + _q(
                "--model_dir",
                paths.checkpoint,
                "--dtype",
                dtype,
                "--qformat",
                "fp8",
                "--kv_cache_dtype",
                "fp8",
                "--calib_size",
                "512",
                "--output_dir",
                paths.quantized + ".tmp",
            ),
            "  " + _q("mv", paths.quantized + ".tmp", paths.quantized),
            "  " + _q("touch", paths.quantized + "/.complete"),
            "fi",
        ]
        lines.append(verify_script(paths.quantized, quantized=True, tokenizer=False))
    lines.append(
        verify_script(
            paths.checkpoint, quantized=prequantized and quantization != "none", tokenizer=True
        )
    )
    lines.append(_q("touch", eng + "/.complete"))
    return "\n".join(lines)


def prepare_only_script(*, paths: CachePaths) -> str:
    """vLLM and the Python backend read the checkpoint as it is."""
    return "\n".join(
        [
            "set -eu",
            f"mkdir -p {_q(paths.engine_root)}",
            _q("touch", paths.engine_root + "/.complete"),
        ]
    )
