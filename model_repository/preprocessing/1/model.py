"""preprocessing: a conversation in, token ids and generation settings out.

``text_input`` is either plain text (one user turn, after the model's default system prompt if
it has one) or the envelope ``{"messages": [...]}`` with a whole OpenAI-style conversation.
Either is rendered with the model's chat format (``chat_format.json``: the spec's template, the
checkpoint's or the family's), and the oldest turns are dropped until the prompt fits
``max_input_length``; the system prompt and the last user turn are never dropped.

The end id is the family's stop token; the family's other stop strings join the request's
``stop_words``. Sampling values the request leaves out come from the family's published
defaults (greedy when it has none). ``return_perf_metrics`` is always set, so that the engine
returns ``arrival_time_ns``, by which postprocessing tells streams apart. For engines that take
text (vLLM) the same work yields
the rendered prompt and vLLM's ``sampling_parameters`` JSON instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

import chatmodel_helpers
import chatmodel_textproc as tp
import numpy as np
import triton_python_backend_utils as pb_utils


def _scalar(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    return values[0].item() if values.size else None


def _strings(request: Any, name: str) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    out = []
    for value in tensor.as_numpy().reshape(-1):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise tp.RequestError(f"{name}: not valid UTF-8") from None
        out.append(str(value))
    return out


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.batched = int(config.get("max_batch_size", 0)) > 0
        here = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(here, params.get("chat_format", "chat_format.json")), "rb") as f:
            fmt = json.load(f)
        self.max_input = int(params["max_input_length"])
        self.max_output = int(params["max_output_length"])
        specials: dict[str, int] = fmt.get("special_tokens") or {}
        self.tokenizer = chatmodel_helpers.load_tokenizer(
            params["tokenizer_dir"],
            trust_remote_code=params.get("trust_remote_code") == "true",
            extra_special_ids=specials.values(),
        )
        variables = {
            "bos_token": fmt.get("bos_token") or "",
            "eos_token": fmt.get("eos_token") or "",
        }
        self.renderer = tp.ChatRenderer(fmt["chat_template"], variables)
        self.system_prompt = fmt.get("system_prompt")
        self.generation = fmt.get("generation") or {}
        stop: list[str] = list(fmt.get("stop") or [])
        self.end_id = self._special_id(stop[0], specials) if stop else self.tokenizer.eos_id
        if self.end_id is None:
            raise pb_utils.TritonModelException(
                "preprocessing: no end id: the chat format names no stop token and the tokenizer "
                "has no eos_token; set spec.model.family"
            )
        pad = self.tokenizer.pad_id
        self.pad_id = pad if pad is not None else self.end_id
        # The family's other stop strings end generation too, as stop words.
        self.extra_stop_strings = stop[1:]
        self.extra_stops = [self._word_ids(w, specials) for w in stop[1:]]
        # The family must outlive its metric, so it is kept on the model.
        self.family = pb_utils.MetricFamily(
            name="chatmodel_truncated_turns_total",
            description="Conversation turns dropped to fit maxInputLength",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.truncated = self.family.Metric(labels={"model": "preprocessing"})

    def _special_id(self, text: str, specials: dict[str, int]) -> int | None:
        tid = self.tokenizer.token_id(text)
        return tid if tid is not None else specials.get(text)

    def _word_ids(self, text: str, specials: dict[str, int]) -> list[int]:
        tid = self._special_id(text, specials)
        return [tid] if tid is not None else self.tokenizer.encode(text)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except tp.RequestError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except Exception as exc:  # a bug here must not take the model down
                error = pb_utils.TritonError(f"preprocessing: {type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def _one(self, request: Any) -> Any:
        texts = _strings(request, "QUERY")
        if len(texts) != 1:
            raise tp.RequestError("text_input: exactly one string is needed")
        max_tokens = _scalar(request, "REQUEST_OUTPUT_LEN")
        if max_tokens is None or max_tokens < 1:
            raise tp.RequestError("max_tokens must be at least 1")
        if max_tokens > self.max_output:
            raise tp.RequestError(
                f"max_tokens {max_tokens} exceeds this model's maxOutputLength {self.max_output}; "
                "ask for fewer tokens"
            )
        messages = tp.parse_conversation(texts[0], self.system_prompt)
        fitted = tp.fit_conversation(
            messages, self.renderer.render, self.tokenizer.encode, self.max_input
        )
        if fitted.dropped_turns:
            self.truncated.increment(fitted.dropped_turns)
        stop_strings = _strings(request, "STOP_WORDS_DICT")
        bad_strings = _strings(request, "BAD_WORDS_DICT")
        sampling = tp.resolve_sampling(
            {
                "temperature": _scalar(request, "TEMPERATURE"),
                "top_k": _scalar(request, "TOP_K"),
                "top_p": _scalar(request, "TOP_P"),
                "repetition_penalty": _scalar(request, "REPETITION_PENALTY"),
            },
            self.generation,
        )
        wanted = set(request.requested_output_names())
        out: dict[str, np.ndarray] = {}
        if "PROMPT" in wanted or "SAMPLING_PARAMETERS" in wanted:
            out["PROMPT"] = np.array([fitted.prompt.encode("utf-8")], dtype=np.object_)
            out["SAMPLING_PARAMETERS"] = np.array(
                [self._vllm_sampling(request, max_tokens, sampling, stop_strings, bad_strings)],
                dtype=np.object_,
            )
            exclude = _scalar(request, "EXCLUDE_INPUT_IN_OUTPUT")
            out["EXCLUDE_INPUT"] = np.array([True if exclude is None else exclude], np.bool_)
        if wanted - set(out):
            end_id = _scalar(request, "END_ID")
            pad_id = _scalar(request, "PAD_ID")
            stops = tp.word_lists(stop_strings, self.tokenizer.encode) + self.extra_stops
            bads = tp.word_lists(bad_strings, self.tokenizer.encode)
            out.update(
                {
                    "INPUT_ID": np.array(fitted.ids, dtype=np.int32),
                    "REQUEST_INPUT_LEN": np.array([len(fitted.ids)], dtype=np.int32),
                    "REQUEST_OUTPUT_LEN": np.array([max_tokens], dtype=np.int32),
                    "STOP_WORDS_IDS": np.array(tp.flatten_word_lists(stops), dtype=np.int32),
                    "BAD_WORDS_IDS": np.array(tp.flatten_word_lists(bads), dtype=np.int32),
                    "OUT_END_ID": np.array([self.end_id if end_id is None else end_id], np.int32),
                    "OUT_PAD_ID": np.array([self.pad_id if pad_id is None else pad_id], np.int32),
                    "OUT_TEMPERATURE": np.array([sampling["temperature"]], dtype=np.float32),
                    "OUT_TOP_K": np.array([sampling["top_k"]], dtype=np.int32),
                    "OUT_TOP_P": np.array([sampling["top_p"]], dtype=np.float32),
                    "OUT_REPETITION_PENALTY": np.array(
                        [sampling["repetition_penalty"]], dtype=np.float32
                    ),
                    "OUT_RETURN_PERF_METRICS": np.array([True], dtype=np.bool_),
                }
            )
        tensors = []
        for name in wanted:
            value = out[name]
            tensors.append(pb_utils.Tensor(name, value[np.newaxis, ...] if self.batched else value))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _vllm_sampling(
        self,
        request: Any,
        max_tokens: int,
        sampling: dict[str, Any],
        stop_strings: list[str],
        bad_strings: list[str],
    ) -> bytes:
        doc: dict[str, Any] = {
            "max_tokens": int(max_tokens),
            "temperature": 0.0 if sampling["top_k"] == 1 else sampling["temperature"],
            "top_p": sampling["top_p"] if 0.0 < sampling["top_p"] <= 1.0 else 1.0,
            "top_k": sampling["top_k"] if sampling["top_k"] > 0 else -1,
            "repetition_penalty": sampling["repetition_penalty"],
            "stop": stop_strings + self.extra_stop_strings,
            "skip_special_tokens": True,
        }
        if bad_strings:
            doc["bad_words"] = bad_strings
        for key, name in (
            ("min_tokens", "MIN_TOKENS"),
            ("presence_penalty", "PRESENCE_PENALTY"),
            ("frequency_penalty", "FREQUENCY_PENALTY"),
            ("seed", "SEED"),
        ):
            value = _scalar(request, name)
            if value is not None:
                doc[key] = value
        return json.dumps(doc).encode("utf-8")
