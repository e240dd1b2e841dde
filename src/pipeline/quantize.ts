/**
 * quantizeModel: the library call behind `moe-quant quantize`. Calibration comes from a calibration directory
 * (`calib`: its exact windows and routing biases) or is run inline from `data`; then the layer-sequential driver
 * quantizes, the writer emits a GPTQ checkpoint, and the balance report and quant report land next to the model.
 * Everything is built in a temporary directory and renamed into place when complete.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { calibrationSettings, runCalibration, type CalibrateOptions, type RoutingBiasMode } from '../calibration/calibrate.js';
import { OutputDir } from '../output/output-dir.js';
import { createEngine, type EngineOptions } from '../engine/engine.js';
import { modelFingerprint } from '../engine/model.js';
import { fail } from '../errors.js';
import { resolveGroupSize } from '../quantization/quantizer.js';
import { convertToGguf } from '../formats/gguf/convert.js';
import { ggufBits } from '../formats/gguf/index.js';
import { GGUF_TYPES, type GgufOptions, type GgufTypeName } from '../formats/gguf/writer.js';
import { FORMAT_NAMES, outputFormat } from '../formats/registry.js';
import type { ModelSpec } from '../architectures/types.js';
import { layerModuleGroups, type LinearModule } from './modules.js';
import { writeBalanceReport } from '../report/index.js';
import { QUANT_REPORT_FORMAT, writeQuantReport, type QuantReport } from '../report/quant-report.js';
import { readCalibrationDir, type CalibrationInput } from '../calibration/calibration-dir.js';
import { autoMemoryBudget, gib, planQuantizeMemory, AUTO_BUDGET_FRACTION, type QuantizeMemoryPlan } from '../calibration/memory.js';
import { SolvePool } from './solve-pool.js';
import { quantizeSequential, weightedSumsOnly, type Method, type ModuleRecord } from './quantize-model.js';

export interface QuantizeOptions extends EngineOptions {
  model: string;
  out: string;
  /** Calibration directory from `moe-quant calibrate`. */
  calib?: string;
  /** Or: calibration text, calibrated inline (calibrate's defaults unless `calibration` says otherwise). */
  data?: string[];
  routingBias?: RoutingBiasMode;
  /** Inline calibration settings (samples, seq-len, seed, bias rate, …). */
  calibration?: Pick<CalibrateOptions, 'samples' | 'seqLen' | 'seed' | 'biasRate' | 'biasUpdate' | 'batchTokens' | 'minTokens'>;
  /** Held-out text the caller will evaluate on afterwards: only checked not to lie inside `out`. */
  evalData?: string;
  method?: Method;
  bits?: number;
  groupSize?: number;
  sym?: boolean;
  actOrder?: boolean;
  damp?: number;
  blockSize?: number;
  /** Output format: gptq (default), gptq_v2, dequantized or gguf (formats/registry.ts). */
  format?: string;
  /** --format gguf: the linears' GGUF type, embedding/head type, and llama-quantize's fallback for rows that do not fit. */
  gguf?: Partial<GgufOptions>;
  /** Regular expression on module names (e.g. `model.layers.0.self_attn.q_proj`) to leave unquantized. */
  skip?: string;
  quantizeRouter?: boolean;
  /** Default true; false = one calibration pass per layer (see SequentialOptions.trueSequential). */
  trueSequential?: boolean;
  force?: boolean;
  /**
   * Record per-module seconds in quant-report. Off by default: timings differ run to run, and without them the same
   * inputs give a byte-identical output directory.
   */
  timings?: boolean;
  maxShardBytes?: number;
  /**
   * Bytes a layer may hold while it is quantized (--max-memory); decides how many experts' Hessians one pass
   * collects and whether dequantized experts and the calibration activations wait in scratch files. Default: autoMemoryBudget() (calibration/memory.ts).
   */
  maxMemory?: number;
  /**
   * GPTQ / AGQ solves in parallel worker threads (--solve-threads; 1: in the main thread). Default on the CPU: one
   * per core when the model's linears are large enough to pay for the threads (PARALLEL_SOLVE_MIN_WEIGHTS), else 1.
   * The memory plan may lower it. Results do not change.
   */
  solveThreads?: number;
  onProgress?(stage: string, done: number, total: number): void;
  /** A decoder layer is quantized and handed to the writer (quantize stage). */
  onLayer?(index: number): void;
  onNote?(note: string): void;
  /** Called once the device is known (e.g. to print it). */
  onDevice?(note: string): void;
}

export interface QuantizeResult {
  out: string;
  /** source_model: the input checkpoint's safetensors files; model: the output's. */
  files: { source_model: string[]; model: string[]; quant_report_json: string; quant_report_md: string; balance_report: string[] };
  report: QuantReport;
  seconds: number;
  summary: { maxvio_natural: number; maxvio_used: number };
  /** How the run fitted its memory budget (not in quant-report: the automatic budget depends on the machine). */
  memory: MemoryReport | null;
}

export interface MemoryReport {
  budget_bytes: number;
  budget_source: 'max-memory' | 'auto';
  /** Routed experts per layer, and how many of their gate/up Hessians one pass collected. */
  experts: number;
  expert_chunk: number;
  /** Dequantized experts kept in a scratch file in the output's temporary directory. */
  spill_dequantized: boolean;
  /** The calibration activations kept in scratch files there (read back a batch at a time). */
  spill_activations: boolean;
  /** Bytes of activations beyond one batch's, per layer: what spilling them saves (in fixed_bytes unless spilled). */
  activation_bytes: number;
  estimated_peak_bytes: number;
  /** The estimate's parts: bytes a layer holds whatever the chunk, and one expert's gate/up Hessian. */
  fixed_bytes: number;
  per_expert_hessian_bytes: number;
  /** Most bytes of routed experts' Hessians any capture pass held (at most expert_chunk × per_expert_hessian_bytes). */
  max_expert_hessian_bytes: number;
  /** Solves run in parallel worker threads (1: in the main thread). */
  solve_threads: number;
}

/**
 * Below this many weights in the largest linear, solves stay in the main thread by default: a solve takes
 * milliseconds there, less than a worker takes to start.
 */
export const PARALLEL_SOLVE_MIN_WEIGHTS = 1 << 20;

/** The options with their defaults filled in, checked. */
function settings(o: QuantizeOptions) {
  const format = o.format ?? 'gptq';
  const type = o.gguf?.type ?? 'q4_0';
  const gguf: GgufOptions | undefined = format === 'gguf' ? { type, keep: o.gguf?.keep ?? (type.startsWith('f') ? type : 'q8_0'), fallback: o.gguf?.fallback ?? false } : undefined;
  if (gguf && !GGUF_TYPES.includes(gguf.type as GgufTypeName)) throw fail('BAD_OPTION', `--gguf-type must be one of ${GGUF_TYPES.join(', ')} (got ${gguf.type})`);
  if (gguf && !['q8_0', 'f16', 'f32'].includes(gguf.keep!)) throw fail('BAD_OPTION', `--gguf-keep must be q8_0, f16 or f32 (got ${gguf.keep})`);
  const s = {
    method: o.method ?? 'agq',
    bits: gguf ? ggufBits(gguf.type) : (o.bits ?? 4),
    format,
    gguf,
    groupSize: o.groupSize ?? 128,
    sym: o.sym ?? false,
    actOrder: o.actOrder ?? false,
    damp: o.damp ?? 0.01,
    blockSize: o.blockSize ?? 128,
    quantizeRouter: o.quantizeRouter ?? false,
    trueSequential: o.trueSequential ?? true,
  };
  validate(o, s);
  return s;
}

/** A GGUF type without a grid (f32, f16): a plain conversion, no calibration. */
const floatGguf = (s: { gguf?: GgufOptions }) => s.gguf !== undefined && !s.gguf.type.startsWith('q');

function validate(o: QuantizeOptions, s: { bits: number; format: string; method: string; groupSize: number; gguf?: GgufOptions }): void {
  const { bits, format, method, groupSize: g } = s;
  if (!FORMAT_NAMES.includes(format)) throw fail('BAD_OPTION', `--format must be one of ${FORMAT_NAMES.join(', ')} (got ${format})`);
  if (format !== 'gguf' && ![2, 3, 4, 8].includes(bits)) throw fail('BAD_OPTION', `--bits ${bits} is not supported (choose 2, 3, 4 or 8)`);
  if (!['rtn', 'gptq', 'agq'].includes(method)) throw fail('BAD_OPTION', `--method must be rtn, gptq or agq (got ${method})`);
  if (!(g === -1 || (Number.isInteger(g) && g > 0))) throw fail('BAD_OPTION', `--group-size must be a positive integer or -1 (got ${g})`);
  if (!(o.damp === undefined || (o.damp > 0 && o.damp < 1))) throw fail('BAD_OPTION', `--damp must be in (0, 1) (got ${o.damp})`);
  if (o.calib && o.data?.length) throw fail('BAD_OPTION', 'give either --calib or --data, not both');
  if (!o.calib && !o.data?.length && !floatGguf(s)) throw fail('BAD_OPTION', 'quantize needs calibration: --calib CALIB_DIR or --data FILE');
}

/**
 * Before any work: something must be left to quantize (`--skip '.*'` would write a "GPTQ" checkpoint of float
 * weights), the group size must be valid (any K: a group size that does not divide it leaves a shorter last
 * group) and the format must be able to store every linear that will be quantized (`check`).
 */
function checkModulePlan(
  spec: ModelSpec,
  cfg: { quantizeRouter: boolean; bits: number; groupSize: number; sym: boolean; format: string },
  skip: string | undefined,
  leaveOut: (m: LinearModule) => boolean,
  check?: (m: LinearModule) => void,
): LinearModule[] {
  const all = spec.layers.flatMap((l) => layerModuleGroups(spec, l, cfg).flatMap((g) => g.modules));
  const todo = all.filter((m) => !leaveOut(m));
  if (todo.length === 0)
    throw fail('BAD_OPTION', `${skip !== undefined ? `--skip ${JSON.stringify(skip)}` : 'the options'} leave${skip !== undefined ? 's' : ''} none of the model's ${all.length} linears to quantize`);
  // GGUF: the type fixes the blocks (its writer checked every row length when it opened).
  if (cfg.format === 'gguf') return todo;
  for (const m of todo) {
    try {
      resolveGroupSize(cfg, m.K);
    } catch (e) {
      throw fail('BAD_OPTION', `${m.prefix}: ${(e as Error).message}`);
    }
    check?.(m);
  }
  return todo;
}

export async function quantizeModel(o: QuantizeOptions): Promise<QuantizeResult> {
  const cfg = settings(o);
  const { method, bits, format } = cfg;
  let skip: RegExp | null = null;
  if (o.skip) {
    try {
      skip = new RegExp(o.skip);
    } catch (e) {
      throw fail('BAD_OPTION', `--skip is not a valid regular expression: ${(e as Error).message}`);
    }
  }
  if (floatGguf(cfg)) return exportFloatGguf(o, cfg);
  const inline = o.calib ? null : calibrationSettings({ ...o.calibration, data: o.data!, routingBias: o.routingBias });
  const inputs: Array<[string, string]> = [
    ...(o.calib ? [['--calib', o.calib] as [string, string]] : []),
    ...(o.data ?? []).map((d) => ['--data', d] as [string, string]),
    ...(o.evalData ? [['--eval-data', o.evalData] as [string, string]] : []),
  ];
  const output = OutputDir.open({ out: o.out, kind: 'model', model: o.model, inputs, force: o.force, onNote: o.onNote });
  const t0 = performance.now();
  let engine: Awaited<ReturnType<typeof createEngine>> | null = null;
  try {
    // No onnxruntime arena: with it every graph's session kept its largest buffers, and a real-shape layer's peak
    // grew from 4.4 to 6.2 GB during the final pass alone (README "Real sizes").
    const eng = (engine = await createEngine(o.model, { memArena: false, ...o }));
    o.onDevice?.(eng.deviceNote);
    if (eng.model.gptq)
      throw fail('UNSUPPORTED', `${o.model} is already a GPTQ checkpoint (quantization_config in config.json); quantize the original floating-point checkpoint`);
    if (eng.model.gguf) throw fail('UNSUPPORTED', `${o.model} is a GGUF file; quantize the original Hugging Face checkpoint`);
    // The format checks the model can be written (e.g. GGUF: llama.cpp can represent it) before any work.
    const writer = outputFormat(format).open(output.tmp, eng.model, { ...cfg, maxShardBytes: o.maxShardBytes });
    // A linear the format cannot store quantized (GPTQ: N not a multiple of 32/bits, e.g. a router with 60 experts
    // or Qwen2-MoE's 1-wide shared_expert_gate under --quantize-router) stays in floating point.
    const shapes = new Map(eng.model.expected.map((t) => [t.name.replace(/\.weight$/, ''), t.shape]));
    const leaveOut = (prefix: string, N: number) =>
      Boolean(skip?.test(prefix)) || writer.keepsFloat({ weight: `${prefix}.weight`, N, K: shapes.get(prefix)?.[1] ?? 0 });
    let result!: QuantizeResult;
    let solvers: SolvePool | null = null;
    try {
      const todo = checkModulePlan(eng.model.spec, cfg, o.skip, (m) => leaveOut(m.prefix, m.N), writer.check?.bind(writer));
      const planNote = writer.note?.(todo);
      if (planNote) o.onNote?.(planNote);
      if (skip) writer.leaveFloat?.((weight) => skip!.test(weight.replace(/\.weight$/, '')));
      const fingerprint = modelFingerprint(eng.model);
      // Tensors outside the decoder layers (embeddings, final norm, lm_head, extras) are only copied, at the very end;
      // reading them now makes a NaN/Inf among them (every read is checked) fail before the long work.
      const inLayers = new Set(eng.model.expected.filter((t) => t.layer !== null).map((t) => t.name));
      for (const name of eng.model.checkpoint.names()) if (!inLayers.has(name)) eng.model.checkpoint.readBytes(name);
      const tmp = output.tmp;
      let calibDir = o.calib ?? null;
      const given: CalibrationInput | null = calibDir ? readCalibrationDir(calibDir, fingerprint) : null;
      // The memory plan, before any work: a budget too small for one expert fails here.
      const tokens = given ? given.windows.length * given.windows[0]!.length : inline!.samples * inline!.seqLen;
      const budget = o.maxMemory ?? autoMemoryBudget();
      // Worker threads solve on the CPU provider (GPU devices solve here); round-to-nearest on the min-max grid is
      // cheap enough for this thread, on a GGUF grid it is not (the K-quants' scale searches).
      const parallelSolves = eng.pool.device === 'cpu' && (method !== 'rtn' || writer.grid !== undefined);
      const cores = o.threads ?? Math.max(1, os.availableParallelism());
      const largestLinear = Math.max(0, ...eng.model.expected.filter((t) => t.layer !== null && t.shape.length === 2).map((t) => t.shape[0]! * t.shape[1]!));
      const plan = planQuantizeMemory(budget, {
        spec: eng.model.spec,
        tokens,
        batchTokens: given ? given.batchTokens : inline!.batchTokens,
        weightedOnly: weightedSumsOnly(method),
        residentBytes: eng.weights.resident ? eng.weights.residentBytes : null,
        expertChunkBytes: eng.forward.expertChunkBytes,
        // What the writer holds per weight until the layer is written: float32, or the levels plus scales/zeros.
        outputBytesPerWeight: format === 'dequantized' ? 4 : bits / 8 + 4 / (cfg.groupSize > 0 ? cfg.groupSize : 128),
        solveThreads: parallelSolves ? (o.solveThreads ?? (largestLinear >= PARALLEL_SOLVE_MIN_WEIGHTS ? cores : 1)) : 1,
      });
      if (plan.solveThreads > 1) solvers = new SolvePool(plan.solveThreads, Math.max(1, Math.floor(cores / plan.solveThreads)), eng.pool);
      o.onNote?.(memoryNote(plan, o.maxMemory === undefined));
      if (!calibDir) {
        calibDir = path.join(tmp, '.calibration');
        fs.mkdirSync(calibDir);
        o.onNote?.('calibrating inline (loss-free routing bias ' + (inline!.mode === 'loss-free' ? 'on' : 'off') + ')');
        await runCalibration(eng, { ...o.calibration, model: o.model, data: o.data!, routingBias: inline!.mode, onNote: o.onNote, onProgress: (d, t) => o.onProgress?.('calibrate', d, t) }, calibDir);
      }
      const calib = given ?? readCalibrationDir(calibDir, fingerprint);
      let maxExpertHessianBytes = 0;
      let expertSource = 0;
      let expertQuant = 0;
      const records: ModuleRecord[] = await quantizeSequential(
        eng,
        calib,
        {
          ...cfg,
          leaveOut: (m) => leaveOut(m.prefix, m.N),
          ...(writer.grid ? { grid: (m: LinearModule) => writer.grid!(m) } : {}),
          memory: plan,
          ...(solvers ? { solvers } : {}),
          spillDir: tmp,
          onPass: (p) => (maxExpertHessianBytes = Math.max(maxExpertHessianBytes, p.expertHessianBytes)),
          onProgress: (d, t) => o.onProgress?.('quantize', d, t),
          ...(o.onLayer ? { onLayer: o.onLayer } : {}),
        },
        (m, q) => {
          const stored = writer.add(m, q);
          if (m.kind === 'routed_expert') {
            expertSource += eng.model.checkpoint.info(m.weight).byteLength;
            expertQuant += stored;
          }
        },
        (layer) => writer.flushLayer(layer.index),
      );
      const modelFiles = writer.finish({ quantized: records.map((r) => r.module), leftOut: leaveOut, routingBias: calib.routingBias });
      const byKind = new Map<string, number[]>();
      for (const r of records) if (Number.isFinite(r.rel_error)) byKind.set(r.kind, [...(byKind.get(r.kind) ?? []), r.rel_error]);
      const report: QuantReport = {
        format: QUANT_REPORT_FORMAT,
        model: path.resolve(o.model),
        model_type: eng.model.spec.family,
        method,
        bits,
        // GGUF: the type's block (32, or 256 for K-quants); its grid fixes symmetry.
        group_size: cfg.gguf ? (cfg.gguf.type.endsWith('_k') ? 256 : 32) : cfg.groupSize,
        sym: cfg.gguf ? cfg.gguf.type === 'q4_0' || cfg.gguf.type === 'q5_0' || cfg.gguf.type === 'q8_0' || cfg.gguf.type === 'q6_k' : cfg.sym,
        act_order: cfg.actOrder,
        damp: cfg.damp,
        block_size: cfg.blockSize,
        output_format: cfg.gguf ? `gguf ${cfg.gguf.type}` : format,
        calibration: { dir: o.calib ? path.resolve(o.calib) : null, samples: calib.windows.length, seq_len: calib.windows[0]!.length, routing_bias: calib.routingBias },
        modules: o.timings ? records : records.map((r) => ({ ...r, seconds: null })),
        totals: {
          modules: records.length,
          seconds: o.timings ? records.reduce((s, r) => s + (r.seconds ?? 0), 0) : null,
          mean_rel_error: Object.fromEntries([...byKind].map(([k, v]) => [k, v.reduce((a, b) => a + b, 0) / v.length])),
          expert_bytes_source: expertSource,
          expert_bytes_quantized: expertQuant,
        },
        fallbacks: records.filter((r) => r.fallback).map((r) => ({ module: r.module, reason: r.fallback! })),
      };
      const qr = writeQuantReport(tmp, report);
      const br = writeBalanceReport(tmp, calib.report);
      if (!o.calib) fs.rmSync(calibDir, { recursive: true, force: true });
      const rel = (p: string) => path.join(output.target, path.basename(p));
      result = {
        out: output.target,
        files: { source_model: [...eng.model.checkpoint.files], model: modelFiles.map(rel), quant_report_json: rel(qr.json), quant_report_md: rel(qr.md), balance_report: [br.json, br.md, br.html].map(rel) },
        report,
        seconds: 0,
        summary: { maxvio_natural: calib.report.summary.natural.maxvio, maxvio_used: calib.report.summary.used.maxvio },
        memory: {
          budget_bytes: plan.budget,
          budget_source: o.maxMemory === undefined ? 'auto' : 'max-memory',
          experts: plan.experts,
          expert_chunk: plan.chunk,
          spill_dequantized: plan.spill,
          spill_activations: plan.spillActivations,
          activation_bytes: plan.activationBytes,
          estimated_peak_bytes: plan.peak,
          fixed_bytes: plan.fixed,
          per_expert_hessian_bytes: plan.perExpert,
          max_expert_hessian_bytes: maxExpertHessianBytes,
          solve_threads: plan.solveThreads,
        },
      };
    } catch (e) {
      writer.abort();
      throw e;
    } finally {
      await solvers?.close();
    }
    if (process.env['MOE_QUANT_PROFILE'])
      for (const [k, v] of [...eng.pool.byKey].sort((a, b) => b[1].ms - a[1].ms)) o.onNote?.(`ort ${k}: ${(v.ms / 1000).toFixed(2)} s in ${v.runs} runs`);
    await engine.close();
    engine = null;
    output.commit();
    result.seconds = (performance.now() - t0) / 1000;
    return result;
  } catch (e) {
    output.abort();
    throw e;
  } finally {
    await engine?.close();
  }
}

/** The stderr line that says how the run fits its budget. */
function memoryNote(p: QuantizeMemoryPlan, auto: boolean): string {
  const source = auto ? ` (auto: ${Math.round(AUTO_BUDGET_FRACTION * 100)}% of available memory; set with --max-memory)` : '';
  const experts =
    p.experts === 0
      ? 'no routed experts'
      : p.chunk >= p.experts
        ? `all ${p.experts} experts' Hessians at once per layer`
        : `experts' Hessians in chunks of ${p.chunk} (of ${p.experts}) per layer`;
  const solves = p.solveThreads > 1 ? `, ${p.solveThreads} solves in parallel threads` : '';
  const spilled = [p.spill ? 'dequantized experts' : '', p.spillActivations ? 'calibration activations' : ''].filter(Boolean);
  const files = spilled.length ? `, ${spilled.join(' and ')} in ${spilled.length > 1 ? 'scratch files' : 'a scratch file'}` : '';
  return `memory: budget ${gib(p.budget)}${source} → ${experts}${files}${solves}; estimated peak ${gib(p.peak)}`;
}

/**
 * `--format gguf --gguf-type f32|f16`: nothing to solve, so no calibration and no engine — the checkpoint's
 * tensors converted to the GGUF layout (routers, norms and biases F32), with a quant report that says so.
 */
async function exportFloatGguf(o: QuantizeOptions, cfg: ReturnType<typeof settings>): Promise<QuantizeResult> {
  const output = OutputDir.open({ out: o.out, kind: 'model', model: o.model, inputs: [], force: o.force, onNote: o.onNote });
  const t0 = performance.now();
  try {
    const file = await convertToGguf(o.model, output.tmp, cfg.gguf!);
    const { openModel } = await import('../engine/model.js');
    const m = openModel(o.model);
    const sourceFiles = [...m.checkpoint.files];
    const family = m.spec.family;
    m.checkpoint.close();
    const report: QuantReport = {
      format: QUANT_REPORT_FORMAT,
      model: path.resolve(o.model),
      model_type: family,
      method: 'none',
      bits: cfg.bits,
      group_size: -1,
      sym: false,
      act_order: false,
      damp: 0,
      block_size: 0,
      output_format: `gguf ${cfg.gguf!.type}`,
      calibration: { dir: null, samples: 0, seq_len: 0, routing_bias: 'none' },
      modules: [],
      totals: { modules: 0, seconds: null, mean_rel_error: {}, expert_bytes_source: 0, expert_bytes_quantized: 0 },
      fallbacks: [],
    };
    const qr = writeQuantReport(output.tmp, report);
    const rel = (p: string) => path.join(output.target, path.basename(p));
    const out = output.commit();
    return {
      out,
      files: { source_model: sourceFiles, model: [rel(file)], quant_report_json: rel(qr.json), quant_report_md: rel(qr.md), balance_report: [] },
      report,
      seconds: (performance.now() - t0) / 1000,
      summary: { maxvio_natural: NaN, maxvio_used: NaN },
      memory: null,
    };
  } catch (e) {
    output.abort();
    throw e;
  }
}
