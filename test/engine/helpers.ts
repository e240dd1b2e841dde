import fs from 'node:fs';
import path from 'node:path';

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
