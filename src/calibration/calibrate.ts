/**
 * `moe-quant calibrate`: take calibration windows from a sampler (text, EBSS or balanced selection), push them
 * through the model layer by layer with the routing seam hooked, optionally steer selection with loss-free biases,
 * and write a calibration directory (files: calibration-dir.ts). The output is built in a temporary directory and
 * swapped into place when complete (output/output-dir.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadTokenizer } from '../checkpoint/tokenizer.js';
import { writeSafetensors } from '../checkpoint/safetensors.js';
import { createEngine, type Engine, type EngineOptions } from '../engine/engine.js';
import { modelFingerprint } from '../engine/model.js';
import { fail } from '../errors.js';
import { OutputDir } from '../output/output-dir.js';
import { averageSummaries, balanceStats, summarize } from '../routing/balance.js';
import { BIAS_UPDATES, LossFreeBias, type BiasUpdate } from '../routing/loss-free.js';
import { route } from '../routing/router.js';
import { RoutingStatsCollector } from '../routing/stats.js';
import { BALANCE_REPORT_FORMAT, type BalanceReport, type LayerBalance } from '../report/types.js';
import { versions } from '../version.js';
import type { MoeFfnSpec } from '../architectures/types.js';
import { SAMPLES_FILE, writeCalibrationDir } from './calibration-dir.js';
import { hessianBytes, LayerHessians } from './hessian-collector.js';
import { activationsInFile } from './memory.js';
import { sampleBalanced, type BalancedOptions } from './samplers/balanced.js';
import { ebssSettings, sampleEbss, type EbssOptions } from './samplers/ebss.js';
import { sampleText } from './samplers/text.js';
import { SAMPLERS, type SampledSet, type SamplerName } from './samplers/types.js';

export { CALIBRATION_FORMAT } from './calibration-dir.js';

export type RoutingBiasMode = 'none' | 'loss-free';

/** Default update rule and, per rule, rate; see README "Choosing the bias rate" for the measurements behind them. */
export const DEFAULT_BIAS_UPDATE = 'quantile' as const;
export const DEFAULT_BIAS_RATES: Record<BiasUpdate, number> = { quantile: 0.8, linear: 0.03, sign: 0.01 };
/** The default rule's default rate. */
export const DEFAULT_BIAS_RATE = DEFAULT_BIAS_RATES[DEFAULT_BIAS_UPDATE];

export interface CalibrateOptions extends EngineOptions {
  model: string;
  /** Text for the `text` sampler (default sampler). */
  data: string[];
  out: string;
  /** Where the windows come from: text (default), ebss or balanced. */
  sampler?: SamplerName;
  ebss?: EbssOptions;
  /** `balanced`: the pool (text files or calibration directories) and windows per text file. */
  pool?: string[];
  poolWindows?: number;
  samples?: number;
  seqLen?: number;
  seed?: number;
  routingBias?: RoutingBiasMode;
  biasRate?: number;
  biasUpdate?: BiasUpdate;
  batchTokens?: number;
  /** Experts with fewer tokens than this are flagged as under-calibrated (and `balanced` tries to avoid them). */
  minTokens?: number;
  /** Replace an existing directory that is not a calibration directory. */
  force?: boolean;
  /** Also write every linear's Hessians (plain and affinity-weighted) to CALIB_DIR/hessians/ (large). */
  saveHessians?: boolean;
  /** One-line notes for the user (e.g. the size of the Hessians about to be written). */
  onNote?(note: string): void;
  /** Progress of each stage ('ebss', 'pool routing', 'calibrate'); `detail` is a short extra (e.g. tokens/s). */
  onProgress?(done: number, total: number, stage?: string, detail?: string): void;
  onDevice?(note: string): void;
}

export interface CalibrateResult {
  summary: BalanceReport['summary'];
  /** What the sampler did (as in calibration.json), plus run-specific figures (e.g. EBSS tokens/s). */
  sampler: Record<string, unknown>;
  out: string;
  files: Record<string, string>;
  seconds: number;
}

/** calibrate()'s options with their defaults filled in and checked (cheap: before the model is opened). */
export function calibrationSettings(opts: Omit<CalibrateOptions, 'out' | 'model'>) {
  const s = {
    sampler: opts.sampler ?? 'text',
    samples: opts.samples ?? 128,
    seqLen: opts.seqLen ?? 512,
    seed: opts.seed ?? 0,
    mode: opts.routingBias ?? 'loss-free',
    biasRate: opts.biasRate ?? DEFAULT_BIAS_RATES[opts.biasUpdate ?? DEFAULT_BIAS_UPDATE] ?? NaN,
    biasUpdate: opts.biasUpdate ?? DEFAULT_BIAS_UPDATE,
    batchTokens: opts.batchTokens ?? 4096,
    minTokens: opts.minTokens ?? 16,
  };
  if (!SAMPLERS.includes(s.sampler)) throw fail('BAD_OPTION', `--sampler must be one of ${SAMPLERS.join(', ')} (got ${s.sampler})`);
  if (!['none', 'loss-free'].includes(s.mode)) throw fail('BAD_OPTION', `--routing-bias must be none or loss-free (got ${s.mode})`);
  if (!BIAS_UPDATES.includes(s.biasUpdate)) throw fail('BAD_OPTION', `--bias-update must be one of ${BIAS_UPDATES.join(', ')} (got ${s.biasUpdate})`);
  if (!Number.isInteger(s.seed) || s.seed < 0) throw fail('BAD_OPTION', `--seed must be a non-negative integer (got ${s.seed})`);
  if (s.sampler === 'text' && opts.data.length === 0) throw fail('BAD_DATA', 'no calibration data given (--data FILE)');
  if (s.sampler !== 'text' && opts.data.length > 0) throw fail('BAD_OPTION', `--data is for --sampler text; --sampler ${s.sampler} takes ${s.sampler === 'balanced' ? '--pool' : 'no data'}`);
  if (s.sampler === 'balanced' && !opts.pool?.length) throw fail('BAD_OPTION', '--sampler balanced needs a pool: --pool FILE|CALIB_DIR (repeatable)');
  if (s.sampler !== 'balanced' && opts.pool?.length) throw fail('BAD_OPTION', '--pool is for --sampler balanced');
  if (s.sampler === 'ebss') ebssSettings(opts.ebss);
  if (!Number.isInteger(s.samples) || s.samples < 1) throw fail('BAD_OPTION', `--samples must be a positive integer (got ${s.samples})`);
  if (!Number.isInteger(s.seqLen) || s.seqLen < 2) throw fail('BAD_OPTION', `--seq-len must be an integer ≥ 2 (got ${s.seqLen})`);
  if (!(Number.isFinite(s.biasRate) && s.biasRate > 0)) throw fail('BAD_OPTION', `--bias-rate must be a positive number (got ${s.biasRate})`);
  if (!Number.isInteger(s.batchTokens) || s.batchTokens < 1) throw fail('BAD_OPTION', `--batch-tokens must be a positive integer (got ${s.batchTokens})`);
  if (!Number.isInteger(s.minTokens) || s.minTokens < 0) throw fail('BAD_OPTION', `--min-tokens must be a non-negative integer (got ${s.minTokens})`);
  return s;
}

export async function calibrate(opts: CalibrateOptions): Promise<CalibrateResult> {
  const s = calibrationSettings(opts);
  const output = OutputDir.open({
    out: opts.out,
    kind: 'calibration',
    model: opts.model,
    inputs: [...opts.data.map((d) => ['--data', d] as [string, string]), ...(opts.pool ?? []).map((p) => ['--pool', p] as [string, string])],
    force: opts.force,
    // An interrupted EBSS generation keeps its finished samples for the next run.
    resumable: s.sampler === 'ebss' ? [SAMPLES_FILE] : [],
    onNote: opts.onNote,
  });
  try {
    const engine = await createEngine(opts.model, opts);
    let result: Awaited<ReturnType<typeof runCalibration>>;
    try {
      opts.onDevice?.(engine.deviceNote);
      result = await runCalibration(engine, opts, output.tmp, opts.out);
    } finally {
      await engine.close();
    }
    const out = output.commit();
    const names = ['calibration.json', 'tokens.safetensors', 'routing-bias.safetensors', 'expert-input-stats.safetensors', 'balance-report.json', 'balance-report.md', 'balance-report.html'];
    if (fs.existsSync(path.join(out, SAMPLES_FILE))) names.push(SAMPLES_FILE);
    const files = Object.fromEntries(names.map((f) => [f, path.join(out, f)]));
    if (opts.saveHessians) files['hessians'] = path.join(out, 'hessians');
    return { summary: result.report.summary, sampler: { ...result.sampler.info, ...result.samplerRun }, out, files, seconds: result.seconds };
  } catch (e) {
    output.abort();
    throw e;
  }
}

/** The windows the configured sampler gives. */
async function sampleWindows(engine: Engine, opts: Omit<CalibrateOptions, 'out' | 'force'>, dir: string): Promise<SampledSet> {
  const s = calibrationSettings(opts);
  const ctx = {
    engine,
    model: opts.model,
    samples: s.samples,
    seqLen: s.seqLen,
    seed: s.seed,
    dir,
    onNote: opts.onNote,
    onProgress: (d: number, t: number, stage: string, detail?: string) => opts.onProgress?.(d, t, stage, detail),
  };
  if (s.sampler === 'ebss') return sampleEbss(ctx, opts.ebss);
  if (s.sampler === 'balanced') {
    const b: BalancedOptions = { pool: opts.pool ?? [], poolWindows: opts.poolWindows, minTokens: s.minTokens };
    return sampleBalanced(ctx, b);
  }
  return sampleText(ctx, opts.data);
}

/**
 * The calibration itself, on an open engine, written into the existing directory `dir` (`shownDir`: how to name
 * it to the user). quantize calls this with its own engine for inline calibration.
 */
export async function runCalibration(
  engine: Engine,
  opts: Omit<CalibrateOptions, 'out' | 'force'>,
  dir: string,
  shownDir = dir,
): Promise<{ report: BalanceReport; seconds: number; sampler: SampledSet; samplerRun: Record<string, unknown> }> {
  const { samples, seqLen, seed, mode, biasRate, biasUpdate, batchTokens, minTokens } = calibrationSettings(opts);
  const { spec } = engine.model;
  const spill = activationsInFile(spec, samples, seqLen, dir, opts.onNote);
  const bias = mode === 'loss-free' ? new LossFreeBias(biasRate, biasUpdate) : null;
  const set = await sampleWindows(engine, opts, dir);
  const { run: samplerRun, ...info } = set.info as Record<string, unknown> & { run?: Record<string, unknown> };
  const sampler: SampledSet = { ...set, info: info as SampledSet['info'] };
  const windows = set.windows;
  const perBatch = Math.max(1, Math.floor(batchTokens / seqLen));
  const numBatches = Math.ceil(samples / perBatch);
  const stats = new RoutingStatsCollector(spec, numBatches);
  let hessians: LayerHessians | null = null;
  if (opts.saveHessians) {
    opts.onNote?.(`writing Hessians: ${(hessianBytes(spec) / 1e9).toFixed(2)} GB to ${path.join(shownDir, 'hessians')}/`);
    fs.mkdirSync(path.join(dir, 'hessians'));
  }
  const t0 = performance.now();
  await engine.forward.run(windows, {
    head: 'none',
    batchTokens,
    ...(spill ? { spillDir: dir } : {}),
    onProgress: (d, t) => opts.onProgress?.(d, t, 'calibrate'),
    hooks: {
      capture: Boolean(opts.saveHessians),
      onActivations: async (ev) => {
        if (!hessians || hessians.layer.index !== ev.layerIndex) hessians = new LayerHessians(engine.pool, spec, spec.layers[ev.layerIndex]!);
        await hessians.add(ev);
      },
      afterLayer: (layer) => {
        if (!hessians) return;
        writeSafetensors(path.join(dir, 'hessians', `layer-${String(layer).padStart(3, '0')}.safetensors`), hessians.tensors(), {
          format: 'moe-quant.hessians/1',
          layout: 'see src/calibration/hessian-collector.ts: <module>.xtx = Σ x xᵀ, .xtcx = Σ c x xᵀ, .tokens, .weight_sum',
        });
        hessians = null;
      },
      selectionBias: (layer) => {
        const f = spec.layers[layer]!.ffn as MoeFfnSpec;
        return bias ? bias.get(layer, f.routing.numExperts) : null;
      },
      onRouting: (ev) => {
        const f = spec.layers[ev.layerIndex]!.ffn as MoeFfnSpec;
        const natural = bias
          ? route(f.routing, ev.routerLogits, { scores: ev.routing.scores, correctionBias: f.correctionBias ? engine.weights.get(f.correctionBias) : null })
          : ev.routing;
        stats.record(ev.layerIndex, ev.batchIndex, ev.ffnIn, ev.routing, natural);
        if (bias) {
          const loads = new Float64Array(f.routing.numExperts);
          for (const e of ev.routing.experts) loads[e]!++;
          bias.step(ev.layerIndex, loads, { spec: f.routing, scores: ev.routing.scores, correctionBias: f.correctionBias ? engine.weights.get(f.correctionBias) : null });
        }
      },
    },
  });
  const seconds = (performance.now() - t0) / 1000;

  const layers: LayerBalance[] = [...stats.layers.values()].map((c) => {
    const used = balanceStats(c.usedTokens, c.usedMass);
    return {
      layer: c.layer,
      experts: c.numExperts,
      top_k: c.topK,
      natural: balanceStats(c.naturalTokens, c.naturalMass),
      used,
      natural_second_half: summarize(c.naturalTokensSecondHalf),
      used_second_half: summarize(c.usedTokensSecondHalf),
      under_calibrated: used.tokens.flatMap((t, e) => (t < minTokens ? [e] : [])),
      bias: Array.from(bias?.get(c.layer, c.numExperts) ?? new Float32Array(c.numExperts)),
      bias_trajectory: (bias?.trajectory.get(c.layer) ?? []).map((b) => Array.from(b)),
    };
  });
  const report: BalanceReport = {
    format: BALANCE_REPORT_FORMAT,
    model: path.resolve(opts.model),
    model_type: spec.family,
    data: sampler.data,
    samples,
    seq_len: seqLen,
    tokens: samples * seqLen,
    seed,
    routing_bias: mode,
    bias_rate: bias ? biasRate : 0,
    bias_update: biasUpdate,
    batches: numBatches,
    min_tokens_threshold: minTokens,
    definitions:
      'tokens = (token, slot) assignments; share = tokens / Σ tokens; MaxVio = (max − mean) / mean load; ' +
      'σ = sample std (E − 1) of share within a layer, averaged over layers; entropy = H(share) / ln E; ' +
      'affinity c = the weight multiplying the expert output (after renormalisation and scaling); ' +
      '"natural" = the model’s own routing of the same hidden states, without the calibration bias; ' +
      `second half = batches ${Math.floor(numBatches / 2)}..${numBatches - 1}.`,
    layers,
    summary: {
      natural: averageSummaries(layers.map((l) => l.natural)),
      used: averageSummaries(layers.map((l) => l.used)),
      natural_second_half: averageSummaries(layers.map((l) => l.natural_second_half)),
      used_second_half: averageSummaries(layers.map((l) => l.used_second_half)),
    },
  };
  writeCalibrationDir(dir, {
    json: {
      model: path.resolve(opts.model),
      model_type: spec.family,
      model_fingerprint: modelFingerprint(engine.model),
      tokenizer: loadTokenizer(opts.model).hash,
      sampler: sampler.info,
      data: sampler.data,
      samples,
      seq_len: seqLen,
      seed,
      routing_bias: mode,
      bias_rate: bias ? biasRate : 0,
      bias_update: biasUpdate,
      batch_tokens: batchTokens,
      batches: numBatches,
      min_tokens: minTokens,
      tokens: samples * seqLen,
      versions: versions(),
    },
    windows,
    biasTrajectory: bias?.trajectory ?? new Map(),
    stats: [...stats.layers.values()].map((c) => {
      const meanAbs = new Float32Array(c.numExperts * c.hidden);
      for (let e = 0; e < c.numExperts; e++)
        for (let h = 0; h < c.hidden; h++) meanAbs[e * c.hidden + h] = c.usedTokens[e] ? c.inputAbsSum[e * c.hidden + h]! / c.usedTokens[e]! : 0;
      return { layer: c.layer, tokens: c.usedTokens, meanAbs, hidden: c.hidden };
    }),
    report,
  });
  return { report, seconds, sampler, samplerRun: samplerRun ?? {} };
}
