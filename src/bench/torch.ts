/** Optional PyTorch eager comparison: runs scripts/bench/torch_eager.py with the bench's Python (--python or .venv). */
import path from 'node:path';
import { REPO_ROOT, runChild, tail } from './proc.js';

export interface TorchResult {
  fixture: string;
  windows: number;
  seqLen: number;
  tokens: number;
  warmMs: number;
  warmTokensPerSec: number;
  bestMs: number;
  bestTokensPerSec: number;
  ppl: number;
  threads: number;
  torch: string;
  transformers: string;
  /** PyTorch's float32 GEMM peak (one 4096³ MatMul, GFLOP/s), measured by the same script (absent before it did). */
  gemmPeak?: { best: number; median: number };
}

export async function runTorch(python: string, dir: string, data: string, windows: number, seqLen: number, repeats: number): Promise<TorchResult | { error: string }> {
  const script = path.join(REPO_ROOT, 'scripts', 'bench', 'torch_eager.py');
  const args = [script, dir, '--data', data, '--windows', String(windows), '--seq-len', String(seqLen), '--repeats', String(repeats)];
  const r = await runChild<TorchResult>(python, args, { env: { ...process.env, TOKENIZERS_PARALLELISM: 'false' } });
  if (r.result) return r.result;
  return { error: `torch_eager.py exited with ${r.code}: ${tail(r.stderr, 4)}` };
}
