"""Tensor contracts of the models in the repository, as data.

Names and types follow NVIDIA's ``inflight_batcher_llm`` models, so existing clients
(generate endpoints, genai-perf, Triton's OpenAI frontend) and the TensorRT-LLM C++ backend see
what they expect. Ours add a few optional tensors, all upper-case internal names between our
own models (``STREAM_ID``, ``OUT_TEMPERATURE`` ...), never on the client-facing side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatmodel_operator.triton.pbtxt import Enum


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # INT32, FP32, STRING ...
    dims: tuple[int, ...]
    optional: bool = False
    scalar: bool = False  # dims [1] reshaped to [] (how the C++ backend takes scalars)
    ragged: bool = False

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "data_type": Enum(f"TYPE_{self.dtype}"),
            "dims": list(self.dims),
        }
        if self.scalar:
            out["reshape"] = {"shape": []}
        if self.optional:
            out["optional"] = True
        if self.ragged:
            out["allow_ragged_batch"] = True
        return out


def _s(name: str, dtype: str, optional: bool = True) -> Tensor:
    """A per-request scalar of the engine."""
    return Tensor(name, dtype, (1,), optional=optional, scalar=True)


# Client-facing inputs of ``ensemble`` and ``tensorrt_llm_bls`` (a subset of NVIDIA's: the
# features every backend here implements; anything else is refused with a 400).
CLIENT_INPUTS: tuple[Tensor, ...] = (
    Tensor("text_input", "STRING", (1,)),
    Tensor("max_tokens", "INT32", (1,)),
    Tensor("bad_words", "STRING", (-1,), optional=True),
    Tensor("stop_words", "STRING", (-1,), optional=True),
    Tensor("exclude_input_in_output", "BOOL", (1,), optional=True),
    Tensor("end_id", "INT32", (1,), optional=True),
    Tensor("pad_id", "INT32", (1,), optional=True),
    Tensor("top_k", "INT32", (1,), optional=True),
    Tensor("top_p", "FP32", (1,), optional=True),
    Tensor("temperature", "FP32", (1,), optional=True),
    Tensor("length_penalty", "FP32", (1,), optional=True),
    Tensor("repetition_penalty", "FP32", (1,), optional=True),
    Tensor("min_tokens", "INT32", (1,), optional=True),
    Tensor("presence_penalty", "FP32", (1,), optional=True),
    Tensor("frequency_penalty", "FP32", (1,), optional=True),
    Tensor("seed", "UINT64", (1,), optional=True),
    Tensor("stream", "BOOL", (1,), optional=True),
    # Sent by Triton's OpenAI frontend to every model of a TensorRT-LLM repository since 25.11
    # (server 2.64, triton_engine utils ``_create_trtllm_generate_request``): a model that does
    # not declare them refuses every request of that frontend. Our models always report the
    # counts, so the flags change nothing.
    Tensor("return_num_input_tokens", "BOOL", (1,), optional=True),
    Tensor("return_num_output_tokens", "BOOL", (1,), optional=True),
)
CLIENT_OUTPUTS: tuple[Tensor, ...] = (Tensor("text_output", "STRING", (-1,)),)
# Token counts per response, as Triton's OpenAI frontend reads them for ``usage``
# (``_get_usage_from_response``: INT32 or UINT32, both in the same response; streamed, the
# prompt's count is taken once and the completion's counts of all responses are added up).
# So num_output_tokens is the engine's tokens in this response, not a running total.
USAGE_OUTPUTS: tuple[Tensor, ...] = (
    Tensor("num_input_tokens", "INT32", (1,)),
    Tensor("num_output_tokens", "INT32", (1,)),
)
RETURN_COUNT_INPUTS = frozenset({"return_num_input_tokens", "return_num_output_tokens"})

# preprocessing: NVIDIA's names where they exist.
PRE_INPUTS: tuple[Tensor, ...] = (
    Tensor("QUERY", "STRING", (1,)),
    Tensor("REQUEST_OUTPUT_LEN", "INT32", (1,)),
    Tensor("BAD_WORDS_DICT", "STRING", (-1,), optional=True),
    Tensor("STOP_WORDS_DICT", "STRING", (-1,), optional=True),
    Tensor("END_ID", "INT32", (1,), optional=True),
    Tensor("PAD_ID", "INT32", (1,), optional=True),
    Tensor("TEMPERATURE", "FP32", (1,), optional=True),
    Tensor("TOP_K", "INT32", (1,), optional=True),
    Tensor("TOP_P", "FP32", (1,), optional=True),
    Tensor("REPETITION_PENALTY", "FP32", (1,), optional=True),
    Tensor("MIN_TOKENS", "INT32", (1,), optional=True),
    Tensor("PRESENCE_PENALTY", "FP32", (1,), optional=True),
    Tensor("FREQUENCY_PENALTY", "FP32", (1,), optional=True),
    Tensor("SEED", "UINT64", (1,), optional=True),
    Tensor("EXCLUDE_INPUT_IN_OUTPUT", "BOOL", (1,), optional=True),
    # The frontend's flags end here: every ensemble input must go to a step, and a step after
    # the (decoupled) engine may only take the engine's outputs.
    Tensor("RETURN_NUM_INPUT_TOKENS", "BOOL", (1,), optional=True),
    Tensor("RETURN_NUM_OUTPUT_TOKENS", "BOOL", (1,), optional=True),
)
PRE_TOKEN_OUTPUTS: tuple[Tensor, ...] = (
    Tensor("INPUT_ID", "INT32", (-1,)),
    Tensor("REQUEST_INPUT_LEN", "INT32", (1,)),
    Tensor("REQUEST_OUTPUT_LEN", "INT32", (1,)),
    Tensor("BAD_WORDS_IDS", "INT32", (2, -1)),
    Tensor("STOP_WORDS_IDS", "INT32", (2, -1)),
    Tensor("OUT_END_ID", "INT32", (1,)),
    Tensor("OUT_PAD_ID", "INT32", (1,)),
    Tensor("OUT_TEMPERATURE", "FP32", (1,)),
    Tensor("OUT_TOP_K", "INT32", (1,)),
    Tensor("OUT_TOP_P", "FP32", (1,)),
    Tensor("OUT_REPETITION_PENALTY", "FP32", (1,)),
    # Always true: the engine then returns arrival_time_ns, postprocessing's stream key.
    Tensor("OUT_RETURN_PERF_METRICS", "BOOL", (1,)),
)
# For engines that take text (vLLM): the rendered prompt and vLLM's sampling_parameters JSON.
PRE_TEXT_OUTPUTS: tuple[Tensor, ...] = (
    Tensor("PROMPT", "STRING", (1,)),
    Tensor("SAMPLING_PARAMETERS", "STRING", (1,)),
    Tensor("EXCLUDE_INPUT", "BOOL", (1,)),
)

# A step after a decoupled model may only take that model's outputs (Triton refuses to load an
# ensemble that mixes them with others), so the stream key comes from the engine too: the
# arrival time of the request, in nanoseconds, which every response of a stream carries.
# SEQUENCE_LENGTH is optional and the ensemble does not send it: with one beam (all the client
# inputs allow) output_ids holds exactly the tokens of the response, and every tensor less is
# less copying per streamed token.
# ENGINE_NUM_INPUT_TOKENS is the engine's own count of the prompt, which our Python engines
# return. The C++ backend's releases we render for are not documented to return it, so in engine
# mode the ensemble reports no usage (the BLS, which sees both, does).
POST_INPUTS: tuple[Tensor, ...] = (
    Tensor("TOKENS_BATCH", "INT32", (-1, -1)),
    Tensor("SEQUENCE_LENGTH", "INT32", (-1,), optional=True),
    Tensor("STREAM_KEY", "INT64", (1,), optional=True),
    Tensor("ENGINE_NUM_INPUT_TOKENS", "INT32", (1,), optional=True),
)
# NUM_OUTPUT_TOKENS: the engine's tokens in this response (the length of its output_ids row).
POST_OUTPUTS: tuple[Tensor, ...] = (
    Tensor("OUTPUT", "STRING", (-1,)),
    Tensor("NUM_INPUT_TOKENS", "INT32", (1,)),
    Tensor("NUM_OUTPUT_TOKENS", "INT32", (1,)),
)

# The tensorrt_llm contract our Python engines implement (a subset of the C++ backend's).
ENGINE_INPUTS: tuple[Tensor, ...] = (
    Tensor("input_ids", "INT32", (-1,), ragged=True),
    _s("input_lengths", "INT32", optional=False),
    _s("request_output_len", "INT32", optional=False),
    _s("end_id", "INT32"),
    _s("pad_id", "INT32"),
    Tensor("stop_words_list", "INT32", (2, -1), optional=True, ragged=True),
    Tensor("bad_words_list", "INT32", (2, -1), optional=True, ragged=True),
    _s("beam_width", "INT32"),
    _s("temperature", "FP32"),
    _s("runtime_top_k", "INT32"),
    _s("runtime_top_p", "FP32"),
    _s("len_penalty", "FP32"),
    _s("repetition_penalty", "FP32"),
    _s("min_tokens", "INT32"),
    _s("presence_penalty", "FP32"),
    _s("frequency_penalty", "FP32"),
    _s("seed", "UINT64"),
    _s("return_perf_metrics", "BOOL"),
    _s("exclude_input_in_output", "BOOL"),
    _s("stop", "BOOL"),
    _s("streaming", "BOOL"),
)
ENGINE_OUTPUTS: tuple[Tensor, ...] = (
    Tensor("output_ids", "INT32", (-1, -1)),
    Tensor("sequence_length", "INT32", (-1,)),
    Tensor("arrival_time_ns", "INT64", (1,)),
    Tensor("num_input_tokens", "INT32", (1,)),
    # Our Python engines also decode (their ensemble skips postprocessing): each response's
    # text and its number of tokens, as postprocessing returns them.
    Tensor("text_output", "STRING", (-1,)),
    Tensor("num_output_tokens", "INT32", (1,)),
)

# The C++ tensorrtllm backend: NVIDIA's full contract (inflight_batcher_llm, TensorRT-LLM 1.2),
# logits as FP32 and encoder features as FP16 where the template leaves them open.
CPP_ENGINE_INPUTS: tuple[Tensor, ...] = (
    Tensor("input_ids", "INT32", (-1,), optional=True, ragged=True),
    Tensor("encoder_input_features", "FP16", (-1, -1), optional=True, ragged=True),
    _s("encoder_output_lengths", "INT32"),
    _s("input_lengths", "INT32", optional=False),
    _s("request_output_len", "INT32", optional=False),
    _s("num_return_sequences", "INT32"),
    Tensor("draft_input_ids", "INT32", (-1,), optional=True, ragged=True),
    Tensor("decoder_input_ids", "INT32", (-1,), optional=True, ragged=True),
    _s("decoder_input_lengths", "INT32"),
    Tensor("draft_logits", "FP32", (-1, -1), optional=True, ragged=True),
    _s("draft_acceptance_threshold", "FP32"),
    _s("end_id", "INT32"),
    _s("pad_id", "INT32"),
    Tensor("stop_words_list", "INT32", (2, -1), optional=True, ragged=True),
    Tensor("bad_words_list", "INT32", (2, -1), optional=True, ragged=True),
    Tensor("embedding_bias", "FP32", (-1,), optional=True, ragged=True),
    _s("beam_width", "INT32"),
    _s("temperature", "FP32"),
    _s("runtime_top_k", "INT32"),
    _s("runtime_top_p", "FP32"),
    _s("runtime_top_p_min", "FP32"),
    _s("runtime_top_p_decay", "FP32"),
    _s("runtime_top_p_reset_ids", "INT32"),
    _s("len_penalty", "FP32"),
    _s("early_stopping", "BOOL"),
    _s("repetition_penalty", "FP32"),
    _s("min_tokens", "INT32"),
    _s("beam_search_diversity_rate", "FP32"),
    _s("presence_penalty", "FP32"),
    _s("frequency_penalty", "FP32"),
    _s("seed", "UINT64"),
    _s("return_log_probs", "BOOL"),
    _s("return_context_logits", "BOOL"),
    _s("return_generation_logits", "BOOL"),
    _s("return_perf_metrics", "BOOL"),
    _s("exclude_input_in_output", "BOOL"),
    _s("stop", "BOOL"),
    _s("streaming", "BOOL"),
    Tensor("prompt_embedding_table", "FP16", (-1, -1), optional=True, ragged=True),
    Tensor("prompt_table_extra_ids", "UINT64", (-1,), optional=True, ragged=True),
    _s("prompt_vocab_size", "INT32"),
    Tensor("cross_attention_mask", "BOOL", (-1, -1), optional=True, ragged=True),
    _s("lora_task_id", "UINT64"),
    Tensor("lora_weights", "FP16", (-1, -1), optional=True, ragged=True),
    Tensor("lora_config", "INT32", (-1, 3), optional=True, ragged=True),
    Tensor("context_phase_params", "UINT8", (-1,), optional=True, ragged=True),
    _s("skip_cross_attn_blocks", "BOOL"),
    Tensor("retention_token_range_starts", "INT32", (-1,), optional=True, ragged=True),
    Tensor("retention_token_range_ends", "INT32", (-1,), optional=True, ragged=True),
    Tensor("retention_token_range_priorities", "INT32", (-1,), optional=True, ragged=True),
    Tensor("retention_token_range_durations_ms", "INT32", (-1,), optional=True, ragged=True),
    _s("retention_decode_priority", "INT32"),
    _s("retention_decode_duration_ms", "INT32"),
    Tensor("guided_decoding_guide_type", "STRING", (1,), optional=True, ragged=True),
    Tensor("guided_decoding_guide", "STRING", (1,), optional=True, ragged=True),
    _s("lookahead_window_size", "INT32"),
    _s("lookahead_ngram_size", "INT32"),
    _s("lookahead_verification_set_size", "INT32"),
)
CPP_ENGINE_OUTPUTS: tuple[Tensor, ...] = (
    Tensor("output_ids", "INT32", (-1, -1)),
    Tensor("sequence_length", "INT32", (-1,)),
    Tensor("cum_log_probs", "FP32", (-1,)),
    Tensor("output_log_probs", "FP32", (-1, -1)),
    Tensor("context_logits", "FP32", (-1, -1)),
    Tensor("generation_logits", "FP32", (-1, -1, -1)),
    Tensor("batch_index", "INT32", (1,)),
    Tensor("sequence_index", "INT32", (1,)),
    Tensor("context_phase_params", "UINT8", (-1,)),
    Tensor("kv_cache_alloc_new_blocks", "INT32", (1,)),
    Tensor("kv_cache_reused_blocks", "INT32", (1,)),
    Tensor("kv_cache_alloc_total_blocks", "INT32", (1,)),
    Tensor("arrival_time_ns", "INT64", (1,)),
    Tensor("first_scheduled_time_ns", "INT64", (1,)),
    Tensor("first_token_time_ns", "INT64", (1,)),
    Tensor("last_token_time_ns", "INT64", (1,)),
    Tensor("acceptance_rate", "FP32", (1,)),
    Tensor("total_accepted_draft_tokens", "INT32", (1,)),
    Tensor("total_draft_tokens", "INT32", (1,)),
)

# vLLM backend (vllm_backend src/model.py): declared here because the pods run tritonserver
# with --disable-auto-complete-config, so the backend cannot add them itself.
VLLM_INPUTS: tuple[Tensor, ...] = (
    Tensor("text_input", "STRING", (1,)),
    Tensor("stream", "BOOL", (1,), optional=True),
    Tensor("sampling_parameters", "STRING", (1,), optional=True),
    Tensor("exclude_input_in_output", "BOOL", (1,), optional=True),
    Tensor("return_num_input_tokens", "BOOL", (1,), optional=True),
    Tensor("return_num_output_tokens", "BOOL", (1,), optional=True),
)
# The vLLM backend's counts are UINT32 (vllm_backend src/model.py, additional outputs).
VLLM_USAGE_OUTPUTS: tuple[Tensor, ...] = (
    Tensor("num_input_tokens", "UINT32", (1,)),
    Tensor("num_output_tokens", "UINT32", (1,)),
)
VLLM_OUTPUTS: tuple[Tensor, ...] = (Tensor("text_output", "STRING", (-1,)), *VLLM_USAGE_OUTPUTS)

# Ensemble wiring: client input -> preprocessing input.
CLIENT_TO_PRE = {
    "text_input": "QUERY",
    "max_tokens": "REQUEST_OUTPUT_LEN",
    "bad_words": "BAD_WORDS_DICT",
    "stop_words": "STOP_WORDS_DICT",
    "end_id": "END_ID",
    "pad_id": "PAD_ID",
    "temperature": "TEMPERATURE",
    "top_k": "TOP_K",
    "top_p": "TOP_P",
    "repetition_penalty": "REPETITION_PENALTY",
    "return_num_input_tokens": "RETURN_NUM_INPUT_TOKENS",
    "return_num_output_tokens": "RETURN_NUM_OUTPUT_TOKENS",
}
# Only engines that take text get these through preprocessing (inside the sampling JSON).
CLIENT_TO_PRE_TEXT = {
    "min_tokens": "MIN_TOKENS",
    "presence_penalty": "PRESENCE_PENALTY",
    "frequency_penalty": "FREQUENCY_PENALTY",
    "seed": "SEED",
    "exclude_input_in_output": "EXCLUDE_INPUT_IN_OUTPUT",
}
# What engines that take text (vLLM) have no use for: left out of their ensemble, whose every
# input must be wired to a step (Triton refuses to load it otherwise).
TEXT_ENGINE_UNUSED = frozenset({"length_penalty"})
# preprocessing output -> engine input.
PRE_TO_ENGINE = {
    "INPUT_ID": "input_ids",
    "REQUEST_INPUT_LEN": "input_lengths",
    "REQUEST_OUTPUT_LEN": "request_output_len",
    "BAD_WORDS_IDS": "bad_words_list",
    "STOP_WORDS_IDS": "stop_words_list",
    "OUT_END_ID": "end_id",
    "OUT_PAD_ID": "pad_id",
    "OUT_TEMPERATURE": "temperature",
    "OUT_TOP_K": "runtime_top_k",
    "OUT_TOP_P": "runtime_top_p",
    "OUT_REPETITION_PENALTY": "repetition_penalty",
    "OUT_RETURN_PERF_METRICS": "return_perf_metrics",
}
# client input -> engine input, passed straight through.
CLIENT_TO_ENGINE = {
    "length_penalty": "len_penalty",
    "min_tokens": "min_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "exclude_input_in_output": "exclude_input_in_output",
    "stream": "streaming",
}


def bls_tensor_maps() -> dict[str, dict[str, str]]:
    """The ensemble's wiring, as the BLS does it by hand (passed in its config parameters, so
    the names are spelled only here). The BLS asks for the counts and sets ``streaming``
    itself, so those are left out."""
    return {
        "client_to_pre": {k: v for k, v in CLIENT_TO_PRE.items() if k not in RETURN_COUNT_INPUTS},
        "client_to_pre_text": dict(CLIENT_TO_PRE_TEXT),
        "pre_to_engine": dict(PRE_TO_ENGINE),
        "client_to_engine": {k: v for k, v in CLIENT_TO_ENGINE.items() if k != "stream"},
    }
