#!/usr/bin/env python3
"""Write GPTQ checkpoints with an implementation independent of moe-quant's own writer (interop fixtures).

Dev-only (the product and its tests never run Python). From the repository root:

    .venv/bin/python scripts/interop/make_gptq_interop.py            # build + self-verify test/fixtures/gptq-interop
    .venv/bin/python scripts/interop/make_gptq_interop.py --full --out /tmp/gptq-interop-full
                                                                     # same, on the unreduced tiny-mixtral (~4.4 MB each)

The packer follows docs/architectures-and-formats.md Part B.1 and AutoGPTQ's reference semantics
(`auto_gptq/quantization/quantizer.py` Quantizer.find_params, `qlinear_cuda_old.py` pack), written from the format
description only (no moe-quant code was consulted):

  * per-group min-max RTN, bits 4, group_size 64 (K=128 -> 2 groups, K=256 -> 4), desc_act false:
      asym: xmin = min(min, 0), xmax = max(max, 0), scale = (xmax - xmin) / 15, z = round(-xmin / scale)
      sym:  xmax = max(|xmin|, xmax); xmin = -xmax where xmin < 0 (AutoGPTQ quirk: a group with no negative
            weight keeps xmin = 0); scale = (xmax - xmin) / 15, z = 8
      an all-zero group gets xmin = -1, xmax = +1 (AutoGPTQ).
    The scale is rounded to fp16 first and q = clamp(round(w / scale16) + z, 0, 15) is computed with the fp16 value,
    so  W_dq = scale16 * (q - z)  is exactly what the checkpoint encodes (and exactly representable in fp32).
  * packing (little-nibble-first):
      qweight int32 [K/8, N]:  qweight[r, n]  = sum_j q[8r+j, n]   << 4j
      qzeros  int32 [G, N/8]:  qzeros[g, c]   = sum_j zs[g, 8c+j]  << 4j
      scales  fp16  [G, N],    g_idx int32 [K] = k // 64
    zs (stored zero) = (z - 1) & 0xF for checkpoint_format "gptq" (v1), z for "gptq_v2".

v1 and z = 0: v1 stores z - 1, so z = 0 is stored as -1 & 0xF = 15 (this script masks per nibble; AutoGPTQ's own
pack does not mask and ORs 0xFFFFFFFF << 4j, which also sets every higher nibble of the word -- unrecoverable).
Since a 4-bit zero point lies in [0, 15], the masked stored nibble is unambiguous: a correct v1 loader must compute
z = (zs + 1) & 0xF per nibble (ORT-GenAI: `unpack; qzeros += 1; & (2^bits - 1)`), giving 0 for stored 15.
Adding 0x11111111 to the packed word (GPTQModel's v1->v2 conversion) carries the 16 into the next nibble
(neighbour's zero +1, the top nibble's carry is lost); reading 16 without masking (AutoGPTQ cuda_old) gives
W = s * (q - 16). The ground truth here is the intended zero point (0), i.e. the mod-16 reading.
To make sure the case is exercised, a few modules get "stress" groups (see STRESS_MODULES): the group's weights are
replaced by their absolute value (z = 0) or by minus their absolute value (z = 15) in a pattern that puts z = 0 at
every nibble position, including position 7 (the word's top nibble).

Size: the full tiny-mixtral (vocab 4096, 4 layers x 8 experts) gives ~4.4 MB per checkpoint (2 MB of it bf16
embed_tokens + lm_head), too much for four committed checkpoints (budget 6 MB). By default the model is therefore
reduced, after loading: the first 2 decoder layers, all 8 experts and the router unchanged, vocab cut to the first
512 rows of embed_tokens / lm_head (config vocab_size 512), and input_ids = the first 32 of the shared reference's
input_ids that are < 512 (the reference logits are [32, 512]). The tokenizer files are copied unchanged (they cover
4096 tokens; only ids < 512 are valid for these checkpoints). `--full` keeps everything (input_ids = first 32).

Reference: transformers' MixtralForCausalLM (from_pretrained on a float32 copy of the checkpoint with every quantized
Linear replaced by W_dq, original per-expert names so transformers' own expert fusion runs), float32, eager
attention, no_grad. The script then re-reads every written checkpoint with an independent unpacker and checks the
decoded weights equal W_dq bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import MixtralForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SRC = os.path.abspath(os.path.join(REPO, "..", "shared", "fixtures", "tiny-mixtral"))
OUT = os.path.join(REPO, "test", "fixtures", "gptq-interop")

BITS = 4
MAXQ = 2**BITS - 1
PACK = 32 // BITS
GROUP = 64
SEQ = 32
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]

# name -> (sym, checkpoint_format, write g_idx)
VARIANTS = {
    "v1-asym": (False, "gptq", True),
    "v2-asym": (False, "gptq_v2", True),
    "v1-sym": (True, "gptq", True),
    "v1-sym-no-gidx": (True, "gptq", False),
}

# Modules whose groups get a z = 0 / z = 15 stress pattern (module prefix suffixes; layer indices must exist).
STRESS_MODULES = [
    "model.layers.0.block_sparse_moe.experts.0.w1",  # K = 128, 2 groups
    "model.layers.0.block_sparse_moe.experts.3.w2",  # K = 256, 4 groups
    "model.layers.1.self_attn.q_proj",
    "model.layers.1.self_attn.v_proj",  # N = 64
]

QUANT_SUFFIXES = ("q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3")


def is_quantized(name: str) -> bool:
    """Attention projections and expert w1/w2/w3 (never the router `block_sparse_moe.gate`, norms, embeddings, lm_head)."""
    if not name.endswith(".weight"):
        return False
    prefix = name[: -len(".weight")]
    last = prefix.rsplit(".", 1)[-1]
    if last in ("q_proj", "k_proj", "v_proj", "o_proj"):
        return ".self_attn." in prefix
    if last in ("w1", "w2", "w3"):
        return ".block_sparse_moe.experts." in prefix
    return False


# ---------------------------------------------------------------------------------------------------------------
# Quantizer (AutoGPTQ find_params + quantize, per group)
# ---------------------------------------------------------------------------------------------------------------


def quantize(W: torch.Tensor, sym: bool):
    """W float32 [N, K] -> (q int64 [N, K], z int64 [N, G], scale16 float16 [N, G], W_dq float32 [N, K])."""
    N, K = W.shape
    assert K % GROUP == 0, (N, K)
    G = K // GROUP
    Wg = W.reshape(N, G, GROUP)
    zero = torch.zeros(N, G, dtype=torch.float32)
    xmin = torch.minimum(Wg.min(-1).values, zero)
    xmax = torch.maximum(Wg.max(-1).values, zero)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        neg = xmin < 0
        xmin = torch.where(neg, -xmax, xmin)
    both0 = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both0, torch.full_like(xmin, -1.0), xmin)
    xmax = torch.where(both0, torch.full_like(xmax, 1.0), xmax)
    scale = (xmax - xmin) / MAXQ
    if sym:
        z = torch.full_like(scale, (MAXQ + 1) // 2)
    else:
        z = torch.round(-xmin / scale)
    assert int(z.min()) >= 0 and int(z.max()) <= MAXQ
    scale16 = scale.to(torch.float16)
    s = scale16.to(torch.float32)
    assert bool((s > 0).all()) and bool(torch.isfinite(s).all()), "fp16 scale under/overflow"
    s_rep = s.repeat_interleave(GROUP, dim=1)  # [N, K]
    z_rep = z.repeat_interleave(GROUP, dim=1)
    q = torch.clamp(torch.round(W / s_rep) + z_rep, 0, MAXQ)
    W_dq = s_rep * (q - z_rep)
    return q.to(torch.int64), z.to(torch.int64), scale16, W_dq


def stress(W: torch.Tensor) -> torch.Tensor:
    """Force z = 0 (|w|) and z = 15 (-|w|) in a pattern of groups that reaches every nibble position of qzeros."""
    N, K = W.shape
    G = K // GROUP
    W = W.clone()
    for n in range(N):
        for g in range(G):
            h = (n * 7 + g * 3) % 6
            sl = slice(g * GROUP, (g + 1) * GROUP)
            if h == 0:
                W[n, sl] = W[n, sl].abs()
            elif h == 1:
                W[n, sl] = -W[n, sl].abs()
    return W


# ---------------------------------------------------------------------------------------------------------------
# Packing (B.1.2) and an independent unpacker for self-verification
# ---------------------------------------------------------------------------------------------------------------


def pack_cols_along_rows(vals: np.ndarray) -> np.ndarray:
    """vals uint [R, C] with R % 8 == 0 -> uint32 [R/8, C]; element r = 8i + j goes to bits [4j, 4j+4) of row i."""
    R, C = vals.shape
    assert R % PACK == 0
    out = np.zeros((R // PACK, C), dtype=np.uint64)
    for j in range(PACK):
        out |= (vals[j::PACK].astype(np.uint64) & np.uint64(MAXQ)) << np.uint64(BITS * j)
    return out.astype(np.uint32)


def pack(q: torch.Tensor, z: torch.Tensor, scale16: torch.Tensor, fmt: str, sym: bool, with_gidx: bool):
    N, K = q.shape
    G = K // GROUP
    qT = q.numpy().T  # [K, N]
    qweight = pack_cols_along_rows(qT).view(np.int32)  # [K/8, N]
    zn = z.numpy().T  # [G, N]
    if fmt == "gptq":
        zs = (zn - 1) & MAXQ  # v1: zeros stored minus one, masked per nibble (z = 0 -> 15)
    elif fmt == "gptq_v2":
        zs = zn
    else:
        raise ValueError(fmt)
    if sym:
        assert (zs == (7 if fmt == "gptq" else 8)).all()
    # pack along N: transpose so N is the row axis, pack, transpose back -> [G, N/8]
    qzeros = pack_cols_along_rows(zs.T.copy()).T.copy().view(np.int32)
    out = {
        "qweight": torch.from_numpy(np.ascontiguousarray(qweight)),
        "qzeros": torch.from_numpy(np.ascontiguousarray(qzeros)),
        "scales": scale16.T.contiguous(),  # [G, N] fp16
    }
    if with_gidx:
        out["g_idx"] = torch.arange(K, dtype=torch.int32) // GROUP
    assert out["qweight"].shape == (K // PACK, N) and out["qzeros"].shape == (G, N // PACK) and out["scales"].shape == (G, N)
    return out


def unpack_reference(t: dict, N: int, K: int, fmt: str) -> torch.Tensor:
    """Decode per B.1.2/B.1.3 with per-nibble v1 handling z = (zs + 1) & 0xF. Returns W [N, K] float32."""
    qw = t["qweight"].numpy().view(np.uint32).astype(np.int64)  # [K/8, N]
    qz = t["qzeros"].numpy().view(np.uint32).astype(np.int64)  # [G, N/8]
    sc = t["scales"].to(torch.float32).numpy()  # [G, N]
    k = np.arange(K)
    q = (qw[k // PACK, :] >> (BITS * (k % PACK))[:, None]) & MAXQ  # [K, N]
    n = np.arange(N)
    zs = (qz[:, n // PACK] >> (BITS * (n % PACK))[None, :]) & MAXQ  # [G, N]
    z = (zs + 1) & MAXQ if fmt == "gptq" else zs
    gidx = t["g_idx"].numpy() if "g_idx" in t else k // GROUP
    W = sc[gidx, :] * (q - z[gidx, :]).astype(np.float32)  # [K, N]
    return torch.from_numpy(np.ascontiguousarray(W.T.astype(np.float32)))


def gptqmodel_word_add_zeros(qzeros: torch.Tensor, N: int) -> np.ndarray:
    """What a loader gets by adding 0x11111111 to each v1 qzeros word (GPTQModel v1->v2) and reading nibbles."""
    w = (qzeros.numpy().view(np.uint32).astype(np.uint64) + np.uint64(0x11111111)) & np.uint64(0xFFFFFFFF)
    n = np.arange(N)
    return ((w[:, n // PACK] >> (np.uint64(BITS) * (n % PACK).astype(np.uint64))[None, :]) & np.uint64(MAXQ)).astype(np.int64)


def wrong_decoder_errors(cfg, dense, quant, ids, fmt, truth) -> dict:
    """max |logits - truth| a loader would show if it decoded the stored zeros of `fmt` in a known-wrong way."""
    def zeros_v1_stored(z):
        return (z - 1) & MAXQ

    decoders = {}
    if fmt == "gptq":
        decoders["v1 read as v2 (no +1)"] = lambda z, N: zeros_v1_stored(z)
        decoders["v1 +1 without & 0xF (stored 15 -> 16, AutoGPTQ cuda_old)"] = lambda z, N: zeros_v1_stored(z) + 1
        decoders["v1 word += 0x11111111 (GPTQModel v1->v2, carries)"] = lambda z, N: torch.from_numpy(
            gptqmodel_word_add_zeros(pack(torch.zeros(N, z.shape[1] * GROUP, dtype=torch.int64), z, torch.ones(z.shape, dtype=torch.float16), "gptq", False, False)["qzeros"], N)
        ).T
    else:
        decoders["v2 read as v1 ((zs + 1) & 0xF)"] = lambda z, N: (z + 1) & MAXQ
    out = {}
    for label, dec in decoders.items():
        sd = {k: v.to(torch.float32) for k, v in dense.items()}
        for n, (q, z, s16, _) in quant.items():
            N, K = q.shape
            zz = dec(z, N).to(torch.float32).repeat_interleave(GROUP, dim=1)
            sd[n] = s16.to(torch.float32).repeat_interleave(GROUP, dim=1) * (q.to(torch.float32) - zz)
        out[label] = float((reference_logits(cfg, sd, ids) - truth).abs().max())
    return out


# ---------------------------------------------------------------------------------------------------------------


def reduce_model(cfg: dict, sd: dict, layers: int, vocab: int):
    cfg = dict(cfg)
    out = {}
    for name, t in sd.items():
        if name.startswith("model.layers."):
            if int(name.split(".")[2]) >= layers:
                continue
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            t = t[:vocab].clone()
        out[name] = t
    cfg["num_hidden_layers"] = layers
    cfg["vocab_size"] = vocab
    if cfg.get("eos_token_id") is not None and cfg["eos_token_id"] >= vocab:
        cfg["eos_token_id"] = None  # the source's eos (4095) is outside the reduced vocabulary
    return cfg, out


def reference_logits(cfg: dict, float_sd: dict, ids: torch.Tensor) -> torch.Tensor:
    with tempfile.TemporaryDirectory() as tmp:
        c = dict(cfg)
        c.pop("quantization_config", None)
        c["torch_dtype"] = "float32"
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(c, f)
        save_file({k: v.contiguous() for k, v in float_sd.items()}, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        model, info = MixtralForCausalLM.from_pretrained(
            tmp, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
        )
        bad = {k: v for k, v in info.items() if v}
        assert not bad, f"from_pretrained loading info: {bad}"
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=ids[None].long()).logits[0]
    return logits.float().contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--full", action="store_true", help="keep all 4 layers and the 4096 vocab (does not fit the size budget)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=512)
    args = ap.parse_args()
    torch.manual_seed(0)

    with open(os.path.join(SRC, "config.json")) as f:
        src_cfg = json.load(f)
    src_sd = load_file(os.path.join(SRC, "model.safetensors"))  # bf16 as stored
    ref_ids = load_file(os.path.join(SRC, "reference.safetensors"))["input_ids"].to(torch.int64)

    if args.full:
        cfg, sd = dict(src_cfg), dict(src_sd)
        ids = ref_ids[:SEQ]
    else:
        cfg, sd = reduce_model(src_cfg, src_sd, args.layers, args.vocab)
        ids = ref_ids[ref_ids < args.vocab][:SEQ]
    assert ids.numel() == SEQ
    ids = ids.to(torch.int32)
    for m in STRESS_MODULES:
        assert f"{m}.weight" in sd, m

    qnames = sorted(n for n in sd if is_quantized(n))
    dense = {n: t for n, t in sd.items() if not is_quantized(n)}
    assert all(t.dtype == torch.bfloat16 for t in dense.values())
    n_expect = cfg["num_hidden_layers"] * (4 + 3 * cfg["num_local_experts"])
    assert len(qnames) == n_expect, (len(qnames), n_expect)

    os.makedirs(args.out, exist_ok=True)
    natural_z0 = 0
    summary = {}
    for sym in (False, True):
        # quantize once per (sym); the packing differs per variant
        quant = {}
        zcount = {"groups": 0, "z0": 0, "z15": 0, "z0_natural": 0}
        for n in qnames:
            W = sd[n].to(torch.float32)
            prefix = n[: -len(".weight")]
            if not sym:
                zcount["z0_natural"] += int((quantize(W, sym)[1] == 0).sum())
            if prefix in STRESS_MODULES:
                W = stress(W)
            q, z, s16, W_dq = quantize(W, sym)
            zcount["groups"] += z.numel()
            zcount["z0"] += int((z == 0).sum())
            zcount["z15"] += int((z == MAXQ).sum())
            quant[n] = (q, z, s16, W_dq)
        float_sd = {k: v.to(torch.float32) for k, v in dense.items()}
        for n, (_, _, _, W_dq) in quant.items():
            float_sd[n] = W_dq
        logits = reference_logits(cfg, float_sd, ids)

        for vname, (vsym, fmt, with_gidx) in VARIANTS.items():
            if vsym != sym:
                continue
            d = os.path.join(args.out, vname)
            if os.path.isdir(d):
                shutil.rmtree(d)
            os.makedirs(d)
            tensors = dict(dense)
            for n, (q, z, s16, _) in quant.items():
                prefix = n[: -len(".weight")]
                for suffix, t in pack(q, z, s16, fmt, sym, with_gidx).items():
                    tensors[f"{prefix}.{suffix}"] = t
            save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
            c = dict(cfg)
            c["quantization_config"] = {
                "quant_method": "gptq",
                "bits": BITS,
                "group_size": GROUP,
                "desc_act": False,
                "sym": sym,
                "lm_head": False,
                "checkpoint_format": fmt,
                "pack_dtype": "int32",
                "meta": {"quantizer": ["moe-quant scripts/interop/make_gptq_interop.py (independent RTN packer)"]},
            }
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(c, f, indent=2)
                f.write("\n")
            for tf in TOKENIZER_FILES:
                if os.path.exists(os.path.join(SRC, tf)):
                    shutil.copyfile(os.path.join(SRC, tf), os.path.join(d, tf))
            if cfg.get("eos_token_id") != src_cfg.get("eos_token_id"):
                with open(os.path.join(d, "generation_config.json"), "w") as f:
                    json.dump({"eos_token_id": cfg.get("eos_token_id"), "bos_token_id": cfg.get("bos_token_id")}, f)
            save_file({"input_ids": ids.contiguous(), "logits": logits}, os.path.join(d, "reference.safetensors"), metadata={"format": "pt"})

            # ---- self-verification: reopen and decode independently ----
            z0_nibbles = 0
            word_add_wrong = 0
            with safe_open(os.path.join(d, "model.safetensors"), framework="pt") as f:
                keys = set(f.keys())
                for n, (q, z, s16, W_dq) in quant.items():
                    prefix = n[: -len(".weight")]
                    t = {s: f.get_tensor(f"{prefix}.{s}") for s in ("qweight", "qzeros", "scales", "g_idx") if f"{prefix}.{s}" in keys}
                    assert ("g_idx" in t) == with_gidx
                    N, K = W_dq.shape
                    got = unpack_reference(t, N, K, fmt)
                    assert torch.equal(got, W_dq), f"{vname} {prefix}: decode mismatch"
                    if sym and fmt == "gptq":
                        assert bool((t["qzeros"] == 0x77777777).all()), f"{vname} {prefix}: sym v1 qzeros not 0x77777777"
                    if fmt == "gptq":
                        z0_nibbles += int((z == 0).sum())
                        ga = gptqmodel_word_add_zeros(t["qzeros"], N)
                        word_add_wrong += int((torch.from_numpy(ga) != z.T).sum())
                for n in dense:
                    assert torch.equal(f.get_tensor(n), dense[n])
            summary[vname] = {
                "format": fmt,
                "sym": sym,
                "g_idx": with_gidx,
                "quantized_linears": len(quant),
                **zcount,
                "v1_nibbles_stored_15_for_z0": z0_nibbles if fmt == "gptq" else None,
                "zeros_wrong_if_loader_adds_0x11111111_per_word": word_add_wrong if fmt == "gptq" else None,
                "logits_std": float(logits.std()),
            }
            if not sym:
                summary[vname]["max_logit_error_of_wrong_decoders"] = wrong_decoder_errors(cfg, dense, quant, ids, fmt, logits)
            print(vname, json.dumps(summary[vname]))

    # The quantization noise actually matters: compare with the unquantized model's logits.
    base = reference_logits(cfg, {k: v.to(torch.float32) for k, v in sd.items()}, ids)
    with safe_open(os.path.join(args.out, "v1-asym", "reference.safetensors"), framework="pt") as f:
        print("max|logits(v1-asym) - logits(unquantized)| =", float((f.get_tensor("logits") - base).abs().max()))

    readme = {
        "generator": "scripts/interop/make_gptq_interop.py",
        "source": "../shared/fixtures/tiny-mixtral",
        "reduced": None if args.full else {"num_hidden_layers": cfg["num_hidden_layers"], "vocab_size": cfg["vocab_size"]},
        "input_ids": ids.tolist(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
        "variants": summary,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(readme, f, indent=2)
        f.write("\n")
    print("ok:", args.out)


if __name__ == "__main__":
    sys.exit(main())
