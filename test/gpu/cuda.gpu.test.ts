/** The engine on onnxruntime's CUDA provider (opt-in install, see README "Devices"); skips, saying why, without it. */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { resolveDevice } from '../../src/graph/session.js';
import { maxAbsDiff, readReference } from '../engine/helpers.js';
import { FIXTURES } from '../paths.js';

const cuda = await resolveDevice('cuda').then(
  () => '',
  (e: Error) => e.message,
);
if (cuda) console.warn(`CUDA tests skipped: ${cuda}`);

describe.skipIf(cuda !== '')('CUDA', () => {
  for (const name of ['tiny-mixtral', 'tiny-deepseek-v3', 'tiny-qwen3-moe']) {
    it(`${name}: reference logits within 1e-3`, async () => {
      const dir = path.join(FIXTURES, name);
      const { ids, logits: want } = readReference(dir);
      const engine = await createEngine(dir, { device: 'cuda' });
      try {
        expect(engine.device).toBe('cuda');
        const out = await engine.forward.run([ids], { head: 'logits' });
        expect(maxAbsDiff(out.logits!, want)).toBeLessThan(1e-3);
      } finally {
        await engine.close();
      }
    });
  }
});
