import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { evaluatePerplexity } from '../../src/eval/perplexity.js';
import { FIXTURES, WIKI } from '../paths.js';


describe('perplexity matches the Hugging Face reference (seq 256, 40 windows) within 0.1%', () => {
  for (const name of ['tiny-mixtral', 'tiny-qwen3-moe', 'tiny-deepseek-v3']) {
    it(name, async () => {
      const dir = path.join(FIXTURES, name);
      const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8'));
      const want = ref['ppl_seq256_first40:wiki.test.raw'] as number;
      const r = await evaluatePerplexity({ model: dir, data: WIKI, seqLen: 256, maxWindows: 40, device: 'cpu' });
      expect(r.predictions).toBe(10200);
      const rel = Math.abs(r.ppl - want) / want;
      console.log(`${name}: ppl ${r.ppl.toFixed(4)} ref ${want.toFixed(4)} rel ${rel.toExponential(2)} (${r.tokens_per_second.toFixed(0)} tok/s)`);
      expect(rel).toBeLessThan(1e-3);
    });
  }
});
