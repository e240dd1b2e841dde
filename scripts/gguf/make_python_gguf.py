"""A GGUF file written by another tool — the Python `gguf` package (llama.cpp's gguf-py 0.19: GGUFWriter and its
own Q8_0 quantizer) — from the generated OLMoE fixture, for test/formats/gguf-interop.test.ts: moe-quant must read
GGUF files it did not write. Names and keys follow llama.cpp's `olmoe` architecture (gguf-py's tables); 2-D weights
whose rows are multiples of 32 are Q8_0, the rest F32; no tokenizer (the test reads logits only).

    /path/to/venv/bin/python scripts/gguf/make_python_gguf.py test/fixtures/generated/olmoe test/fixtures/gguf/olmoe-python-q8_0.gguf
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.quants import quantize
from safetensors.numpy import load_file

src, out = sys.argv[1], sys.argv[2]
cfg = json.load(open(f"{src}/config.json"))
w = {k: v.astype(np.float32) for k, v in load_file(f"{src}/model.safetensors").items()}
H, L, E = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_experts"]
g = GGUFWriter(out, "olmoe")
g.add_context_length(cfg["max_position_embeddings"])
g.add_embedding_length(H)
g.add_block_count(L)
g.add_feed_forward_length(cfg["intermediate_size"])
g.add_expert_feed_forward_length(cfg["intermediate_size"])
g.add_head_count(cfg["num_attention_heads"])
g.add_head_count_kv(cfg["num_key_value_heads"])
g.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
g.add_rope_freq_base(cfg.get("rope_theta", cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)))
g.add_expert_count(E)
g.add_expert_used_count(cfg["num_experts_per_tok"])


def add(name, a, quant=True):
    if quant and a.ndim >= 2 and a.shape[-1] % 32 == 0:
        g.add_tensor(name, quantize(a, T.Q8_0), raw_dtype=T.Q8_0)
    else:
        g.add_tensor(name, a)


add("token_embd.weight", w["model.embed_tokens.weight"])
for i in range(L):
    p = f"model.layers.{i}"
    b = f"blk.{i}"
    add(f"{b}.attn_norm.weight", w[f"{p}.input_layernorm.weight"])
    for hf, gg in [("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("o_proj", "attn_output")]:
        add(f"{b}.{gg}.weight", w[f"{p}.self_attn.{hf}.weight"])
    add(f"{b}.attn_q_norm.weight", w[f"{p}.self_attn.q_norm.weight"])
    add(f"{b}.attn_k_norm.weight", w[f"{p}.self_attn.k_norm.weight"])
    add(f"{b}.ffn_norm.weight", w[f"{p}.post_attention_layernorm.weight"])
    add(f"{b}.ffn_gate_inp.weight", w[f"{p}.mlp.gate.weight"], quant=False)
    for hf, gg in [("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")]:
        add(f"{b}.{gg}.weight", np.stack([w[f"{p}.mlp.experts.{e}.{hf}.weight"] for e in range(E)]))
add("output_norm.weight", w["model.norm.weight"])
add("output.weight", w["lm_head.weight"])
g.write_header_to_file()
g.write_kv_data_to_file()
g.write_tensors_to_file()
g.close()
