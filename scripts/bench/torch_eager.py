#!/usr/bin/env python3
"""PyTorch eager baseline for `npm run bench -- --torch`.

Loads a fixture with transformers in float32, tokenizes the data with the fixture's tokenizer.json
(`tokenizers`, add_special_tokens=False), runs the first N non-overlapping windows of seq-len tokens
(same batches of <= 4096 tokens as the Node engine), computes per-token NLL, and prints one line
`@@BENCH_RESULT {json}` with tokens/s of the median timed run (after --warmup untimed runs, default 1), the
seconds from_pretrained took (not in the timed runs), the process's peak RSS and PyTorch's own float32 GEMM
peak (one 4096³ MatMul, best and median of 5 after one warm-up, same threads) to set beside onnxruntime's.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--data", required=True)
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (0: the first run is timed)")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    with open(a.data, encoding="utf-8") as f:
        ids = tok.encode(f.read(), add_special_tokens=False).ids
    n = min(len(ids) // a.seq_len, a.windows)
    windows = torch.tensor(ids[: n * a.seq_len], dtype=torch.long).view(n, a.seq_len)
    per_batch = max(1, a.batch_tokens // a.seq_len)

    # `dtype` is the transformers 5 name of `torch_dtype` (which now only warns).
    t_load = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    t_load = time.perf_counter() - t_load
    model.eval()

    def run() -> float:
        total = 0.0
        with torch.inference_mode():
            for i in range(0, n, per_batch):
                x = windows[i : i + per_batch]
                logits = model(input_ids=x, use_cache=False).logits
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                nll = -logp.gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1)
                total += nll.double().sum().item()
        return total

    for _ in range(a.warmup):
        run()
    times = []
    total = 0.0
    for _ in range(max(1, a.repeats)):
        t0 = time.perf_counter()
        total = run()
        times.append(time.perf_counter() - t0)
    times.sort()
    warm = times[len(times) // 2]
    tokens = n * a.seq_len
    g = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(1))
    h = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(2))
    g @ h
    gemm = []
    for _ in range(5):
        t0 = time.perf_counter()
        g @ h
        gemm.append(2 * 4096**3 / (time.perf_counter() - t0) / 1e9)
    gemm.sort()
    out = {
        "fixture": os.path.basename(os.path.normpath(a.model)),
        "windows": n,
        "seqLen": a.seq_len,
        "tokens": tokens,
        "warmMs": warm * 1000,
        "warmTokensPerSec": tokens / warm,
        "bestMs": times[0] * 1000,
        "bestTokensPerSec": tokens / times[0],
        "runsMs": [t * 1000 for t in times],
        "ppl": math.exp(total / (n * (a.seq_len - 1))),
        "threads": torch.get_num_threads(),
        "warmup": a.warmup,
        "loadSeconds": t_load,
        "peakRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gemmPeak": {"best": gemm[-1], "median": gemm[len(gemm) // 2]},
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    sys.stdout.write("@@BENCH_RESULT " + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
