/**
 * The calibration directory (CALIB_DIR), written by `moe-quant calibrate` and read by `quantize --calib`. This module
 * is the only one that knows its files:
 *   calibration.json               what was run (model, fingerprint, sampler, data, seed, options, versions)
 *   tokens.safetensors             the windows (int32 [samples, seq_len]) — quantize reuses exactly these
 *   routing-bias.safetensors       per MoE layer the loss-free bias δ after each batch (float32 [batches, E]), so
 *                                  quantize replays the routing calibrate used, batch by batch
 *   expert-input-stats.safetensors per MoE layer: tokens [E] and mean |x| per input channel [E, hidden]
 *   calibration.jsonl              generated or selected samples (text and token ids), when the sampler made them
 *   balance-report.{json,md,html}  the report: output for people, never read back for the numbers above
 */
import fs from 'node:fs';
import path from 'node:path';
import { int32Of } from '../checkpoint/dtypes.js';
import { SafetensorsFile, tensorBytes, writeSafetensors, type TensorToWrite } from '../checkpoint/safetensors.js';
import { fail } from '../errors.js';
import { readBalanceReport, writeBalanceReport } from '../report/index.js';
import type { BalanceReport } from '../report/types.js';

export const CALIBRATION_FORMAT = 'moe-quant.calibration/2';
export const CALIBRATION_JSON = 'calibration.json';
export const TOKENS_FILE = 'tokens.safetensors';
export const ROUTING_BIAS_FILE = 'routing-bias.safetensors';
export const EXPERT_STATS_FILE = 'expert-input-stats.safetensors';
export const SAMPLES_FILE = 'calibration.jsonl';

/** Per MoE layer: tokens routed to each expert and the mean |x| of their inputs per channel. */
export interface ExpertInputStats {
  layer: number;
  tokens: ArrayLike<number>;
  /** [E, hidden] row-major. */
  meanAbs: Float32Array;
  hidden: number;
}

export interface CalibrationRecord {
  /** calibration.json, without `format` (added here). */
  json: Record<string, unknown>;
  windows: Int32Array[];
  /** MoE layer → δ after each batch (empty without loss-free bias). */
  biasTrajectory: Map<number, Float32Array[]>;
  stats: ExpertInputStats[];
  report: BalanceReport;
}

/** Write every file of a calibration directory into the existing directory `dir`. */
export function writeCalibrationDir(dir: string, c: CalibrationRecord): void {
  const seqLen = c.windows[0]!.length;
  const tokens = new Int32Array(c.windows.length * seqLen);
  c.windows.forEach((w, i) => tokens.set(w, i * seqLen));
  writeSafetensors(path.join(dir, TOKENS_FILE), [{ name: 'tokens', dtype: 'I32', shape: [c.windows.length, seqLen], data: tensorBytes(tokens) }]);
  const bias: TensorToWrite[] = [...c.biasTrajectory]
    .filter(([, rows]) => rows.length > 0)
    .map(([layer, rows]) => {
      const E = rows[0]!.length;
      const all = new Float32Array(rows.length * E);
      rows.forEach((r, b) => all.set(r, b * E));
      return { name: `layers.${layer}.bias_trajectory`, dtype: 'F32', shape: [rows.length, E], data: tensorBytes(all) };
    });
  writeSafetensors(path.join(dir, ROUTING_BIAS_FILE), bias, { format: 'moe-quant.routing-bias/1', meaning: 'row b = selection bias after batch b' });
  writeSafetensors(
    path.join(dir, EXPERT_STATS_FILE),
    c.stats.flatMap((s) => {
      const E = s.tokens.length;
      return [
        { name: `layers.${s.layer}.tokens`, dtype: 'I32' as const, shape: [E], data: tensorBytes(Int32Array.from(s.tokens)) },
        { name: `layers.${s.layer}.input_mean_abs`, dtype: 'F32' as const, shape: [E, s.hidden], data: tensorBytes(s.meanAbs) },
      ];
    }),
    { format: 'moe-quant.expert-input-stats/1', routing: 'used' },
  );
  fs.writeFileSync(path.join(dir, CALIBRATION_JSON), `${JSON.stringify({ format: CALIBRATION_FORMAT, ...c.json }, null, 2)}\n`);
  writeBalanceReport(dir, c.report);
}

/** What quantize needs from a calibration directory. */
export interface CalibrationInput {
  dir: string;
  windows: Int32Array[];
  batchTokens: number;
  routingBias: 'none' | 'loss-free';
  /** The balance report, to copy into the quantized model's directory. */
  report: BalanceReport;
  /** Selection bias for a MoE layer's batch b: δ after batch b−1 (null for the first batch or without bias). */
  biasFor(layer: number, batch: number): Float32Array | null;
  json: Record<string, unknown>;
}

function readJson(file: string): Record<string, unknown> {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw fail('BAD_DATA', `${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** calibration.json of a calibration directory, checked to be one (any model). */
export function readCalibrationJson(dir: string): Record<string, unknown> {
  const file = path.join(dir, CALIBRATION_JSON);
  if (!fs.existsSync(file)) throw fail('BAD_DATA', `${dir} is not a calibration directory (no ${CALIBRATION_JSON}); run moe-quant calibrate first`);
  const json = readJson(file);
  if (json['format'] === 'moe-quant.calibration/1')
    throw fail('BAD_DATA', `calibration ${dir} was written by an older moe-quant (format /1, bias trajectory inside the report); run moe-quant calibrate again`);
  if (json['format'] !== CALIBRATION_FORMAT) throw fail('BAD_DATA', `${file} is not a moe-quant calibration (format ${String(json['format'])})`);
  return json;
}

/** The token windows of a calibration directory (int32 [samples, seq_len]). */
export function readCalibrationTokens(dir: string): Int32Array[] {
  const file = path.join(dir, TOKENS_FILE);
  if (!fs.existsSync(file)) throw fail('BAD_DATA', `calibration ${dir} has no ${TOKENS_FILE}`);
  const st = SafetensorsFile.open(file);
  try {
    const info = st.tensors.get('tokens');
    if (!info || info.dtype !== 'I32' || info.shape.length !== 2) throw fail('BAD_DATA', `${file} has no int32 [samples, seq_len] "tokens" tensor`);
    const all = int32Of(st.readBytes('tokens'));
    const [samples, seqLen] = info.shape as [number, number];
    return Array.from({ length: samples }, (_, i) => all.subarray(i * seqLen, (i + 1) * seqLen));
  } finally {
    st.close();
  }
}

/** Read a calibration directory for the model with fingerprint `expectFingerprint`. */
export function readCalibrationDir(dir: string, expectFingerprint: string): CalibrationInput {
  const json = readCalibrationJson(dir);
  if (json['model_fingerprint'] !== expectFingerprint)
    throw fail(
      'BAD_DATA',
      `calibration ${dir} was made for another model (${String(json['model'])}, ${String(json['model_type'])}); calibrate this model first`,
    );
  const windows = readCalibrationTokens(dir);
  const biasFile = path.join(dir, ROUTING_BIAS_FILE);
  if (!fs.existsSync(biasFile)) throw fail('BAD_DATA', `calibration ${dir} has no ${ROUTING_BIAS_FILE}`);
  const trajectories = new Map<number, { rows: Float32Array; E: number; batches: number }>();
  const st = SafetensorsFile.open(biasFile);
  try {
    for (const info of st.tensors.values()) {
      const m = /^layers\.(\d+)\.bias_trajectory$/.exec(info.name);
      if (!m || info.dtype !== 'F32' || info.shape.length !== 2) throw fail('BAD_DATA', `${biasFile}: unexpected tensor ${info.name}`);
      trajectories.set(Number(m[1]), { rows: st.readFloat32(info.name), batches: info.shape[0]!, E: info.shape[1]! });
    }
  } finally {
    st.close();
  }
  const routingBias = json['routing_bias'] === 'loss-free' ? 'loss-free' : 'none';
  return {
    dir,
    windows,
    batchTokens: Number(json['batch_tokens']),
    routingBias,
    report: readBalanceReport(dir),
    json,
    biasFor(layer, batch) {
      const t = trajectories.get(layer);
      if (routingBias === 'none' || batch === 0 || !t || batch - 1 >= t.batches) return null;
      return t.rows.slice((batch - 1) * t.E, batch * t.E);
    },
  };
}
