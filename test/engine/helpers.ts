import fs from 'node:fs';
import path from 'node:path';
import { SafetensorsFile } from '../../src/checkpoint/safetensors.js';

/** A copy of checkpoint `src` in `dest` whose config.json has `overrides` applied (weights and tokenizer copied). */
export function withConfig(src: string, dest: string, overrides: Record<string, unknown>): string {
  fs.mkdirSync(dest, { recursive: true });
  for (const f of ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
    if (fs.existsSync(path.join(src, f))) fs.copyFileSync(path.join(src, f), path.join(dest, f));
  }
  const cfg = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(dest, 'config.json'), JSON.stringify({ ...cfg, ...overrides }));
  return dest;
}

/** A fixture's reference.safetensors inputs and logits (file `reference.safetensors` in `dir`, or the file itself). */
export function readReference(dirOrFile: string): { ids: Int32Array; logits: Float32Array } {
  const file = dirOrFile.endsWith('.safetensors') ? dirOrFile : path.join(dirOrFile, 'reference.safetensors');
  const ref = SafetensorsFile.open(file);
  try {
    return { ids: Int32Array.from(ref.readFloat32('input_ids')), logits: ref.readFloat32('logits') };
  } finally {
    ref.close();
  }
}

/** Largest |a[i] − b[i]|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let err = 0;
  for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i]! - b[i]!));
  return err;
}
