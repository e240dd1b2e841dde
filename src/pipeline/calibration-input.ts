/**
 * What quantize needs from a calibration directory: the exact token windows, the batch partition, and the routing
 * biases each batch was routed with (replayed from the recorded δ trajectory, so AGQ weights tokens by the routing
 * calibration reported).
 */
import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsFile } from '../checkpoint/safetensors.js';
import { int32Of } from '../checkpoint/dtypes.js';
import { CALIBRATION_FORMAT } from '../calibration/calibrate.js';
import { fail } from '../errors.js';
import { readBalanceReport } from '../report/index.js';
import type { BalanceReport } from '../report/types.js';

export interface CalibrationInput {
  dir: string;
  windows: Int32Array[];
  batchTokens: number;
  routingBias: 'none' | 'loss-free';
  report: BalanceReport;
  /** Selection bias for a MoE layer's batch b: δ after batch b−1 (zeros for the first batch or without bias). */
  biasFor(layer: number, batch: number): Float32Array | null;
  json: Record<string, unknown>;
}

export function readCalibration(dir: string, expectFingerprint: string): CalibrationInput {
  const file = path.join(dir, 'calibration.json');
  if (!fs.existsSync(file)) throw fail('BAD_DATA', `${dir} is not a calibration directory (no calibration.json); run moe-quant calibrate first`);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    throw fail('BAD_DATA', `${file} is not valid JSON`);
  }
  if (json['format'] !== CALIBRATION_FORMAT) throw fail('BAD_DATA', `${file} is not a moe-quant calibration (format ${String(json['format'])})`);
  if (json['model_fingerprint'] !== expectFingerprint)
    throw fail(
      'BAD_DATA',
      `calibration ${dir} was made for another model (${String(json['model'])}, ${String(json['model_type'])}); calibrate this model first`,
    );
  const tokensFile = path.join(dir, 'tokens.safetensors');
  if (!fs.existsSync(tokensFile)) throw fail('BAD_DATA', `calibration ${dir} has no tokens.safetensors`);
  const st = SafetensorsFile.open(tokensFile);
  const info = st.tensors.get('tokens');
  if (!info || info.dtype !== 'I32' || info.shape.length !== 2) throw fail('BAD_DATA', `${tokensFile} has no int32 [samples, seq_len] "tokens" tensor`);
  const bytes = st.readBytes('tokens');
  st.close();
  const all = int32Of(bytes);
  const [samples, seqLen] = info.shape as [number, number];
  const windows = Array.from({ length: samples }, (_, i) => all.subarray(i * seqLen, (i + 1) * seqLen));
  const report = readBalanceReport(dir);
  const byLayer = new Map(report.layers.map((l) => [l.layer, l]));
  const routingBias = json['routing_bias'] === 'loss-free' ? 'loss-free' : 'none';
  return {
    dir,
    windows,
    batchTokens: Number(json['batch_tokens']),
    routingBias,
    report,
    json,
    biasFor(layer, batch) {
      if (routingBias === 'none' || batch === 0) return null;
      const traj = byLayer.get(layer)?.bias_trajectory;
      const row = traj?.[batch - 1];
      return row ? Float32Array.from(row) : null;
    },
  };
}
