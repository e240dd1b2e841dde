/**
 * Memory estimates made before any work.
 *
 * Calibration: the layer-major forward carries every window's hidden state ([samples · seq_len, hidden] float32)
 * through the layers: in memory, or in a scratch file when that would take more than a quarter of the machine's
 * memory. A request the disk cannot hold either fails here in milliseconds instead of hours later.
 *
 * Quantize (`--max-memory`): what one decoder layer holds at once, split into a part that does not depend on how
 * many experts' Hessians are collected together (`fixed`: activations, the layer's non-expert weights, one streaming
 * chunk of expert weights, one GPTQ solve, the packed output of the layer) and one Hessian per routed expert. The
 * budget left after `fixed` decides how many experts' Hessians a pass collects (planQuantizeMemory); the rest of the
 * model never counts, since layers are done one after another. When not even one expert's Hessian fits, the layer's
 * activations go to a scratch file (read back a batch at a time), so calibration tokens stop counting too.
 */
import fs from 'node:fs';
import os from 'node:os';
import { layerTensors } from '../architectures/tensors.js';
import type { ModelSpec } from '../architectures/types.js';
import { fail } from '../errors.js';

/** Copies of the [tokens, hidden] float32 activations a run holds at once (hidden state, layer input, FFN input). */
const ACTIVATION_COPIES = 3;

export function activationBytes(spec: ModelSpec, tokens: number): number {
  return tokens * (spec.hiddenSize * 4 * ACTIVATION_COPIES + 4);
}

const gb = (n: number) => `${(n / 1e9).toFixed(n < 1e10 ? 2 : 0)} GB`;

/** Share of the machine's memory calibrate's activations may take before they go to a scratch file. */
export const ACTIVATIONS_IN_MEMORY_FRACTION = 0.25;

/**
 * Whether calibrate keeps samples × seqLen tokens of activations in a scratch file in `dir` (read back a batch, or a
 * group of batches, at a time) instead of in memory: when they would take more than a quarter of the machine's
 * memory (or of its cgroup limit). Fails when the disk under `dir` cannot hold them either.
 */
export function activationsInFile(
  spec: ModelSpec,
  samples: number,
  seqLen: number,
  dir: string,
  onNote?: (s: string) => void,
  totalMem = machineMemory(),
  freeDisk = freeDiskBytes(dir),
): boolean {
  const tokens = samples * seqLen;
  const need = activationBytes(spec, tokens);
  if (need <= ACTIVATIONS_IN_MEMORY_FRACTION * totalMem) return false;
  const what = `--samples ${samples} × --seq-len ${seqLen} = ${tokens.toLocaleString('en-US')} tokens need about ${gb(need)} of activations (hidden ${spec.hiddenSize}, float32)`;
  const file = tokens * spec.hiddenSize * 4;
  if (file > 0.9 * freeDisk)
    throw fail('BAD_OPTION', `${what}, more than a quarter of this machine's ${gb(totalMem)} of memory, and ${gb(file)} in a scratch file, more than the ${gb(freeDisk)} free on disk at ${dir}; use fewer --samples or a shorter --seq-len`);
  onNote?.(`${what}, more than a quarter of this machine's ${gb(totalMem)} of memory: they wait in a ${gb(file)} scratch file in the output's temporary directory, read back a batch at a time`);
  return true;
}

/** The machine's memory, or the cgroup limit when lower (a container sees the host's total in os.totalmem()). */
function machineMemory(): number {
  const limit = cgroupLimit();
  const total = os.totalmem();
  return limit > 0 && limit < total ? limit : total;
}

function freeDiskBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

/** [tokens, hidden] float32 copies quantize holds per layer: x (then h) and the cached FFN input. */
const QUANTIZE_ACTIVATION_COPIES = 2;

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** `4G`, `4096M`, `512MiB`, `4GB` (binary units: K = 1024) or plain bytes → bytes; null when not a size. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) return null;
  const n = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  return Number.isFinite(n) && n >= 1 ? Math.floor(n) : null;
}

/** Bytes in GiB with one decimal, or MiB below 1 GiB (what notes and errors print). */
export const gib = (n: number) => (n < 2 ** 30 ? `${Math.round(n / 2 ** 20)} MiB` : `${(n / 2 ** 30).toFixed(1)} GiB`);

/** Fraction of the machine's available memory the default budget takes (the rest: page cache, other processes). */
export const AUTO_BUDGET_FRACTION = 0.75;

/** The process's cgroup memory limit in bytes (process.constrainedMemory; huge or 0 when there is none). */
const cgroupLimit = (): number => (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.() ?? 0;

/** The default `--max-memory`: AUTO_BUDGET_FRACTION of the memory available now (or of the cgroup limit if lower). */
export function autoMemoryBudget(free = os.freemem(), limit = cgroupLimit()): number {
  const avail = limit > 0 && limit < free ? limit : free;
  return Math.floor(avail * AUTO_BUDGET_FRACTION);
}

/**
 * Node, onnxruntime and the sessions of one layer's graphs, before any tensor (measured about 0.3–0.4 GB on the
 * real-shape runs of README "Real sizes"; rounded up).
 */
export const BASE_BYTES = 512 * 2 ** 20;

export interface QuantizeMemoryInput {
  spec: ModelSpec;
  /** Calibration tokens (samples × seq_len). */
  tokens: number;
  /** Tokens per onnxruntime run. */
  batchTokens: number;
  /** Expert Hessians keep Σc·xxᵀ only (AGQ) instead of Σxxᵀ and Σc·xxᵀ. */
  weightedOnly: boolean;
  /** Float32 bytes of the whole model when the engine keeps it resident, else null (layers stream). */
  residentBytes: number | null;
  /** Streaming: float32 bytes of expert weights the forward loads at once (ForwardEngine.expertChunkBytes). */
  expertChunkBytes: number;
  /** Bytes the output writer holds per quantized weight until its layer is written (GPTQ 4-bit ≈ 0.53). */
  outputBytesPerWeight: number;
  /** Solves wanted in parallel worker threads (pipeline/solve-pool.ts); fewer when the budget needs it. Default 1. */
  solveThreads?: number;
}

export interface QuantizeMemoryPlan {
  budget: number;
  /** Bytes a layer holds whatever the chunk size (largest layer). */
  fixed: number;
  /** Bytes of one routed expert's Hessian (largest: gate/up input, hidden²). */
  perExpert: number;
  /** Routed experts per layer (largest); 0 for dense models. */
  experts: number;
  /** Routed experts whose Hessians one pass collects. */
  chunk: number;
  /** Dequantized experts of a layer kept in a temporary file (read back per expert chunk) instead of in memory. */
  spill: boolean;
  /**
   * The layer's activations of every calibration token (its input or h, the FFN input, router logits and scores)
   * kept in a temporary file and read back a batch at a time (engine/activations.ts) instead of in memory.
   */
  spillActivations: boolean;
  /** Bytes of `fixed` that spilling the activations saves (beyond the batch it reads back). */
  activationBytes: number;
  /** Estimated peak: fixed + chunk Hessians (+ the layer's dequantized experts when not spilled). */
  peak: number;
  /** Experts per pass for a routed expert's Hessian of `bytes` (the down input's is smaller than gate/up's). */
  chunkFor(bytes: number): number;
  /** Solves in parallel worker threads (1: in the main thread). */
  solveThreads: number;
}

/**
 * A solve worker's own bytes before any task (a V8 isolate, onnxruntime's sessions of the solve graphs; measured
 * about 40 MB on the real-shape runs, rounded up).
 */
export const SOLVE_WORKER_BYTES = 96 * 2 ** 20;

/**
 * How a quantize run fits `budget`: first the dequantized experts go to a temporary file (cheap: read back once
 * per expert chunk of a pass), then experts' Hessians are collected in chunks (each chunk costs another pass over
 * the layer's cached inputs). Throws BAD_OPTION when not even one expert fits.
 */
export function planQuantizeMemory(budget: number, m: QuantizeMemoryInput): QuantizeMemoryPlan {
  const { spec } = m;
  const H = spec.hiddenSize;
  const sums = (weightBy: string | undefined) => (weightBy && !m.weightedOnly ? 2 : 1);
  // Per layer: what it holds besides its solves, and one solve (the largest).
  const layerParts: Array<{ base: number; solve: number; workerSolve: number; byRows: number; activations: number; spilled: number; weights: number }> = [];
  let perExpert = 0;
  let experts = 0;
  let overrides = 0;
  for (const layer of spec.layers) {
    const E = layer.ffn.kind === 'moe' ? layer.ffn.routing.numExperts : 0;
    const k = layer.ffn.kind === 'moe' ? layer.ffn.routing.numExpertsUsed : 1;
    const I = layer.ffn.kind === 'moe' ? layer.ffn.expertIntermediateSize : 0;
    // The layer's hidden state (which becomes h = x + attention once the attention is final) and the cached FFN
    // input; router logits and scores — or, spilled, one batch of them read back (x, h and the FFN input); one
    // batch's transients (expert outputs of every routed row, their captured inputs, the graphs' intermediates).
    const held = m.tokens * (H * 4 * QUANTIZE_ACTIVATION_COPIES + E * 4 * 2);
    const transients = m.batchTokens * (k * (H + 3 * I) + 8 * H) * 4;
    const activations = held + transients;
    const spilled = Math.min(held, m.batchTokens * (H * 4 * (QUANTIZE_ACTIVATION_COPIES + 1) + E * 4 * 2)) + transients;
    let nonExpertWeights = 0;
    let layerExpertWeights = 0;
    let params = 0;
    let solve = 0;
    let workerSolve = 0;
    let byRows = 0;
    let otherHessians = 0;
    let expertHessian = 0;
    const seen = new Set<string>();
    // A module group of one linear (o_proj, a dense down_proj) is cut into row ranges between the workers
    // (pipeline/solve.ts solveRowRanges).
    const groupSizes = new Map<string, number>();
    for (const t of layerTensors(spec, layer)) if (t.linear) groupSizes.set(t.linear.group, (groupSizes.get(t.linear.group) ?? 0) + 1);
    for (const t of layerTensors(spec, layer)) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (t.kind === 'routed_expert') layerExpertWeights += n * 4;
      else nonExpertWeights += n * 4;
      if (!t.linear) continue;
      params += n;
      const K = t.shape[1]!;
      // One solve: the weight, its working copy, the result and its levels; the Hessian, its damped copy and factor.
      solve = Math.max(solve, n * 4 * 4 + K * K * 4 * 4);
      // In a worker: plus its copies of the weight and of the Hessians it solves with and measures rel_error on.
      if (groupSizes.get(t.linear.group)! > 1) workerSolve = Math.max(workerSolve, n * 4 * 5 + K * K * 4 * 6);
      // Cut into row ranges: U and its shared copy here; the weight, the ranges' working copies, results and the join.
      else byRows = Math.max(byRows, K * K * 4 * 2 + n * 4 * 9);
      if (seen.has(t.linear.hessian)) continue;
      seen.add(t.linear.hessian);
      const h = K * K * 4 * sums(t.linear.weightBy);
      if (t.expert !== undefined) expertHessian = Math.max(expertHessian, h);
      else otherHessians = Math.max(otherHessians, h);
    }
    // Non-expert weights: original and dequantized; expert weights: one streaming chunk and its reused buffers.
    const weights = (m.residentBytes ?? 2 * nonExpertWeights + 2 * Math.min(m.expertChunkBytes, layerExpertWeights)) + params * m.outputBytesPerWeight;
    // A Hessian being replaced by its next sum exists twice for a moment.
    layerParts.push({ base: BASE_BYTES + weights + otherHessians + expertHessian, solve, workerSolve, byRows, activations, spilled, weights });
    perExpert = Math.max(perExpert, expertHessian);
    experts = Math.max(experts, E);
    overrides = Math.max(overrides, layerExpertWeights);
  }
  // Parallel solves count in the fixed part (fewer experts' Hessians per pass). When not even one expert's Hessian
  // fits beside them, first the activations go to a scratch file (a read per batch and pass costs less than a
  // solve thread), then solve threads are given up.
  const fixedFor = (threads: number, spillActivations: boolean) =>
    Math.max(
      ...layerParts.map(
        (l) =>
          l.base +
          (spillActivations ? l.spilled : l.activations) +
          (threads > 1 ? Math.max(l.solve, threads * l.workerSolve, l.byRows) + threads * SOLVE_WORKER_BYTES : l.solve),
      ),
    );
  const need = (threads: number, spillActivations: boolean) => fixedFor(threads, spillActivations) + (experts > 0 ? perExpert : 0);
  let solveThreads = Math.max(1, m.solveThreads ?? 1);
  let spillActivations = need(solveThreads, false) > budget;
  while (solveThreads > 1 && need(solveThreads, spillActivations) > budget) solveThreads--;
  if (spillActivations && need(solveThreads, false) <= budget) spillActivations = false;
  const fixed = fixedFor(solveThreads, spillActivations);
  const activationBytes = fixedFor(solveThreads, false) - fixedFor(solveThreads, true);
  const make = (chunk: number, spill: boolean, avail: number): QuantizeMemoryPlan => ({
    budget,
    fixed,
    perExpert,
    experts,
    chunk,
    spill,
    spillActivations,
    activationBytes,
    peak: fixed + chunk * perExpert + (spill ? 0 : overrides),
    chunkFor: (bytes) => Math.max(1, Math.min(experts, Math.floor(avail / Math.max(1, bytes)))),
    solveThreads,
  });
  if (experts === 0 || fixed + experts * perExpert + overrides <= budget) return make(experts, false, Infinity);
  const avail = budget - fixed;
  const chunk = Math.min(experts, Math.floor(avail / perExpert));
  if (chunk < 1) {
    const mb = (n: number) => `${Math.ceil(n / 2 ** 20)} MiB`;
    const parts = layerParts.reduce((a, l) => (l.base + l.spilled + l.solve > a.base + a.spilled + a.solve ? l : a));
    throw fail(
      'BAD_OPTION',
      `--max-memory ${gib(budget)} is too small: a layer needs about ${gib(fixed)} (activations ${gib(parts.spilled)} with the ${m.tokens.toLocaleString('en-US')} calibration tokens in a scratch file and ${m.batchTokens.toLocaleString('en-US')} per batch, weights ${gib(parts.weights)}, one solve ${mb(parts.solve)}) plus ${mb(perExpert)} per expert's Hessian; give at least ${gib(fixed + perExpert)}${parts.spilled >= fixed / 4 ? ' or calibrate with a smaller --batch-tokens' : ''}`,
    );
  }
  return make(chunk, true, avail);
}
