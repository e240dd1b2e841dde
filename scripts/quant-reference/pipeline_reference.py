#!/usr/bin/env python3
"""End-to-end PyTorch reference of `moe-quant quantize --no-true-sequential` (RTN / GPTQ / AGQ). Dev-only.

Takes the calibration windows written by `moe-quant calibrate` (tokens.safetensors, so both sides see identical
tokens), quantizes a Hugging Face MoE checkpoint with fake quantization (dequantized float32 weights written back
into the transformers model) and reports WikiText-2 perplexity with the same protocol as `moe-quant eval`.

Protocol (GPTQ "sequential", one capture pass per layer, as src/pipeline/quantize-model.ts with trueSequential=false):
  * The hidden states of all calibration windows at the input of layer l are computed through layers 0..l-1
    ALREADY quantized.
  * One pass of layer l with its ORIGINAL weights collects, for every linear to quantize, H = Σ x xᵀ (float64):
      attention  q/k/v/o_proj (MHA) or, for MLA, q_proj | q_a_proj + q_b_proj, kv_a_proj_with_mqa, kv_b_proj (input
                 = kv_a_layernorm output), o_proj;
      dense MLP / shared experts: gate/up/down_proj;
      routed expert e: gate/up input rows = the tokens routed to e, down input rows = act(gate(x))·up(x) of those
                 tokens; plus the affinity-weighted Σ c·x xᵀ where c is the combine weight the model multiplies
                 expert e's output by (`top_k_weights` as passed to the experts module: after top-k renormalisation
                 and routed_scaling_factor). Routing is read with a forward pre-hook on the experts module, so it is
                 exactly the model's own.
  * Every one of those linears is quantized (AGQ: routed experts use Σ c·x xᵀ, everything else plain H), the
    dequantized weights are written back, and layer l runs again (quantized) to give the inputs of layer l+1.
  * Not quantized: routers (`mlp.gate`, `shared_expert_gate`), embeddings, norms, lm_head,
    e_score_correction_bias.
  * Quantizer: per output row, groups of --group-size input columns (K < group size: one group = whole row),
    asymmetric min-max including 0, scale rounded to float16, torch.round (half to even) — MinMaxQuantizer from
    gptq_reference.py. RTN applies it directly; GPTQ/AGQ use gptq_reference.gptq (IST-DASLab fasterquant: dead
    columns, damp 0.01·mean(diag H), upper Cholesky of H⁻¹, lazy blocks of 128, dynamic groups, no act-order).
    A Cholesky failure retries with 10× the dampening (up to 3 times), as src/quantization/gptq.ts does.
  * An expert with no calibration tokens falls back to RTN.

Perplexity: the whole eval file tokenized once with tokenizer.json (`tokenizers`, add_special_tokens=False),
non-overlapping --eval-seq-len windows, the first --eval-windows, each scoring seq_len−1 next-token predictions,
ppl = exp(Σ NLL / #predictions). The unquantized model must reproduce <model>/reference.json.

Usage (calibration windows from our CLI first):
    flock /tmp/cpu.lock ./bin/moe-quant calibrate --model /work/shared/fixtures/tiny-mixtral \\
        --data /work/shared/data/c4/c4-en-train.00000-of-01024.first1000.jsonl --samples 128 --seq-len 512 --seed 0 \\
        --routing-bias none --device cpu --out /tmp/refcal/tiny-mixtral
    flock /tmp/cpu.lock .venv/bin/python scripts/quant-reference/pipeline_reference.py \\
        --model /work/shared/fixtures/tiny-mixtral --calib /tmp/refcal/tiny-mixtral \\
        --eval-data /work/shared/data/wikitext-2-raw/wiki.test.raw --methods rtn,gptq,agq --bits 4,3 \\
        --out /tmp/refres/ref-tiny-mixtral.json

Extra checks:
    --dump-hessians DIR   (with --methods none) write every layer's Hessians computed through the UNQUANTIZED
                          model, in the key layout of `moe-quant calibrate --save-hessians`
                          (DIR/layer-000.safetensors, ...; see src/calibration/hessian-collector.ts), for a direct
                          comparison with ours.
    --dump-weights DIR    write each config's dequantized weights (DIR/<method>-<bits>.safetensors, HF 5.x parameter
                          names; fused experts as <prefix>.experts.gate_up_proj [E, 2I, H] / down_proj [E, H, I]).

Deterministic: no sampling anywhere (torch.manual_seed(0) anyway), fixed thread count (--threads, default 2), no
network (local files only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gptq_reference import MinMaxQuantizer, gptq as gptq_solve  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# ----------------------------------------------------------------------------------------------------------------------
# Quantization of one linear


def rtn(W: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Round-to-nearest with per-row, per-group min-max parameters (fp16-rounded scales); returns dequantized W."""
    N, K = W.shape
    out = torch.empty_like(W)
    q = MinMaxQuantizer(bits, sym=False)
    for g0 in range(0, K, group):
        w = W[:, g0:g0 + group]
        q.find_params(w)
        s, z = q.scale.unsqueeze(1), q.zero.unsqueeze(1)
        lv = torch.clamp(torch.round((w / s).double()).float() + z, 0, q.maxq)   # = q.levels, per column group
        out[:, g0:g0 + group] = s * (lv - z)
    return out


def gptq_dequant(W: torch.Tensor, H: torch.Tensor, bits: int, group: int, damp: float, block: int) -> tuple[torch.Tensor, float]:
    """gptq_reference.gptq with the damping retry of src/quantization/gptq.ts; returns (dequantized W, damp used)."""
    for attempt in range(4):
        try:
            r = gptq_solve(W, H, bits, group, sym=False, damp=damp, block=block)
            break
        except torch.linalg.LinAlgError:
            if attempt == 3:
                raise
            damp = damp * 10 if damp > 0 else 0.01
    gi = r["g_idx"].long()
    deq = (r["q"].float() - r["zeros"][:, gi]) * r["scales"][:, gi]
    return deq, damp


def rel_error(W: torch.Tensor, Q: torch.Tensor, H: torch.Tensor) -> float:
    """‖WX − QX‖ / ‖WX‖ from H = Σ x xᵀ (as the rel_error of our quant-report.json)."""
    W, Q, H = W.double(), Q.double(), H.double()
    D = W - Q
    num = float(((D @ H) * D).sum())
    den = float(((W @ H) * W).sum())
    return math.sqrt(max(num, 0.0) / den) if den > 0 else float("nan")


# ----------------------------------------------------------------------------------------------------------------------
# The linears of a decoder layer


@dataclass
class Linear:
    """One quantizable linear: a view of a [N, K] slice of a parameter, and the Hessian key it uses."""
    name: str            # readable module name (also the weight-dump key for plain nn.Linear)
    param: torch.nn.Parameter
    index: tuple         # slice of param.data holding W [N, K]
    hkey: str            # Hessian key (our layout, see src/calibration/hessian-collector.ts)
    kind: str            # attention | dense_mlp | shared_expert | routed_expert
    expert: int | None = None

    @property
    def W(self) -> torch.Tensor:
        return self.param.data[self.index]

    def set(self, Q: torch.Tensor) -> None:
        self.param.data[self.index] = Q


def find_experts(layer: torch.nn.Module):
    """(qualified name, module) of the fused routed-experts module of a layer, or (None, None)."""
    for name, mod in layer.named_modules():
        gu = getattr(mod, "gate_up_proj", None)
        dn = getattr(mod, "down_proj", None)
        if isinstance(gu, torch.nn.Parameter) and isinstance(dn, torch.nn.Parameter) and gu.dim() == 3:
            return name, mod
    return None, None


def layer_linears(layer: torch.nn.Module, L: int) -> tuple[list[Linear], dict[str, torch.nn.Module]]:
    """Every linear to quantize in decoder layer L, and for each plain Hessian key the module whose input feeds it."""
    P = f"layers.{L}"
    lin: list[Linear] = []
    feeders: dict[str, torch.nn.Module] = {}
    exp_name, experts = find_experts(layer)
    for name, mod in layer.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        if exp_name and name.startswith(exp_name + "."):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("gate", "shared_expert_gate"):
            continue                                                # routers stay in float
        if name.startswith("self_attn."):
            kind = "attention"
            hkey = {
                "q_proj": "attn_input", "k_proj": "attn_input", "v_proj": "attn_input", "q_a_proj": "attn_input",
                "kv_a_proj_with_mqa": "attn_input", "o_proj": "o_proj_input", "q_b_proj": "q_b_proj_input",
                "kv_b_proj": "kv_b_proj_input",
            }[leaf]
        elif name.startswith("mlp.shared_expert"):
            kind = "shared_expert"
            if getattr(layer.mlp, "shared_expert_gate", None) is not None:
                raise NotImplementedError("gated shared experts (Qwen2-MoE) are not covered by this reference")
            hkey = "shared_expert.down_input" if leaf == "down_proj" else "ffn_input"
        elif name.startswith("mlp."):
            kind = "dense_mlp"
            hkey = "mlp.down_proj_input" if leaf == "down_proj" else "ffn_input"
        else:
            raise ValueError(f"unexpected linear {name}")
        key = f"{P}.{hkey}"
        lin.append(Linear(name, mod.weight, (slice(None), slice(None)), key, kind))
        feeders.setdefault(key, mod)
    if experts is not None:
        E = experts.gate_up_proj.shape[0]
        I = experts.gate_up_proj.shape[1] // 2
        for e in range(E):
            gu, dn = f"{P}.experts.{e}.gate_up_input", f"{P}.experts.{e}.down_input"
            lin.append(Linear(f"{exp_name}.{e}.gate", experts.gate_up_proj, (e, slice(0, I), slice(None)), gu, "routed_expert", e))
            lin.append(Linear(f"{exp_name}.{e}.up", experts.gate_up_proj, (e, slice(I, 2 * I), slice(None)), gu, "routed_expert", e))
            lin.append(Linear(f"{exp_name}.{e}.down", experts.down_proj, (e, slice(None), slice(None)), dn, "routed_expert", e))
    return lin, feeders


# ----------------------------------------------------------------------------------------------------------------------
# Hessian collection for one layer


HESSIAN_DTYPE = torch.float64          # --hessian-dtype (ours accumulates in float32)


@dataclass
class Acc:
    dim: int
    weighted: bool
    xtx: torch.Tensor = None
    xtcx: torch.Tensor = None
    tokens: int = 0
    weight_sum: float = 0.0

    def __post_init__(self):
        self.xtx = torch.zeros(self.dim, self.dim, dtype=HESSIAN_DTYPE)
        if self.weighted:
            self.xtcx = torch.zeros(self.dim, self.dim, dtype=HESSIAN_DTYPE)

    def add(self, x: torch.Tensor, c: torch.Tensor | None = None) -> None:
        x = x.reshape(-1, self.dim).to(HESSIAN_DTYPE)
        if x.shape[0] == 0:
            return
        self.xtx += x.T @ x
        if self.weighted:
            c = c.to(HESSIAN_DTYPE)
            self.xtcx += (x * c.unsqueeze(1)).T @ x
            self.weight_sum += float(c.double().sum())
        self.tokens += x.shape[0]


class LayerHessians:
    """Hooks on a decoder layer that accumulate the Hessians of every linear in `layer_linears` order/keys."""

    def __init__(self, layer: torch.nn.Module, L: int, linears: list[Linear], feeders: dict[str, torch.nn.Module]):
        self.acc: dict[str, Acc] = {}
        self.handles = []
        for key, mod in feeders.items():
            self.acc[key] = Acc(mod.in_features, weighted=False)
            self.handles.append(mod.register_forward_pre_hook(self._plain_hook(key)))
        _, experts = find_experts(layer)
        if experts is not None:
            self.experts = experts
            self.E = experts.gate_up_proj.shape[0]
            self.I = experts.gate_up_proj.shape[1] // 2
            H = experts.gate_up_proj.shape[2]
            for e in range(self.E):
                self.acc[f"layers.{L}.experts.{e}.gate_up_input"] = Acc(H, weighted=True)
                self.acc[f"layers.{L}.experts.{e}.down_input"] = Acc(self.I, weighted=True)
            self.L = L
            self.handles.append(experts.register_forward_pre_hook(self._experts_hook, with_kwargs=True))

    def _plain_hook(self, key):
        def hook(_mod, args):
            self.acc[key].add(args[0])
        return hook

    def _experts_hook(self, mod, args, kwargs):
        names = ["hidden_states", "top_k_index", "top_k_weights"]
        vals = list(args) + [kwargs[n] for n in names[len(args):]]
        hs, idx, w = vals[0], vals[1], vals[2]
        hs = hs.reshape(-1, hs.shape[-1])
        for e in range(self.E):
            tok, pos = torch.where(idx == e)
            if tok.numel() == 0:
                continue
            x = hs[tok]
            c = w[tok, pos]
            self.acc[f"layers.{self.L}.experts.{e}.gate_up_input"].add(x, c)
            gate, up = F.linear(x, mod.gate_up_proj[e]).chunk(2, dim=-1)   # original weights: this is the capture pass
            self.acc[f"layers.{self.L}.experts.{e}.down_input"].add(mod.act_fn(gate) * up, c)

    def remove(self):
        for h in self.handles:
            h.remove()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Our `--save-hessians` layout (float32 sums, .tokens, .weight_sum)."""
        out = {}
        for k, a in self.acc.items():
            out[f"{k}.xtx"] = a.xtx.float().contiguous()
            if a.weighted:
                out[f"{k}.xtcx"] = a.xtcx.float().contiguous()
                out[f"{k}.weight_sum"] = torch.tensor(a.weight_sum, dtype=torch.float64)
            out[f"{k}.tokens"] = torch.tensor(a.tokens, dtype=torch.int64)
        return out


# ----------------------------------------------------------------------------------------------------------------------
# Model plumbing


class _Stop(Exception):
    pass


def load_model(path: str):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    model.eval()
    return model


def layer_inputs(model, batches: list[torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
    """Hidden states entering layer 0 for each batch, and the keyword arguments the model passes to its layers
    (causal mask, rotary embeddings, positions), caught with a pre-hook on layer 0 (GPTQ's `Catcher`)."""
    layers = model.model.layers
    xs, kw = [], {}

    def catch(_mod, args, kwargs):
        xs.append(args[0] if args else kwargs["hidden_states"])
        if not kw:
            kw.update({k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _Stop

    h = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for ids in batches:
            try:
                model(input_ids=ids, use_cache=False)
            except _Stop:
                pass
    finally:
        h.remove()
    kw["use_cache"] = False
    kw.pop("past_key_values", None)
    return xs, kw


def run_layer(layer, x: torch.Tensor, kw: dict) -> torch.Tensor:
    y = layer(x, **kw)
    return y[0] if isinstance(y, tuple) else y


def eval_tokens(model_dir: str, text_path: str) -> list[int]:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    return tok.encode(text, add_special_tokens=False).ids


@torch.no_grad()
def perplexity(model, ids: list[int], seq_len: int, max_windows: int, batch: int) -> tuple[float, int]:
    n = min(len(ids) // seq_len, max_windows)
    t = torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)
    nll, count = 0.0, 0
    for i in range(0, n, batch):
        x = t[i:i + batch]
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
        tgt = x[:, 1:]
        nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), tgt.reshape(-1), reduction="sum"))
        count += tgt.numel()
    return math.exp(nll / count), count


def load_windows(calib_dir: str) -> torch.Tensor:
    with safe_open(os.path.join(calib_dir, "tokens.safetensors"), framework="pt") as f:
        return f.get_tensor("tokens").long()


# ----------------------------------------------------------------------------------------------------------------------
# The sequential driver


@torch.no_grad()
def quantize_model(model, windows: torch.Tensor, method: str, bits: int, group: int, damp: float, block: int,
                   batch: int, dump_hessians: str | None = None, log=print, timings: list | None = None) -> list[dict]:
    """Quantizes `model` in place (fake quant). method: rtn | gptq | agq | none (none: Hessians only).
    `timings`, if given, receives each layer's wall seconds (capture pass, solves, forward to the next layer)."""
    batches = [windows[i:i + batch] for i in range(0, windows.shape[0], batch)]
    xs, kw = layer_inputs(model, batches)
    records = []
    for L, layer in enumerate(model.model.layers):
        t0 = time.perf_counter()
        linears, feeders = layer_linears(layer, L)
        hs = LayerHessians(layer, L, linears, feeders)
        for x in xs:                                         # capture pass over the ORIGINAL weights of layer L
            run_layer(layer, x, kw)
        hs.remove()
        t1 = time.perf_counter()
        if dump_hessians:
            save_file(hs.tensors(), os.path.join(dump_hessians, f"layer-{L:03d}.safetensors"))
        nq = 0
        if method != "none":
            for m in linears:
                a = hs.acc[m.hkey]
                W = m.W.clone()
                K = W.shape[1]
                g = group if (group != -1 and K >= group) else K   # a g that does not divide K: shorter last group
                weighted = m.kind == "routed_expert"
                Hq = a.xtcx if (method == "agq" and weighted) else a.xtx
                used, fallback, damp_used = method, None, None
                if method != "rtn" and a.tokens == 0:
                    used, fallback = "rtn", "no calibration tokens"
                if used == "rtn":
                    Q = rtn(W, bits, g)
                else:
                    Q, damp_used = gptq_dequant(W, Hq.float(), bits, g, damp, block)
                m.set(Q)
                nq += 1
                records.append({
                    "module": f"layers.{L}.{m.name}", "layer": L, "kind": m.kind, "expert": m.expert, "method": used,
                    "tokens": a.tokens, "fallback": fallback, "damp": damp_used,
                    "rel_error": rel_error(W, Q, a.xtcx if weighted else a.xtx) if a.tokens else float("nan"),
                })
        t2 = time.perf_counter()
        xs = [run_layer(layer, x, kw) for x in xs]           # layer L quantized → inputs of layer L+1
        t3 = time.perf_counter()
        log(f"  layer {L}: {nq} linears; capture {t1 - t0:.1f}s, quantize {t2 - t1:.1f}s, forward {t3 - t2:.1f}s")
        if timings is not None:
            timings.append({"layer": L, "capture": t1 - t0, "quantize": t2 - t1, "forward": t3 - t2, "seconds": t3 - t0})
    return records


def dump_weights(model, path: str) -> None:
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if ".layers." in k and "norm" not in k}
    save_file(sd, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    ap.add_argument("--calib", required=True, help="moe-quant calibration directory (tokens.safetensors)")
    ap.add_argument("--eval-data", default="/work/shared/data/wikitext-2-raw/wiki.test.raw")
    ap.add_argument("--eval-seq-len", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--methods", default="rtn,gptq,agq", help="comma list of rtn, gptq, agq, none (none: no quantization)")
    ap.add_argument("--bits", default="4,3", help="comma list of bit widths")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8, help="calibration windows per forward (does not change results "
                    "beyond float rounding)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hessian-dtype", choices=["float64", "float32"], default="float64",
                    help="Hessian accumulation precision (float32 = ours; use it to see the reference's own "
                    "sensitivity to float rounding)")
    ap.add_argument("--skip-fp", action="store_true", help="skip the unquantized perplexity check")
    ap.add_argument("--no-eval", action="store_true", help="skip the perplexity after quantizing (timing runs, "
                    "e.g. `npm run bench -- --real`)")
    ap.add_argument("--dump-hessians", metavar="DIR", help="with --methods none: write fp-model Hessians per layer")
    ap.add_argument("--dump-weights", metavar="DIR", help="write each config's dequantized layer weights")
    ap.add_argument("--out", help="write results (ppl per config, per-module records) as JSON")
    args = ap.parse_args()

    global HESSIAN_DTYPE
    HESSIAN_DTYPE = getattr(torch, args.hessian_dtype)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    t_all = time.perf_counter()
    windows = load_windows(args.calib)
    ids = eval_tokens(args.model, args.eval_data)
    ref_path = os.path.join(args.model, "reference.json")
    ref = json.load(open(ref_path)) if os.path.exists(ref_path) else {}
    import transformers
    result = {
        "model": args.model, "calib": args.calib, "windows": list(windows.shape), "eval_data": args.eval_data,
        "eval_seq_len": args.eval_seq_len, "eval_windows": args.eval_windows, "group_size": args.group_size,
        "damp": args.damp, "block_size": args.block_size, "threads": args.threads, "batch": args.batch,
        "hessian_dtype": args.hessian_dtype,
        "torch": torch.__version__, "transformers": transformers.__version__, "runs": [],
    }
    print(f"{os.path.basename(args.model.rstrip('/'))}: windows {list(windows.shape)}, eval tokens {len(ids)}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    if not args.skip_fp:
        model = load_model(args.model)
        t0 = time.perf_counter()
        ppl, n = perplexity(model, ids, args.eval_seq_len, args.eval_windows, 8)
        want = ref.get(f"ppl_seq{args.eval_seq_len}_first{args.eval_windows}:{os.path.basename(args.eval_data)}")
        result["fp"] = {"ppl": ppl, "predictions": n, "reference_json": want, "seconds": time.perf_counter() - t0,
                        "attn_implementation": model.config._attn_implementation,
                        "experts_implementation": getattr(model.config, "_experts_implementation", None)}
        print(f"fp ppl {ppl:.6f} ({n} predictions); reference.json {want}"
              + (f" (rel diff {ppl / want - 1:+.2e})" if want else ""))
        del model

    methods = [m for m in args.methods.split(",") if m]
    bits_list = [int(b) for b in args.bits.split(",") if b]
    if args.dump_hessians:
        os.makedirs(args.dump_hessians, exist_ok=True)
    if args.dump_weights:
        os.makedirs(args.dump_weights, exist_ok=True)
    for method in methods:
        for bits in (bits_list if method != "none" else [0]):
            model = load_model(args.model)
            print(f"{method} {bits}-bit:")
            t0 = time.perf_counter()
            layers: list = []
            recs = quantize_model(model, windows, method, bits, args.group_size, args.damp, args.block_size,
                                  args.batch, args.dump_hessians if method == "none" else None, timings=layers)
            tq = time.perf_counter() - t0
            t1 = time.perf_counter()
            ppl, n = (None, 0) if args.no_eval else perplexity(model, ids, args.eval_seq_len, args.eval_windows, 8)
            te = time.perf_counter() - t1
            if args.dump_weights and method != "none":
                dump_weights(model, os.path.join(args.dump_weights, f"{method}-{bits}.safetensors"))
            fallbacks = sum(1 for r in recs if r["fallback"])
            print(f"  ppl {ppl if ppl is None else f'{ppl:.6f}'}; quantize {tq:.1f}s, eval {te:.1f}s; {len(recs)} linears, "
                  f"{fallbacks} RTN fallbacks")
            result["runs"].append({"method": method, "bits": bits, "ppl": ppl, "predictions": n,
                                   "quantize_seconds": tq, "eval_seconds": te, "layers": layers, "modules": recs})
            del model
    result["total_seconds"] = time.perf_counter() - t_all
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total {result['total_seconds']:.1f}s")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
