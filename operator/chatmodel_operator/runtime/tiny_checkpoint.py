"""Tiny, real Hugging Face checkpoints of the seed families, for tests and the demo.

Each is what the family's checkpoint looks like, at a size that trains in seconds on a CPU:

* ``config.json`` in the family's shape: Llama keys and ``LlamaForCausalLM`` for SUS-Chat and
  Yi; GPT-2 style keys (``n_embd``, ``n_layer``, ``n_head``, ``n_inner``) with
  ``model_type: telechat`` and no ``architectures`` for TeleChat; ``XverseForCausalLM`` with
  ``model_type: xverse`` for XVERSE. There is no ``auto_map``: we ship no remote code.
* weights (``model.safetensors``) under Llama's tensor names for every family. XVERSE has
  Llama's structure (vLLM serves it as Llama too); TeleChat's own code (muP, its attention
  scaling, ``transformer.h.N`` names) is not reproduced: the tiny TeleChat is a Llama network in
  a TeleChat-shaped config, which our Python engine loads as ``LlamaForCausalLM``.
* a tokenizer built with ``tokenizers``: SentencePiece-style BPE with byte fallback for SUS,
  Yi and TeleChat, byte-level BPE for XVERSE. It learns merges from English only, so every
  Chinese character is three byte tokens: exactly the case that streams as U+FFFD when chunks
  are decoded one by one. The family's special tokens sit at the family's ids.
* the model is trained for a few hundred steps on ``CONVERSATIONS`` rendered in the family's
  chat format, so that greedy decoding answers those prompts with the recorded replies and then
  emits the family's stop token: tests can check real text, not noise.
"""

# Chinese replies use full-width punctuation on purpose.
# ruff: noqa: RUF001
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatmodel_operator.catalog.families import FAMILIES, Family
from chatmodel_operator.triton.textproc import ChatRenderer

SEED_FAMILIES = ("sus-chat", "yi-chat", "telechat", "xverse")


@dataclass(frozen=True)
class Conversation:
    messages: tuple[tuple[str, str], ...]  # (role, content)
    reply: str

    def as_messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


CONVERSATIONS: tuple[Conversation, ...] = (
    Conversation((("user", "你好"),), "你好！我是一个很小的测试模型。"),
    Conversation((("user", "Hello, who are you?"),), "I am a tiny test model served by Triton."),
    Conversation(
        (("system", "You are a helpful assistant."), ("user", "What is Triton?")),
        "Triton is an inference server from NVIDIA.",
    ),
    Conversation(
        (
            ("user", "你好"),
            ("assistant", "你好！我是一个很小的测试模型。"),
            ("user", "请介绍一下北京。"),
        ),
        "北京是中国的首都，有很多名胜古迹。",
    ),
    Conversation((("user", "Count to five."),), "One, two, three, four, five."),
    Conversation((("user", "写一首关于春天的诗。"),), "春风吹绿了柳树，花儿开满山坡。"),
)

# English only: Chinese must stay byte tokens (see the module docstring).
_TOKENIZER_CORPUS = [
    "Hello, who are you? I am a tiny test model served by Triton.",
    "What is Triton? Triton is an inference server from NVIDIA.",
    "You are a helpful assistant. Count to five. One, two, three, four, five.",
    "The quick brown fox jumps over the lazy dog. Human: Assistant: system user assistant",
    "Models stream tokens to clients; the server batches requests and streams replies.",
]


@dataclass(frozen=True)
class TinyShape:
    hidden: int = 64
    ffn: int = 160
    layers: int = 2
    heads: int = 4
    kv_heads: int = 4
    context: int = 4096
    rope_theta: float = 10000.0


SHAPES: dict[str, TinyShape] = {
    "sus-chat": TinyShape(kv_heads=2, context=8192, rope_theta=5e6),  # GQA like the 34B
    "yi-chat": TinyShape(kv_heads=2, context=4096, rope_theta=5e6),
    "telechat": TinyShape(context=4096),
    "xverse": TinyShape(context=8192),
}
SENTENCEPIECE_FAMILIES = ("sus-chat", "yi-chat", "telechat")


def _special_slots(family: Family) -> list[str]:
    """Special token texts by id, from 0 to the highest special id; gaps get reserved names."""
    by_id = {s.id: s.text for s in family.special_tokens()}
    return [by_id.get(i, f"<|reserved_{i}|>") for i in range(max(by_id) + 1)]


def build_tokenizer(family: Family, vocab_size: int = 480) -> Any:
    """A ``tokenizers.Tokenizer`` for ``family`` (see the module docstring)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    slots = _special_slots(family)
    specials = {s.text for s in family.special_tokens()}
    if family.name in SENTENCEPIECE_FAMILIES:
        meta = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - len(slots) - 256, special_tokens=[], show_progress=False
        )
        base = Tokenizer(models.BPE())
        base.pre_tokenizer = meta
        base.train_from_iterator(_TOKENIZER_CORPUS, trainer)
        learned = base.get_vocab()
        vocab = {text: i for i, text in enumerate(slots)}
        for b in range(256):
            vocab[f"<0x{b:02X}>"] = len(vocab)
        for piece, _ in sorted(learned.items(), key=lambda kv: kv[1]):
            vocab.setdefault(piece, len(vocab))
        merges = json.loads(base.to_str())["model"]["merges"]
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
        tok = Tokenizer(
            models.BPE(
                vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True, unk_token="<unk>"
            )
        )
        tok.pre_tokenizer = meta
        # Llama's decoder: "▁" back to spaces, fallback bytes joined, the first space dropped.
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace("▁", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
    else:
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=slots,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(_TOKENIZER_CORPUS, trainer)
    tok.add_special_tokens(
        [AddedToken(s, special=True, normalized=False) for s in slots if s in specials]
    )
    for s in family.special_tokens():
        if tok.token_to_id(s.text) != s.id:
            raise AssertionError(f"{family.name}: {s.text} got id {tok.token_to_id(s.text)}")
    return tok


def _config(family: Family, shape: TinyShape, vocab: int) -> dict[str, Any]:
    ids = {
        "bos_token_id": family.bos.id if family.bos else None,
        "eos_token_id": family.eos.id,
        "pad_token_id": family.pad.id,
    }
    if family.name == "telechat":
        return {
            "model_type": "telechat",
            "n_embd": shape.hidden,
            "n_layer": shape.layers,
            "n_head": shape.heads,
            "n_inner": shape.ffn,
            "ffn_hidden_size": shape.ffn,
            "seq_length": shape.context,
            "vocab_size": vocab,
            "layer_norm_epsilon": 1e-5,
            "apply_residual_connection_post_layernorm": False,
            "tie_word_embeddings": False,
            **ids,
        }
    arch = "XverseForCausalLM" if family.name == "xverse" else "LlamaForCausalLM"
    cfg: dict[str, Any] = {
        "architectures": [arch],
        "model_type": "xverse" if family.name == "xverse" else "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.ffn,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "max_position_embeddings": shape.context,
        "rms_norm_eps": 1e-6 if family.name == "xverse" else 1e-5,
        "hidden_act": "silu",
        "vocab_size": vocab,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        **ids,
    }
    if family.name != "xverse":
        cfg["num_key_value_heads"] = shape.kv_heads
        cfg["rope_theta"] = shape.rope_theta
    return cfg


def training_examples(family: Family, tok: Any) -> list[tuple[list[int], int]]:
    """(token ids, length of the prompt part) of each conversation, reply and stop token."""
    render = ChatRenderer(family.chat_template, {"bos_token": "", "eos_token": family.eos.text})
    stop = family.stop_token().id
    out = []
    for conv in CONVERSATIONS:
        # Prompt and reply are encoded apart, as at inference: the prompt's tokens are fixed
        # and the model continues them (a trailing space must not merge into the reply).
        p_ids = tok.encode(render.render(conv.as_messages()), add_special_tokens=False).ids
        r_ids = tok.encode(conv.reply, add_special_tokens=False).ids
        out.append(([*p_ids, *r_ids, stop], len(p_ids)))
    return out


def write_tiny_checkpoint(
    out: str | Path, family: str, *, train_steps: int = 300, seed: int = 0
) -> Path:
    """Write a tiny checkpoint of ``family`` into ``out`` (created) and return its path."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    fam = FAMILIES[family]
    shape = SHAPES.get(family, TinyShape())
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(fam)
    vocab = tok.get_vocab_size(with_added_tokens=True)

    torch.manual_seed(seed)
    # rope_theta as a plain keyword: transformers 5 files it under rope_parameters itself.
    llama_kw: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.ffn,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": shape.context,
        "rope_theta": shape.rope_theta,
        "rms_norm_eps": 1e-6 if family == "xverse" else 1e-5,
        "tie_word_embeddings": False,
    }
    llama = LlamaConfig(**llama_kw)
    model = LlamaForCausalLM(llama)
    _train(model, training_examples(fam, tok), train_steps)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})

    (root / "config.json").write_text(json.dumps(_config(fam, shape, vocab), indent=2) + "\n")
    generation = {
        "bos_token_id": fam.bos.id if fam.bos else None,
        "eos_token_id": fam.stop_token().id,
        "pad_token_id": fam.pad.id,
        **dict(fam.generation),
    }
    if fam.generation:
        generation["do_sample"] = True
    (root / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tok.save(str(root / "tokenizer.json"))
    _write_tokenizer_config(root, fam, shape)
    return root


def _write_tokenizer_config(root: Path, fam: Family, shape: TinyShape) -> None:
    extra = [s.text for s in fam.extra_special]
    special_map: dict[str, Any] = {
        "bos_token": fam.bos.text if fam.bos else None,
        "eos_token": fam.eos.text,
        "unk_token": fam.unk.text if fam.unk else None,
        "pad_token": fam.pad.text,
    }
    if extra:
        special_map["additional_special_tokens"] = extra
    special_map = {k: v for k, v in special_map.items() if v is not None}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": shape.context,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        **special_map,
    }
    (root / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    )
    (root / "special_tokens_map.json").write_text(
        json.dumps(special_map, indent=2, ensure_ascii=False) + "\n"
    )


def _train(model: Any, examples: Sequence[tuple[list[int], int]], steps: int) -> None:
    """Full-batch AdamW on the reply tokens (and the stop token) only."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    inputs = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(examples):
        inputs[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        mask[row, : len(ids)] = 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    # One thread: the matrices are tiny, and on a busy machine torch's thread pool spins and
    # stalls (ten times slower with two threads on two cores shared with other work).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.train()
    try:
        for _ in range(steps):
            loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()


def greedy_reply(path: str | Path, messages: list[dict[str, str]], max_new: int = 64) -> str:
    """What the checkpoint answers (greedy, with transformers directly): a check for tests."""
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    root = Path(path)
    cfg = json.loads((root / "config.json").read_text())
    family = _family_of(cfg, root)
    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    render = ChatRenderer(family.chat_template, {"bos_token": "", "eos_token": family.eos.text})
    ids = tok.encode(render.render(messages), add_special_tokens=False).ids
    heads = cfg.get("num_attention_heads", cfg.get("n_head"))
    llama_kw: dict[str, Any] = {
        "vocab_size": cfg["vocab_size"],
        "hidden_size": cfg.get("hidden_size", cfg.get("n_embd")),
        "intermediate_size": cfg.get("intermediate_size", cfg.get("n_inner")),
        "num_hidden_layers": cfg.get("num_hidden_layers", cfg.get("n_layer")),
        "num_attention_heads": heads,
        "num_key_value_heads": cfg.get("num_key_value_heads", heads),
        "rope_theta": cfg.get("rope_theta", 10000.0),
        "rms_norm_eps": cfg.get("rms_norm_eps", cfg.get("layer_norm_epsilon", 1e-6)),
        "tie_word_embeddings": False,
    }
    llama = LlamaConfig(**llama_kw)
    model = LlamaForCausalLM.from_pretrained(str(root), config=llama, dtype=torch.float32)
    stop = family.stop_token().id
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            nxt = int(torch.argmax(logits))
            if nxt == stop:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True)


def _family_of(cfg: dict[str, Any], root: Path) -> Family:
    if cfg.get("model_type") == "telechat":
        return FAMILIES["telechat"]
    if cfg.get("model_type") == "xverse":
        return FAMILIES["xverse"]
    tok_cfg = json.loads((root / "tokenizer_config.json").read_text())
    if "<|im_start|>" in json.dumps(tok_cfg):
        return FAMILIES["yi-chat"]
    return FAMILIES["sus-chat"]
