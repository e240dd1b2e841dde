#!/usr/bin/env python3
"""Checkpoints with real models' layer shapes, random weights, saved by transformers itself (dev tool; benches and
slow tests). Never committed: they are gigabytes.

Each shape is the Hub config of a real model with a chosen number of layers and the 4,096-token vocabulary of the
trained fixtures (their tokenizer.json is copied alongside, so `moe-quant eval/calibrate` take text):

    qwen3-30b-a3b     Qwen3-30B-A3B: hidden 2048, 32 q / 4 kv heads of 128, 128 experts top-8 of width 768
    olmoe-1b-7b       OLMoE-1B-7B-0924: hidden 2048, 16 heads, 64 experts top-8 of width 1024
    deepseek-v2-lite  DeepSeek-V2-Lite: hidden 2048, MLA (kv rank 512, 128 + 64 rope dims), layer 0 dense (10944),
                      64 routed experts top-6 of width 1408 + 2 shared
    mixtral-8x7b      Mixtral-8x7B: hidden 4096, 32 q / 8 kv heads, 8 experts top-2 of width 14336

The model is built by transformers' own class in bfloat16 (its _init_weights: normal(0, 0.02) linears, unit norms;
seeded), optionally with the routers' weights multiplied by --router-scale (peaked scores: a random router is nearly
flat), and written with save_pretrained, so names, shapes, config keys and shard layout are what transformers writes.

Usage (from the repository root; ~1–3 minutes and up to 2× the checkpoint's size in memory per shape):
    .venv/bin/python scripts/bench/make_real_shapes.py --shape qwen3-30b-a3b --layers 2 --out .bench-tmp/real/qwen3-30b-a3b-2l
    .venv/bin/python scripts/bench/make_real_shapes.py --shape qwen3-30b-a3b --layers 1 --manifest \\
        test/fixtures/real-shapes/qwen3-30b-a3b-1layer.json --out /tmp/q1     # names/shapes/config of what it wrote
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors import safe_open
from transformers import (
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
TOKENIZER_FROM = os.path.join(REPO, "..", "shared", "fixtures", "tiny-mixtral")
VOCAB = 4096

# Hub config.json values of the real models (only the vocabulary and layer count are changed, below).
SHAPES = {
    "qwen3-30b-a3b": (
        Qwen3MoeForCausalLM,
        Qwen3MoeConfig,
        {
            "architectures": ["Qwen3MoeForCausalLM"],
            "model_type": "qwen3_moe",
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "moe_intermediate_size": 768,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "head_dim": 128,
            "num_experts": 128,
            "num_experts_per_tok": 8,
            "norm_topk_prob": True,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_scaling": None,
            "max_position_embeddings": 40960,
            "attention_bias": False,
            "use_sliding_window": False,
            "sliding_window": None,
            "router_aux_loss_coef": 0.001,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
        },
    ),
    "olmoe-1b-7b": (
        OlmoeForCausalLM,
        OlmoeConfig,
        {
            "architectures": ["OlmoeForCausalLM"],
            "model_type": "olmoe",
            "hidden_size": 2048,
            "intermediate_size": 1024,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "num_experts": 64,
            "num_experts_per_tok": 8,
            "norm_topk_prob": False,
            "clip_qkv": None,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "rope_scaling": None,
            "max_position_embeddings": 4096,
            "attention_bias": False,
            "router_aux_loss_coef": 0.01,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
        },
    ),
    "deepseek-v2-lite": (
        DeepseekV2ForCausalLM,
        DeepseekV2Config,
        {
            "architectures": ["DeepseekV2ForCausalLM"],
            "model_type": "deepseek_v2",
            "hidden_size": 2048,
            "intermediate_size": 10944,
            "moe_intermediate_size": 1408,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "n_routed_experts": 64,
            "n_shared_experts": 2,
            "num_experts_per_tok": 6,
            "first_k_dense_replace": 1,
            "moe_layer_freq": 1,
            "topk_method": "greedy",
            "n_group": 1,
            "topk_group": 1,
            "routed_scaling_factor": 1.0,
            "scoring_func": "softmax",
            "norm_topk_prob": False,
            "q_lora_rank": None,
            "kv_lora_rank": 512,
            "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64,
            "v_head_dim": 128,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "rope_scaling": {
                "type": "yarn",
                "factor": 40,
                "original_max_position_embeddings": 4096,
                "beta_fast": 32,
                "beta_slow": 1,
                "mscale": 0.707,
                "mscale_all_dim": 0.707,
            },
            "max_position_embeddings": 163840,
            "attention_bias": False,
            "aux_loss_alpha": 0.001,
            "seq_aux": True,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
        },
    ),
    "mixtral-8x7b": (
        MixtralForCausalLM,
        MixtralConfig,
        {
            "architectures": ["MixtralForCausalLM"],
            "model_type": "mixtral",
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
            "rms_norm_eps": 1e-5,
            "rope_theta": 1000000.0,
            "max_position_embeddings": 32768,
            "sliding_window": None,
            "router_aux_loss_coef": 0.02,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
        },
    ),
}


def router_names(model: torch.nn.Module) -> list[str]:
    """Parameter names of the routers (`mlp.gate.weight`, Mixtral `block_sparse_moe.gate.weight`; never gate_proj)."""
    return [n for n, _ in model.named_parameters() if n.endswith(".gate.weight")]


def build(shape: str, layers: int, seed: int, router_scale: float, out: str) -> None:
    cls, config_cls, hub = SHAPES[shape]
    config = config_cls.from_dict(
        {
            **hub,
            "num_hidden_layers": layers,
            "vocab_size": VOCAB,
            "bos_token_id": None,
            "eos_token_id": VOCAB - 1,
            "pad_token_id": None,
            "initializer_range": 0.02,
            "attention_dropout": 0.0,
            "use_cache": True,
        }
    )
    torch.manual_seed(seed)
    model = cls._from_config(config, dtype=torch.bfloat16)
    model.eval()
    if router_scale != 1.0:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in router_names(model):
                    p.mul_(router_scale)
    if os.path.exists(out):
        shutil.rmtree(out)
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER_FROM, f), os.path.join(out, f))
    with open(os.path.join(out, "real-shape.json"), "w") as f:
        json.dump(
            {
                "shape": shape,
                "layers": layers,
                "seed": seed,
                "router_scale": router_scale,
                "routers": router_names(model),
                "tokenizer": "copied from ../shared/fixtures/tiny-mixtral",
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            f,
            indent=2,
        )


def manifest(out: str) -> dict:
    """Config keys/values, file names and every tensor's name, dtype and shape, as written."""
    files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    tensors = {}
    for file in files:
        with safe_open(os.path.join(out, file), "pt") as f:
            for k in f.keys():
                s = f.get_slice(k)
                tensors[k] = {"file": file, "dtype": s.get_dtype(), "shape": list(s.get_shape())}
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(out, "model.safetensors.index.json")
    with open(os.path.join(out, "generation_config.json")) as f:
        generation = json.load(f)
    return {
        "transformers": transformers.__version__,
        "config": config,
        "generation_config": generation,
        "files": sorted(f for f in os.listdir(out) if f.endswith(".safetensors") or f.endswith(".index.json") or f in ("config.json", "generation_config.json")),
        "index": os.path.exists(index),
        "tensors": dict(sorted(tensors.items())),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", required=True, choices=sorted(SHAPES))
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--router-scale", type=float, default=1.0, help="multiply every router's weight by this (peaked scores)")
    p.add_argument("--out", required=True)
    p.add_argument("--manifest", help="also write the manifest of what was saved (names, shapes, dtypes, config) here")
    a = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    build(a.shape, a.layers, a.seed, a.router_scale, a.out)
    if a.manifest:
        os.makedirs(os.path.dirname(os.path.abspath(a.manifest)), exist_ok=True)
        m = manifest(a.out)
        with open(a.manifest, "w") as f:
            # One tensor per line: small enough to commit, readable in a diff.
            f.write("{\n")
            for key in ("transformers", "config", "generation_config", "files", "index"):
                f.write(f" {json.dumps(key)}: {json.dumps(m[key])},\n")
            f.write(' "tensors": {\n')
            f.write(",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in m["tensors"].items()))
            f.write("\n }\n}\n")
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    sys.stdout.write(f"{a.out}: {a.shape}, {a.layers} layers, {size / 1e9:.2f} GB\n")


if __name__ == "__main__":
    main()
