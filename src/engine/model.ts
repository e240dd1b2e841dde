/**
 * Opening a model directory: config.json → ModelSpec, safetensors → Checkpoint, and a check that every tensor the
 * spec needs exists with the shape config.json implies (so a bad checkpoint fails in seconds, not mid-run).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { specFromConfig } from '../architectures/registry.js';
import { expectedTensors, type ExpectedTensor } from '../architectures/shapes.js';
import type { ModelSpec } from '../architectures/types.js';
import { Checkpoint } from '../checkpoint/checkpoint.js';
import type { DType } from '../checkpoint/dtypes.js';
import { fail } from '../errors.js';
import { GgufCheckpoint, ggufPath, openGguf } from '../formats/gguf/reader.js';

/** What the engine reads of a checkpoint: a safetensors directory or a GGUF file seen with Hugging Face names. */
export type TensorStore = Pick<Checkpoint, 'dir' | 'files' | 'totalBytes' | 'names' | 'has' | 'info' | 'readBytes' | 'readFloat32' | 'readFloat32Into' | 'readRowsFloat32' | 'close'>;

/** GPTQ quantization of a checkpoint (config.json `quantization_config`). */
export interface GptqConfig {
  bits: number;
  groupSize: number;
  sym: boolean;
  format: 'gptq' | 'gptq_v2';
  descAct: boolean;
}

export interface LoadedModel {
  dir: string;
  config: Record<string, unknown>;
  spec: ModelSpec;
  checkpoint: TensorStore;
  expected: ExpectedTensor[];
  /** Set for a GGUF file (tensors dequantized on load). */
  gguf: GgufCheckpoint | null;
  /** Set for GPTQ checkpoints. */
  gptq: GptqConfig | null;
  /** Linear weights stored packed: `<prefix>.weight` → its [N, K]. */
  packed: Map<string, { prefix: string; N: number; K: number }>;
}

function gptqConfig(config: Record<string, unknown>, file: string): GptqConfig | null {
  const q = config['quantization_config'] as Record<string, unknown> | undefined;
  if (!q || typeof q !== 'object') return null;
  if (q['quant_method'] !== 'gptq') throw fail('UNSUPPORTED', `${file}: quantization_config.quant_method "${String(q['quant_method'])}" is not supported (gptq is)`);
  const bits = Number(q['bits']);
  if (![2, 3, 4, 8].includes(bits)) throw fail('UNSUPPORTED', `${file}: GPTQ with ${bits} bits is not supported (2, 3, 4 or 8)`);
  const format = (q['checkpoint_format'] ?? 'gptq') as string;
  if (format !== 'gptq' && format !== 'gptq_v2') throw fail('UNSUPPORTED', `${file}: GPTQ checkpoint_format "${format}" is not supported (gptq, gptq_v2)`);
  // GPTQModel can pack into int8/int16/int64 words (other shapes and bit layouts); AutoGPTQ and the default are int32.
  const packDtype = q['pack_dtype'] ?? 'int32';
  if (packDtype !== 'int32') throw fail('UNSUPPORTED', `${file}: GPTQ pack_dtype "${String(packDtype)}" is not supported (int32)`);
  return { bits, groupSize: Number(q['group_size'] ?? -1), sym: Boolean(q['sym']), format, descAct: Boolean(q['desc_act']) };
}

/**
 * Dtypes a packed linear's tensors may have. Integer tensors are int32 words (AutoGPTQ, GPTQModel's default
 * pack_dtype; g_idx is int32 in both). Scales are fp16 as written by AutoGPTQ/GPTQModel; bf16 and fp32 (models
 * re-saved in another dtype) are read as what they are.
 */
const PACKED_DTYPES: Record<string, readonly DType[]> = { qweight: ['I32'], qzeros: ['I32'], scales: ['F16', 'BF16', 'F32'], g_idx: ['I32'] };

/** Check a packed linear's tensors against the [N, K] config.json implies, and their dtypes. */
function checkPacked(checkpoint: Checkpoint, prefix: string, N: number, K: number, q: GptqConfig): void {
  const G = q.groupSize > 0 ? Math.ceil(K / q.groupSize) : 1;
  // bits/32 int32 words per value (3 bits: 32 values in 3 words).
  const want: Record<string, number[]> = { qweight: [(K * q.bits) / 32, N], qzeros: [G, (N * q.bits) / 32], scales: [G, N], g_idx: [K] };
  for (const [suffix, shape] of Object.entries(want)) {
    const name = `${prefix}.${suffix}`;
    if (!checkpoint.has(name)) {
      if (suffix === 'g_idx') continue; // optional in some exporters: k // group_size is implied
      throw fail('BAD_CHECKPOINT', `tensor ${name} is missing from the GPTQ checkpoint`);
    }
    const info = checkpoint.info(name);
    const dtypes = PACKED_DTYPES[suffix]!;
    if (!dtypes.includes(info.dtype))
      throw fail('UNSUPPORTED', `tensor ${name} has dtype ${info.dtype}; GPTQ ${suffix} must be ${dtypes.join(', ')} (${path.basename(info.file)})`);
    if (info.shape.join(',') !== shape.join(','))
      throw fail('BAD_CHECKPOINT', `tensor ${name} has shape [${info.shape}] but config.json implies [${shape}]`);
  }
}

/** Read and parse `dir/config.json`. */
export function readConfig(dir: string): Record<string, unknown> {
  const gguf = ggufPath(dir);
  if (gguf) {
    const { g, config } = openGguf(gguf);
    g.close();
    return config;
  }
  if (!fs.existsSync(dir)) throw fail('BAD_CHECKPOINT', `model directory ${dir} does not exist`);
  if (!fs.statSync(dir).isDirectory())
    throw fail('BAD_CHECKPOINT', `--model ${dir} is a file; give the checkpoint directory that holds config.json (${path.dirname(dir)}?)`);
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw fail('BAD_CONFIG', `${file} is missing`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw fail('BAD_CONFIG', `${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw fail('BAD_CONFIG', `${file} is not a JSON object`);
  return raw as Record<string, unknown>;
}

/** Open a Hugging Face MoE checkpoint directory and validate it against its config. */
export function openModel(dir: string): LoadedModel {
  const gguf = ggufPath(dir);
  if (gguf) {
    const { g, config, spec } = openGguf(gguf);
    const expected = expectedTensors(spec);
    const store = new GgufCheckpoint(dir, g, spec, config, new Map(expected.map((t) => [t.name, t.shape])));
    const missing = expected.find((t) => !store.has(t.name));
    if (missing) {
      g.close();
      throw fail('BAD_CHECKPOINT', `${gguf}: no tensor for ${missing.name}`);
    }
    return { dir, config, spec, checkpoint: store, expected, gptq: null, packed: new Map(), gguf: store };
  }
  const config = readConfig(dir);
  const spec = specFromConfig(config, path.join(dir, 'config.json'));
  const checkpoint = Checkpoint.open(dir);
  try {
    const gptq = gptqConfig(config, path.join(dir, 'config.json'));
    const packed = new Map<string, { prefix: string; N: number; K: number }>();
    const expected = expectedTensors(spec);
    for (const t of expected) {
      const prefix = t.name.replace(/\.weight$/, '');
      const hasQweight = prefix !== t.name && checkpoint.has(`${prefix}.qweight`);
      if (hasQweight && checkpoint.has(t.name))
        throw fail('BAD_CHECKPOINT', `module ${prefix} has both a float ${t.name} and GPTQ ${prefix}.qweight in ${dir}; which one to use is ambiguous`);
      if (hasQweight && !gptq)
        throw fail('BAD_CONFIG', `module ${prefix} is GPTQ-packed (${prefix}.qweight) but ${path.join(dir, 'config.json')} has no quantization_config`);
      if (gptq && hasQweight && t.shape.length === 2) {
        checkPacked(checkpoint, prefix, t.shape[0]!, t.shape[1]!, gptq);
        packed.set(t.name, { prefix, N: t.shape[0]!, K: t.shape[1]! });
        continue;
      }
      if (!checkpoint.has(t.name)) throw fail('BAD_CHECKPOINT', `tensor ${t.name} is missing from the checkpoint in ${dir}`);
      const info = checkpoint.info(t.name);
      if (info.shape.length !== t.shape.length || info.shape.some((d, i) => d !== t.shape[i]))
        throw fail(
          'BAD_CHECKPOINT',
          `tensor ${t.name} has shape [${info.shape}] but config.json implies [${t.shape}] (${path.basename(info.file)})`,
        );
      if (!['F32', 'F16', 'BF16', 'F64'].includes(info.dtype))
        throw fail('UNSUPPORTED', `tensor ${t.name} has dtype ${info.dtype}; float checkpoints (F32/F16/BF16) are supported`);
    }
    return { dir, config, spec, checkpoint, expected, gptq, packed, gguf: null };
  } catch (e) {
    checkpoint.close();
    throw e;
  }
}

/**
 * A short fingerprint of a model: config.json's content plus every tensor's name, dtype and shape. Calibration
 * directories record it so quantize can refuse a calibration made for another model.
 */
export function modelFingerprint(model: LoadedModel): string {
  const h = createHash('sha256');
  h.update(model.gguf ? JSON.stringify(model.config) : fs.readFileSync(path.join(model.dir, 'config.json')));
  for (const t of model.expected) {
    if (model.packed.has(t.name)) continue;
    const info = model.checkpoint.info(t.name);
    h.update(`${t.name}:${info.dtype}:${info.shape.join('x')};`);
  }
  return h.digest('hex').slice(0, 16);
}
