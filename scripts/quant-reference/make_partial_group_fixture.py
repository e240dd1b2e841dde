#!/usr/bin/env python3
"""Expected values for a group size that does not divide K, from the PyTorch reference (gptq_reference.py). Dev-only.

Writes test/fixtures/gptq-partial-group/reference.safetensors: W [32, 192] and H = XᵀX [192, 192] (float32, X with
correlated columns and one dead column), and for each case the reference's integer levels q_<case> [N, K], scales
[N, G], zeros [N, G] and g_idx [K]; the cases are in the metadata (JSON). K = 192 with g = 128 gives groups of 128
and 64, with g = 80 groups of 80, 80 and 32 (slices W[:, p:p+g] are shorter at the end, G = ceil(K/g)).

    /work/wt-h-real/.venv/bin/python scripts/quant-reference/make_partial_group_fixture.py
"""

from __future__ import annotations

import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from gptq_reference import MinMaxQuantizer, gptq  # noqa: E402

CASES = {
    "g128_asym": dict(bits=4, group=128, sym=False),
    "g128_actorder_dynamic": dict(bits=4, group=128, sym=False, act_order=True),
    "g128_actorder_static_sym": dict(bits=4, group=128, sym=True, act_order=True, static_groups=True),
    "g80_3bit_block64": dict(bits=3, group=80, sym=False, block=64),
}


def main() -> None:
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(7)
    N, K, m = 32, 192, 384
    X = torch.randn(m, K, generator=g, dtype=torch.float64)
    for c in range(1, K):
        X[:, c] = 0.7 * X[:, c - 1] + (1 - 0.49) ** 0.5 * X[:, c]
    X *= 0.3 + torch.rand(K, generator=g, dtype=torch.float64)
    X[:, 150] = 0  # a dead column in the last group
    H = (X.T @ X).float()
    W = (torch.randn(N, K, generator=g) * 0.05).float()
    W[3, 128:] *= 20  # a row whose range sits in the last group
    out = {"W": W.contiguous(), "H": H.contiguous()}
    for name, c in CASES.items():
        r = gptq(W, H, c["bits"], c["group"], c["sym"], 0.01, c.get("block", 128), c.get("act_order", False), c.get("static_groups", False))
        out[f"q_{name}"] = r["q"].to(torch.uint8).contiguous()
        out[f"scales_{name}"] = r["scales"].contiguous()
        out[f"zeros_{name}"] = r["zeros"].to(torch.uint8).contiguous()
        out[f"g_idx_{name}"] = r["g_idx"].to(torch.int32).contiguous()
        out[f"loss_{name}"] = torch.tensor([r["loss"]], dtype=torch.float64)
        print(name, "G =", r["scales"].shape[1], "loss", r["loss"])
    dst = os.path.join(os.path.dirname(__file__), "../../test/fixtures/gptq-partial-group")
    os.makedirs(dst, exist_ok=True)
    meta = {"cases": json.dumps(CASES), "torch": torch.__version__, "script": "scripts/quant-reference/make_partial_group_fixture.py"}
    save_file(out, os.path.join(dst, "reference.safetensors"), metadata=meta)


if __name__ == "__main__":
    _ = MinMaxQuantizer
    main()
