#!/usr/bin/env python3
"""Tabulate pipeline_reference.py results against ours. Dev-only.

Reads REF_DIR/ref-NAME.json (pipeline_reference.py --out) and, from OURS_DIR, ours-NAME-fp.json /
ours-NAME-M-B.json (`moe-quant eval --json`) and quant-report-NAME-M-B.json (the quantize output's quant-report.json).
Prints a Markdown table per fixture (PyTorch ppl, ours ppl, ours/ref − 1) and, per cell, how closely the per-module
rel_error of our quant report agrees with the reference's (layer 0 sees identical inputs on both sides, so its
modules should agree to float rounding; later layers drift with the inputs).

    .venv/bin/python scripts/quant-reference/compare_results.py --dir /tmp/refres tiny-mixtral tiny-deepseek-v3 ...
"""
import argparse
import json
import os
import re


def norm(module: str) -> str:
    """Module name → common key: layers.L.<attn leaf> / layers.L.experts.E.{gate,up,down} / layers.L.mlp.<leaf>."""
    m = module.removeprefix("model.")
    m = re.sub(r"\.(block_sparse_moe|mlp)\.experts\.(\d+)\.(w1|gate_proj|gate)$", r".experts.\2.gate", m)
    m = re.sub(r"\.(block_sparse_moe|mlp)\.experts\.(\d+)\.(w3|up_proj|up)$", r".experts.\2.up", m)
    m = re.sub(r"\.(block_sparse_moe|mlp)\.experts\.(\d+)\.(w2|down_proj|down)$", r".experts.\2.down", m)
    m = m.replace(".shared_experts.", ".shared_expert.")
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="+")
    ap.add_argument("--dir", default="/tmp/refres", help="directory with ref-*.json and ours-*.json")
    ap.add_argument("--ours-dir", help="directory with ours-*.json / quant-report-*.json (default: --dir)")
    a = ap.parse_args()
    od = a.ours_dir or a.dir
    for name in a.names:
        ref = json.load(open(os.path.join(a.dir, f"ref-{name}.json")))
        fp_ours = json.load(open(os.path.join(od, f"ours-{name}-fp.json")))["ppl"]
        print(f"\n### {name}\n")
        print(f"fp ppl: PyTorch {ref['fp']['ppl']:.4f}, ours {fp_ours:.4f}, reference.json {ref['fp']['reference_json']:.4f}\n")
        print("| method | bits | PyTorch ppl | ours ppl | ours/ref − 1 | layer-0 max rel_error diff | all-layer median rel_error diff |")
        print("|---|---|---|---|---|---|---|")
        for r in sorted(ref["runs"], key=lambda r: (["rtn", "gptq", "agq"].index(r["method"]), -r["bits"])):
            m, b = r["method"], r["bits"]
            ours = json.load(open(os.path.join(od, f"ours-{name}-{m}-{b}.json")))["ppl"]
            qr_path = os.path.join(od, f"quant-report-{name}-{m}-{b}.json")
            l0 = med = float("nan")
            if os.path.exists(qr_path):
                qo = {norm(x["module"]): x for x in json.load(open(qr_path))["modules"]}
                qr = {norm(x["module"]): x for x in r["modules"]}
                if set(qo) != set(qr):
                    print(f"module sets differ: only ours {sorted(set(qo) - set(qr))[:5]}, only ref {sorted(set(qr) - set(qo))[:5]}")
                d = {k: abs(qo[k]["rel_error"] / qr[k]["rel_error"] - 1) for k in qr if k in qo and qr[k]["rel_error"] > 0}
                l0 = max(v for k, v in d.items() if k.startswith("layers.0."))
                vals = sorted(d.values())
                med = vals[len(vals) // 2]
            print(f"| {m} | {b} | {r['ppl']:.4f} | {ours:.4f} | {(ours / r['ppl'] - 1) * 100:+.3f}% | {l0:.2e} | {med:.2e} |")
        per = ", ".join("%s-%d %.1fs" % (r["method"], r["bits"], r["quantize_seconds"]) for r in ref["runs"])
        print(f"\nreference runtime: {ref['total_seconds']:.1f}s total (quantize: {per})")


if __name__ == "__main__":
    main()
