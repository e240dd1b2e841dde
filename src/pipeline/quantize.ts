/**
 * quantizeModel: the library call behind `moe-quant quantize`. Calibration comes from a calibration directory
 * (`calib`: its exact windows and routing biases) or is run inline from `data`; then the layer-sequential driver
 * quantizes, the writer emits a GPTQ checkpoint, and the balance report and quant report land next to the model.
 * Everything is built in a temporary directory and renamed into place when complete.
 */
import fs from 'node:fs';
import path from 'node:path';
import { calibrationSettings, runCalibration, type CalibrateOptions, type RoutingBiasMode } from '../calibration/calibrate.js';
import { OutputDir } from '../output/output-dir.js';
import { createEngine, type EngineOptions } from '../engine/engine.js';
import { modelFingerprint } from '../engine/model.js';
import { fail } from '../errors.js';
import { packGptq } from '../quantization/pack.js';
import { resolveGroupSize } from '../quantization/quantizer.js';
import type { ModelSpec } from '../architectures/types.js';
import { layerModuleGroups, type LinearModule } from './modules.js';
import { tensorBytes, type TensorToWrite } from '../checkpoint/safetensors.js';
import { writeBalanceReport } from '../report/index.js';
import { QUANT_REPORT_FORMAT, writeQuantReport, type QuantReport } from '../report/quant-report.js';
import { versions } from '../version.js';
import { QuantizedCheckpointWriter, type OutputFormat } from '../writers/gptq-checkpoint.js';
import { readCalibrationDir } from '../calibration/calibration-dir.js';
import { quantizeSequential, type Method, type ModuleRecord } from './quantize-model.js';

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
  format?: OutputFormat;
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
  onProgress?(stage: string, done: number, total: number): void;
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
}

/** The options with their defaults filled in, checked. */
function settings(o: QuantizeOptions) {
  const s = {
    method: o.method ?? 'agq',
    bits: o.bits ?? 4,
    format: o.format ?? 'gptq',
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

function validate(o: QuantizeOptions, { bits, format, method, groupSize: g }: { bits: number; format: string; method: string; groupSize: number }): void {
  if (![2, 3, 4, 8].includes(bits)) throw fail('BAD_OPTION', `--bits ${bits} is not supported (choose 2, 3, 4 or 8)`);
  if (!['gptq', 'gptq_v2', 'dequantized'].includes(format)) throw fail('BAD_OPTION', `--format must be gptq, gptq_v2 or dequantized (got ${format})`);
  if (format !== 'dequantized' && bits !== 4 && bits !== 8)
    throw fail('BAD_OPTION', `the GPTQ writer packs 4 or 8 bits; --bits ${bits} needs --format dequantized (float32 weights, for evaluation)`);
  if (!['rtn', 'gptq', 'agq'].includes(method)) throw fail('BAD_OPTION', `--method must be rtn, gptq or agq (got ${method})`);
  if (!(g === -1 || (Number.isInteger(g) && g > 0))) throw fail('BAD_OPTION', `--group-size must be a positive integer or -1 (got ${g})`);
  if (!(o.damp === undefined || (o.damp > 0 && o.damp < 1))) throw fail('BAD_OPTION', `--damp must be in (0, 1) (got ${o.damp})`);
  if (o.calib && o.data?.length) throw fail('BAD_OPTION', 'give either --calib or --data, not both');
  if (!o.calib && !o.data?.length) throw fail('BAD_OPTION', 'quantize needs calibration: --calib CALIB_DIR or --data FILE');
}

/**
 * Before any work: something must be left to quantize (`--skip '.*'` would write a "GPTQ" checkpoint of float
 * weights), and the group size must fit every linear that will be quantized.
 */
function checkModulePlan(spec: ModelSpec, cfg: { quantizeRouter: boolean; bits: number; groupSize: number; sym: boolean }, skip: string | undefined, leaveOut: (m: LinearModule) => boolean): void {
  const all = spec.layers.flatMap((l) => layerModuleGroups(spec, l, cfg).flatMap((g) => g.modules));
  const todo = all.filter((m) => !leaveOut(m));
  if (todo.length === 0)
    throw fail('BAD_OPTION', `${skip !== undefined ? `--skip ${JSON.stringify(skip)}` : 'the options'} leave${skip !== undefined ? 's' : ''} none of the model's ${all.length} linears to quantize`);
  for (const m of todo) {
    try {
      resolveGroupSize(cfg, m.K);
    } catch (e) {
      throw fail('BAD_OPTION', `${m.prefix}: ${(e as Error).message}; choose a --group-size that divides it, -1, or --skip it`);
    }
  }
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
  // GPTQ packs 32/bits output columns per int32 of qzeros: a linear with N not a multiple of that (a router with
  // 60 experts, Qwen2-MoE's 1-wide shared_expert_gate under --quantize-router) stays in floating point.
  const unpackable = (N: number) => format !== 'dequantized' && N % (32 / bits) !== 0;
  const leaveOut = (prefix: string, N: number) => Boolean(skip?.test(prefix)) || unpackable(N);
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
    const eng = (engine = await createEngine(o.model, o));
    o.onDevice?.(eng.deviceNote);
    if (eng.model.gptq)
      throw fail('UNSUPPORTED', `${o.model} is already a GPTQ checkpoint (quantization_config in config.json); quantize the original floating-point checkpoint`);
    checkModulePlan(eng.model.spec, cfg, o.skip, (m) => leaveOut(m.prefix, m.N));
    const fingerprint = modelFingerprint(eng.model);
    // Tensors outside the decoder layers (embeddings, final norm, lm_head, extras) are only copied, at the very end;
    // reading them now makes a NaN/Inf among them (every read is checked) fail before the long work.
    const inLayers = new Set(eng.model.expected.filter((t) => t.layer !== null).map((t) => t.name));
    for (const name of eng.model.checkpoint.names()) if (!inLayers.has(name)) eng.model.checkpoint.readBytes(name);
    let result!: QuantizeResult;
    {
      const tmp = output.tmp;
      let calibDir = o.calib ?? null;
      if (!calibDir) {
        calibDir = path.join(tmp, '.calibration');
        fs.mkdirSync(calibDir);
        o.onNote?.('calibrating inline (loss-free routing bias ' + (inline!.mode === 'loss-free' ? 'on' : 'off') + ')');
        await runCalibration(eng, { ...o.calibration, model: o.model, data: o.data!, routingBias: inline!.mode, onNote: o.onNote, onProgress: (d, t) => o.onProgress?.('calibrate', d, t) }, calibDir);
      }
      const calib = readCalibrationDir(calibDir, fingerprint);
      const writer = new QuantizedCheckpointWriter(tmp, eng.model, format, o.maxShardBytes);
      let expertSource = 0;
      let expertQuant = 0;
      const records: ModuleRecord[] = await quantizeSequential(
        eng,
        calib,
        {
          ...cfg,
          leaveOut: (m) => leaveOut(m.prefix, m.N),
          onProgress: (d, t) => o.onProgress?.('quantize', d, t),
        },
        (m, q) => {
          let tensors: TensorToWrite[];
          if (format === 'dequantized') {
            tensors = [{ name: m.weight, dtype: 'F32', shape: [m.N, m.K], data: tensorBytes(q.dequantized) }];
          } else {
            const p = packGptq(q, format);
            tensors = [
              { name: `${m.prefix}.qweight`, dtype: 'I32', shape: [q.K / (32 / bits), q.N], data: tensorBytes(p.qweight) },
              { name: `${m.prefix}.qzeros`, dtype: 'I32', shape: [q.K / q.groupSize, q.N / (32 / bits)], data: tensorBytes(p.qzeros) },
              { name: `${m.prefix}.scales`, dtype: 'F16', shape: [q.K / q.groupSize, q.N], data: tensorBytes(p.scales) },
              { name: `${m.prefix}.g_idx`, dtype: 'I32', shape: [q.K], data: tensorBytes(p.gIdx) },
            ];
          }
          if (m.kind === 'routed_expert') {
            const info = eng.model.checkpoint.info(m.weight);
            expertSource += info.byteLength;
            expertQuant += tensors.reduce((s, t) => s + (t.data as Uint8Array).byteLength, 0);
          }
          writer.add(m.weight, tensors);
        },
        (layer) => writer.flushLayer(layer.index),
      );
      const quantized = records.map((r) => r.module);
      const relNames = [...new Set(quantized.map((p) => p.replace(/^model\.layers\.\d+\./, '')))];
      // Modules left out whose name is quantized in other layers: GPTQModel/vLLM-style exclusions.
      const done = new Set(quantized);
      const relSet = new Set(relNames);
      const skipped = eng.model.expected
        .filter((t) => t.name.endsWith('.weight') && t.shape.length === 2)
        .map((t) => ({ prefix: t.name.slice(0, -'.weight'.length), N: t.shape[0]! }))
        .filter(({ prefix, N }) => !done.has(prefix) && relSet.has(prefix.replace(/^model\.layers\.\d+\./, '')) && leaveOut(prefix, N))
        .map(({ prefix }) => prefix);
      const dynamic = Object.fromEntries(skipped.map((p) => [`-:^${p.replace(/\./g, '\\.')}$`, {}]));
      const configExtra: Record<string, unknown> =
        format === 'dequantized'
          ? { moe_quant: { method, bits, group_size: cfg.groupSize, sym: cfg.sym, note: 'fake-quantized: dequantized float32 weights' } }
          : {
              quantization_config: {
                quant_method: 'gptq',
                bits,
                group_size: cfg.groupSize,
                desc_act: cfg.actOrder,
                static_groups: cfg.actOrder,
                sym: cfg.sym,
                lm_head: false,
                true_sequential: cfg.trueSequential,
                damp_percent: cfg.damp,
                checkpoint_format: format,
                pack_dtype: 'int32',
                modules_in_block_to_quantize: [relNames],
                ...(skipped.length ? { dynamic } : {}),
                meta: { quantizer: [`moe-quant:${versions()['moe-quant']}`], method, routing_bias: calib.routingBias },
              },
            };
      const modelFiles = writer.finish(configExtra);
      const byKind = new Map<string, number[]>();
      for (const r of records) if (Number.isFinite(r.rel_error)) byKind.set(r.kind, [...(byKind.get(r.kind) ?? []), r.rel_error]);
      const report: QuantReport = {
        format: QUANT_REPORT_FORMAT,
        model: path.resolve(o.model),
        model_type: eng.model.spec.family,
        method,
        bits,
        group_size: cfg.groupSize,
        sym: cfg.sym,
        act_order: cfg.actOrder,
        damp: cfg.damp,
        block_size: cfg.blockSize,
        output_format: format,
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
      };
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
