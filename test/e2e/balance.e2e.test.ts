/**
 * Issue-3 acceptance at full size: 128 × 512-token C4 windows, seed 0, default loss-free settings. On every fixture
 * the routing used over the second half of the batches must have at most a third of the natural MaxVio on the same
 * tokens, and the least-used expert must get more tokens than under natural routing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { calibrate } from '../../src/calibration/calibrate.js';
import { C4, FIXTURES } from '../paths.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-e2e-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('loss-free routing bias at full size', () => {
  for (const name of ['tiny-mixtral', 'tiny-deepseek-v3', 'tiny-qwen3-moe']) {
    it(name, async () => {
      const r = await calibrate({ model: path.join(FIXTURES, name), data: [C4], out: path.join(tmp, name), samples: 128, seqLen: 512, seed: 0, device: 'cpu' });
      const s = r.summary;
      console.log(
        `${name}: MaxVio 2nd half natural ${s.natural_second_half.maxvio.toFixed(3)} → used ${s.used_second_half.maxvio.toFixed(3)}; ` +
          `min tokens natural ${s.natural.min_tokens} → used ${s.used.min_tokens}; ${r.seconds.toFixed(1)} s`,
      );
      expect(s.used_second_half.maxvio).toBeLessThanOrEqual(s.natural_second_half.maxvio / 3);
      expect(s.used.min_tokens).toBeGreaterThan(s.natural.min_tokens);
    });
  }
});
