"""Model families: chat format, special tokens, stop tokens and generation defaults.

None of the seed checkpoints ships a ``chat_template``, so the formats their authors document
(reference ``chat()`` code and model cards) are written here as Jinja templates, the same
language Hugging Face tokenizers use, so one renderer serves catalog formats, checkpoint
templates and user overrides alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# Jinja: string concatenation rather than literal text between tags, because whitespace control
# (`{%-`) would otherwise eat the trailing space of prompts such as "### Assistant: ".
_SUS = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{{ m['content'] }}"
    "{%- elif m['role'] == 'user' -%}{{ '### Human: ' + m['content'] + '\\n\\n' }}"
    "{%- elif m['role'] == 'assistant' -%}{{ '### Assistant: ' + m['content'] + '<|endoftext|>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Assistant: ' }}{%- endif -%}"
)
_CHATML = (
    "{%- for m in messages -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
_TELECHAT = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{{ m['content'] | trim }}"
    "{%- elif m['role'] == 'user' -%}{{ '<_user>' + m['content'] }}"
    "{%- elif m['role'] == 'assistant' -%}{{ '<_bot>' + m['content'] + '<_end>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<_bot>' }}{%- endif -%}"
)
_XVERSE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{{ m['content'] }}"
    "{%- elif m['role'] == 'user' -%}{{ 'Human: ' + m['content'] + '\\n\\n' }}"
    "{%- elif m['role'] == 'assistant' -%}{{ 'Assistant: ' + m['content'] + '<|endoftext|>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant: ' }}{%- endif -%}"
)
# Llama-2-chat: the system prompt sits inside the first [INST] block.
_LLAMA2 = (
    "{%- set ns = namespace(sys='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}"
    "{%- set ns.sys = '<<SYS>>\\n' + m['content'] + '\\n<</SYS>>\\n\\n' -%}"
    "{%- elif m['role'] == 'user' -%}"
    "{{ '<s>[INST] ' + ns.sys + m['content'] + ' [/INST]' }}{%- set ns.sys = '' -%}"
    "{%- elif m['role'] == 'assistant' -%}{{ ' ' + m['content'] + ' </s>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass(frozen=True)
class SpecialToken:
    text: str
    id: int


@dataclass(frozen=True)
class Family:
    """What the data plane needs to talk to one family of chat models."""

    name: str
    chat_template: str
    bos: SpecialToken | None
    eos: SpecialToken
    pad: SpecialToken
    stop: tuple[str, ...]
    """Strings that end a reply; the first is the end id fed to the engine."""
    extra_special: tuple[SpecialToken, ...] = ()
    """Other special tokens of the vocabulary (chat markers)."""
    unk: SpecialToken | None = None
    generation: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Published generation defaults (temperature, top_p, top_k, repetition_penalty)."""
    system_prompt: str | None = None
    """Default system prompt, if the authors publish one."""

    def special_tokens(self) -> list[SpecialToken]:
        """Every special token with its id, without duplicates, sorted by id."""
        seen: dict[str, SpecialToken] = {}
        for tok in (self.unk, self.bos, self.eos, self.pad, *self.extra_special):
            if tok is not None:
                seen.setdefault(tok.text, tok)
        return sorted(seen.values(), key=lambda t: t.id)

    def stop_token(self) -> SpecialToken:
        """The special token whose id ends generation (first stop string)."""
        for tok in self.special_tokens():
            if tok.text == self.stop[0]:
                return tok
        return self.eos


FAMILIES: dict[str, Family] = {
    "sus-chat": Family(
        name="sus-chat",
        chat_template=_SUS,
        unk=SpecialToken("<unk>", 0),
        bos=SpecialToken("<|startoftext|>", 1),
        eos=SpecialToken("<|endoftext|>", 2),
        pad=SpecialToken("<unk>", 0),
        stop=("<|endoftext|>",),
    ),
    "yi-chat": Family(
        name="yi-chat",
        chat_template=_CHATML,
        unk=SpecialToken("<unk>", 0),
        bos=SpecialToken("<|startoftext|>", 1),
        eos=SpecialToken("<|endoftext|>", 2),
        pad=SpecialToken("<unk>", 0),
        stop=("<|im_end|>", "<|endoftext|>"),
        extra_special=(SpecialToken("<|im_start|>", 6), SpecialToken("<|im_end|>", 7)),
        generation=MappingProxyType({"temperature": 0.6, "top_p": 0.8}),
    ),
    "telechat": Family(
        name="telechat",
        chat_template=_TELECHAT,
        unk=SpecialToken("<unk>", 0),
        bos=SpecialToken("<s>", 1),
        eos=SpecialToken("</s>", 2),
        pad=SpecialToken("<pad>", 3),
        stop=("</s>",),
        # The id of <_end> in the 52B vocabulary is not published; 22 follows <_user>/<_bot>.
        extra_special=(
            SpecialToken("<_user>", 20),
            SpecialToken("<_bot>", 21),
            SpecialToken("<_end>", 22),
        ),
        generation=MappingProxyType(
            {"temperature": 0.3, "top_k": 5, "top_p": 0.85, "repetition_penalty": 1.02}
        ),
    ),
    "xverse": Family(
        name="xverse",
        chat_template=_XVERSE,
        unk=SpecialToken("<unk>", 0),
        pad=SpecialToken("<pad>", 1),
        bos=SpecialToken("<|startoftext|>", 2),
        eos=SpecialToken("<|endoftext|>", 3),
        stop=("<|endoftext|>",),
    ),
    "llama": Family(
        name="llama",
        chat_template=_LLAMA2,
        unk=SpecialToken("<unk>", 0),
        bos=SpecialToken("<s>", 1),
        eos=SpecialToken("</s>", 2),
        pad=SpecialToken("<unk>", 0),
        stop=("</s>",),
    ),
    "chatml": Family(
        name="chatml",
        chat_template=_CHATML,
        unk=SpecialToken("<unk>", 0),
        bos=SpecialToken("<|startoftext|>", 1),
        eos=SpecialToken("<|endoftext|>", 2),
        pad=SpecialToken("<unk>", 0),
        stop=("<|im_end|>", "<|endoftext|>"),
        extra_special=(SpecialToken("<|im_start|>", 3), SpecialToken("<|im_end|>", 4)),
    ),
}


def get_family(name: str) -> Family:
    return FAMILIES[name]
