/**
 * Set-level balanced selection: σ belongs to the whole calibration set, so choose the set, not each sequence.
 * From a pool of windows (text files cut into windows, calibration directories, generated sets) pick `samples`
 * windows whose union has the most even expert usage:
 *   1. one forward pass over the pool records each window's expert selections in every MoE layer (natural routing);
 *   2. greedy: repeatedly add the window that most lowers (deficit, σ) of the union, where deficit = Σ over layers and
 *      experts of max(0, min_tokens − tokens) (the --min-tokens constraint comes first) and σ = per MoE layer the
 *      sample std of usage shares, averaged over layers (the balance report's σ);
 *   3. local search: swap a chosen window for an unchosen one while that lowers (deficit, σ), until no swap does.
 * Never put an evaluation split in a pool: the set would be tuned to the text it is evaluated on.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadTokenizer } from '../../checkpoint/tokenizer.js';
import { readTextData } from '../../eval/data.js';
import { fail } from '../../errors.js';
import { sigma } from '../../routing/balance.js';
import { readCalibrationJson, readCalibrationTokens } from '../calibration-dir.js';
import { seededRandom } from '../samples.js';
import type { SampledSet, SamplerContext } from './types.js';

export interface BalancedOptions {
  /** Text files (raw or .jsonl) or calibration directories. */
  pool: string[];
  /** Windows taken from each text file of the pool (seeded random choice among its non-overlapping windows). */
  poolWindows?: number;
  /** Every expert of every MoE layer should get at least this many tokens in the chosen set. */
  minTokens?: number;
}

/** Windows of one pool source, with where they came from. */
function poolSource(ctx: SamplerContext, source: string, perFile: number, tokHash: string, rand: () => number): Int32Array[] {
  if (!fs.existsSync(source)) throw fail('BAD_DATA', `--pool ${source} does not exist`);
  if (fs.statSync(source).isDirectory()) {
    const json = readCalibrationJson(source);
    if (json['tokenizer'] !== tokHash)
      throw fail('BAD_DATA', `--pool ${source} was tokenized by another tokenizer than ${ctx.model}'s; pool windows must come from this model's tokenizer`);
    const windows = readCalibrationTokens(source);
    if (windows.length && windows[0]!.length !== ctx.seqLen)
      throw fail('BAD_DATA', `--pool ${source} has windows of ${windows[0]!.length} tokens; --seq-len is ${ctx.seqLen}`);
    return windows;
  }
  const ids = loadTokenizer(ctx.model).encode(readTextData(source));
  const n = Math.floor(ids.length / ctx.seqLen);
  if (n === 0) throw fail('BAD_DATA', `--pool ${source} has ${ids.length} tokens, fewer than one window of --seq-len ${ctx.seqLen}`);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order
    .slice(0, perFile)
    .sort((a, b) => a - b)
    .map((w) => ids.slice(w * ctx.seqLen, (w + 1) * ctx.seqLen));
}

/** Union statistics: deficit below min tokens, and σ averaged over layers. */
export function setScore(counts: Float64Array, layers: number, experts: number, minTokens: number): { deficit: number; sigma: number } {
  let deficit = 0;
  let s = 0;
  for (let l = 0; l < layers; l++) {
    const row = counts.subarray(l * experts, (l + 1) * experts);
    for (let e = 0; e < experts; e++) deficit += Math.max(0, minTokens - row[e]!);
    s += sigma(row);
  }
  return { deficit, sigma: layers ? s / layers : 0 };
}

const better = (a: { deficit: number; sigma: number }, b: { deficit: number; sigma: number }) =>
  a.deficit < b.deficit || (a.deficit === b.deficit && a.sigma < b.sigma - 1e-15);

/**
 * Choose `k` of the windows (each a [layers × experts] count vector) minimising (deficit, σ) of their sum:
 * greedy, then best-improvement swaps. Deterministic (ties go to the lower index).
 */
export function selectBalanced(windowCounts: Float64Array[], layers: number, experts: number, k: number, minTokens: number, maxPasses = 20) {
  const n = windowCounts.length;
  const D = layers * experts;
  const union = new Float64Array(D);
  const chosen: number[] = [];
  const used = new Uint8Array(n);
  const trial = new Float64Array(D);
  const scoreWith = (add: number, remove = -1) => {
    for (let d = 0; d < D; d++) trial[d] = union[d]! + windowCounts[add]![d]! - (remove >= 0 ? windowCounts[remove]![d]! : 0);
    return setScore(trial, layers, experts, minTokens);
  };
  for (let step = 0; step < k; step++) {
    let bestI = -1;
    let best = { deficit: Infinity, sigma: Infinity };
    for (let i = 0; i < n; i++) {
      if (used[i]) continue;
      const s = scoreWith(i);
      if (bestI < 0 || better(s, best)) [bestI, best] = [i, s];
    }
    used[bestI] = 1;
    chosen.push(bestI);
    for (let d = 0; d < D; d++) union[d]! += windowCounts[bestI]![d]!;
  }
  let current = setScore(union, layers, experts, minTokens);
  let passes = 0;
  for (; passes < maxPasses; passes++) {
    let move: { slot: number; add: number; score: { deficit: number; sigma: number } } | null = null;
    for (let slot = 0; slot < chosen.length; slot++)
      for (let i = 0; i < n; i++) {
        if (used[i]) continue;
        const s = scoreWith(i, chosen[slot]!);
        if (better(s, move?.score ?? current)) move = { slot, add: i, score: s };
      }
    if (!move) break;
    const out = chosen[move.slot]!;
    for (let d = 0; d < D; d++) union[d]! += windowCounts[move.add]![d]! - windowCounts[out]![d]!;
    used[out] = 0;
    used[move.add] = 1;
    chosen[move.slot] = move.add;
    current = move.score;
  }
  return { chosen, score: current, passes };
}

export async function sampleBalanced(ctx: SamplerContext, opts: BalancedOptions): Promise<SampledSet> {
  const perFile = opts.poolWindows ?? 256;
  const minTokens = opts.minTokens ?? 16;
  if (!Number.isInteger(perFile) || perFile < 1) throw fail('BAD_OPTION', `--pool-windows must be a positive integer (got ${perFile})`);
  if (opts.pool.length === 0) throw fail('BAD_OPTION', '--sampler balanced needs a pool: --pool FILE|CALIB_DIR (repeatable)');
  const tokHash = loadTokenizer(ctx.model).hash;
  const rand = seededRandom(ctx.seed);
  const sources = opts.pool.map((p) => ({ source: p, windows: poolSource(ctx, p, perFile, tokHash, rand) }));
  const windows = sources.flatMap((s) => s.windows);
  if (windows.length < ctx.samples)
    throw fail('BAD_DATA', `the pool has ${windows.length} windows of ${ctx.seqLen} tokens, fewer than --samples ${ctx.samples}`);
  const { engine } = ctx;
  const moe = engine.model.spec.layers.filter((l) => l.ffn.kind === 'moe');
  if (moe.length === 0) throw fail('UNSUPPORTED', 'the model has no MoE layer: there is no expert balance to select for');
  const E = moe[0]!.ffn.kind === 'moe' ? moe[0]!.ffn.routing.numExperts : 0;
  const layerSlot = new Map(moe.map((l, i) => [l.index, i]));
  const counts = windows.map(() => new Float64Array(moe.length * E));
  const S = ctx.seqLen;
  await engine.forward.run(windows, {
    head: 'none',
    onProgress: (d, t) => ctx.onProgress?.(d, t, 'pool routing'),
    hooks: {
      onRouting: (ev) => {
        const slot = layerSlot.get(ev.layerIndex)! * E;
        const k = ev.routing.k;
        ev.routing.experts.forEach((e, i) => counts[Math.floor((ev.tokenOffset + Math.floor(i / k)) / S)]![slot + e]!++);
      },
    },
  });
  const poolScore = setScore(
    counts.reduce((acc, c) => (c.forEach((v, d) => (acc[d]! += v)), acc), new Float64Array(moe.length * E)),
    moe.length,
    E,
    0,
  );
  const { chosen, score, passes } = selectBalanced(counts, moe.length, E, ctx.samples, minTokens);
  ctx.onNote?.(
    `balanced: chose ${ctx.samples} of ${windows.length} pool windows, σ ${score.sigma.toFixed(4)} (whole pool ${poolScore.sigma.toFixed(4)})` +
      (score.deficit > 0 ? `; ${score.deficit} expert-token(s) short of --min-tokens ${minTokens}` : ''),
  );
  let offset = 0;
  const bySource = sources.map((s) => {
    const range = [offset, (offset += s.windows.length)];
    return { pool: path.resolve(s.source), windows: s.windows.length, chosen: chosen.filter((c) => c >= range[0]! && c < range[1]!).length };
  });
  return {
    windows: chosen.map((i) => windows[i]!),
    info: {
      name: 'balanced',
      pool: bySource,
      pool_windows_per_file: perFile,
      min_tokens: minTokens,
      sigma_selected: score.sigma,
      sigma_pool: poolScore.sigma,
      deficit: score.deficit,
      swap_passes: passes,
    },
    data: sources.map((s) => path.resolve(s.source)),
  };
}
