/**
 * Y = alpha · op(A) · op(B) + beta · C on onnxruntime (ONNX `Gemm`, MLAS kernels), for the level-3 work of GPTQ:
 * blocked Cholesky / triangular inverse and the lazy-batch update. Runs entirely in onnxruntime; JavaScript only
 * wraps the typed arrays (no copy: views with an offset are passed as they are).
 *
 * Float32 subnormal operands make MLAS Gemm about 30× slower (measured: 0.1 s → 4 s for a 3000×128·128×4096 update),
 * and GPTQ's factors have entries that decay towards zero, so callers pass their float32 operands through
 * {@link flushSubnormals} first (what `torch.set_flush_denormal(True)` does for PyTorch).
 *
 * One session per (element type, transA, transB, alpha, beta, has C), all dimensions symbolic, cached in the
 * caller's SessionPool.
 */
import * as ort from 'onnxruntime-node';
import { attr, GraphBuilder, OnnxType } from '../graph/builder.js';
import type { SessionPool } from '../graph/session.js';

/** A dense row-major matrix buffer: float32 (fast) or float64 (accurate) Gemm. */
export type GemmArray = Float32Array | Float64Array;

/** Operands of {@link gemm}; dims are those of the stored (untransposed) matrices. */
export interface GemmArgs<T extends GemmArray> {
  a: T;
  /** [rows, cols] of `a` as stored. */
  aDims: readonly [number, number];
  b: T;
  /** [rows, cols] of `b` as stored. */
  bDims: readonly [number, number];
  /** Optional addend [M, N] (used when beta ≠ 0). */
  c?: T;
  transA?: boolean;
  transB?: boolean;
  /** Default 1. */
  alpha?: number;
  /** Default 1 when `c` is given. */
  beta?: number;
  /**
   * Write Y [M, N] here (a view is fine) instead of a new array; may be `c` itself, so that C += alpha·op(A)·op(B)
   * happens in place without copying C in or Y out.
   */
  out?: T;
}

function gemmGraph(double: boolean, transA: boolean, transB: boolean, alpha: number, beta: number, hasC: boolean): Uint8Array {
  const T = double ? OnnxType.DOUBLE : OnnxType.FLOAT;
  const g = new GraphBuilder('quant_gemm');
  const a = g.input('a', T, ['a0', 'a1']);
  const b = g.input('b', T, ['b0', 'b1']);
  const inputs = [a, b];
  if (hasC) inputs.push(g.input('c', T, ['m', 'n']));
  const y = g.op('Gemm', inputs, {
    alpha: attr.f(alpha),
    beta: attr.f(beta),
    transA: attr.i(transA ? 1 : 0),
    transB: attr.i(transB ? 1 : 0),
  });
  g.output('y', y, T, ['m', 'n']);
  return g.build();
}

/**
 * Runs one Gemm in onnxruntime and returns the [M, N] result: `args.out` when given, else a fresh array of the
 * operands' type. alpha and beta travel as float attributes, so use values exact in float32 (±1, 0).
 */
export async function gemm<T extends GemmArray>(pool: SessionPool, args: GemmArgs<T>): Promise<T> {
  const double = args.a instanceof Float64Array;
  const transA = args.transA ?? false;
  const transB = args.transB ?? false;
  const alpha = args.alpha ?? 1;
  const hasC = args.c !== undefined;
  const beta = hasC ? (args.beta ?? 1) : 0;
  const key = `quant-gemm:${double ? 'f64' : 'f32'}:${+transA}${+transB}:${alpha}:${beta}:${+hasC}`;
  const session = await pool.get(key, () => gemmGraph(double, transA, transB, alpha, beta, hasC));
  const type = double ? 'float64' : 'float32';
  const M = transA ? args.aDims[1] : args.aDims[0];
  const N = transB ? args.bDims[0] : args.bDims[1];
  const feeds: Record<string, ort.Tensor> = {
    a: new ort.Tensor(type, args.a, [...args.aDims]),
    b: new ort.Tensor(type, args.b, [...args.bDims]),
  };
  if (args.c) feeds['c'] = new ort.Tensor(type, args.c, [M, N]);
  if (args.out) {
    if (args.out.length !== M * N) throw new Error(`gemm: output has ${args.out.length} values, expected ${M}×${N}`);
    await pool.run(session, feeds, { y: new ort.Tensor(type, args.out, [M, N]) });
    return args.out;
  }
  const out = await pool.run(session, feeds);
  return out['y']!.data as T;
}

/** Sets float32 subnormals to +0 in place (integer test on the bit patterns) and returns the array; float64 arrays are left alone. */
export function flushSubnormals<T extends GemmArray>(a: T): T {
  if (a instanceof Float32Array) flush32(new Uint32Array(a.buffer, a.byteOffset, a.length));
  return a;
}

function flush32(bits: Uint32Array): void {
  for (let i = 0; i < bits.length; i++) if ((bits[i]! & 0x7f800000) === 0) bits[i] = 0;
}

/**
 * GPTQ's lazy update of later columns by finished ones: −U[r0:r1, c0:c1]ᵀ · Err (Err [r1−r0, N], rows as columns of
 * W), in the element type of Err; with `addend` [c1−c0, N] the update is added to it in place (and it is returned).
 * Subnormal entries of U (far off-diagonal) would slow the float32 Gemm ~30× and change nothing, so they are flushed.
 */
export async function lazyUpdate<T extends GemmArray>(
  pool: SessionPool,
  U: GemmArray,
  K: number,
  rows: [number, number],
  cols: [number, number],
  err: T,
  N: number,
  addend?: T,
): Promise<T> {
  const [r0, r1] = rows;
  const [c0, c1] = cols;
  const Elem = (err instanceof Float64Array ? Float64Array : Float32Array) as unknown as { new (n: number): T };
  const Ublk = new Elem((r1 - r0) * (c1 - c0));
  for (let r = r0; r < r1; r++) Ublk.set(U.subarray(r * K + c0, r * K + c1), (r - r0) * (c1 - c0));
  if (Ublk instanceof Float32Array) flushSubnormals(Ublk);
  return gemm(pool, { a: Ublk, aDims: [r1 - r0, c1 - c0], b: err, bDims: [r1 - r0, N], transA: true, alpha: -1, ...(addend ? { c: addend, beta: 1, out: addend } : {}) });
}
