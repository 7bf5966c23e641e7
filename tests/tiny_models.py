"""A tiny GGUF file for the GGUF loader's tests (the tiny HF-layout pair is training.tiny_models')."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from training.tiny_models import build_tokenizer


def llama_gguf_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's converter stores q/k rows interleaved per rotary pair; transformers undoes this on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def build_tiny_gguf(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> tuple[Path, LlamaForCausalLM]:
    """A tiny Llama-layout causal LM written as GGUF with the `gguf` writer (F32 tensors, GPT-2-style BPE
    tokenizer metadata, tied embeddings), the way llama.cpp's converter lays a model out. Returns the file
    and the model it holds (for comparing what a loader reads back)."""
    import gguf

    path = Path(path)
    folder = path.parent / (path.stem + "-tokenizer")
    tok = build_tokenizer(folder)
    torch.manual_seed(seed)
    heads, kv_heads = 4, 2
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10_000.0,
                         tie_word_embeddings=True, eos_token_id=0, bos_token_id=0, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(2 * hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10_000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tok))
    writer.add_tokenizer_model("gpt2")
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    writer.add_token_list(tokens)
    special = set(tok.all_special_tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_pad_token_id(0)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    state = model.state_dict()
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"].numpy())
    writer.add_tensor("output_norm.weight", state["model.norm.weight"].numpy())
    for i in range(layers):
        for hf, gg in names.items():
            w = state[f"model.layers.{i}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                w = llama_gguf_permute(w, heads)
            elif hf == "self_attn.k_proj":
                w = llama_gguf_permute(w, kv_heads)
            writer.add_tensor(f"blk.{i}.{gg}.weight", w.contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model
