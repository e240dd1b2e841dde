#!/usr/bin/env python3
"""Compare two directories of per-layer Hessians in the `moe-quant calibrate --save-hessians` layout (e.g. ours vs
`pipeline_reference.py --methods none --dump-hessians`). Prints, per key, the token counts and the relative Frobenius
difference ‖A − B‖ / ‖B‖ of .xtx / .xtcx; summarises the worst per key kind. Dev-only.

    .venv/bin/python scripts/quant-reference/compare_hessians.py OURS_DIR REF_DIR [--verbose]
"""
import argparse
import glob
import os
import re

import torch
from safetensors.torch import load_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("ours")
    ap.add_argument("ref")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    worst: dict[str, float] = {}
    for fa in sorted(glob.glob(os.path.join(a.ours, "layer-*.safetensors"))):
        fb = os.path.join(a.ref, os.path.basename(fa))
        A, B = load_file(fa), load_file(fb)
        missing = sorted(set(A) ^ set(B))
        if missing:
            print(f"{os.path.basename(fa)}: keys only on one side: {missing[:8]}{' …' if len(missing) > 8 else ''}")
        for k in sorted(set(A) & set(B)):
            if k.endswith(".tokens"):
                if int(A[k]) != int(B[k]):
                    print(f"  {k}: tokens ours {int(A[k])} ref {int(B[k])}")
                continue
            x, y = A[k].double(), B[k].double()
            if k.endswith(".weight_sum"):
                d = abs(float(x) - float(y)) / max(abs(float(y)), 1e-30)
            else:
                d = float((x - y).norm() / y.norm()) if float(y.norm()) > 0 else float(x.norm())
            kind = re.sub(r"layers\.\d+\.", "", re.sub(r"experts\.\d+\.", "experts.E.", k))
            worst[kind] = max(worst.get(kind, 0.0), d)
            if a.verbose or d > 1e-4:
                print(f"  {k}: rel diff {d:.3e}")
    print("worst relative difference per key kind:")
    for k, v in sorted(worst.items()):
        print(f"  {k:40s} {v:.3e}")


if __name__ == "__main__":
    main()
