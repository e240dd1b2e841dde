/**
 * A memory estimate before calibration: the layer-major forward holds every window's hidden state at once
 * ([samples · seq_len, hidden] float32), and quantize keeps a second copy of a layer's inputs while it re-collects
 * Hessians. An impossible request fails here in milliseconds instead of swapping for hours.
 */
import os from 'node:os';
import type { ModelSpec } from '../architectures/types.js';
import { fail } from '../errors.js';

/** Copies of the [tokens, hidden] float32 activations a run holds at once (hidden state, layer input, FFN input). */
const ACTIVATION_COPIES = 3;

export function activationBytes(spec: ModelSpec, tokens: number): number {
  return tokens * (spec.hiddenSize * 4 * ACTIVATION_COPIES + 4);
}

const gb = (n: number) => `${(n / 1e9).toFixed(n < 1e10 ? 2 : 0)} GB`;

/** Fail when samples × seqLen tokens of activations cannot fit this machine's memory; note it when it is large. */
export function checkActivationMemory(spec: ModelSpec, samples: number, seqLen: number, onNote?: (s: string) => void, totalMem = os.totalmem()): void {
  const tokens = samples * seqLen;
  const need = activationBytes(spec, tokens);
  const what = `--samples ${samples} × --seq-len ${seqLen} = ${tokens.toLocaleString('en-US')} tokens need about ${gb(need)} of activations (hidden ${spec.hiddenSize}, float32)`;
  if (need > 0.8 * totalMem) throw fail('BAD_OPTION', `${what}, more than this machine's ${gb(totalMem)} of memory; use fewer --samples or a shorter --seq-len`);
  if (need > 0.25 * totalMem) onNote?.(`${what} of this machine's ${gb(totalMem)}`);
}
