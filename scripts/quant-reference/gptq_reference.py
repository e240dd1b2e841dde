#!/usr/bin/env python3
"""PyTorch (CPU, float32) GPTQ reference for cross-checking src/quantization/gptq.ts. Dev-only.

Re-implements, from the algorithm description of IST-DASLab/gptq (`GPTQ.fasterquant` and `quant.Quantizer`,
mse=False), the same solver the TypeScript code implements, with one intentional change shared with the TS code:
each scale is rounded to float16 right after it is computed (GPTQ checkpoints store fp16 scales).
Ties: torch.round (half to even); act-order uses a stable argsort (the original uses an unstable one).

Usage (after scripts/quant-reference/compare.ts wrote the case file):
    .venv/bin/python scripts/quant-reference/gptq_reference.py scripts/quant-reference/case.safetensors [--no-ftz]

By default subnormal floats are flushed to zero (torch.set_flush_denormal(True)): without it the float32 reference
ran 20-30x slower on the K=4096 case (subnormals from U's decaying entries / dead columns hit slow CPU paths).

The case file holds W [N,K] f32, H [K,K] f32, the TypeScript results (q_ts, scales_ts, zeros_ts, g_idx_ts) and
metadata `config` / `ts` (JSON). Prints the torch loss, the integer-level differences, and timings.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from safetensors import safe_open


def rne(x: torch.Tensor) -> torch.Tensor:
    """torch.round (half to even) of a float32 tensor, evaluated in float64: identical results (every float32 is
    exact in float64), but float32 torch.round hit a pathological 1-10 ms per 4096 values on the test machine."""
    return torch.round(x.double()).float()


class MinMaxQuantizer:
    """Per-row min-max grid (asym or sym) over the columns it is shown; fp16-rounded scales."""

    def __init__(self, bits: int, sym: bool):
        self.maxq = 2**bits - 1
        self.sym = sym
        self.scale = None
        self.zero = None

    def find_params(self, x: torch.Tensor) -> None:
        zeros = torch.zeros(x.shape[0])
        lo = torch.minimum(x.min(dim=1).values, zeros)
        hi = torch.maximum(x.max(dim=1).values, zeros)
        if self.sym:
            hi = torch.maximum(lo.abs(), hi)
            neg = lo < 0
            lo = torch.where(neg, -hi, lo)
        both_zero = (lo == 0) & (hi == 0)
        lo = torch.where(both_zero, torch.full_like(lo, -1.0), lo)
        hi = torch.where(both_zero, torch.full_like(hi, 1.0), hi)
        scale = ((hi - lo) / self.maxq).half().float()
        scale = torch.where(scale == 0, torch.full_like(scale, 2.0**-24), scale)
        self.scale = scale
        if self.sym:
            self.zero = torch.full_like(scale, (self.maxq + 1) / 2)
        else:
            self.zero = torch.clamp(rne(-lo / scale), max=self.maxq)

    def levels(self, w: torch.Tensor) -> torch.Tensor:
        return torch.clamp(rne(w / self.scale) + self.zero, 0, self.maxq)

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale.clone(), self.zero.clone()


def hinv_upper(H: torch.Tensor) -> torch.Tensor:
    """Upper U with UᵀU = H⁻¹, exactly as the reference: chol → cholesky_inverse → chol(upper)."""
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(Hinv, upper=True)


def gptq(W: torch.Tensor, H: torch.Tensor, bits: int, group: int, sym: bool, damp: float = 0.01,
         block: int = 128, act_order: bool = False, static_groups: bool = False):
    W = W.clone().float()
    H = H.clone().float()
    N, K = W.shape
    quant = MinMaxQuantizer(bits, sym)
    if group == -1:
        quant.find_params(W)                      # whole rows, before dead columns are zeroed
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    statics = []
    if static_groups and group != -1:
        for g0 in range(0, K, group):
            q = MinMaxQuantizer(bits, sym)
            q.find_params(W[:, g0:g0 + group])
            statics.append(q)
    perm = torch.arange(K)
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    H[range(K), range(K)] += damp * torch.mean(torch.diag(H))
    t0 = time.perf_counter()
    U = hinv_upper(H)
    t_linalg = time.perf_counter() - t0

    G = -(-K // (group if group != -1 else K))   # ceil: a group size that does not divide K leaves a shorter last group
    Qint = torch.zeros(N, K, dtype=torch.int32)
    scales = torch.zeros(N, G)
    zeros = torch.zeros(N, G)
    g_pos = torch.zeros(K, dtype=torch.int32)
    losses = torch.zeros(N, K)
    if group == -1:
        scales[:, 0], zeros[:, 0] = quant.snapshot()
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            p = i1 + i
            gi = 0
            if group != -1:
                if static_groups:
                    gi = int(perm[p]) // group
                    quant = statics[gi]
                else:
                    gi = p // group
                    if p % group == 0:
                        quant.find_params(W[:, p:p + group])      # W: lazy updates only (not W1)
                scales[:, gi], zeros[:, gi] = quant.snapshot()
            g_pos[p] = gi
            w = W1[:, i]
            d = U[p, p]
            lv = quant.levels(w)
            q = quant.scale * (lv - quant.zero)
            Qint[:, p] = lv.to(torch.int32)
            losses[:, p] = (w - q) ** 2 / d**2 / 2
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ U[p, i1 + i:i2].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    invperm = torch.argsort(perm)
    return {
        "q": Qint[:, invperm],
        "g_idx": g_pos[invperm],
        "scales": scales,
        "zeros": zeros,
        "loss": float(losses.sum()),
        "t_linalg": t_linalg,
    }


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    path = args[0] if args else "scripts/quant-reference/case.safetensors"
    # Float32 subnormals (far off-diagonal entries of U, dead columns) make CPU kernels 20-30x slower; the TS side
    # flushes them too. --no-ftz keeps PyTorch's default.
    ftz = "--no-ftz" not in sys.argv
    torch.set_flush_denormal(ftz)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    ts = json.loads(meta["ts"])
    W, H = t["W"], t["H"]
    N, K = W.shape
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, flush denormals {ftz}, N={N} K={K} cfg={cfg}")

    # warm-up, then the timed run
    gptq(W[:8, :256], H[:256, :256], cfg["bits"], -1, cfg["sym"])
    t0 = time.perf_counter()
    r = gptq(W, H, cfg["bits"], cfg["groupSize"], cfg["sym"], cfg["damp"], cfg["blockSize"], cfg["actOrder"], cfg["staticGroups"])
    total = time.perf_counter() - t0

    q_ts = t["q_ts"].to(torch.int32)
    diff = (r["q"] - q_ts).abs()
    G = r["scales"].shape[1]
    gi = r["g_idx"].long()
    deq_ref = (r["q"].float() - r["zeros"][:, gi]) * r["scales"][:, gi]
    gts = t["g_idx_ts"].long()
    deq_ts = (q_ts.float() - t["zeros_ts"].float()[:, gts]) * t["scales_ts"][:, gts]
    print(f"loss: torch {r['loss']:.8g}  ts {ts['loss']:.8g}  rel diff {abs(r['loss'] - ts['loss']) / r['loss']:.2e}")
    print(f"levels: max |Q - Q_ts| = {int(diff.max())}, differing {int((diff > 0).sum())} of {N * K} "
          f"({float((diff > 0).float().mean()) * 100:.4f}%) in {int((diff > 0).any(dim=1).sum())} of {N} rows; "
          f"g_idx equal: {bool(torch.equal(gi, gts))}")
    print(f"dequantized: max |Q - Q_ts| = {float((deq_ref - deq_ts).abs().max()):.3e}; "
          f"scales equal: {int((r['scales'] == t['scales_ts']).sum())}/{N * G}")
    print(f"time: torch total {total * 1e3:.0f} ms, chol+cholesky_inverse+chol {r['t_linalg'] * 1e3:.0f} ms | "
          f"ts total {ts['totalMs']:.0f} ms (onnxruntime {ts['ortMs']:.0f} ms), chol+inverse {ts['cholInverseMs']:.0f} ms")


if __name__ == "__main__":
    main()
