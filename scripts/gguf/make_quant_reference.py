"""Reference bytes of GGML block types from the Python `gguf` package (0.19, llama.cpp's gguf-py), which writes
Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 exactly as llama.cpp's reference quantizer does. test/formats/gguf-quants.test.ts checks
that moe-quant's round-to-nearest produces the same bytes.

    /path/to/venv/bin/python scripts/gguf/make_quant_reference.py test/fixtures/gguf/quant-reference.safetensors
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize
from safetensors.numpy import save_file

rng = np.random.default_rng(0)
rows, cols = 24, 256
x = (rng.standard_normal((rows, cols)) * rng.choice([0.01, 0.1, 1.0, 30.0], size=(rows, 1))).astype(np.float32)
x[0, :32] = 0.0  # an all-zero block
x[1, :32] = 0.5  # a constant block
x[2, 32:64] = np.linspace(-1, 1, 32, dtype=np.float32)  # ties of the level grid
x[3, :] = np.abs(x[3, :])  # all positive rows (Q4_1 min > 0)
x[4, 64:96] = -np.abs(x[4, 64:96])
out = {"x": x}
for name in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]:
    out[name] = quantize(x, getattr(T, name)).reshape(-1)
save_file(out, sys.argv[1])
print({k: v.shape for k, v in out.items()})
