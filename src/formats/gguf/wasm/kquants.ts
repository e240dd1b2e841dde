/**
 * The K-quant sub-block scale searches in WebAssembly (kquants.wat), bit-identical to quants.ts's JavaScript
 * makeQkx2 / makeQx. One instance per thread: a block is copied in, searched and read back before the next.
 */
import { KQUANTS_WASM } from './kquants-wasm.js';

interface Kernels {
  memory: WebAssembly.Memory;
  k45(q5: number): void;
  q6k(): void;
}

// The module's layout (kquants.wat: globals $X and $OUT).
const X = 0;
const OUT = 1280;
let kernels: Kernels | null = null;
let x: Float32Array;
let out: Float32Array;

function instance(): Kernels {
  if (!kernels) {
    kernels = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(KQUANTS_WASM, 'base64'))).exports as unknown as Kernels;
    x = new Float32Array(kernels.memory.buffer, X, 256);
    out = new Float32Array(kernels.memory.buffer, OUT, 16);
  }
  return kernels;
}

/** Q4_K / Q5_K: make_qkx2_quants of each 32-value sub-block of the 256 `values` → its scale and (non-negative) min. */
export function fitK45Subs(values: Float32Array, q5: boolean, scales: Float64Array, mins: Float64Array): void {
  const k = instance();
  x.set(values);
  k.k45(q5 ? 1 : 0);
  for (let j = 0; j < 8; j++) (scales[j] = out[2 * j]!), (mins[j] = out[2 * j + 1]!);
}

/** Q6_K: make_qx_quants of each 16-value sub-block of the 256 `values` → its scale. */
export function fitQ6KSubs(values: Float32Array, scales: Float64Array): void {
  const k = instance();
  x.set(values);
  k.q6k();
  for (let j = 0; j < 16; j++) scales[j] = out[j]!;
}
