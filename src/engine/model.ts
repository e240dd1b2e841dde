/**
 * Opening a model directory: config.json → ModelSpec, safetensors → Checkpoint, and a check that every tensor the
 * spec needs exists with the shape config.json implies (so a bad checkpoint fails in seconds, not mid-run).
 */
import fs from 'node:fs';
import path from 'node:path';
import { specFromConfig } from '../architectures/registry.js';
import { expectedTensors, type ExpectedTensor } from '../architectures/shapes.js';
import type { ModelSpec } from '../architectures/types.js';
import { Checkpoint } from '../checkpoint/checkpoint.js';
import { fail } from '../errors.js';

export interface LoadedModel {
  dir: string;
  config: Record<string, unknown>;
  spec: ModelSpec;
  checkpoint: Checkpoint;
  expected: ExpectedTensor[];
}

/** Read and parse `dir/config.json`. */
export function readConfig(dir: string): Record<string, unknown> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw fail('BAD_CHECKPOINT', `model directory ${dir} does not exist`);
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
  const config = readConfig(dir);
  const spec = specFromConfig(config, path.join(dir, 'config.json'));
  const checkpoint = Checkpoint.open(dir);
  try {
    const expected = expectedTensors(spec);
    for (const t of expected) {
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
    return { dir, config, spec, checkpoint, expected };
  } catch (e) {
    checkpoint.close();
    throw e;
  }
}
