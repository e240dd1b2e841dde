/** Set-level balanced selection: the search itself on synthetic counts, and the sampler on a trained fixture. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { calibrate } from '../../src/calibration/calibrate.js';
import { selectBalanced, setScore } from '../../src/calibration/samplers/balanced.js';
import { seededRandom } from '../../src/calibration/samples.js';
import { MoeQuantError } from '../../src/errors.js';
import { C4, FIXTURES, SHARED_DIR } from '../paths.js';

const WIKI_VALID = path.join(SHARED_DIR, 'data/wikitext-2-raw/wiki.valid.raw');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-balanced-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function synthetic(n: number, layers: number, experts: number, seed: number): Float64Array[] {
  const rand = seededRandom(seed);
  return Array.from({ length: n }, () => {
    const c = new Float64Array(layers * experts);
    // Skewed windows: each favours a few experts.
    for (let l = 0; l < layers; l++) for (let t = 0; t < 20; t++) c[l * experts + Math.floor(rand() ** 2 * experts)]!++;
    return c;
  });
}

const sum = (list: Float64Array[], idx: number[]) => idx.reduce((acc, i) => (list[i]!.forEach((v, d) => (acc[d]! += v)), acc), new Float64Array(list[0]!.length));

describe('selectBalanced', () => {
  it('ends in a local optimum no single swap improves, at or below greedy and the first-k windows; exact on small pools', () => {
    for (let seed = 0; seed < 5; seed++) {
      const counts = synthetic(9, 2, 4, seed);
      const { chosen, score } = selectBalanced(counts, 2, 4, 3, 0);
      expect(new Set(chosen).size).toBe(3);
      expect(score.sigma).toBeCloseTo(setScore(sum(counts, chosen), 2, 4, 0).sigma, 12);
      expect(score.sigma).toBeLessThanOrEqual(setScore(sum(counts, [0, 1, 2]), 2, 4, 0).sigma + 1e-12);
      const greedyOnly = selectBalanced(counts, 2, 4, 3, 0, 0);
      expect(score.sigma).toBeLessThanOrEqual(greedyOnly.score.sigma + 1e-12);
      for (let slot = 0; slot < 3; slot++)
        for (let i = 0; i < 9; i++) {
          if (chosen.includes(i)) continue;
          const swapped = chosen.map((c, j) => (j === slot ? i : c));
          expect(setScore(sum(counts, swapped), 2, 4, 0).sigma).toBeGreaterThanOrEqual(score.sigma - 1e-12);
        }
      // Brute force over all 84 subsets: the search is within 2% of the optimum on these pools.
      let best = Infinity;
      for (let a = 0; a < 9; a++) for (let b = a + 1; b < 9; b++) for (let c = b + 1; c < 9; c++) best = Math.min(best, setScore(sum(counts, [a, b, c]), 2, 4, 0).sigma);
      expect(score.sigma).toBeLessThanOrEqual(best * 1.02 + 1e-12);
    }
  });

  it('--min-tokens comes first: an expert only one window feeds is covered even when σ alone would skip it', () => {
    // Layer of 3 experts. Windows 0–3 are perfectly even over experts 0 and 1; window 4 alone feeds expert 2, unevenly.
    const w = (a: number, b: number, c: number) => Float64Array.of(a, b, c);
    const counts = [w(5, 5, 0), w(5, 5, 0), w(5, 5, 0), w(5, 5, 0), w(9, 0, 2)];
    const plain = selectBalanced(counts, 1, 3, 2, 0);
    expect(plain.chosen).not.toContain(4);
    const constrained = selectBalanced(counts, 1, 3, 2, 1);
    expect(constrained.chosen).toContain(4);
    expect(constrained.score.deficit).toBe(0);
  });
});

describe('--sampler balanced', () => {
  it('lowers σ of WikiText-2 windows by 30% on tiny-qwen3-moe (64 × 256 chosen from 256 C4 + 256 WikiText-2 valid windows), every expert ≥ --min-tokens', async () => {
    const model = path.join(FIXTURES, 'tiny-qwen3-moe');
    const base = { model, samples: 64, seqLen: 256, routingBias: 'none' as const, device: 'cpu' as const };
    const wiki = await calibrate({ ...base, data: [WIKI_VALID], out: path.join(tmp, 'wiki') });
    const bal = await calibrate({ ...base, data: [], sampler: 'balanced', pool: [C4, WIKI_VALID], poolWindows: 256, out: path.join(tmp, 'bal') });
    console.log(`σ wiki windows ${wiki.summary.natural.sigma.toFixed(4)}, balanced ${bal.summary.natural.sigma.toFixed(4)} (pool ${(bal.sampler['sigma_pool'] as number).toFixed(4)})`);
    expect(bal.summary.natural.sigma).toBeLessThanOrEqual(wiki.summary.natural.sigma * 0.7);
    expect(bal.sampler['sigma_selected']).toBeCloseTo(bal.summary.natural.sigma, 10); // the calibration sees what was selected
    expect(bal.summary.natural.min_tokens).toBeGreaterThanOrEqual(16);
    const json = JSON.parse(fs.readFileSync(path.join(bal.out, 'calibration.json'), 'utf8'));
    expect(json.sampler).toMatchObject({ name: 'balanced', min_tokens: 16, pool_windows_per_file: 256 });
    expect(json.sampler.pool.map((p: { windows: number }) => p.windows)).toEqual([256, 256]);
    // A calibration directory can be a pool too (same tokenizer and length).
    const again = await calibrate({ ...base, samples: 16, data: [], sampler: 'balanced', pool: [bal.out], out: path.join(tmp, 'bal2') });
    expect(again.summary.natural.sigma).toBeLessThanOrEqual(bal.summary.natural.sigma * 1.5);
  });

  it('bad pools: none, too small, another tokenizer, other window length — one clear error, nothing written', async () => {
    const model = path.join(FIXTURES, 'tiny-qwen3-moe');
    const base = { model, samples: 8, seqLen: 64, data: [] as string[], sampler: 'balanced' as const, device: 'cpu' as const };
    const err = async (p: Promise<unknown>) => {
      const e = await p.then(() => null, (x: unknown) => x);
      expect(e).toBeInstanceOf(MoeQuantError);
      return (e as Error).message;
    };
    const out = path.join(tmp, 'never');
    expect(await err(calibrate({ ...base, out }))).toMatch(/needs a pool/);
    const small = path.join(tmp, 'small.txt');
    fs.writeFileSync(small, fs.readFileSync(WIKI_VALID, 'utf8').slice(0, 1200));
    expect(await err(calibrate({ ...base, pool: [small], out }))).toMatch(/the pool has \d windows of 64 tokens, fewer than --samples 8/);
    // A calibration directory of another model's tokenizer.
    const other = path.join(tmp, 'other-tok');
    await calibrate({ model: path.join(FIXTURES, 'tiny-mixtral'), data: [C4], samples: 8, seqLen: 64, device: 'cpu', out: other });
    const cj = JSON.parse(fs.readFileSync(path.join(other, 'calibration.json'), 'utf8'));
    cj.tokenizer = 'f'.repeat(64);
    fs.writeFileSync(path.join(other, 'calibration.json'), JSON.stringify(cj));
    expect(await err(calibrate({ ...base, pool: [other], out }))).toMatch(/tokenized by another tokenizer/);
    expect(await err(calibrate({ ...base, seqLen: 32, pool: [path.join(tmp, 'bal')], out }))).toMatch(/has windows of 256 tokens; --seq-len is 32/);
    expect(fs.existsSync(out)).toBe(false);
  });
});
