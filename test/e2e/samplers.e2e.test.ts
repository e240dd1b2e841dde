/**
 * The samplers through the built CLI: an EBSS calibration interrupted with Ctrl-C resumes from its finished
 * samples and gives the set an uninterrupted run gives; its calibration.jsonl is usable as --data; quantize --calib
 * takes an EBSS or a balanced calibration directory.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { C4, FIXTURES, SHARED_DIR } from '../paths.js';
import { cli, cliAsync, waitFor } from '../cli/spawn.js';

const QWEN = path.join(FIXTURES, 'tiny-qwen3-moe');
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'moe-quant-samplers-')));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const EBSS = ['calibrate', '--model', QWEN, '--device', 'cpu', '--sampler', 'ebss', '--samples', '6', '--seq-len', '48', '--ebss-batch', '2', '--seed', '5'];

describe('samplers end to end', () => {
  it('ebss: Ctrl-C keeps the finished samples, the same command continues from them, the set is the uninterrupted one', async () => {
    const whole = path.join(tmp, 'whole');
    const r0 = cli([...EBSS, '--out', whole, '--json']);
    expect(r0.code, r0.stderr).toBe(0);
    const out = path.join(tmp, 'resumed');
    const run = cliAsync([...EBSS, '--out', out]);
    // Interrupt once the first batch of 2 samples is written.
    await waitFor(() => fs.readdirSync(tmp).some((f) => f.startsWith('resumed.tmp-') && (() => {
      try {
        return fs.readFileSync(path.join(tmp, f, 'calibration.jsonl'), 'utf8').split('\n').filter(Boolean).length >= 2;
      } catch {
        return false;
      }
    })()), 120_000);
    run.child.kill('SIGINT');
    const r1 = await run.done;
    expect(r1.code, r1.stderr).toBe(130);
    expect(r1.stderr).toMatch(/finished work kept in .*resumed\.partial/);
    expect(fs.existsSync(out)).toBe(false);
    const kept = fs.readFileSync(path.join(`${out}.partial`, 'calibration.jsonl'), 'utf8').split('\n').filter(Boolean).length;
    expect(kept).toBeGreaterThanOrEqual(2);
    const r2 = cli([...EBSS, '--out', out, '--json']);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stderr).toMatch(/continuing from the work an earlier run/);
    expect(r2.stderr).toMatch(new RegExp(`ebss: resuming after ${kept - (kept % 2)} samples`));
    expect(fs.existsSync(`${out}.partial`)).toBe(false);
    for (const f of ['calibration.jsonl', 'tokens.safetensors', 'calibration.json'])
      expect(fs.readFileSync(path.join(out, f), 'utf8').replace(/"\/[^"]*resumed"/g, 'OUT'), f).toBe(fs.readFileSync(path.join(whole, f), 'utf8').replace(/"\/[^"]*whole"/g, 'OUT'));
    // The generated text is ordinary --data for another calibration.
    const asData = cli(['calibrate', '--model', QWEN, '--device', 'cpu', '--data', path.join(whole, 'calibration.jsonl'), '--samples', '4', '--seq-len', '32', '--out', path.join(tmp, 'as-data')]);
    expect(asData.code, asData.stderr).toBe(0);
  });

  it('published EBSS balances experts better than WikiText-2 windows on tiny-qwen3-moe (σ, natural routing, 32 × 128)', () => {
    const sigma = (extra: string[], out: string) => {
      const r = cli(['calibrate', '--model', QWEN, '--device', 'cpu', '--samples', '32', '--seq-len', '128', '--routing-bias', 'none', '--out', path.join(tmp, out), '--json', ...extra]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).summary.natural.sigma as number;
    };
    const wiki = sigma(['--data', path.join(SHARED_DIR, 'data/wikitext-2-raw/wiki.valid.raw')], 'sigma-wiki');
    const ebss = sigma(['--sampler', 'ebss'], 'sigma-ebss');
    console.log(`σ natural: WikiText-2 valid windows ${wiki.toFixed(4)}, EBSS ${ebss.toFixed(4)}`);
    expect(ebss).toBeLessThan(wiki * 0.85);
  });

  it('quantize --calib takes EBSS and balanced calibrations', () => {
    const bal = path.join(tmp, 'bal');
    const r = cli(['calibrate', '--model', QWEN, '--device', 'cpu', '--sampler', 'balanced', '--pool', C4, '--pool', path.join(tmp, 'whole'), '--samples', '8', '--seq-len', '48', '--pool-windows', '32', '--out', bal, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.sampler.name).toBe('balanced');
    expect(j.sampler.pool.map((p: { windows: number }) => p.windows)).toEqual([32, 6]);
    for (const calib of [path.join(tmp, 'whole'), bal]) {
      const q = cli(['quantize', '--model', QWEN, '--device', 'cpu', '--calib', calib, '--no-eval', '--out', path.join(tmp, `q-${path.basename(calib)}`), '--json']);
      expect(q.code, q.stderr).toBe(0);
      expect(JSON.parse(q.stdout).method).toBe('agq');
    }
  });
});
