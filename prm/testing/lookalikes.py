"""Offline look-alikes of published PRMs: small models saved in each checkpoint's exact layout
(architectures, weight names, tokenizer special tokens and chat template), for tests and the
scoring benchmark. Tokenizers start from the embedded SmolLM2 tokenizer plus the published
model's special tokens; nothing is downloaded.

The folder is named like the hub repository, so `prm.models.prm.load_prm` recognises a look-alike
the way it recognises a snapshot download of the real model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# Qwen2.5-style ChatML template (the published tokenizer's, for messages without tools).
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within \\\\boxed{}.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Llama 3 template (headers, "\n\n", trimmed content, <|eot_id|>).
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# name (the hub repository's) -> (hub id, model_type, what the checkpoint holds)
LOOKALIKES: dict[str, tuple[str, str, str]] = {
    "math-shepherd-mistral-7b-prm": ("peiyi9979/math-shepherd-mistral-7b-prm", "mistral", "causal_lm"),
    "Llama3.1-8B-PRM-Deepseek-Data": ("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data", "llama", "causal_lm"),
    "Qwen2.5-Math-PRM-7B": ("Qwen/Qwen2.5-Math-PRM-7B", "qwen2", "prm_head"),
    "Skywork-o1-Open-PRM-Qwen-2.5-1.5B": ("Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B", "qwen2", "value_head"),
    "Qwen2-0.5B-Reward-Math-Sheperd": ("trl-lib/Qwen2-0.5B-Reward-Math-Sheperd", "qwen2", "token_cls"),
    "Qwen2.5-Math-1.5B-Instruct-PRM-0.2": ("HuggingFaceH4/Qwen2.5-Math-1.5B-Instruct-PRM-0.2", "qwen2", "token_cls"),
    "Mistral-7b-PRM-Math-Shepherd": ("OpenRLHF/Mistral-7b-PRM-Math-Shepherd", "mistral", "causal_lm"),
}


def lookalike_tokenizer(name: str) -> Any:
    """The SmolLM2 tokenizer with the published model's step tags, special tokens and template."""
    from transformers import AutoTokenizer

    from prm.models.backbones import smollm2_path

    tok = AutoTokenizer.from_pretrained(smollm2_path())
    if name == "math-shepherd-mistral-7b-prm":
        tok.add_tokens(["ки"])  # an ordinary vocabulary token in Mistral's tokenizer
    elif name == "Mistral-7b-PRM-Math-Shepherd":
        from tokenizers.processors import TemplateProcessing

        tok.add_tokens(["ки"])
        # Mistral's tokenizer puts BOS first by default; OpenRLHF's layout tokenizes without it
        bos = (tok.bos_token, tok.bos_token_id)
        tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B", special_tokens=[bos])
    elif name == "Llama3.1-8B-PRM-Deepseek-Data":
        tok.add_special_tokens({"additional_special_tokens": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
        tok.bos_token = "<|begin_of_text|>"
        tok.chat_template = LLAMA3_CHAT_TEMPLATE
    elif name == "Qwen2.5-Math-PRM-7B":
        tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
        tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def _config(model_type: str, vocab: int, hidden: int, layers: int, **kw: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                                num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=4096, **kw)


def make_lookalike(name: str, *, body: str | None = None, hidden: int = 32, layers: int = 2, seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer) of a look-alike of ``name`` (a key of `LOOKALIKES`). With ``body`` (a
    causal LM directory, e.g. the embedded SmolLM2) its decoder weights and shape are used and only
    the heads are random; else a random model of ``hidden`` x ``layers``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification

    from prm.models.kinds import ProcessRewardHeadModel, ValueHeadModel

    hub_id, model_type, holds = LOOKALIKES[name]
    tok = lookalike_tokenizer(name)
    torch.manual_seed(seed)
    if body is not None:
        cfg = AutoConfig.from_pretrained(body)
        cfg.num_labels = 2
    else:
        cfg = _config(model_type, len(tok), hidden, layers, num_labels=2, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    if holds == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(body) if body else AutoModelForCausalLM.from_config(cfg)
    elif holds == "token_cls":
        model = AutoModelForTokenClassification.from_pretrained(body, num_labels=2) if body else AutoModelForTokenClassification.from_config(cfg)
    else:
        cls = ProcessRewardHeadModel if holds == "prm_head" else ValueHeadModel
        model = cls.from_pretrained(body, config=cfg) if body else cls(cfg)
        if holds == "value_head":  # Skywork's head is initialised small, like TRL's ValueHead
            torch.nn.init.normal_(model.v_head.summary.weight, std=0.5)
    if model.get_input_embeddings().weight.shape[0] != len(tok):
        model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def build_lookalike(name: str, root: str | Path, **kw: Any) -> Path:
    """Save `make_lookalike` under ``root/name`` with the published checkpoint's config fields."""
    from safetensors.torch import load_file, save_file

    holds = LOOKALIKES[name][2]
    out = Path(root) / name
    model, tok = make_lookalike(name, **kw)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    cfg_path = out / "config.json"
    c = json.loads(cfg_path.read_text())
    if holds == "prm_head":  # as published: the authors' class through remote code
        c["architectures"] = ["Qwen2ForProcessRewardModel"]
        c["auto_map"] = {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
    elif holds == "value_head":  # Skywork's checkpoint also holds an LM head (unused for scoring)
        c["architectures"] = ["Qwen2ForPrmModel"]
        f = out / "model.safetensors"
        sd = load_file(f)
        emb = sd["model.embed_tokens.weight"]
        sd["lm_head.weight"] = emb.clone()
        save_file(sd, f, metadata={"format": "pt"})
    cfg_path.write_text(json.dumps(c, indent=2))
    return out
